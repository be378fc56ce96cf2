"""The null env: the tab env's spaces and outputs with no browser behind them.

It answers instantly, so whatever speed a vec env of it reaches is the ceiling of the
plumbing (SB3, the policy, numpy); `lunarfleet bench` compares the tabs against it.
`NullEnv` is a plain Gymnasium env (for `DummyVecEnv` or checks); `NullVecEnv` is the
vectorised one the benchmark uses, with the same step outputs as `InlineVecEnv`: an info
dict per env shaped like the page's, episodes ending every `max_episode_steps` steps as a
truncation with `terminal_observation`, and Monitor's `episode` entry at each end.
"""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from training.step_round import EPISODE, TERMINAL_OBS, TRUNCATED
from training.tab_env import action_space, observation_space

BANK = 1024  # distinct observations cycled through (drawn once: no RNG cost per step)


def _info(length: int) -> dict[str, Any]:
    """Shaped like the embedded page's info."""
    return {
        "episode_length": length,
        "orbs_collected": 0,
        "orbs_deposited_construction": 0,
        "orbs_deposited_berm": 0,
        "collision_occurred": False,
        "zone": "start",
        "total_reward": 0.0,
    }


class NullEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, max_episode_steps: int = 1000, seed: int = 0) -> None:
        self.observation_space = observation_space()
        self.action_space = action_space()
        self.max_episode_steps = max_episode_steps
        self._bank = np.random.default_rng(seed).uniform(-1, 1, (BANK, self.observation_space.shape[0])).astype(np.float32)
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._t = 0
        return self._bank[0].copy(), _info(0)

    def step(self, action: np.ndarray):
        self._t += 1
        truncated = self._t >= self.max_episode_steps
        return self._bank[self._t % BANK].copy(), 0.01, False, truncated, _info(self._t)


class NullVecEnv(VecEnv):
    """`num_envs` null envs stepped as arrays, in this process."""

    def __init__(self, num_envs: int, max_episode_steps: int = 1000, seed: int = 0) -> None:
        self.render_mode = None
        super().__init__(num_envs, observation_space(), action_space())
        self.max_episode_steps = max_episode_steps
        size = self.observation_space.shape[0]
        self._bank = np.random.default_rng(seed).uniform(-1, 1, (BANK, num_envs, size)).astype(np.float32)
        # staggered episode clocks, as real episodes never end all at once
        self._t = np.arange(num_envs) * max(max_episode_steps // max(num_envs, 1), 1) % max_episode_steps
        self._returns = np.zeros(num_envs)
        self._began = time.time()
        self._step_count = 0
        self._actions: np.ndarray | None = None

    def reset(self) -> VecEnvObs:
        self._t[:] = 0
        self._returns[:] = 0.0
        self.reset_infos = [_info(0) for _ in range(self.num_envs)]
        self._reset_seeds()
        self._reset_options()
        return self._bank[0].copy()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        self._step_count += 1
        self._t += 1
        obs = self._bank[self._step_count % BANK].copy()
        rewards = np.full(self.num_envs, 0.01, dtype=np.float32)
        self._returns += rewards
        dones = self._t >= self.max_episode_steps
        infos = [_info(int(t)) for t in self._t]
        for i in np.flatnonzero(dones):
            info = infos[i]
            info[TRUNCATED] = True
            info[TERMINAL_OBS] = obs[i].copy()
            info[EPISODE] = {"r": round(float(self._returns[i]), 6), "l": int(self._t[i]), "t": round(time.time() - self._began, 6)}
            obs[i] = self._bank[0, i]
            self._t[i] = 0
            self._returns[i] = 0.0
        return obs, rewards, dones, infos

    def close(self) -> None:
        pass

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any) -> list[Any]:
        return [None for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]
