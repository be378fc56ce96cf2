"""The other tabs keep stepping while one tab is slow, hung or being replaced (training/outages.py).

Fake pages on real sockets, driven by the InlineVecEnv (the default vec env); the subprocess
variant's frozen steps are tested in test_subproc_vec_env.py, real Chromium in
test_inline_vec_env.py and test_e2e_self_healing.py.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tests.conftest import assert_frozen
from tests.fake_page import FakePage, PageThread, free_port
from training.inline_vec_env import InlineVecEnv
from training.tab_link import LinkDeadlines, PageSettings

ACTION = np.array([0.5, -0.25, 1.0], dtype=np.float32)


class Reports:
    """The health events a vec env sends (its `on_event`)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, fields: dict[str, Any]) -> None:
        self.events.append((kind, dict(fields)))

    def outages(self) -> list[dict[str, Any]]:
        return [fields for kind, fields in self.events if kind == "outage"]


@contextlib.contextmanager
def two_tabs(first: FakePage, step_s: float = 30.0, straggler_s: float = 30.0) -> Iterator[tuple[InlineVecEnv, list[PageThread], Reports]]:
    """An InlineVecEnv on two ports: tab 0 driven by `first`, tab 1 by a well-behaved page.

    The grace is long unless a test asks otherwise: a busy machine's slow step is no straggler. Tests
    of the grace shorten it (`venv.straggler_s`) for the steps where tab 0 misbehaves.
    """
    reports = Reports()
    ports = [first.port, free_port()]
    venv = InlineVecEnv(ports, PageSettings(), LinkDeadlines(step_s=step_s, connect_s=20.0), on_event=reports, straggler_s=straggler_s)
    # Tab 1's episode never ends: while tab 0 hangs it steps as fast as the machine goes (over
    # 10,000 steps in a 5 s deadline on a quiet machine), and the tests count its steps as one episode.
    pages = [PageThread(first), PageThread(FakePage(ports[1], seed=2, done_after=10**9))]
    try:
        for page in pages:
            page.start()
        venv.reset()
        yield venv, pages, reports
    finally:
        for page in pages:
            page.stop()
        venv.close()


def _actions() -> np.ndarray:
    return np.stack([ACTION, ACTION])


def test_a_hung_tab_gets_frozen_steps_after_the_grace_and_the_other_tab_never_waits_longer() -> None:
    """The other tab waits at most about the grace (0.3 s) in a step, far from the step deadline (5 s)."""
    port = free_port()
    with two_tabs(FakePage(port, seed=1, hang_after=3), step_s=5.0) as (venv, pages, reports):
        for _ in range(3):
            last, _, _, infos = venv.step(_actions())
        lengths = [info["episode_length"] for info in infos]
        venv.straggler_s = 0.3
        began = time.monotonic()
        replacement: PageThread | None = None
        longest = 0.0
        calls = 0
        causes = []
        while True:
            t0 = time.monotonic()
            obs, rewards, dones, infos = venv.step(_actions())
            longest = max(longest, time.monotonic() - t0)
            calls += 1
            assert time.monotonic() - began < 30, "the hung tab was never replaced"
            if "tab_failure" in infos[0]:
                break
            assert_frozen(dones[0], infos[0], None, last[0])
            assert infos[0]["tab_waiting"] in ("slow", "hang") and rewards[0] == 0.0
            np.testing.assert_array_equal(obs[0], last[0])
            causes.append(infos[0]["tab_waiting"])
            assert not dones[1] and infos[1]["episode_length"] == lengths[1] + calls  # tab 1 stepped
            if infos[0]["tab_waiting"] == "hang" and replacement is None:
                # the deadline passed and the link dropped the hung page: a new page may connect
                pages[0].stop()
                replacement = PageThread(FakePage(port, seed=3)).start()
                pages[0] = replacement
        outage_s = time.monotonic() - began
        assert dones[0] and infos[0]["tab_failure"] == "hang" and infos[0]["TimeLimit.truncated"] is True
        np.testing.assert_array_equal(infos[0]["terminal_observation"], last[0])
        assert not dones[1] and pages[1].page.steps_answered == 3 + calls  # every vec step, one episode
        assert causes[0] == "slow" and causes[-1] == "hang"
        assert outage_s >= 5.0  # the step deadline
        assert longest < 2.5, f"the other tab waited {longest:.2f} s in one step (grace 0.3 s, deadline 5 s)"
        (outage,) = reports.outages()
        assert outage["port"] == port and outage["cause"] == "hang" and outage["frozen_steps"] == calls - 1
        assert outage["others_longest_wait_s"] < 2.5 and outage["seconds"] >= 5.0
        assert venv.frozen_steps == calls - 1 and venv.tab_failures == [1, 0]


