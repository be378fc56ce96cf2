"""The worker-process transport: one env per process, as users of SB3's `SubprocVecEnv` know it.

`TabEnv` already turns tab failures into truncated steps; this covers the worker process itself
dying or wedging (an exception, an OOM kill), where SB3's `SubprocVecEnv` would raise
`EOFError` or block forever. Here the broken worker is killed and started again on the same
port, and its env's episode ends truncated like any other tab failure. What each answer means
for the vec step is the step round's (`training/step_round.py`); the envs report their own
episodes (`Monitor` in the worker).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import CloudpickleWrapper

from training.outages import STRAGGLER_S
from training.step_round import (
    TAB_FAILURE,
    TAB_RECYCLING,
    TERMINAL_OBS,
    TRUNCATED,
    WORKER_FAILURE,
    Answer,
    Back,
    Failed,
    Stepped,
)
from training.tab_vec_env import Report, TabVecEnv, Transport

ERROR = "__worker_error__"
FAILED = "__tab_failed__"  # the env's tab failed: (tag, info); its first observation after the repair follows
BACK = "__tab_back__"  # (tag, (observation, reset_info)) of the env's new page, after a failure or a recycle


def _worker(remote: Connection, parent_remote: Connection, env_fn: CloudpickleWrapper) -> None:
    """Like SB3's worker, but an exception is sent back instead of killing the process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the trainer's to handle, not ours
    parent_remote.close()
    try:
        env = env_fn.var()
    except Exception:
        remote.send((ERROR, traceback.format_exc()))
        return
    while True:
        try:
            cmd, data = remote.recv()
        except (EOFError, OSError):
            break  # the trainer is gone
        try:
            if cmd == "close":
                env.close()
                remote.send(None)
                break
            if cmd == "step":
                _step(env, data, remote)
            else:
                remote.send(_command(env, cmd, data))
        except (BrokenPipeError, EOFError):
            break
        except Exception:
            remote.send((ERROR, traceback.format_exc()))


def _step(env: gym.Env, action: np.ndarray, remote: Connection) -> None:
    observation, reward, terminated, truncated, info = env.step(action)
    done = terminated or truncated
    info[TRUNCATED] = truncated and not terminated
    if not done:
        remote.send((observation, reward, done, info, {}))
        return
    if TAB_FAILURE in info:  # the tab failed: the reset waits for its replacement page
        remote.send((FAILED, info))
        remote.send((BACK, env.reset()))
        return
    info[TERMINAL_OBS] = observation
    if getattr(env.unwrapped, "recycle_due", lambda: False)():
        # The whole episode now; the new page's first observation when it is there.
        info[TAB_RECYCLING] = True
        remote.send((observation, reward, done, info, {}))
        remote.send((BACK, env.reset()))
        return
    observation, reset_info = env.reset()
    remote.send((observation, reward, done, info, reset_info))


def _command(env: gym.Env, cmd: str, data: Any) -> Any:
    if cmd == "reset":
        options = {"options": data[1]} if data[1] else {}
        return env.reset(seed=data[0], **options)
    if cmd == "get_spaces":
        return env.observation_space, env.action_space
    if cmd == "env_method":
        return env.get_wrapper_attr(data[0])(*data[1], **data[2])
    if cmd == "get_attr":
        return env.get_wrapper_attr(data)
    if cmd == "set_attr":
        return env.set_wrapper_attr(data[0], data[1])
    if cmd == "is_wrapped":
        from stable_baselines3.common.env_util import is_wrapped

        return is_wrapped(env, data)
    raise NotImplementedError(f"`{cmd}` is not implemented in the worker")


def _tagged(result: Any, tag: str) -> bool:
    return isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], str) and result[0] == tag


class WorkerFailed(RuntimeError):
    """A worker failed outside a step (at start or reset) and could not be brought back."""


