"""Recycling a tab at an episode boundary loses no step: the env waits for the new page instead of
resetting the old one (training/health.py has the request; real Chromium in test_e2e_self_healing.py).
"""

from __future__ import annotations

import functools
import json
import socket
import threading
import time
from typing import Any

import numpy as np

from tests.conftest import assert_frozen, wait_until
from tests.fake_page import FakePage, PageThread, free_port
from training.inline_vec_env import InlineVecEnv
from training.subproc_vec_env import ResilientSubprocVecEnv
from training.tab_env import TabEnv
from training.tab_link import LinkDeadlines, PageSettings

ACTION = np.array([0.5, -0.25, 1.0], dtype=np.float32)
TOKEN = "run-token"
GRACE_S = 30.0  # the straggler grace: no busy machine's slow step is taken for a straggler here


class Orchestrator:
    """The fleet's side of the health channel, by hand: read datagrams, send a recycle request."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.reporters: dict[int, Any] = {}  # port -> the env's health socket address
        self.received: list[dict[str, Any]] = []

    def read(self) -> list[dict[str, Any]]:
        while True:
            try:
                data, reporter = self.sock.recvfrom(65536)
            except OSError:
                return self.received
            message = json.loads(data)
            self.reporters[message["port"]] = reporter
            self.received.append(message)

    def ask_recycle(self, port: int, token: str = TOKEN) -> None:
        self.read()
        assert self.reporters, "the env has not reported yet"
        reporter = self.reporters.get(port) or next(iter(self.reporters.values()))
        self.sock.sendto(json.dumps({"token": token, "event": "recycle", "port": port}).encode(), reporter)

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.read() if m["event"] == kind]


def test_the_inline_vec_env_swaps_a_recycled_tab_between_two_episodes_and_the_other_tab_steps_on() -> None:
    fleet = Orchestrator()
    ports = [free_port(), free_port()]
    venv = InlineVecEnv(ports, PageSettings(max_episode_steps=5), LinkDeadlines(step_s=30.0, connect_s=30.0),
                        health_port=fleet.port, run_token=TOKEN, straggler_s=GRACE_S)
    pages = [PageThread(FakePage(ports[0], seed=1)), PageThread(FakePage(ports[1], seed=2, done_after=10**6))]
    new_page = PageThread(FakePage(ports[0], seed=3))
    try:
        for page in pages:
            page.start()
        venv.reset()
        venv.step(np.stack([ACTION, ACTION]))
        fleet.ask_recycle(ports[1], token="someone else")  # not our run: ignored
        fleet.ask_recycle(ports[0])
        for _ in range(3):
            _, _, dones, infos = venv.step(np.stack([ACTION, ACTION]))
            assert not dones.any()
        # Step 5 ends the episode, handed over at once; the env then waits for the new page.
        last, _, dones, infos = venv.step(np.stack([ACTION, ACTION]))
        assert dones[0] and infos[0]["TimeLimit.truncated"] is True and "tab_failure" not in infos[0]
        assert infos[0]["episode"]["l"] == 5 and infos[0]["tab_recycling"]  # a whole episode: no step lost
        np.testing.assert_array_equal(last[0], infos[0]["terminal_observation"])
        (ready,) = fleet.events("recycle_ready")
        assert ready["port"] == ports[0]
        # Meanwhile the other tab steps on; tab 1's slot gets frozen steps at its terminal state.
        _, _, dones, infos = venv.step(np.stack([ACTION, ACTION]))
        assert_frozen(dones[0], infos[0], "recycle", last[0])
        assert not dones[1]
        pages[0].stop()  # what the pool does: close the old page, open a new one
        new_page.start()
        deadline = time.monotonic() + 30
        while True:
            obs, _, dones, infos = venv.step(np.stack([ACTION, ACTION]))
            assert_frozen(dones[0], infos[0], "recycle", last[0])
            if not np.array_equal(obs[0], last[0]):
                break  # the frozen step that carries the new page's first observation
            assert time.monotonic() < deadline, "the new page's first observation never came"
        assert new_page.page.episode == 1 and new_page.page.steps_answered == 0
        _, _, dones, infos = venv.step(np.stack([ACTION, ACTION]))
        assert not dones[0] and infos[0]["episode_length"] == 1  # the new page's first step
        assert new_page.page.steps_answered == 1
        assert pages[1].page.episode == 1 and not fleet.events("failed")
        assert venv.tab_failures == [0, 0]
        # One request, one recycle.
        for _ in range(6):
            venv.step(np.stack([ACTION, ACTION]))
        assert len(fleet.events("recycle_ready")) == 1
    finally:
        for page in [*pages, new_page]:
            page.stop()
        venv.close()
        fleet.sock.close()


def test_a_tab_env_swaps_its_page_at_the_next_reset_after_a_whole_episode() -> None:
    fleet = Orchestrator()
    env = TabEnv(free_port(), PageSettings(max_episode_steps=3), LinkDeadlines(step_s=30.0, connect_s=30.0),
                 health_port=fleet.port, run_token=TOKEN)
    first = PageThread(FakePage(env.port, seed=1)).start()
    second = PageThread(FakePage(env.port, seed=2))
    try:
        env.reset()
        env.step(ACTION)
        fleet.ask_recycle(env.port)
        for _ in range(2):
            _, _, terminated, truncated, info = env.step(ACTION)
        assert truncated and "tab_failure" not in info  # the episode ran to its end on the old page

        def swap() -> None:
            time.sleep(0.3)
            first.stop()
            second.start()

        swapper = threading.Thread(target=swap)
        swapper.start()
        env.reset()  # waits for the new page
        swapper.join()
        assert fleet.events("recycle_ready") and second.page.episode == 1
        assert first.page.steps_answered == 3 and env.tab_failures == 0
        env.step(ACTION)
        assert second.page.steps_answered == 1
    finally:
        first.stop()
        second.stop()
        env.close()
        fleet.sock.close()


def test_the_subproc_vec_env_hands_over_the_episode_end_then_the_new_pages_first_observation() -> None:
    fleet = Orchestrator()
    ports = [free_port(), free_port()]
    deadlines = LinkDeadlines(step_s=30.0, connect_s=30.0)
    fns = [functools.partial(TabEnv, port, PageSettings(max_episode_steps=max_steps), deadlines, health_port=fleet.port, run_token=TOKEN)
           for port, max_steps in zip(ports, (3, 10**6), strict=True)]
    pages = [PageThread(FakePage(ports[0], seed=1)), PageThread(FakePage(ports[1], seed=2))]
    new_page = PageThread(FakePage(ports[0], seed=3))
    venv = ResilientSubprocVecEnv(fns, step_deadline_s=30, straggler_s=GRACE_S, ports=ports)  # type: ignore[arg-type]
    actions = np.stack([ACTION, ACTION])
    try:
        for page in pages:
            page.start(wait_connected=30)
        venv.reset()
        venv.step(actions)
        wait_until(lambda: fleet.read() and ports[0] in fleet.reporters, 30, "tab 1's env worker reports")
        fleet.ask_recycle(ports[0])
        venv.step(actions)
        began = time.monotonic()
        last, _, dones, infos = venv.step(actions)  # the third step ends tab 1's episode
        assert time.monotonic() - began < 10, "the episode end comes at once, not after the swap (nor the 30 s grace)"
        assert dones[0] and infos[0]["tab_recycling"] and "tab_failure" not in infos[0]
        assert [m["port"] for m in fleet.events("recycle_ready")] == [ports[0]]
        _, _, dones, infos = venv.step(actions)
        assert_frozen(dones[0], infos[0], "recycle", last[0])
        assert not dones[1]
        pages[0].stop()
        new_page.start()
        deadline = time.monotonic() + 30
        while True:
            obs, _, dones, infos = venv.step(actions)
            assert_frozen(dones[0], infos[0], "recycle", last[0])
            if not np.array_equal(obs[0], last[0]):
                break
            assert time.monotonic() < deadline, "the new page's first observation never came"
        venv.step(actions)
        assert new_page.page.steps_answered == 1 and pages[0].page.steps_answered == 3
        assert pages[1].page.episode == 1 and venv.respawns == 0
    finally:
        venv.close()
        for page in [*pages, new_page]:
            page.stop()
        fleet.sock.close()
