"""SubprocVecEnv with deadlines and respawn: the second line of defence behind `TabEnv`.

`TabEnv` already turns tab failures into truncated steps. This class covers the worker
process itself dying or wedging (an exception, an OOM kill): SB3's `SubprocVecEnv` would
then raise `EOFError` or block forever. Here the broken worker is killed and started again
on the same port, and its env reports a truncated step, like any other tab failure.
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

ERROR = "__worker_error__"


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
    return isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], str) and result[0] == ERROR


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
    ) -> None:
        self.waiting = False
        self.closed = False
        self._env_fns = env_fns
        self._ctx = mp.get_context(start_method or ("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"))
        self._step_deadline_s = step_deadline_s
        self._max_respawns = max_respawns
        self._on_respawn = on_respawn or (lambda index, why: None)
        self.respawns = 0
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

    def step_async(self, actions: np.ndarray) -> None:
        self._pending: dict[int, str] = {}
        for index, (remote, action) in enumerate(zip(self.remotes, actions, strict=True)):
            try:
                remote.send(("step", action))
            except (BrokenPipeError, OSError) as exc:
                self._pending[index] = f"worker pipe broken ({exc})"
        self.waiting = True

    def step_wait(self) -> VecEnvStepReturn:
        results: list[Any] = [None] * self.num_envs
        failed = dict(self._pending)
        waiting = {self.remotes[i]: i for i in range(self.num_envs) if i not in failed}
        end = time.monotonic() + self._step_deadline_s
        while waiting:
            ready = wait(list(waiting), timeout=max(end - time.monotonic(), 0.0))
            if not ready:
                for index in waiting.values():
                    failed[index] = f"no answer within {self._step_deadline_s:.0f} s (wedged)"
                break
            for remote in ready:
                index = waiting.pop(remote)  # type: ignore[arg-type]
                try:
                    result = remote.recv()  # type: ignore[union-attr]
                except (EOFError, OSError):
                    failed[index] = f"worker process died (exit code {self.processes[index].exitcode})"
                    continue
                if _is_error(result):
                    failed[index] = f"worker raised: {result[1].strip().splitlines()[-1]}"
                    continue
                results[index] = result
        self.waiting = False
        for index, why in failed.items():
            results[index] = self._respawn_and_truncate(index, why)
        obs, rewards, dones, infos, self.reset_infos = zip(*results, strict=True)
        for index, o in enumerate(obs):
            self._last_obs[index] = o
        return np.stack(obs), np.stack(rewards), np.stack(dones), infos  # type: ignore[return-value]

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
        for index, remote in enumerate(self.remotes):
            remote.send(("reset", (self._seeds[index], self._options[index])))
        results = [self._receive(index, self._step_deadline_s) for index in range(self.num_envs)]
        obs, self.reset_infos = zip(*results, strict=True)
        self._reset_seeds()
        self._reset_options()
        self._last_obs = list(obs)
        return np.stack(obs)

    def _get_target_remotes(self, indices: Any) -> list[Any]:
        return [_DeadlineRemote(self, i) for i in self._get_indices(indices)]

    def _kill(self, index: int) -> None:
        process = self.processes[index]
        if process.is_alive():
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
