"""PPO on a vec env of tabs: set-up with the original app's hyperparameters, resume, checkpoints, stop.

Reads top to bottom like the original app's `train_ppo_parallel.py`: load the newest checkpoint (or
start fresh), learn up to the target step count, save atomically along the way and at the end.
It knows nothing of browsers; the orchestrator hands it a vec env and a `should_stop` check.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.utils import FloatSchedule
from stable_baselines3.common.vec_env import VecEnv

from training import checkpoint_spaces, checkpoints
from training.best_model import BestModel
from training.curriculum import CurriculumCallback
from training.curriculum_plan import Phase, StagePPO, describe_phase, stage_for
from training.periodic_evaluation import EvalPlan, PeriodicEvaluation
from training.step_round import TAB_WAITING
from training.task_metrics import WINDOW, TaskTracker, ended_by_failure, task_score

Say = Callable[[str], None]


@dataclass
class PPOSettings:
    """The original app's hyperparameters (train_ppo_parallel.py); `--ent-coef` changes the entropy bonus
    (docs/rover-sim.md has what 0.01 and 0 did to the rover's action noise)."""

    learning_rate: float = 3e-4
    n_steps: int = 2048
    batch_size: int = 64
    n_epochs: int = 10
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5


# The PPO settings a command line gives (and its seed): they train a resumed model too, as rl-zoo3
# applies its hyperparameters to an agent it trains on (SB3's load alone keeps the checkpoint's,
# ignoring the flags; its seed also seeds the simulations' episodes).
RUN_PPO_SETTINGS = {"n_steps": "--n-steps", "batch_size": "--batch-size", "ent_coef": "--ent-coef", "seed": "--seed"}


@dataclass
class TrainSettings:
    total_timesteps: int
    models_dir: Path
    save_freq: int = 10_000
    load: Path | None = None
    auto_load: bool = True
    adapt_spaces: bool = False  # load a checkpoint whose space bounds differ, with the sim's spaces
    seed: int | None = None
    tensorboard_dir: Path | None = None
    progress_bar: bool = False
    log_interval_s: float = 10.0
    torch_threads: int | None = None
    keep_checkpoints: int = 0  # 0: keep every periodic checkpoint, as the original app does
    max_seconds: float | None = None  # time budget (--hours)
    curriculum: list[int] | None = None  # stage budgets in steps; None: one fixed stage
    stage_ppo: dict[int, StagePPO] = field(default_factory=dict)  # the curriculum's PPO settings per stage; else ppo's
    stage: int = 1  # the fixed stage without a curriculum (what the task score ranks by)
    evaluation: EvalPlan | None = None  # --eval-freq: evaluate on the eval vec env, keep the best by it
    max_episode_steps: int | None = None  # the episode limit, for the reward-gaming rule (training/task_metrics.py)
    # Asked at and past the target: True trains on, a rollout at a time (--chaos: faults still due).
    train_on: Callable[[int], bool] = lambda steps: False
    ppo: PPOSettings = field(default_factory=PPOSettings)


@dataclass
class TrainResult:
    status: str  # completed, interrupted, stopped, already_done, failed
    timesteps: int = 0
    start_timesteps: int = 0
    episodes: int = 0
    tab_failures: int = 0
    checkpoint: Path | None = None
    loaded_from: Path | None = None
    elapsed_s: float = 0.0
    fps: float = 0.0
    mean_episode_reward: float | None = None
    task: dict[str, Any] | None = None  # task metrics of the last episodes (training/task_metrics.py)
    message: str | None = None
    traceback: str | None = None


class CheckpointLoadError(RuntimeError):
    pass


def load_or_create(settings: TrainSettings, venv: VecEnv, say: Say) -> tuple[PPO, Path | None]:
    """The original app's AUTO_LOAD_LATEST / LOAD_MODEL, skipping checkpoints that do not load."""
    if settings.load is not None:
        reason = checkpoints.looks_loadable(settings.load) if settings.load.exists() else "no such file"
        if reason:
            raise CheckpointLoadError(f"cannot load {settings.load}: {reason}")
        try:
            return _load(settings.load, venv, settings, say), settings.load
        except CheckpointLoadError:
            raise
        except Exception as exc:
            raise CheckpointLoadError(f"cannot load {settings.load}: {type(exc).__name__}: {exc}") from exc
    if settings.auto_load:
        for path in checkpoints.candidates(settings.models_dir):
            reason = checkpoints.looks_loadable(path)
            if reason is None:
                try:
                    return _load(path, venv, settings, say), path
                except CheckpointLoadError as exc:  # other spaces: said in the rover's terms
                    reason = str(exc)
                except Exception as exc:  # a zip that is whole but holds something else
                    reason = f"{type(exc).__name__}: {exc}"
            say(f"[Setup] ! Skipping checkpoint {path.name}: {reason}")
    tensorboard = str(settings.tensorboard_dir) if settings.tensorboard_dir else None
    return new_ppo(venv, settings.ppo, seed=settings.seed, tensorboard_log=tensorboard), None


def new_ppo(venv: VecEnv, p: PPOSettings, seed: int | None = None, tensorboard_log: str | None = None) -> PPO:
    """A fresh MlpPolicy PPO with these hyperparameters, on the CPU."""
    return PPO(
        "MlpPolicy",
        venv,
        learning_rate=p.learning_rate,
        n_steps=p.n_steps,
        batch_size=p.batch_size,
        n_epochs=p.n_epochs,
        gamma=p.gamma,
        gae_lambda=p.gae_lambda,
        clip_range=p.clip_range,
        ent_coef=p.ent_coef,
        vf_coef=p.vf_coef,
        max_grad_norm=p.max_grad_norm,
        tensorboard_log=tensorboard_log,
        seed=seed,
        device="cpu",
        verbose=0,
    )


def _load(path: Path, venv: VecEnv, settings: TrainSettings, say: Say) -> PPO:
    data = checkpoint_spaces.saved_data(path)
    mismatch = checkpoint_spaces.compare(*checkpoint_spaces.saved_spaces(path, data), venv.observation_space, venv.action_space)
    custom_objects = None
    if mismatch is not None:
        if not (mismatch.adaptable and settings.adapt_spaces):
            raise CheckpointLoadError(mismatch.explain(path))
        say(f"[Setup] ! {path.name}: adapting it to the simulation's spaces (--adapt-spaces); its weights and step count are kept")
        for line in mismatch.lines:
            say(f"[Setup]   - {line}")
        custom_objects = {"observation_space": venv.observation_space, "action_space": venv.action_space}
    ours = {name: settings.seed if name == "seed" else getattr(settings.ppo, name) for name in RUN_PPO_SETTINGS}
    ours = {name: value for name, value in ours.items() if value is not None}
    for name, value in ours.items():
        if name in data and data[name] != value:
            say(f"[Setup] {path.name} trained with {name} {data[name]}; training goes on with {value} ({RUN_PPO_SETTINGS[name]})")
    model = PPO.load(path, env=venv, device="cpu", custom_objects=custom_objects, **ours)
    if settings.tensorboard_dir:
        model.tensorboard_log = str(settings.tensorboard_dir)
    return model


def train(
    settings: TrainSettings,
    venv: VecEnv,
    say: Say,
    should_stop: Callable[[], str | None] = lambda: None,
    on_checkpoint: Callable[[Path, int], None] = lambda path, steps: None,
    on_steps: Callable[[int], None] = lambda steps: None,
    record: Callable[[dict[str, Any]], None] = lambda fields: None,
    extra_callbacks: Sequence[BaseCallback] = (),
    eval_venv: VecEnv | None = None,
) -> TrainResult:
    """Learn up to `settings.total_timesteps` steps in total; whatever ends the run, save a checkpoint.
    With `settings.evaluation`, evaluate on `eval_venv` (its own tab) and keep the best model by it."""
    model, result = _resume(settings, venv, say)
    if result.status == "already_done":
        return result
    save = _checkpoint_saver(model, settings, on_checkpoint, record)
    began = time.monotonic()
    stats = RunStats(
        settings.log_interval_s, settings.total_timesteps, say, _within_budget(settings.max_seconds, began, should_stop),
        not settings.progress_bar, on_steps, record, settings.train_on, max_episode_steps=settings.max_episode_steps,
    )
    evaluation = settings.evaluation
    best = BestModel(settings.models_dir, evaluation.basis if evaluation else TRAINING_BASIS)
    if best.unknown and evaluation is None:
        say(f"[Setup] ! {best.describe_unknown()}; the first periodic checkpoint replaces it")
    # Without evaluation, the periodic checkpoint keeps the best model (by the training episodes).
    saver = PeriodicCheckpoint(
        settings.save_freq, _periodic_save(settings.models_dir, save, stats, None if evaluation else best, settings)
    )
    callbacks: list[BaseCallback] = [stats, saver]
    if settings.curriculum:
        callbacks.append(_curriculum(settings, venv, model, say, record))
    if evaluation is not None:
        assert eval_venv is not None, "--eval-freq needs the evaluation tab's vec env"
        callbacks.append(PeriodicEvaluation(eval_venv, evaluation, _stage_at(settings), best, save, say, record))
    callbacks.extend(extra_callbacks)
    try:
        _learn(model, settings, result, callbacks, stats)
        final = checkpoints.steps_path(settings.models_dir, model.num_timesteps)
        result.checkpoint = final if saver.last_saved == model.num_timesteps else save(final)
    except KeyboardInterrupt:
        result.status, result.message = "interrupted", "interrupted (Ctrl+C or SIGTERM)"
        result.checkpoint = save(checkpoints.interrupted_path(settings.models_dir))
    except Exception as exc:
        result.status, result.message = "failed", f"{type(exc).__name__}: {exc}"
        result.traceback = traceback.format_exc()
        result.checkpoint = save(checkpoints.steps_path(settings.models_dir, model.num_timesteps))
    _finish(result, model, stats, time.monotonic() - began)
    return result


def _resume(settings: TrainSettings, venv: VecEnv, say: Say) -> tuple[PPO, TrainResult]:
    """The model to train (the newest checkpoint, or a fresh one), and a result saying where it started;
    "already_done" when that checkpoint is at or past the target."""
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    model, loaded_from = load_or_create(settings, venv, say)
    start = model.num_timesteps
    result = TrainResult(status="completed", start_timesteps=start, loaded_from=loaded_from)
    if loaded_from is not None:
        say(f"[Setup] Loaded {loaded_from} ({start:,} steps done); continuing the step count from there")
    if settings.total_timesteps - start <= 0:
        result.status, result.timesteps = "already_done", start
        result.message = (
            f"the checkpoint already has {start:,} steps, at or past --timesteps {settings.total_timesteps:,}; "
            "pass a larger --timesteps to train on, or --no-auto-load to start fresh"
        )
    return model, result


def _checkpoint_saver(
    model: PPO, settings: TrainSettings, on_checkpoint: Callable[[Path, int], None], record: Callable[[dict[str, Any]], None]
) -> Callable[[Path], Path]:
    """save(path): write the model atomically, say so, and prune old periodic checkpoints."""

    def save(path: Path) -> Path:
        checkpoints.save_atomic(model, path)
        on_checkpoint(path, model.num_timesteps)
        for old in checkpoints.prune(settings.models_dir, settings.keep_checkpoints):
            record({"event": "checkpoint_pruned", "path": str(old)})
        return path

    return save


def _within_budget(max_seconds: float | None, began: float, should_stop: Callable[[], str | None]) -> Callable[[], str | None]:
    """`should_stop`, and the time budget (--hours) counted from `began`."""

    def stop_reason() -> str | None:
        if max_seconds is not None and time.monotonic() - began >= max_seconds:
            return f"the time budget of {max_seconds / 3600:g} h is used up"
        return should_stop()

    return stop_reason


# The basis of the best model without --eval-freq: the task score of the recent training episodes.
TRAINING_BASIS = f"training: the last {WINDOW} training episodes (stochastic actions)"


def _stage_at(settings: TrainSettings) -> Callable[[int], int]:
    """The stage a model trains in at a step count: the curriculum's, or the fixed --stage."""
    curriculum = settings.curriculum
    return (lambda steps: stage_for(steps, curriculum)) if curriculum else (lambda steps: settings.stage)


def _periodic_save(
    models_dir: Path, save: Callable[[Path], Path], stats: RunStats, best: BestModel | None, settings: TrainSettings
) -> Callable[[int], None]:
    """The periodic checkpoint; without evaluation (`best` given), also `..._best.zip` when the task
    score of the last training episodes is the best at this stage (a fallback: these episodes come
    from the stochastic policy, and the last ones may straddle a stage change)."""
    stage_at = _stage_at(settings)

    def periodic(steps: int) -> None:
        save(checkpoints.steps_path(models_dir, steps))
        score = task_score(stats.task.summary(), stage_at(steps)) if best is not None else None
        if best is not None and score is not None:
            best.offer(score, steps, save)

    return periodic


def _curriculum(
    settings: TrainSettings, venv: VecEnv, model: PPO, say: Say, record: Callable[[dict[str, Any]], None]
) -> CurriculumCallback:
    assert settings.curriculum is not None

    def set_phase(phase: Phase) -> None:
        venv.env_method("set_stage", phase.stage, phase.obstacles)
        say(describe_phase(phase.stage, phase.obstacles, model.num_timesteps))
        tuned = settings.stage_ppo.get(phase.stage, StagePPO(settings.ppo.gamma, settings.ppo.learning_rate))
        changed = []
        if tuned.gamma != model.gamma:  # the returns of the rollout being collected are computed with it
            changed.append(f"gamma {tuned.gamma:g} (was {model.gamma:g})")
            model.gamma = model.rollout_buffer.gamma = tuned.gamma
        if tuned.learning_rate != model.learning_rate:  # from the next update on (SB3 reads the schedule there)
            changed.append(f"learning rate {tuned.learning_rate:g} (was {model.learning_rate:g})")
            model.learning_rate, model.lr_schedule = tuned.learning_rate, FloatSchedule(tuned.learning_rate)
        if changed:
            say(f"[Train] PPO in stage {phase.stage}: " + ", ".join(changed))
        record({"event": "stage", "stage": phase.stage, "obstacles": phase.obstacles, "gamma": tuned.gamma,
                "learning_rate": tuned.learning_rate, "steps": model.num_timesteps})

    return CurriculumCallback(settings.curriculum, set_phase)


def _learn(model: PPO, settings: TrainSettings, result: TrainResult, callbacks: list[BaseCallback], stats: RunStats) -> None:
    """Learn the remaining steps; past the target, a rollout at a time while `train_on` asks for more;
    note in `result` why training stopped early, if it did."""
    model.learn(
        total_timesteps=settings.total_timesteps - result.start_timesteps,
        callback=CallbackList(callbacks),
        reset_num_timesteps=result.loaded_from is None,
        tb_log_name="ppo",
        progress_bar=settings.progress_bar,
    )
    while stats.stop_reason is None and not stats.stopped_at_target and settings.train_on(model.num_timesteps):
        model.learn(
            total_timesteps=model.n_steps * model.n_envs,  # one more rollout; RunStats stops it when done
            callback=CallbackList(callbacks),
            reset_num_timesteps=False,
            tb_log_name="ppo",
            progress_bar=settings.progress_bar,
        )
    if stats.stop_reason:
        result.status, result.message = "stopped", stats.stop_reason
        if stats.stop_reason.startswith("the time budget"):
            result.status = "time_up"


def _finish(result: TrainResult, model: PPO, stats: RunStats, elapsed_s: float) -> None:
    result.elapsed_s = elapsed_s
    result.timesteps = model.num_timesteps
    result.episodes, result.tab_failures = stats.episodes, stats.tab_failures
    result.fps = (result.timesteps - result.start_timesteps) / result.elapsed_s if result.elapsed_s > 0 else 0.0
    result.mean_episode_reward = stats.mean_reward()
    result.task = stats.task.summary().to_json()


class RunStats(BaseCallback):
    """Counts episodes and tab failures, prints plain progress lines, and stops on request."""

    def __init__(
        self,
        interval_s: float,
        target: int,
        say: Say,
        should_stop: Callable[[], str | None],
        print_lines: bool,
        on_steps: Callable[[int], None] = lambda steps: None,
        record: Callable[[dict[str, Any]], None] = lambda fields: None,
        train_on: Callable[[int], bool] = lambda steps: False,
        max_episode_steps: int | None = None,
    ) -> None:
        super().__init__()
        self.task = TaskTracker(max_episode_steps)  # task metrics and the reward-gaming rule
        self.on_steps, self.train_on = on_steps, train_on
        self.stopped_at_target = False
        self.record = record
        self.interval_s, self.target, self.say = interval_s, target, say
        self.should_stop, self.print_lines = should_stop, print_lines
        self.episodes = 0
        self.tab_failures = 0
        self.rewards: list[float] = []
        self.stop_reason: str | None = None
        self._last_print = time.monotonic()
        self._last_steps = 0

    def _on_training_start(self) -> None:
        self._last_steps = self.model.num_timesteps

    def _on_step(self) -> bool:
        self.on_steps(self.model.num_timesteps)
        # This step's episodes count even when it is the last one (the step was made).
        infos: list[dict[str, Any]] = self.locals.get("infos", [])
        for done, info in zip(self.locals.get("dones", []), infos, strict=False):
            if not done or TAB_WAITING in info:  # a frozen step (training/step_round.py)
                continue
            if ended_by_failure(info):
                self.tab_failures += 1
            else:
                self.episodes += 1
            if "episode" in info:
                self.rewards.append(float(info["episode"]["r"]))
        self.task.add_step(self.locals.get("dones", []), infos)
        steps = self.model.num_timesteps
        if steps >= self.target and not self._last_step_of_rollout() and not self.train_on(steps):
            # Stop exactly at the target (a resumed run must not overshoot it); the partial
            # rollout is dropped. At a rollout's end SB3 trains on it and stops by itself.
            self.stopped_at_target = True
            return False
        now = time.monotonic()
        if now - self._last_print >= self.interval_s:
            self._report(now)
            reason = self.should_stop()
            if reason:
                self.stop_reason = reason
                return False
        return True

    def _last_step_of_rollout(self) -> bool:
        n, total = self.locals.get("n_steps"), self.locals.get("n_rollout_steps")
        return n is not None and total is not None and n + 1 >= total

    def _report(self, now: float) -> None:
        steps = self.model.num_timesteps
        fps = (steps - self._last_steps) / (now - self._last_print)
        self._last_print, self._last_steps = now, steps
        mean = self.mean_reward()
        self.record(
            {"event": "progress", "steps": steps, "fps": round(fps, 1), "episodes": self.episodes,
             "mean_reward": mean, "tab_failures": self.tab_failures,
             "task": self.task.summary().to_json(), "reward_gaming": self.task.gaming,
             "reward_gaming_now": self.task.gaming_now()}
        )
        if self.print_lines:
            reward = f"{mean:,.1f}" if mean is not None else "n/a"
            self.say(
                f"[Train] {steps:,}/{self.target:,} steps ({100 * steps / self.target:.0f}%)  {fps:,.0f} steps/s  "
                f"episodes {self.episodes}  mean reward (last 100) {reward}  tab failures {self.tab_failures}  "
                f"task (last 100): {self.task.summary().short()}"
            )

    def _on_rollout_end(self) -> None:
        """`task/...` into SB3's logger (TensorBoard), and the reward-gaming warning when its state flips."""
        for key, value in self.task.summary().scalars().items():
            self.logger.record(key, value)
        verdict = self.task.changed()
        if verdict is not None:
            self.record({"event": "reward_gaming", "steps": self.model.num_timesteps, **verdict.to_json()})
            self.say(f"[Train] {'!' if verdict.gaming else '✓'} {verdict.sentence()}")

    def mean_reward(self) -> float | None:
        recent = self.rewards[-100:]
        return float(np.mean(recent)) if recent else None


class LatestScalars(BaseCallback):
    """Records the newest values of `latest()` (e.g. resource samples, `resources/...`) into SB3's
    logger at each rollout's end, so they reach TensorBoard with that iteration's dump."""

    def __init__(self, latest: Callable[[], dict[str, float] | None]) -> None:
        super().__init__()
        self.latest = latest

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        for key, value in (self.latest() or {}).items():
            self.logger.record(key, value)


class PeriodicCheckpoint(BaseCallback):
    """Every `save_freq` total steps (SB3's own callback counts vec-steps, this counts steps)."""

    def __init__(self, save_freq: int, save: Callable[[int], Any]) -> None:
        super().__init__()
        self.save_freq, self.save = save_freq, save
        self._next = math.inf
        self.last_saved: int | None = None

    def _on_training_start(self) -> None:
        if self.save_freq > 0:
            self._next = (self.model.num_timesteps // self.save_freq + 1) * self.save_freq

    def _on_step(self) -> bool:
        if self.model.num_timesteps >= self._next:
            self.save(self.model.num_timesteps)
            self.last_saved = self.model.num_timesteps
            self._next = (self.model.num_timesteps // self.save_freq + 1) * self.save_freq
        return True
