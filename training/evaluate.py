"""Scoring a policy on tabs: mean episode reward of a checkpoint, or of random actions.

The learning check compares the two: PPO after training should clearly beat random driving.
Episodes cut short by a tab failure are not counted (their reward says nothing of the policy).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecEnv


@dataclass
class EvaluationResult:
    policy: str
    episodes: int
    mean_reward: float
    std_reward: float
    mean_length: float
    steps: int


def evaluate(venv: VecEnv, model_path: Path | None, episodes: int, deterministic: bool = True, seed: int = 0) -> EvaluationResult:
    model = PPO.load(model_path, device="cpu") if model_path else None
    rng = np.random.default_rng(seed)
    low, high = venv.action_space.low, venv.action_space.high
    obs = venv.reset()
    returns = np.zeros(venv.num_envs)
    lengths = np.zeros(venv.num_envs, dtype=int)
    finished: list[tuple[float, int]] = []
    steps = 0
    while len(finished) < episodes:
        if model is not None:
            actions, _ = model.predict(obs, deterministic=deterministic)
        else:
            actions = rng.uniform(low, high, size=(venv.num_envs, *low.shape)).astype(np.float32)
        obs, rewards, dones, infos = venv.step(actions)
        frozen = np.array(["tab_waiting" in info for info in infos])  # a slow or replaced tab's pause
        dones = dones & ~frozen
        returns += rewards
        lengths += ~frozen
        steps += int((~frozen).sum())
        for i in np.flatnonzero(dones):
            if "tab_failure" not in infos[i] and "worker_failure" not in infos[i]:
                finished.append((float(returns[i]), int(lengths[i])))
            returns[i], lengths[i] = 0.0, 0
    scores = np.array([r for r, _ in finished[:episodes]])
    return EvaluationResult(
        policy=str(model_path) if model_path else "random",
        episodes=len(scores),
        mean_reward=float(scores.mean()),
        std_reward=float(scores.std()),
        mean_length=float(np.mean([n for _, n in finished[:episodes]])),
        steps=steps,
    )
