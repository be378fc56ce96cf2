"""TabEnv (a Gymnasium env whose far end is one tab) against the fake page on a real socket."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from tests.fake_page import FakePage, PageThread, free_port, observation, reward
from training.protocol import OBS_SIZE
from training.tab_env import TabEnv
from training.tab_link import LinkDeadlines, PageSettings

STEP_S = 30.0  # the step deadline: no busy machine's slow fake page is taken for a hang
HANG_S = 2.0  # ... but for the test of a hang
ACTION = np.array([0.5, -0.25, 1.0], dtype=np.float32)


@contextlib.contextmanager
def tab_env(settings: PageSettings | None = None, connect_s: float = 30.0, step_s: float = STEP_S, **kwargs: Any) -> Iterator[TabEnv]:
    env = TabEnv(free_port(), settings or PageSettings(), LinkDeadlines(step_s=step_s, connect_s=connect_s), **kwargs)
    try:
        yield env
    finally:
        env.close()


@contextlib.contextmanager
def page_on(env: TabEnv, **kwargs: Any) -> Iterator[FakePage]:
    thread = PageThread(FakePage(env.port, **kwargs)).start()
    try:
        yield thread.page
    finally:
        thread.stop()


def last_sent(page: FakePage) -> np.ndarray:
    return np.asarray(page.sent[-1]["observation"], dtype=np.float32)


def test_reset_and_step_shapes_and_dtypes() -> None:
    with tab_env() as env, page_on(env, seed=4):
        obs, info = env.reset()
        assert isinstance(obs, np.ndarray) and obs.dtype == np.float32 and obs.shape == (OBS_SIZE,)
        assert obs in env.observation_space
        np.testing.assert_array_equal(obs, np.asarray(observation(4, 1, 0), dtype=np.float32))
        assert isinstance(info, dict) and info["episode_length"] == 0
        for step in range(1, 6):
            obs, rew, terminated, truncated, info = env.step(ACTION)
            assert obs.dtype == np.float32 and obs.shape == (OBS_SIZE,)
            assert obs in env.observation_space
            np.testing.assert_allclose(obs, np.asarray(observation(4, 1, step, ACTION.tolist()), dtype=np.float32))
            assert isinstance(rew, float) and rew == pytest.approx(reward(4, 1, step))
            assert terminated is False and truncated is False
            assert info["episode_length"] == step
        assert env.action_space.shape == (3,) and env.action_space.dtype == np.float32
        assert env.tab_failures == 0


def test_action_outside_bounds_is_clipped_before_it_reaches_the_page() -> None:
    with tab_env() as env, page_on(env) as page:
        env.reset()
        env.step(np.array([3.0, -7.0, -1.0], dtype=np.float32))
        assert page.received[-1] == {"type": "action", "action": [1.0, -1.0, 0.0]}


def test_hang_mid_episode_is_a_truncated_step_and_the_next_reset_uses_the_replacement() -> None:
    with tab_env(step_s=HANG_S) as env:
        with page_on(env, seed=1, hang_after=3) as hung:
            env.reset()
            for _ in range(3):
                last_good, *_ = env.step(ACTION)
            np.testing.assert_array_equal(last_good, last_sent(hung))
            began = time.monotonic()
            obs, rew, terminated, truncated, info = env.step(ACTION)  # no exception
            elapsed = time.monotonic() - began
            assert truncated is True and terminated is False
            assert rew == 0.0
            np.testing.assert_array_equal(obs, last_good)
            assert obs is not last_good
            assert info["tab_failure"] == "hang"
            assert f"within {HANG_S:g} s" in info["tab_failure_detail"]
            assert HANG_S * 0.9 <= elapsed < HANG_S + 3.0
            assert env.tab_failures == 1
            with pytest.raises(RuntimeError, match="reset"):
                env.step(ACTION)  # the episode is over until the next reset
            assert hung.finished.wait(5.0), "the hung page's socket was closed by the link"
        with page_on(env, seed=7) as replacement:
            obs, info = env.reset()
            np.testing.assert_array_equal(obs, np.asarray(observation(7, 1, 0), dtype=np.float32))
            np.testing.assert_array_equal(obs, last_sent(replacement))
            obs, _, terminated, truncated, _ = env.step(ACTION)
            assert not terminated and not truncated
            np.testing.assert_array_equal(obs, last_sent(replacement))


@pytest.mark.parametrize(
    ("misbehaviour", "cause"),
    [
        ({"close_after": 2}, "disconnected"),
        ({"raw_after": 2, "raw_frame": '{"type": "state", "observation": [1, 2, 3]}'}, "garbage"),
        ({"raw_after": 2, "raw_frame": b"\x89PNG"}, "garbage"),
    ],
    ids=["disconnected", "garbage", "binary"],
)
def test_other_tab_failures_are_truncated_steps_too(misbehaviour: dict[str, Any], cause: str) -> None:
    with tab_env() as env:
        with page_on(env, **misbehaviour):
            env.reset()
            env.step(ACTION)
            last_good, *_ = env.step(ACTION)
            obs, rew, terminated, truncated, info = env.step(ACTION)
            assert (terminated, truncated, rew) == (False, True, 0.0)
            np.testing.assert_array_equal(obs, last_good)
            assert info["tab_failure"] == cause
        with page_on(env, seed=3) as replacement:
            obs, _ = env.reset()
            np.testing.assert_array_equal(obs, last_sent(replacement))


def test_a_failing_reset_waits_for_the_next_page_instead_of_raising() -> None:
    with tab_env() as env:
        bad = PageThread(FakePage(env.port, hello=True, hello_fields={"action_size": 2})).start()
        good: list[PageThread] = []

        def replace_when_dropped() -> None:
            if bad.page.finished.wait(10.0):
                good.append(PageThread(FakePage(env.port, seed=11)).start())

        helper = threading.Thread(target=replace_when_dropped, daemon=True)
        helper.start()
        try:
            obs, _ = env.reset()  # the bad page fails, the replacement serves the reset
            helper.join(5.0)
            assert good, "the replacement page never connected"
            np.testing.assert_array_equal(obs, last_sent(good[0].page))
            assert env.tab_failures == 1
        finally:
            bad.stop()
            for thread in good:
                thread.stop()


@pytest.mark.parametrize(
    ("page_kwargs", "done_at", "terminated", "truncated"),
    [
        ({}, 4, False, True),  # the page ends the episode at max_episode_steps: a time limit
        ({"collision_at": 2}, 2, True, False),  # a collision: a real terminal state
        ({"collision_at": 4}, 4, True, False),  # a collision on the very last step is still terminal
        ({"done_after": 3}, 3, True, False),  # done before the step limit (e.g. the task is finished)
    ],
    ids=["time limit", "collision", "collision at the limit", "done early"],
)
def test_episode_end_is_terminated_or_truncated(
    page_kwargs: dict[str, Any], done_at: int, terminated: bool, truncated: bool
) -> None:
    with tab_env(PageSettings(max_episode_steps=4)) as env, page_on(env, **page_kwargs) as page:
        env.reset()
        for step in range(1, done_at):
            assert env.step(ACTION)[2:4] == (False, False), f"step {step}"
        obs, _, term, trunc, info = env.step(ACTION)
        assert (term, trunc) == (terminated, truncated)
        assert info["episode_length"] == done_at
        assert "tab_failure" not in info
        np.testing.assert_array_equal(obs, last_sent(page))
        assert {"type": "set_config", "max_episode_steps": 4} in page.received
        obs, _ = env.reset()  # and the next episode starts normally
        assert env.step(ACTION)[2:4] == (False, False)


def test_same_seed_gives_the_same_first_observation() -> None:
    with tab_env() as env, page_on(env, hello=True):
        first, _ = env.reset(seed=123)
        env.step(ACTION)
        again, _ = env.reset(seed=123)
        other, _ = env.reset(seed=124)
        unseeded, _ = env.reset()
        np.testing.assert_array_equal(first, again)
        assert not np.array_equal(first, other)
        assert not np.array_equal(other, unseeded)


def test_gymnasium_check_env_passes() -> None:
    with tab_env() as env, page_on(env, hello=True):
        check_env(env, skip_render_check=True)
        assert env.tab_failures == 0


def test_close_frees_the_port() -> None:
    env = TabEnv(free_port(), PageSettings(), LinkDeadlines(step_s=STEP_S, connect_s=5))
    port = env.port
    with page_on(env):
        env.reset()
        env.step(ACTION)
    env.close()
    again = TabEnv(port, PageSettings(), LinkDeadlines(step_s=STEP_S, connect_s=5))
    again.close()


@pytest.mark.parametrize("length", ["soon", None], ids=["string", "null"])
def test_final_state_with_a_non_numeric_episode_length_does_not_raise(length: object) -> None:
    final = {"type": "state", "observation": [0.0] * OBS_SIZE, "reward": 0.0, "done": True, "info": {"episode_length": length}}
    with tab_env(PageSettings(max_episode_steps=4)) as env, page_on(env, raw_after=1, raw_frame=json.dumps(final)):
        env.reset()
        env.step(ACTION)
        obs, _, terminated, truncated, _ = env.step(ACTION)
        assert terminated or truncated
        assert obs.shape == (OBS_SIZE,)
