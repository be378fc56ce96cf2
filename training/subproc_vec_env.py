"""SubprocVecEnv with deadlines, respawn and frozen steps.

`TabEnv` already turns tab failures into truncated steps. This class covers the worker
process itself dying or wedging (an exception, an OOM kill): SB3's `SubprocVecEnv` would
then raise `EOFError` or block forever. Here the broken worker is killed and started again
on the same port, and its env reports a truncated step, like any other tab failure.

It also keeps the other tabs stepping while one is slow or being replaced, as `InlineVecEnv`
does: a worker that says its tab failed (it then waits for the replacement page in `reset`),
or that answers `straggler_s` later than the first worker, gets frozen steps (its last
observation, reward 0: see training/outages.py) until its answer is in; no new action is sent
to it meanwhile.
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
from stable_baselines3.common.vec_env import SubprocVecEnv
from stable_baselines3.common.vec_env.base_vec_env import CloudpickleWrapper, VecEnvObs, VecEnvStepReturn

from training.outages import STRAGGLER_S, OutageLog, frozen_info

ERROR = "__worker_error__"
REPLACING = "__tab_replacing__"  # sent by a worker before it waits for a replacement page
RESET_DONE = "__reset_done__"  # the first observation of a recycled tab's new page, after its episode end


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
            if cmd == "step":
                observation, reward, terminated, truncated, info = env.step(data)
                done = terminated or truncated
                info["TimeLimit.truncated"] = truncated and not terminated
                reset_info: dict[str, Any] = {}
                if done:
                    info["terminal_observation"] = observation
                    if getattr(env.unwrapped, "recycle_due", lambda: False)():
                        # The whole episode now; the new page's first observation when it is there.
                        info["tab_recycling"] = True
                        remote.send((observation, reward, done, info, {}))
                        remote.send((RESET_DONE, env.reset()))
                        continue
                    if "tab_failure" in info:
                        remote.send((REPLACING, str(info["tab_failure"])))
                    observation, reset_info = env.reset()
                remote.send((observation, reward, done, info, reset_info))
            elif cmd == "reset":
                options = {"options": data[1]} if data[1] else {}
                remote.send(env.reset(seed=data[0], **options))
            elif cmd == "close":
                env.close()
                remote.send(None)
                break
            elif cmd == "get_spaces":
                remote.send((env.observation_space, env.action_space))
            elif cmd == "env_method":
                remote.send(env.get_wrapper_attr(data[0])(*data[1], **data[2]))
            elif cmd == "get_attr":
                remote.send(env.get_wrapper_attr(data))
            elif cmd == "has_attr":
                remote.send(hasattr(env.unwrapped, data) or hasattr(env, data))
            elif cmd == "set_attr":
                remote.send(env.set_wrapper_attr(data[0], data[1]))
            elif cmd == "is_wrapped":
                from stable_baselines3.common.env_util import is_wrapped

                remote.send(is_wrapped(env, data))
            elif cmd == "render":
                remote.send(env.render())
            else:
                raise NotImplementedError(f"`{cmd}` is not implemented in the worker")
        except (BrokenPipeError, EOFError):
            break
        except Exception:
            remote.send((ERROR, traceback.format_exc()))


def _is_error(result: Any) -> bool:
    return _is_tagged(result, ERROR)


def _is_tagged(result: Any, tag: str) -> bool:
    return isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], str) and result[0] == tag


class WorkerFailed(RuntimeError):
    """A worker failed outside a step (at start or reset) and could not be brought back."""


class ResilientSubprocVecEnv(SubprocVecEnv):
    """One worker process per env, each restarted on its own if it dies or stops answering."""

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
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.waiting = False
        self.closed = False
        self._env_fns = env_fns
        self._ctx = mp.get_context(start_method or ("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"))
        self._step_deadline_s = step_deadline_s
        self._max_respawns = max_respawns
        self._on_respawn = on_respawn or (lambda index, why: None)
        self.respawns = 0
        self.straggler_s = straggler_s
        self._ports = ports or list(range(len(env_fns)))  # names of the envs in outage reports
        self.outages = OutageLog(on_event or (lambda kind, fields: None))
        self._sent_at: dict[int, float] = {}  # workers with a step in flight, since when
        self._replacing: dict[int, str] = {}  # of those, the ones waiting for a replacement page: cause
        self._early: dict[int, Any] = {}  # step answers read outside step_wait (see _settle)
        self.remotes: list[Connection] = []
        self.processes: list[Any] = []
        for env_fn in env_fns:
            remote, process = self._start(env_fn)
            self.remotes.append(remote)
            self.processes.append(process)
        try:
            # Every worker, not just the first: an env that failed to start must say why now.
            spaces = [self._call(i, ("get_spaces", None), 120.0) for i in range(len(env_fns))]
        except BaseException:
            for index in range(len(self.processes)):
                self._kill(index)
            raise
        observation_space, action_space = spaces[0]
        self._last_obs = [np.zeros(observation_space.shape, dtype=observation_space.dtype) for _ in env_fns]
        super(SubprocVecEnv, self).__init__(len(env_fns), observation_space, action_space)

    def _start(self, env_fn: Callable[[], gym.Env]) -> tuple[Connection, Any]:
        remote, work_remote = self._ctx.Pipe()
        process = self._ctx.Process(target=_worker, args=(work_remote, remote, CloudpickleWrapper(env_fn)), daemon=True)
        process.start()
        work_remote.close()
        return remote, process

    def _call(self, index: int, message: tuple[str, Any], deadline_s: float) -> Any:
        with contextlib.suppress(BrokenPipeError, OSError):  # a failed worker left its error in the pipe
            self.remotes[index].send(message)
        return self._receive(index, deadline_s)

    def _receive(self, index: int, deadline_s: float) -> Any:
        remote = self.remotes[index]
        if not remote.poll(deadline_s):
            raise TimeoutError(f"env worker {index} gave no answer within {deadline_s:.0f} s")
        try:
            result = remote.recv()
        except (EOFError, OSError):
            raise WorkerFailed(f"env worker {index} died (exit code {self.processes[index].exitcode})") from None
        if _is_error(result):
            raise WorkerFailed(f"env worker {index} raised:\n{result[1]}")
        return result

    @property
    def frozen_steps(self) -> int:
        return self.outages.frozen_steps

    def step_async(self, actions: np.ndarray) -> None:
        self.outages.step_began()
        self._fresh: list[int] = []
        self._broken: dict[int, str] = {}
        for index, (remote, action) in enumerate(zip(self.remotes, actions, strict=True)):
            if index in self._sent_at:
                continue  # still busy with an earlier step: it gets frozen steps (module docstring)
            try:
                remote.send(("step", action))
            except (BrokenPipeError, OSError) as exc:
                self._broken[index] = f"worker pipe broken ({exc})"
                continue
            self._sent_at[index] = time.monotonic()
            self._fresh.append(index)
        self.waiting = True

    def step_wait(self) -> VecEnvStepReturn:
        results: dict[int, Any] = dict(self._early)
        self._early.clear()
        failed = dict(self._broken)
        grace_end: float | None = None
        while True:
            busy = [i for i in self._sent_at if i not in results and i not in failed]
            unsettled = [i for i in self._fresh if i in busy and i not in self._replacing]
            if not busy or ((results or failed) and not unsettled):
                break
            if (results or failed) and grace_end is None:
                grace_end = time.monotonic() + self.straggler_s
            now = time.monotonic()
            wedged_at = min(self._sent_at[i] for i in busy) + self._step_deadline_s
            end = wedged_at if grace_end is None else min(grace_end, wedged_at)
            if grace_end is not None and now >= grace_end:
                break
            for remote in wait([self.remotes[i] for i in busy], timeout=max(end - now, 0.0)):
                index = self.remotes.index(remote)  # type: ignore[arg-type]
                self._read_answer(index, results, failed)
            for index in busy:
                if index not in results and time.monotonic() - self._sent_at[index] > self._step_deadline_s:
                    failed[index] = f"no answer within {self._step_deadline_s:.0f} s (wedged)"
        self.waiting = False
        for index, why in failed.items():
            results[index] = self._respawn_and_truncate(index, why)
        answers: list[Any] = []
        for index in range(self.num_envs):
            if index in results:
                self._sent_at.pop(index, None)
                self._replacing.pop(index, None)
                if results[index][3].get("tab_recycling"):  # its new page's first observation follows
                    self._sent_at[index], self._replacing[index] = time.monotonic(), "recycle"
                answers.append(results[index])
            else:
                cause = self._replacing.get(index, "slow")
                self.outages.frozen(index, cause)
                answers.append((self._last_obs[index], 0.0, True, frozen_info(cause, self._last_obs[index]), {}))
        self.outages.step_ended(self._ports, sorted(results))
        obs, rewards, dones, infos, self.reset_infos = zip(*answers, strict=True)
        for index, o in enumerate(obs):
            self._last_obs[index] = o
        return np.stack(obs), np.stack(rewards), np.stack(dones), infos  # type: ignore[return-value]

    def _read_answer(self, index: int, results: dict[int, Any], failed: dict[int, str]) -> None:
        """One message from a busy worker: its step's answer, its failure, or a replacement notice."""
        try:
            result = self.remotes[index].recv()
        except (EOFError, OSError):
            failed[index] = f"worker process died (exit code {self.processes[index].exitcode})"
            return
        if _is_tagged(result, RESET_DONE):
            observation, reset_info = result[1]
            results[index] = (observation, 0.0, True, frozen_info("recycle", self._last_obs[index]), reset_info)
        elif _is_tagged(result, REPLACING):
            self._replacing[index] = result[1]
            if self.remotes[index].poll(0):  # the replacement may be there already
                self._read_answer(index, results, failed)
        elif _is_error(result):
            failed[index] = f"worker raised: {result[1].strip().splitlines()[-1]}"
        else:
            results[index] = result

    def _settle(self) -> None:
        """Read the answers of busy workers (before a reset or an env_method on the same pipe)."""
        for index in list(self._sent_at):
            if index in self._early:
                continue
            answer: dict[int, Any] = {}
            failed: dict[int, str] = {}
            while not answer and not failed:
                left = self._sent_at[index] + self._step_deadline_s - time.monotonic()
                if not self.remotes[index].poll(max(left, 0.0)):
                    failed[index] = f"no answer within {self._step_deadline_s:.0f} s (wedged)"
                    break
                self._read_answer(index, answer, failed)
            if failed:
                self._early[index] = self._respawn_and_truncate(index, failed[index])
            else:
                self._early[index] = answer[index]

    def _respawn_and_truncate(self, index: int, why: str) -> tuple[Any, ...]:
        self.respawns += 1
        self._on_respawn(index, why)
        if self.respawns > self._max_respawns:
            raise WorkerFailed(f"env workers were restarted {self.respawns} times; last: env {index}: {why}")
        self._kill(index)
        self.remotes[index], self.processes[index] = self._start(self._env_fns[index])
        obs, reset_info = self._call(index, ("reset", (None, None)), self._step_deadline_s)
        terminal = self._last_obs[index]
        info = {"TimeLimit.truncated": True, "terminal_observation": terminal, "worker_failure": why}
        return obs, 0.0, True, info, reset_info

    def reset(self) -> VecEnvObs:
        self._settle()
        self._early.clear()
        self._sent_at.clear()
        self._replacing.clear()
        for index, remote in enumerate(self.remotes):
            remote.send(("reset", (self._seeds[index], self._options[index])))
        results = [self._receive(index, self._step_deadline_s) for index in range(self.num_envs)]
        obs, self.reset_infos = zip(*results, strict=True)
        self._reset_seeds()
        self._reset_options()
        self._last_obs = list(obs)
        return np.stack(obs)

    def _get_target_remotes(self, indices: Any) -> list[Any]:
        self._settle()
        return [_DeadlineRemote(self, i) for i in self._get_indices(indices)]

    def _kill(self, index: int) -> None:
        process = self.processes[index]
        if process.is_alive():
            with contextlib.suppress(ProcessLookupError):  # it may exit between the check and the kill
                os.kill(process.pid, signal.SIGKILL)
        process.join(timeout=5)
        self.remotes[index].close()

    def close(self) -> None:
        if self.closed:
            return
        for remote in self.remotes:
            try:
                if self.waiting:
                    remote.poll(5) and remote.recv()
                remote.send(("close", None))
            except (BrokenPipeError, EOFError, OSError):
                pass
        for index, process in enumerate(self.processes):
            process.join(timeout=10)
            if process.is_alive():
                self._kill(index)
            self.remotes[index].close()
        self.closed = True


class _DeadlineRemote:
    """What `env_method`/`get_attr` talk to: a pipe whose answers have a deadline."""

    def __init__(self, venv: ResilientSubprocVecEnv, index: int) -> None:
        self._venv, self._index = venv, index

    def send(self, message: tuple[str, Any]) -> None:
        self._venv.remotes[self._index].send(message)

    def recv(self) -> Any:
        return self._venv._receive(self._index, self._venv._step_deadline_s)
