"""Scoring a policy on tabs: a checkpoint, or random actions, by reward and by what it achieved.

The learning check compares the two: PPO after training should clearly beat random driving, and
not only by reward: a policy that crashes at once also earns more than random driving when
per-step penalties are large (issue 19), so the task metrics (training/task_metrics.py) are
scored beside it and `--against-random` runs both on the same tabs. Episodes cut short by a tab
failure are not counted (their reward says nothing of the policy).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecEnv

from training.step_round import TAB_WAITING
from training.task_metrics import (
    EpisodeOutcome,
    TaskSummary,
    actions_name,
    compare_with_random,
    ended_by_failure,
    gaming_verdict,
)


@dataclass
class EvaluationResult:
    policy: str
    episodes: int
    mean_reward: float
    std_reward: float
    mean_length: float
    steps: int
    task: dict[str, Any] = field(default_factory=dict)  # TaskSummary.to_json(): fractions and means
    outcomes: list[EpisodeOutcome] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "outcomes"}


class Policy(Protocol):
    """What `evaluate` needs of a model (SB3's `predict`)."""

    def predict(self, observation: np.ndarray, *, deterministic: bool = ...) -> tuple[np.ndarray, Any]: ...


# Called after each vec step with the step's dones and infos (the video recorder follows env 0).
StepHook = Callable[[np.ndarray, list[dict[str, Any]]], None]


def evaluate(
    venv: VecEnv,
    policy: Path | Policy | None,
    episodes: int,
    deterministic: bool = True,
    seed: int = 0,
    on_step: StepHook | None = None,
) -> EvaluationResult:
    """`episodes` episodes of a checkpoint, a model, or random actions (None), spread evenly over the
    envs as SB3's evaluate_policy does: taking the first ones to end would favour short episodes
    (crashes), the more so the more envs."""
    model = PPO.load(policy, device="cpu") if isinstance(policy, Path) else policy
    targets = np.array([(episodes + i) // venv.num_envs for i in range(venv.num_envs)])
    counts = np.zeros(venv.num_envs, dtype=int)
    rng = np.random.default_rng(seed)
    low, high = venv.action_space.low, venv.action_space.high
    obs = venv.reset()
    returns = np.zeros(venv.num_envs)
    lengths = np.zeros(venv.num_envs, dtype=int)
    outcomes: list[EpisodeOutcome] = []
    steps = 0
    while len(outcomes) < episodes:
        if model is not None:
            actions, _ = model.predict(obs, deterministic=deterministic)
        else:
            actions = rng.uniform(low, high, size=(venv.num_envs, *low.shape)).astype(np.float32)
        obs, rewards, dones, infos = venv.step(actions)
        if on_step is not None:
            on_step(dones, infos)
        frozen = np.array([TAB_WAITING in info for info in infos])  # a slow or replaced tab's pause
        returns += rewards
        lengths += ~frozen
        steps += int((~frozen).sum())
        for i in np.flatnonzero(dones & ~frozen):
            if not ended_by_failure(infos[i]) and counts[i] < targets[i]:
                counts[i] += 1
                outcomes.append(EpisodeOutcome.from_info(infos[i], reward=float(returns[i]), length=int(lengths[i])))
            returns[i], lengths[i] = 0.0, 0
    scores = np.array([o.reward for o in outcomes])
    return EvaluationResult(
        policy=str(policy) if isinstance(policy, Path) else "random" if policy is None else "model",
        episodes=len(scores),
        mean_reward=float(scores.mean()),
        std_reward=float(scores.std()),
        mean_length=float(np.mean([o.length for o in outcomes])),
        steps=steps,
        task=TaskSummary.of(outcomes).to_json(),
        outcomes=outcomes,
    )


def evaluation_report(
    venv: VecEnv,
    model_path: Path | None,
    episodes: int,
    *,
    seed: int = 0,
    against_random: bool = False,
    length_limit: int | None = None,
    say: Callable[[str], None] = print,
    on_step: StepHook | None = None,
    after_policy: Callable[[], None] | None = None,
    stage: int | None = None,
    deterministic: bool = True,
) -> dict[str, Any]:
    """What `lunarfleet evaluate` prints, and writes as the JSON's `evaluation` field: the policy's
    result, random actions' on the same tabs (`against_random`), and the reward-gaming verdict.
    `on_step` follows the policy's episodes, and `after_policy` is called when they are done (before
    random actions' episodes: a video of the policy stops there). With `against_random`
    and the `stage`, it also says whether the model does that stage's task better than random actions
    (`compare_with_random`: by task metrics, never by reward). `deterministic` False samples the
    policy's actions as training does (rl-zoo3's `enjoy --stochastic`)."""
    try:
        result = evaluate(venv, model_path, episodes, deterministic=deterministic, seed=seed, on_step=on_step)
    finally:
        if after_policy is not None:
            after_policy()
    baseline = None
    if against_random and model_path is not None:
        baseline = evaluate(venv, None, episodes, seed=seed)
    elif against_random:
        say("[Evaluate] --against-random: the policy is random actions already; nothing to compare with")
    results = [result] + ([baseline] if baseline else [])
    for r in results:
        say(f"[Evaluate] {r.policy}: mean episode reward {r.mean_reward:,.1f} ± {r.std_reward:,.1f} "
            f"over {r.episodes} episodes (mean length {r.mean_length:,.0f} steps)")
    for line in comparison_lines(results):
        say(f"[Evaluate] {line}")
    verdict = gaming_verdict(result.outcomes, result.episodes, length_limit,
                             baseline.mean_reward if baseline else None, baseline="random actions on the same tabs")
    if verdict is not None and verdict.ends_early_and_short:
        say(f"[Evaluate] ! {verdict.sentence()}")
    comparison = None
    if baseline is not None and stage is not None:
        comparison = compare_with_random(TaskSummary.of(result.outcomes), TaskSummary.of(baseline.outcomes), stage)
        say(f"[Evaluate] {'✓' if comparison.better else '!'} {comparison.sentence()}")
    return {
        **result.to_json(),
        "actions": actions_name(deterministic),
        "against_random": baseline.to_json() if baseline else None,
        "reward_gaming": verdict.to_json() if verdict else None,
        "task_vs_random": comparison.to_json() if comparison else None,
    }


# (label, TaskSummary key, kind) of the comparison table's rows after the reward
TABLE_ROWS = (
    ("mean episode length", "mean_length", "number"),
    ("ended early (collision or other end)", "ended_early", "share"),
    ("collided", "collided", "share"),
    ("collected an orb", "orb_collected", "share"),
    ("deposited an orb", "orb_deposited", "share"),
    ("  in the construction zone", "deposited_construction", "share"),
    ("  in the berm", "deposited_berm", "share"),
    ("mean orbs collected", "mean_orbs_collected", "mean"),
    ("mean orbs deposited", "mean_orbs_deposited", "mean"),
)


def comparison_lines(results: list[EvaluationResult]) -> list[str]:
    """The task metrics of each result side by side, one column per policy (model, random)."""
    names = ["model" if r.policy != "random" else "random" for r in results]
    rows = [("", names), ("episodes", [str(r.episodes) for r in results]),
            ("mean episode reward", [f"{r.mean_reward:,.1f} ± {r.std_reward:,.1f}" for r in results])]
    for label, key, kind in TABLE_ROWS:
        rows.append((label, [_cell(r.task.get(key), kind) for r in results]))
    label_width = max(len(label) for label, _ in rows)
    width = max(len(cell) for _, cells in rows for cell in cells) + 2
    return [f"{label:<{label_width}}" + "".join(f"{cell:>{width}}" for cell in cells) for label, cells in rows]


def _cell(value: float | None, kind: str) -> str:
    if value is None:
        return "n/a"
    if kind == "share":
        return f"{100 * value:.0f}%"
    if kind == "mean":
        return f"{value:.2f}"
    return f"{value:,.0f}"