class SubprocTransport(Transport):
    """One worker process per env, each restarted on its own if it dies or stops answering."""

    def __init__(
        self,
        env_fns: list[Callable[[], gym.Env]],
        ctx: Any,
        step_deadline_s: float,
        max_respawns: int,
        on_respawn: Callable[[int, str], None],
    ) -> None:
        self._env_fns, self._ctx = env_fns, ctx
        self._step_deadline_s, self._max_respawns, self._on_respawn = step_deadline_s, max_respawns, on_respawn
        self.respawns = 0
        self._sent_at: dict[int, float] = {}  # workers with a step (or its repair) in flight, since when
        self._early: list[tuple[int, Answer]] = []  # answers read outside `collect` (see `_settle`)
        self.remotes: list[Connection] = []
        self.processes: list[Any] = []
        for env_fn in env_fns:
            remote, process = self._start(env_fn)
            self.remotes.append(remote)
            self.processes.append(process)
        try:
            # Every worker, not just the first: an env that failed to start must say why now.
            self.spaces = [self._call(i, ("get_spaces", None)) for i in range(len(env_fns))][0]
        except BaseException:
            for index in range(len(self.processes)):
                self._kill(index)
            raise

    def _start(self, env_fn: Callable[[], gym.Env]) -> tuple[Connection, Any]:
        remote, work_remote = self._ctx.Pipe()
        process = self._ctx.Process(target=_worker, args=(work_remote, remote, CloudpickleWrapper(env_fn)), daemon=True)
        process.start()
        work_remote.close()
        return remote, process

    def _call(self, index: int, message: tuple[str, Any], deadline_s: float | None = None) -> Any:
        with contextlib.suppress(BrokenPipeError, OSError):  # a failed worker left its error in the pipe
            self.remotes[index].send(message)
        return self._receive(index, self._step_deadline_s if deadline_s is None else deadline_s)

    def _receive(self, index: int, deadline_s: float) -> Any:
        remote = self.remotes[index]
        if not remote.poll(deadline_s):
            raise TimeoutError(f"env worker {index} gave no answer within {deadline_s:.0f} s")
        try:
            result = remote.recv()
        except (EOFError, OSError):
            raise WorkerFailed(f"env worker {index} died (exit code {self.processes[index].exitcode})") from None
        if _tagged(result, ERROR):
            raise WorkerFailed(f"env worker {index} raised:\n{result[1]}")
        return result

    # ---- Transport ---------------------------------------------------------------------
    def send(self, actions: dict[int, np.ndarray]) -> None:
        for index, action in actions.items():
            try:
                self.remotes[index].send(("step", action[0]))
            except (BrokenPipeError, OSError) as exc:
                self._early += self._respawn(index, f"worker pipe broken ({exc})")
                continue
            self._sent_at[index] = time.monotonic()

    def collect(self, timeout: float | None) -> list[tuple[int, Answer]]:
        if self._early:
            early, self._early = self._early, []
            return early
        return self._poll(timeout)

    def _poll(self, timeout: float | None) -> list[tuple[int, Answer]]:
        """Read what the busy workers send within `timeout` (None: until something is in)."""
        end = None if timeout is None else time.monotonic() + timeout
        answers: list[tuple[int, Answer]] = []
        while self._sent_at:
            wedged_at = min(self._sent_at.values()) + self._step_deadline_s
            until = wedged_at if end is None else min(end, wedged_at)
            for remote in wait([self.remotes[i] for i in self._sent_at], timeout=max(until - time.monotonic(), 0.0)):
                answers += self._read(self.remotes.index(remote))  # type: ignore[arg-type]
            for index, sent in list(self._sent_at.items()):
                if time.monotonic() - sent > self._step_deadline_s:
                    answers += self._respawn(index, f"no answer within {self._step_deadline_s:.0f} s (wedged)")
            if answers or (end is not None and time.monotonic() >= end):
                break
        return answers

    def _read(self, index: int) -> list[tuple[int, Answer]]:
        """One message from a busy worker: its step, its tab's failure, or its new page."""
        try:
            result = self.remotes[index].recv()
        except (EOFError, OSError):
            return self._respawn(index, f"worker process died (exit code {self.processes[index].exitcode})")
        if _tagged(result, ERROR):
            return self._respawn(index, f"worker raised: {result[1].strip().splitlines()[-1]}")
        if _tagged(result, FAILED):
            return [(index, Failed(str(result[1][TAB_FAILURE]), result[1]))]
        if _tagged(result, BACK):
            del self._sent_at[index]
            observation, reset_info = result[1]
            return [(index, Back(np.asarray(observation)[None], [reset_info]))]
        observation, reward, done, info, reset_info = result
        recycling = bool(info.get(TAB_RECYCLING))
        if recycling:
            self._sent_at[index] = time.monotonic()  # its new page's first observation follows
        else:
            del self._sent_at[index]
        answer = Stepped(np.asarray(observation)[None], np.array([reward]), np.array([done]), [info], recycling, [reset_info])
        return [(index, answer)]

    def _respawn(self, index: int, why: str) -> list[tuple[int, Answer]]:
        """A new worker on the same env: the old one's episode ends truncated."""
        self._sent_at.pop(index, None)
        self.respawns += 1
        self._on_respawn(index, why)
        if self.respawns > self._max_respawns:
            raise WorkerFailed(f"env workers were restarted {self.respawns} times; last: env {index}: {why}")
        self._kill(index)
        self.remotes[index], self.processes[index] = self._start(self._env_fns[index])
        observation, reset_info = self._call(index, ("reset", (None, None)))
        return [(index, Failed("worker", {WORKER_FAILURE: why})), (index, Back(np.asarray(observation)[None], [reset_info]))]

    def _settle(self) -> None:
        """Read the answers of busy workers (before a reset or a call on the same pipes); they
        are handed to the next `collect`."""
        while self._sent_at:
            self._early += self._poll(None)

    def reset(self, seeds: list[int | None], options: list[dict[str, Any]]) -> tuple[np.ndarray, list[dict[str, Any]]]:
        self._settle()
        self._early.clear()
        for index, remote in enumerate(self.remotes):
            remote.send(("reset", (seeds[index], options[index])))
        results = [self._receive(index, self._step_deadline_s) for index in range(len(self.remotes))]
        obs, infos = zip(*results, strict=True)
        return np.stack(obs), list(infos)

    def _each(self, envs: list[int], message: tuple[str, Any]) -> list[Any]:
        self._settle()
        for index in envs:
            self.remotes[index].send(message)
        return [self._receive(index, self._step_deadline_s) for index in envs]

    def get_attr(self, attr_name: str, envs: list[int]) -> list[Any]:
        return self._each(envs, ("get_attr", attr_name))

    def set_attr(self, attr_name: str, value: Any, envs: list[int]) -> None:
        self._each(envs, ("set_attr", (attr_name, value)))

    def env_method(self, method_name: str, args: tuple[Any, ...], kwargs: dict[str, Any], envs: list[int]) -> list[Any]:
        return self._each(envs, ("env_method", (method_name, args, kwargs)))

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], envs: list[int]) -> list[bool]:
        return self._each(envs, ("is_wrapped", wrapper_class))

    def _kill(self, index: int) -> None:
        process = self.processes[index]
        if process.is_alive():
            with contextlib.suppress(ProcessLookupError):  # it may exit between the check and the kill
                os.kill(process.pid, signal.SIGKILL)
        process.join(timeout=5)
        self.remotes[index].close()

    def close(self) -> None:
        for index, remote in enumerate(self.remotes):
            try:
                if index in self._sent_at:
                    remote.poll(5) and remote.recv()
                remote.send(("close", None))
            except (BrokenPipeError, EOFError, OSError):
                pass
        for index, process in enumerate(self.processes):
            process.join(timeout=10)
            if process.is_alive():
                self._kill(index)
            self.remotes[index].close()