def test_a_slow_tab_that_answers_after_all_goes_on_with_its_episode() -> None:
    with two_tabs(FakePage(free_port(), seed=1, slow_at=2, slow_s=1.0)) as (venv, pages, reports):
        for _ in range(2):
            last, _, _, _ = venv.step(_actions())
        venv.straggler_s = 0.2
        frozen = 0
        while True:
            obs, rewards, dones, infos = venv.step(_actions())
            assert not dones[1]
            if "tab_waiting" not in infos[0]:
                break
            assert_frozen(dones[0], infos[0], "slow", last[0])
            np.testing.assert_array_equal(obs[0], last[0])
            frozen += 1
        venv.straggler_s = 30.0
        assert frozen >= 1 and not dones[0]
        assert infos[0]["episode_length"] == 3  # the late answer continues the episode
        assert pages[0].page.steps_answered == 3  # the actions of the frozen steps were not sent
        venv.step(_actions())
        assert pages[0].page.steps_answered == 4 and venv.tab_failures == [0, 0]
        (outage,) = reports.outages()
        assert outage["cause"] == "slow" and outage["frozen_steps"] == frozen and outage["seconds"] >= 0.7


@pytest.mark.parametrize(("misbehaviour", "cause"), [({"close_after": 3}, "disconnected"), ({"raw_after": 3}, "garbage")])
def test_a_failed_tab_gets_frozen_steps_at_once_while_its_replacement_comes(misbehaviour: dict[str, Any], cause: str) -> None:
    """The grace is 30 s (and so is the step deadline): a step that waited for it would show."""
    port = free_port()
    with two_tabs(FakePage(port, seed=1, **misbehaviour)) as (venv, pages, reports):
        for _ in range(3):
            last, _, _, _ = venv.step(_actions())
        began = time.monotonic()
        obs, _, dones, infos = venv.step(_actions())
        assert time.monotonic() - began < 10, "a known failure must not cost the 30 s straggler grace"
        assert not dones[1]
        assert_frozen(dones[0], infos[0], cause, last[0])
        pages[0].stop()
        steps = 0
        for _ in range(2):  # the other tab steps while no page is there at all
            obs, _, dones, infos = venv.step(_actions())
            steps += 1
            assert not dones[1]
            assert_frozen(dones[0], infos[0], cause, last[0])
        # The replacement page connects 0.5 s later; the other tab steps meanwhile.
        replacement = PageThread(FakePage(port, seed=3))
        timer = threading.Timer(0.5, replacement.start)
        timer.start()
        try:
            while "tab_failure" not in infos[0]:
                obs, _, dones, infos = venv.step(_actions())
                steps += 1
                assert time.monotonic() - began < 30
            assert dones[0] and infos[0]["tab_failure"] == cause and steps >= 3
            np.testing.assert_array_equal(infos[0]["terminal_observation"], last[0])
            assert infos[0]["episode"]["l"] == 4  # three steps and the failed one; frozen steps not counted
            obs, _, dones, infos = venv.step(_actions())
            assert infos[0]["episode_length"] == 1 and replacement.page.steps_answered == 1
            assert pages[1].page.steps_answered == 3 + 1 + steps + 1 and pages[1].page.episode == 1  # its first
            (outage,) = reports.outages()
            assert outage["cause"] == cause and outage["seconds"] >= 0.5
            assert outage["others_longest_wait_s"] < 10
        finally:
            timer.join()
            replacement.stop()


def test_a_single_tab_has_nobody_to_wait_for_it_so_it_gets_no_frozen_steps() -> None:
    port = free_port()
    reports = Reports()
    venv = InlineVecEnv([port], PageSettings(), LinkDeadlines(step_s=2.0, connect_s=20.0), on_event=reports, straggler_s=0.1)
    first = PageThread(FakePage(port, seed=1, slow_at=1, slow_s=0.5, close_after=3)).start()
    second = PageThread(FakePage(port, seed=2))
    try:
        venv.reset()
        for _ in range(3):
            _, _, dones, infos = venv.step(ACTION[None, :])  # the second one is slow: waited for
            assert not dones.any() and "tab_waiting" not in infos[0]
        first.stop()
        timer = threading.Timer(0.3, second.start)
        timer.start()
        _, _, dones, infos = venv.step(ACTION[None, :])  # the socket closes: the step waits for the new page
        timer.join()
        assert dones[0] and infos[0]["tab_failure"] == "disconnected"
        assert venv.frozen_steps == 0 and reports.outages() == []
    finally:
        first.stop()
        second.stop()
        venv.close()


def test_the_straggler_grace_must_be_positive() -> None:
    with pytest.raises(ValueError, match="straggler_s must be positive"):
        InlineVecEnv([free_port()], straggler_s=0.0)
