"""The vec env of tabs: SB3's `VecEnv`, with `step()` written once over a pluggable transport.

A transport moves actions to a group of tabs and answers back; the step round
(`training/step_round.py`) decides what each tab's envs get. Transports differ only in where
the tabs are driven from: `InlineVecEnv` (one asyncio loop in this process) and
`ResilientSubprocVecEnv` (one worker process per tab). A transport repairs its own tabs
(waits for a replacement page, respawns a worker) and says so through its answers: a
`Failed`, then a `Back` with the new page's first observations.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from training.outages import STRAGGLER_S, OutageLog
from training.step_round import Answer, StepRound

Report = Callable[[str, dict[str, Any]], None]


class Transport(ABC):
    """Sends a group of tabs their actions in one call and collects their answers."""

    @abstractmethod
    def send(self, actions: dict[int, np.ndarray]) -> None:
        """Start one step of each listed tab, with its (K, action size) actions."""

    @abstractmethod
    def collect(self, timeout: float | None) -> list[tuple[int, Answer]]:
        """The answers in within `timeout` s (None: wait for at least one). Raises only when
        training cannot go on (a port empty past its connect deadline, too many respawns)."""

    @abstractmethod
    def reset(self, seeds: list[int | None], options: list[dict[str, Any]]) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """New episodes everywhere, after the work in flight has settled (its answers dropped)."""

    @abstractmethod
    def get_attr(self, attr_name: str, envs: list[int]) -> list[Any]: ...

    @abstractmethod
    def set_attr(self, attr_name: str, value: Any, envs: list[int]) -> None: ...

    @abstractmethod
    def env_method(self, method_name: str, args: tuple[Any, ...], kwargs: dict[str, Any], envs: list[int]) -> list[Any]: ...

    @abstractmethod
    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], envs: list[int]) -> list[bool]: ...

    @abstractmethod
    def close(self) -> None: ...


class TabVecEnv(VecEnv):
    """Tabs x K simulations as SB3 envs; a slow or failed tab never stalls the others."""

    def __init__(
        self,
        transport: Transport,
        ports: Sequence[int],
        sims: int,
        observation_space: gym.spaces.Space,
        action_space: gym.spaces.Space,
        *,
        straggler_s: float = STRAGGLER_S,
        count_episodes: bool,
        on_outage: Report | None = None,
    ) -> None:
        self.transport = transport
        self.ports = list(ports)
        self.sims = sims
        # where each outage is reported when it ends ("outage", fields): the fleet, in the trainer process
        self.outages = OutageLog(on_outage or (lambda kind, fields: None))
        assert observation_space.shape is not None
        self.closed = False
        try:
            self.round = StepRound(
                len(self.ports), sims, observation_space.shape, self.outages, self.ports,
                straggler_s=straggler_s, count_episodes=count_episodes, obs_dtype=observation_space.dtype,
            )
            super().__init__(len(self.ports) * sims, observation_space, action_space)
            self._actions_shape = (self.num_envs, *(action_space.shape or ()))
        except BaseException:
            self.close()
            raise

    @property
    def straggler_s(self) -> float:
        """How long the other tabs wait for a slow one before it gets frozen steps."""
        return self.round.straggler_s

    @straggler_s.setter
    def straggler_s(self, value: float) -> None:
        self.round.straggler_s = value

    @property
    def frozen_steps(self) -> int:
        return self.outages.frozen_steps

    def reset(self) -> VecEnvObs:
        obs, self.reset_infos = self.transport.reset(list(self._seeds), list(self._options))
        self.round.restart(obs)
        self._reset_seeds()
        self._reset_options()
        return obs.copy()

    def step_async(self, actions: np.ndarray) -> None:
        # A page sent a wrong-sized action answers nothing: refuse it here, with the cause.
        if np.shape(actions) != self._actions_shape:
            raise ValueError(f"actions of shape {np.shape(actions)}: this vec env takes {self._actions_shape}, "
                             f"one action of {self._actions_shape[1:]} per env")
        self.outages.step_began()
        k = self.sims
        tabs = self.round.begin(time.monotonic())
        self.transport.send({j: actions[j * k : (j + 1) * k] for j in tabs})
        self.waiting = True

    def step_wait(self) -> VecEnvStepReturn:
        try:
            while (timeout := self.round.wait_s(time.monotonic())) != 0.0:
                answers = self.transport.collect(timeout)
                if timeout is None and not answers:
                    raise RuntimeError("the vec env waits for a tab, but its transport has nothing in flight")
                for tab, answer in answers:
                    self.round.answer(tab, answer, time.monotonic())
        finally:
            self.waiting = False
        obs, rewards, dones, infos, self.reset_infos = self.round.finish()
        return obs, rewards, dones, infos

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.outages.close(self.ports)
            self.transport.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return self.transport.get_attr(attr_name, list(self._get_indices(indices)))

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        self.transport.set_attr(attr_name, value, list(self._get_indices(indices)))

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any) -> list[Any]:
        return self.transport.env_method(method_name, method_args, method_kwargs, list(self._get_indices(indices)))

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return self.transport.env_is_wrapped(wrapper_class, list(self._get_indices(indices)))