class ResilientSubprocVecEnv(TabVecEnv):
    """SB3's `SubprocVecEnv`, with deadlines, respawn and frozen steps (module docstring)."""

    def __init__(
        self,
        env_fns: list[Callable[[], gym.Env]],
        *,
        step_deadline_s: float = 150.0,
        max_respawns: int = 20,
        on_respawn: Callable[[int, str], None] | None = None,
        start_method: str | None = None,
        straggler_s: float = STRAGGLER_S,
        ports: list[int] | None = None,
        on_event: Report | None = None,  # where outages are reported
    ) -> None:
        method = start_method or ("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
        transport = SubprocTransport(
            env_fns, mp.get_context(method), step_deadline_s, max_respawns, on_respawn or (lambda index, why: None)
        )
        observation_space, action_space = transport.spaces
        super().__init__(
            transport, ports or list(range(len(env_fns))), 1, observation_space, action_space,
            straggler_s=straggler_s, count_episodes=False, on_outage=on_event,
        )

    @property
    def respawns(self) -> int:
        return self._subprocs.respawns

    @property
    def processes(self) -> list[Any]:
        return self._subprocs.processes

    @property
    def remotes(self) -> list[Connection]:
        return self._subprocs.remotes

    @property
    def _subprocs(self) -> SubprocTransport:
        assert isinstance(self.transport, SubprocTransport)
        return self.transport
