"""ResilientSubprocVecEnv with plain fake envs (no sockets): deadlines, respawn, clean close.

The envs are module-level classes, so the worker processes can unpickle them by reference.
Workers are started the product's default way (forkserver). So that each one does not import
torch again (about 3 s), the fork server preloads the worker module and this one; the preload
is set at import (collection) time, before any test of the session starts the fork server.
"""

from __future__ import annotations

import functools
import gc
import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import psutil
import pytest
from stable_baselines3.common.vec_env import SubprocVecEnv

from tests.conftest import assert_frozen
from training.outages import STRAGGLER_S
from training.subproc_vec_env import ResilientSubprocVecEnv, WorkerFailed

multiprocessing.set_forkserver_preload(["training.subproc_vec_env", __name__])
# The straggler grace of tests not about it: no busy machine's slow worker is taken for a straggler,
# and a test that must not wait for the grace would take that long if it did.
GRACE_S = 30.0


class CountingEnv(gym.Env):
    """obs = [index, step in episode, episode]; reward index + step; episode of `episode_len` steps.

    With `fail_at`, the step with that number (counted over this instance's life) fails by
    `mode`: 'raise' an exception, 'exit' the process, 'hang' forever, or 'tab' as `TabEnv` does
    for a failed tab (a truncated step with `tab_failure`, then a reset that waits `reset_delay`
    for the replacement page). With `once_file`, only the first instance to get there fails
    (the respawned one then works).
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        index: int = 0,
        episode_len: int = 1000,
        fail_at: int | None = None,
        mode: str = "raise",
        once_file: str | None = None,
        fail_in_init: bool = False,
        init_delay: float = 0.0,
        reset_delay: float = 0.0,
    ) -> None:
        time.sleep(init_delay)
        if fail_in_init:
            raise RuntimeError("env constructor failed")
        self.observation_space = gym.spaces.Box(low=0.0, high=1e6, shape=(3,), dtype=np.float32)
        self.action_space = gym.spaces.Box(low=-1.0, high=1.0, shape=(2,), dtype=np.float32)
        self.index, self.episode_len = index, episode_len
        self.fail_at, self.mode, self.once_file = fail_at, mode, once_file
        self.steps_total = 0
        self.step_no = 0
        self.episode = -1
        self.reset_delay = 0.0
        self._reset_delay_after_failure = reset_delay

    def _obs(self) -> np.ndarray:
        return np.array([self.index, self.step_no, self.episode], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        time.sleep(self.reset_delay)
        self.reset_delay = 0.0
        self.episode += 1
        self.step_no = 0
        return self._obs(), {"pid": os.getpid(), "seed": seed}

    def step(self, action: np.ndarray):
        self.steps_total += 1
        if self.fail_at is not None and self.steps_total == self.fail_at and self._should_fail():
            if self.mode == "raise":
                raise RuntimeError(f"env {self.index} broke on step {self.steps_total}")
            if self.mode == "exit":
                os._exit(1)
            if self.mode == "hang":
                time.sleep(1000)
            if self.mode == "tab":
                self.reset_delay = self._reset_delay_after_failure
                return self._obs(), 0.0, False, True, {"tab_failure": "crash", "pid": os.getpid()}
        self.step_no += 1
        terminated = self.step_no >= self.episode_len
        info = {"pid": os.getpid(), "action_sum": float(np.sum(action))}
        return self._obs(), float(self.index + self.step_no), terminated, False, info

    def _should_fail(self) -> bool:
        if self.once_file is None:
            return True
        if os.path.exists(self.once_file):
            return False
        Path(self.once_file).touch()
        return True


def make(index: int, **kwargs: Any) -> functools.partial[CountingEnv]:
    return functools.partial(CountingEnv, index, **kwargs)


def multiprocessing_helpers() -> set[int]:
    """The fork server and resource tracker: our own direct children, alive for the whole session by design.

    (Workers forked by the fork server share its command line, but they are its children, not ours.)
    """
    helpers = set()
    for proc in psutil.Process().children(recursive=False):
        try:
            cmdline = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        if "multiprocessing.forkserver" in cmdline or "multiprocessing.resource_tracker" in cmdline:
            helpers.add(proc.pid)
    return helpers


def live_children() -> set[int]:
    """Our descendants (workers included) that are alive, helpers excepted."""
    helpers = multiprocessing_helpers()
    found = set()
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.pid not in helpers and proc.status() != psutil.STATUS_ZOMBIE:
                found.add(proc.pid)
        except psutil.NoSuchProcess:
            pass
    return found


@pytest.fixture(scope="module", autouse=True)
def warm_fork_server() -> Iterator[None]:
    """Start the fork server (and its preload) once, outside the timed and leak-checked tests."""
    venv = ResilientSubprocVecEnv([make(0)], step_deadline_s=60)
    venv.close()
    yield


@pytest.fixture
def no_leftover_workers() -> Iterator[None]:
    before = live_children()
    yield
    deadline = time.monotonic() + 10
    while (left := live_children() - before) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"worker processes left behind: {left}"


class Respawns:
    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []

    def __call__(self, index: int, why: str) -> None:
        self.calls.append((index, why))


def step(venv: Any, n: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[dict[str, Any], ...]]:
    actions = np.full((venv.num_envs, 2), 0.25, dtype=np.float32)
    result = None
    for _ in range(n):
        result = venv.step(actions)
    assert result is not None
    return result


def test_normal_stepping_matches_sb3_subproc_vec_env(no_leftover_workers: None) -> None:
    fns = [make(0, episode_len=3), make(1, episode_len=4)]
    ours = ResilientSubprocVecEnv(fns, step_deadline_s=30, straggler_s=GRACE_S)
    theirs = SubprocVecEnv(fns)
    try:
        assert ours.num_envs == theirs.num_envs == 2
        assert ours.observation_space == theirs.observation_space
        assert ours.action_space == theirs.action_space
        ours.seed(7)
        theirs.seed(7)
        np.testing.assert_array_equal(ours.reset(), theirs.reset())
        assert [i["seed"] for i in ours.reset_infos] == [i["seed"] for i in theirs.reset_infos] == [7, 8]
        for _ in range(9):
            a_obs, a_rew, a_done, a_info = step(ours)
            b_obs, b_rew, b_done, b_info = step(theirs)
            np.testing.assert_array_equal(a_obs, b_obs)
            np.testing.assert_array_equal(a_rew, b_rew)
            np.testing.assert_array_equal(a_done, b_done)
            for mine, sb3 in zip(a_info, b_info, strict=True):
                assert set(mine) == set(sb3)
                assert mine["TimeLimit.truncated"] == sb3["TimeLimit.truncated"]
                if "terminal_observation" in sb3:
                    np.testing.assert_array_equal(mine["terminal_observation"], sb3["terminal_observation"])
        assert ours.get_attr("episode_len") == [3, 4]
        assert ours.env_method("_obs", indices=[1])[0].tolist() == b_obs[1].tolist()
        assert ours.respawns == 0
    finally:
        ours.close()
        theirs.close()


def test_episode_end_inside_the_worker_auto_resets() -> None:
    venv = ResilientSubprocVecEnv([make(0, episode_len=2)], step_deadline_s=30, straggler_s=GRACE_S)
    try:
        venv.reset()
        step(venv)
        obs, rew, done, info = step(venv)
        assert done[0] and not info[0]["TimeLimit.truncated"]
        assert info[0]["terminal_observation"].tolist() == [0, 2, 0]
        assert obs[0].tolist() == [0, 0, 1]
        assert "worker_failure" not in info[0]
    finally:
        venv.close()


@pytest.mark.parametrize(
    ("mode", "deadline_s", "why"),
    [("raise", 30.0, "raised"), ("exit", 30.0, "died"), ("hang", 2.0, "wedged")],
)
def test_broken_worker_costs_its_episode_only(
    mode: str, deadline_s: float, why: str, tmp_path: Path, no_leftover_workers: None
) -> None:
    respawned = Respawns()
    venv = ResilientSubprocVecEnv(
        [make(0, episode_len=10**9), make(1, fail_at=5, mode=mode, once_file=str(tmp_path / "failed")), make(2, episode_len=10**9)],
        step_deadline_s=deadline_s,
        on_respawn=respawned,
        straggler_s=GRACE_S,
    )
    try:
        venv.reset()
        obs, _, _, infos = step(venv, 4)
        assert obs[1].tolist() == [1, 4, 0]
        old_pid = infos[1]["pid"]
        # A wedged worker is waited for the default grace (0.5 s), then gets frozen steps until its
        # deadline. A worker that raised or died is known at once: with a 30 s grace, a wait would show.
        if mode == "hang":
            venv.straggler_s = STRAGGLER_S
        began = time.monotonic()
        obs, rewards, dones, infos = step(venv)  # env 1's worker fails on this step
        others_steps = 1
        while "tab_waiting" in infos[1]:
            # A wedged worker is only known at its deadline: meanwhile it gets frozen steps (its
            # last observation, reward 0) and the others step on.
            assert_frozen(dones[1], infos[1], "slow", np.array([1, 4, 0]))
            assert rewards[1] == 0.0 and obs[1].tolist() == [1, 4, 0]
            assert time.monotonic() - began < deadline_s + 5
            obs, rewards, dones, infos = step(venv)
            others_steps += 1
        elapsed = time.monotonic() - began
        assert elapsed < deadline_s + 5
        venv.straggler_s = GRACE_S
        if mode == "hang":
            assert elapsed >= deadline_s and others_steps > 1
            assert venv.frozen_steps == others_steps - 1
        else:
            assert others_steps == 1 and venv.frozen_steps == 0  # known at once: no frozen step
            assert elapsed < 10, f"a known failure waited {elapsed:.1f} s (the grace is {GRACE_S:g} s)"
        # the broken env: a truncated episode, bootstrapped from its last good observation
        assert dones[1] and rewards[1] == 0.0
        assert infos[1]["TimeLimit.truncated"] is True
        assert infos[1]["terminal_observation"].tolist() == [1, 4, 0]
        assert why in infos[1]["worker_failure"]
        assert obs[1].tolist() == [1, 0, 0], "the next observation comes from a fresh env"
        # the others: untouched
        for i in (0, 2):
            n = 4 + others_steps
            assert not dones[i] and obs[i].tolist() == [i, n, 0] and rewards[i] == i + n
            assert "worker_failure" not in infos[i]
        assert venv.respawns == 1
        assert respawned.calls == [(1, infos[1]["worker_failure"])]
        obs, _, dones, infos = step(venv, 3)
        assert not dones.any() and obs[1].tolist() == [1, 3, 0] and obs[0].tolist() == [0, 7 + others_steps, 0]
        assert infos[1]["pid"] != old_pid
        assert not psutil.pid_exists(old_pid) or psutil.Process(old_pid).status() == psutil.STATUS_ZOMBIE
        assert venv.respawns == 1
    finally:
        venv.close()


def test_a_tab_being_replaced_gets_frozen_steps_at_once_and_the_others_step_on(no_leftover_workers: None) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    venv = ResilientSubprocVecEnv(
        [make(0, episode_len=10**9), make(1, fail_at=3, mode="tab", reset_delay=1.0)],
        step_deadline_s=30,
        straggler_s=GRACE_S,  # far longer than the replacement: the worker's notice must spare the others the grace
        ports=[9001, 9002],
        on_event=lambda kind, fields: events.append((kind, fields)),
    )
    try:
        venv.reset()
        step(venv, 2)
        began = time.monotonic()
        obs, rewards, dones, infos = step(venv)  # env 1's tab fails; its reset waits 1 s for the new page
        assert time.monotonic() - began < 10
        assert not dones[0] and obs[1].tolist() == [1, 2, 0]
        assert_frozen(dones[1], infos[1], "crash", np.array([1, 2, 0]))
        frozen = 1
        while "tab_waiting" in infos[1]:
            assert time.monotonic() - began < 10
            obs, rewards, dones, infos = step(venv)
            frozen += "tab_waiting" in infos[1]
        assert infos[1]["tab_failure"] == "crash" and infos[1]["TimeLimit.truncated"] is True
        assert obs[1].tolist() == [1, 0, 1] and infos[1]["terminal_observation"].tolist() == [1, 2, 0]
        assert obs[0].tolist() == [0, 3 + frozen, 0]  # env 0 stepped at every vec step
        assert frozen >= 2 and venv.frozen_steps == frozen
        (began_report, (kind, outage)) = events
        assert began_report == ("outage_began", {"port": 9002, "cause": "crash"})
        assert kind == "outage" and outage["port"] == 9002 and outage["cause"] == "crash"
        assert outage["frozen_steps"] == frozen and outage["seconds"] >= 0.9 and outage["others_longest_wait_s"] < 10
        venv.env_method("get_wrapper_attr", "episode")  # the pipes are in step again
        obs, _, dones, _ = step(venv)
        assert not dones.any() and obs[1].tolist() == [1, 1, 1]
    finally:
        venv.close()


def test_an_env_method_during_an_outage_waits_for_the_answer_and_keeps_it(no_leftover_workers: None) -> None:
    venv = ResilientSubprocVecEnv([make(0, episode_len=10**9), make(1, fail_at=2, mode="tab", reset_delay=0.6)], step_deadline_s=30,
                                  straggler_s=GRACE_S)
    try:
        venv.reset()
        step(venv)
        _, _, dones, infos = step(venv)
        assert_frozen(dones[1], infos[1], "crash")
        assert venv.get_attr("episode") == [0, 1]  # answered after the pending step (the reset is done)
        obs, _, dones, infos = step(venv)  # the pending answer, kept for the trainer
        assert dones[1] and infos[1]["tab_failure"] == "crash" and obs[1].tolist() == [1, 0, 1]
    finally:
        venv.close()


def test_worker_killed_between_steps_is_respawned(no_leftover_workers: None) -> None:
    venv = ResilientSubprocVecEnv([make(0), make(1)], step_deadline_s=30, straggler_s=GRACE_S)
    try:
        venv.reset()
        step(venv, 2)
        victim = venv.processes[0].pid
        os.kill(victim, signal.SIGKILL)  # e.g. the OOM killer, while the trainer does a PPO update
        venv.processes[0].join(5)
        obs, _, dones, infos = step(venv)
        assert dones[0] and infos[0]["TimeLimit.truncated"] and "worker_failure" in infos[0]
        assert infos[0]["terminal_observation"].tolist() == [0, 2, 0]
        assert not dones[1] and obs[1].tolist() == [1, 3, 0]
        assert venv.respawns == 1
        obs, _, dones, _ = step(venv)
        assert not dones.any() and obs[0].tolist() == [0, 1, 0]
    finally:
        venv.close()


def test_a_worker_that_exits_just_before_its_kill_is_respawned(no_leftover_workers: None) -> None:
    """The worker of mode 'exit' can be gone between is_alive() and the kill (seen in CI)."""
    venv = ResilientSubprocVecEnv([make(0), make(1)], step_deadline_s=30, straggler_s=GRACE_S)
    try:
        venv.reset()
        os.kill(venv.processes[1].pid, signal.SIGKILL)
        venv.processes[1].join(5)
        venv.processes[1].is_alive = lambda: True  # type: ignore[method-assign]  # the race, made certain
        obs, _, dones, infos = step(venv)
        assert dones[1] and "worker_failure" in infos[1] and venv.respawns == 1
        assert not dones[0] and obs[0].tolist() == [0, 1, 0]
    finally:
        venv.close()


def test_close_leaves_no_child_process() -> None:
    before = live_children()
    venv = ResilientSubprocVecEnv(
        [make(0), make(1, fail_at=2, mode="hang"), make(2)], step_deadline_s=2.0
    )
    venv.reset()
    step(venv, 2)  # env 1 wedges (frozen steps until its deadline), then is replaced
    deadline = time.monotonic() + 10
    while venv.respawns == 0 and time.monotonic() < deadline:
        step(venv)
    assert venv.respawns == 1  # one killed worker and three live ones
    pids = [p.pid for p in venv.processes]
    assert all(p.is_alive() for p in venv.processes)
    assert set(pids) <= live_children() - before
    venv.close()
    assert not any(p.is_alive() for p in venv.processes)
    assert live_children() - before == set()
    venv.close()  # closing twice is harmless


def test_max_respawns_exceeded_raises_worker_failed(no_leftover_workers: None) -> None:
    respawned = Respawns()
    venv = ResilientSubprocVecEnv(
        [make(0), make(1, fail_at=1, mode="raise")], step_deadline_s=30, max_respawns=2, on_respawn=respawned, straggler_s=GRACE_S
    )
    try:
        venv.reset()
        for expected in (1, 2):  # every fresh env 1 fails on its first step
            _, _, dones, infos = step(venv)
            assert dones[1] and "worker_failure" in infos[1] and venv.respawns == expected
        with pytest.raises(WorkerFailed, match="restarted 3 times") as caught:
            step(venv)
        assert "env 1" in str(caught.value) and "broke on step 1" in str(caught.value)
        assert [index for index, _ in respawned.calls] == [1, 1, 1]
    finally:
        venv.close()


def check_failed_start(env_fns: list[Any]) -> None:
    """Starting these envs raises WorkerFailed with the env's own error, and leaves no worker behind."""
    before = live_children()
    try:
        with pytest.raises(WorkerFailed, match="env constructor failed"):
            venv = ResilientSubprocVecEnv(env_fns, step_deadline_s=30)
            venv.reset()
        # The workers already started are not closed by the constructor: they only stop (on EOF)
        # once the half-built object is garbage collected, hence the explicit collection here.
        gc.collect()
        deadline = time.monotonic() + 5
        while (left := live_children() - before) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not left, f"workers left running after the failed start: {left}"
    finally:
        gc.collect()
        for pid in live_children() - before:
            os.kill(pid, signal.SIGKILL)


def test_env_that_cannot_be_built_raises_worker_failed() -> None:
    # the broken env fails while the start-up requests are still on their way
    check_failed_start([make(0), make(1, fail_in_init=True, init_delay=1.0), make(2)])


def test_env_that_cannot_be_built_is_reported_even_when_its_worker_is_already_gone() -> None:
    check_failed_start([make(0, init_delay=1.0), make(1), make(2, fail_in_init=True)])
