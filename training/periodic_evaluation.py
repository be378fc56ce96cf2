"""Evaluation during training (`--eval-freq`): the current policy, deterministic (or sampled, with
`--eval-stochastic`), on its own tab.

Shaped like SB3's `EvalCallback`, with four differences. It counts total steps, not vec steps
(SB3's `eval_freq` is per env, so it evaluates n_envs times less often than one would think).
It scores the task (`training/task_metrics.py`), not the reward, and keeps
`lunar_rover_ppo_best.zip` by that task score (`training/best_model.py`), comparing only
evaluations at the same curriculum stage. It evaluates on the same episodes every time (the tab
is seeded before each evaluation), so two evaluations differ by the policy only. And a resumed
run does not overwrite a better best model: the score is kept beside it, and a best model whose
score is unknown is scored again at the first evaluation, on the same episodes.

The tab is an extra tab of the pool, not one of the training envs: it idles between evaluations
and the pool heals it like any other. An evaluation that fails (its tab lost for good) is said
and logged, and training goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv

from training.best_model import BestModel
from training.evaluate import EvaluationResult, evaluate
from training.task_metrics import TaskScore, TaskSummary, actions_name, task_score


@dataclass(frozen=True)
class EvalPlan:
    freq: int  # total steps between evaluations
    episodes: int
    max_episode_steps: int  # the evaluation episodes' own limit, which bounds an evaluation's cost
    seed: int = 0  # the evaluation episodes' seed, the same every time
    deterministic: bool = True  # the policy's mean action; False: sampled, as training acts (--eval-stochastic)

    @property
    def actions(self) -> str:
        return actions_name(self.deterministic)

    @property
    def basis(self) -> str:
        """What a score of this plan was measured on (`BestModel`): only scores on one basis compare."""
        return (f"evaluation: {self.episodes} {self.actions} episodes of at most {self.max_episode_steps:,} steps, "
                f"seed {self.seed}")


class PeriodicEvaluation(BaseCallback):
    """Every `plan.freq` total steps: evaluate, log (`eval/...`, an `evaluation` event, an `[Eval]`
    line), and save `lunar_rover_ppo_best.zip` when the task score is the best at its stage."""

    def __init__(
        self,
        venv: VecEnv,
        plan: EvalPlan,
        stage_at: Callable[[int], int],
        best: BestModel,
        save: Callable[[Path], Path],
        say: Callable[[str], None],
        record: Callable[[dict[str, Any]], None],
    ) -> None:
        super().__init__()
        self.venv, self.plan, self.stage_at, self.best = venv, plan, stage_at, best
        self.save, self.say, self.record = save, say, record
        self._next = 0
        self._stage: int | None = None  # the stage the tab was last told
        self.evaluations = 0

    def _on_training_start(self) -> None:
        self._next = (self.model.num_timesteps // self.plan.freq + 1) * self.plan.freq

    def _on_step(self) -> bool:
        if self.model.num_timesteps >= self._next:
            self._next = (self.model.num_timesteps // self.plan.freq + 1) * self.plan.freq
            try:
                self.run()
            except Exception as exc:  # the evaluation tab lost for good: training is what matters
                message = f"evaluation failed at {self.model.num_timesteps:,} steps: {type(exc).__name__}: {exc}; training goes on"
                self.say(f"[Eval] ! {message}")
                self.record({"event": "warning", "message": message})
        return True

    def run(self) -> None:
        steps = self.model.num_timesteps
        stage = self.stage_at(steps)
        began = time.monotonic()
        result = self._evaluate(self.model, stage)
        seconds = time.monotonic() - began
        summary = TaskSummary.from_json(result.task)
        score = task_score(summary, stage)
        self.evaluations += 1
        for key, value in summary.scalars("eval/").items():
            self.logger.record(key, value)
        self.logger.record("eval/stage", stage)
        self.logger.record("time/total_timesteps", steps, exclude="tensorboard")
        self.logger.dump(steps)  # with this step count, as EvalCallback does
        if score is None:  # cannot happen with episodes >= 1, unless every episode was cut by a tab failure
            self.say(f"[Eval] {steps:,} steps: no episode finished on the evaluation tab; best model unchanged")
            return
        self.say(f"[Eval] {steps:,} steps, stage {stage}: {result.episodes} {self.plan.actions} episodes "
                 f"({result.steps:,} steps, {seconds:.1f} s): {summary.short()} · mean reward {result.mean_reward:,.1f}")
        rescored = self._rescore_unknown_best(stage)
        offer = self.best.offer(score, steps, self.save)
        self.record({
            "event": "evaluation", "steps": steps, "stage": stage, "episodes": result.episodes,
            "max_episode_steps": self.plan.max_episode_steps, "seconds": round(seconds, 2), "eval_steps": result.steps,
            "mean_reward": result.mean_reward, "task": result.task, "score": score.to_json(),
            "best": offer.saved, "best_reason": offer.reason, "best_steps": offer.best_steps,
            "best_score": offer.best.to_json() if offer.best else None,
            **({"rescored_best": rescored.to_json()} if rescored else {}),
        })
        self.say(f"[Eval] task score {score.text()}; {_best_line(offer.saved, offer.reason, offer.best, offer.best_steps)}")

    def _evaluate(self, policy: Any, stage: int) -> EvaluationResult:
        """The plan's episodes at `stage`, the same episodes every time (the tab is seeded first)."""
        if stage != self._stage:
            self.venv.env_method("set_stage", stage)
            self._stage = stage
        self.venv.seed(self.plan.seed)
        # Sampled actions draw on torch's generator, which training's own sampling uses: on a copy
        # of its state, so that a run with evaluations trains exactly as one without.
        with torch.random.fork_rng():
            return evaluate(self.venv, policy, self.plan.episodes, deterministic=self.plan.deterministic, seed=self.plan.seed)

    def _rescore_unknown_best(self, stage: int) -> TaskScore | None:
        """A best model from before this run whose score is unknown: score it now, on the same
        episodes, so that it is replaced only by a better one (once per run)."""
        if not self.best.unknown:
            return None
        from stable_baselines3 import PPO

        self.say(f"[Eval] {self.best.describe_unknown()}; scoring it on the same episodes to compare")
        try:
            old = PPO.load(self.best.path, device="cpu")
            score = task_score(TaskSummary.from_json(self._evaluate(old, stage).task), stage)
        except Exception as exc:  # it does not load, or has other spaces: it cannot be the best
            self.say(f"[Eval] ! {self.best.path.name} could not be scored ({type(exc).__name__}: {exc}); it will be replaced")
            return None
        if score is not None:
            self.best.adopt(score, None)
            self.say(f"[Eval] {self.best.path.name} as it was: task score {score.text()}")
        return score


def _best_line(saved: bool, reason: str, best: TaskScore | None, best_steps: int | None) -> str:
    at = f" (from {best_steps:,} steps)" if best_steps else ""
    match saved, reason:
        case True, "new stage":
            return "the first evaluation at this stage: saved as lunar_rover_ppo_best.zip"
        case True, "replaces an unknown score":
            return "saved as lunar_rover_ppo_best.zip (replacing one whose score was unknown)"
        case True, _:
            return "new best: saved as lunar_rover_ppo_best.zip"
    return f"the best stays{at}: {best.text() if best else 'n/a'}"
