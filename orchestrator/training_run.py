"""The life of one training run: set it up (`orchestrator/run_setup.py`), train or evaluate,
then stop it all and write `summary.json`.

`train` and `smoke` are the same run with different defaults; smoke also checks that the
final checkpoint loads back and writes a JSON verdict for CI.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from browser_pool.faults import parse_spec
from orchestrator.chaos import ChaosMonkey, describe
from orchestrator.config import EVAL_SEED_OFFSET, RunConfig
from orchestrator.events import EventLog, say
from orchestrator.fleet import Fleet
from orchestrator.monitor import Monitoring
from orchestrator.monitor_settings import MonitorSettings
from orchestrator.run_setup import RunPieces, open_run_folder, set_up_training, stop_signals
from orchestrator.sizing import trainer_threads
from orchestrator.video import CanvasRecorder
from training import checkpoint_spaces
from training.curriculum_plan import EMBEDDED_STAGE_PPO
from training.evaluate import evaluation_report
from training.event_loop import interrupt
from training.periodic_evaluation import EvalPlan
from training.tab_env import action_space, observation_space
from training.trainer import CheckpointLoadError, PPOSettings, TrainResult, TrainSettings, train

if TYPE_CHECKING:
    from training.tab_vec_env import TabVecEnv


@dataclass
class RunSummary:
    ok: bool = False
    status: str = "failed"
    envs: int = 0
    timesteps: int = 0
    start_timesteps: int = 0
    episodes: int = 0
    fps: float = 0.0
    tab_restarts: int = 0
    tab_failures_seen: int = 0
    episodes_cut_by_failures: int = 0  # episodes the trainer saw end truncated by a tab or worker failure
    worker_respawns: int = 0
    # Steps in which a slow or replaced tab's envs stood still while the other tabs stepped on,
    # and per run: outages, their frozen steps, the other tabs' longest wait (training/outages.py).
    frozen_steps: int = 0
    outages: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    loaded_from: str | None = None
    checkpoint_loads: bool | None = None
    elapsed_s: float = 0.0
    startup_s: float = 0.0
    recovery_s: list[float] = field(default_factory=list)
    trainer_exceptions: int = 0
    page_restart_requests: int = 0  # restart_request messages of the pages' own watchdogs (original app)
    faults_planned: int = 0
    faults_injected: int = 0
    faults_recovered: int = 0
    # per_kind counts, recovery_s per kind, missing (each fault not injected or not recovered, and
    # why), overtime_s (training past --timesteps for planned faults)
    faults: dict[str, Any] = field(default_factory=dict)
    # with --ray: the number of hosts, how often one came back after failing, the steps each
    # host's tabs handed to the trainer, and the machine each runs on
    hosts: int = 0
    host_restarts: int = 0
    host_steps: list[int] = field(default_factory=list)
    host_machines: list[str] = field(default_factory=list)
    hosts_out_at_end: list[int] = field(default_factory=list)  # hosts (1-based) still out when the run ended
    ray_startup_s: float | None = None
    evaluation: dict[str, Any] | None = None
    task: dict[str, Any] | None = None  # task metrics of the last episodes trained (training/task_metrics.py)
    run_dir: str = ""
    error: str | None = None

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")


def run_training(cfg: RunConfig, monitor: MonitorSettings | None = None) -> RunSummary:
    began = time.monotonic()
    summary = RunSummary(envs=cfg.envs, run_dir=str(cfg.run_dir))
    events = open_run_folder(cfg)
    run = RunPieces()
    with stop_signals(_interrupt_once):
        try:
            if refusal := _unfit_checkpoint(cfg):
                say(f"[Setup] ✗ {refusal}")
                raise CheckpointLoadError(refusal)  # before a browser starts
            set_up_training(run, cfg, monitor or MonitorSettings(), events)
            summary.startup_s = round(time.monotonic() - began, 3)
            summary.envs = run.venv.num_envs // cfg.sims_per_tab if run.venv is not None else cfg.envs
            tabs = len(run.fleet.ports) if run.fleet is not None else summary.envs  # the evaluation tab too
            say(f"[Setup] All {tabs} tabs connected in {summary.startup_s:.1f} s")
            if cfg.command == "evaluate":
                _evaluate_job(cfg, run, summary)
            else:
                _train_job(cfg, run, events, summary)
        except KeyboardInterrupt:
            summary.status, summary.error = "interrupted", "interrupted before training started"
        except Exception as exc:
            summary.status, summary.error = "failed", f"{type(exc).__name__}: {exc}"
            events("error", {"message": summary.error, "traceback": traceback.format_exc()})
        finally:
            with stop_signals(signal.SIG_IGN):  # cleanup must finish even if the user presses Ctrl+C again
                _close_run(run, summary, events)
                summary.elapsed_s = round(time.monotonic() - began, 2)
                summary.write(cfg.run_dir / "summary.json")
                events.close()
    return summary


def _unfit_checkpoint(cfg: RunConfig) -> str | None:
    """Why `--load`'s checkpoint, trained with other spaces than the simulation's, is refused, if
    it is (the trainer says the same of auto-loaded ones, and of anything else that does not load)."""
    if cfg.command != "train" or cfg.load is None or not cfg.load.exists():
        return None
    try:
        saved = checkpoint_spaces.saved_spaces(cfg.load)
    except Exception:  # not an SB3 zip: the trainer says why
        return None
    mismatch = checkpoint_spaces.compare(*saved, observation_space(), action_space())
    if mismatch is None or (mismatch.adaptable and cfg.adapt_spaces):
        return None
    return mismatch.explain(cfg.load)


def _close_run(run: RunPieces, summary: RunSummary, events: EventLog) -> None:
    """Stop the run, newest first, noting each piece's figures in the summary before it goes."""
    try:
        run.finish_monitoring(summary.status, {"ok": summary.ok, "error": summary.error, "fps": summary.fps,
                                               **({"task": summary.task} if summary.task else {})})
        if run.venv is not None:
            summary.worker_respawns = run.venv.respawns
            summary.frozen_steps = run.venv.frozen_steps
        run.close_vec_env()
        if run.fleet is not None:
            _note_fleet(summary, run.fleet, events)
    finally:
        run.close()


def _note_fleet(summary: RunSummary, fleet: Fleet, events: EventLog) -> None:
    summary.tab_restarts = fleet.tab_restarts()
    summary.tab_failures_seen = sum(h.failures for h in fleet.health.values())
    summary.recovery_s = [round(s, 3) for s in fleet.recoveries()]
    summary.page_restart_requests = events.counts.get("restart_request", 0)
    summary.outages = fleet.outage_summary()
    if hasattr(fleet, "host_steps"):  # --ray: a HostFleet (orchestrator/ray_fleet.py)
        for key, value in fleet.summary().items():
            setattr(summary, key, value)
        summary.ray_startup_s = round(fleet.ray_startup_s, 3)
        if summary.hosts_out_at_end:
            say(f"[Ray] ! host(s) {', '.join(map(str, summary.hosts_out_at_end))} were still out when the run ended: "
                "their tabs had frozen steps since they failed (events.jsonl: host_failed)")


def _train_job(cfg: RunConfig, run: RunPieces, events: EventLog, summary: RunSummary) -> None:
    fleet, venv, monitoring = run.fleet, run.venv, run.monitoring
    settings = _train_settings(cfg)
    say(f"[Setup] Trainer: {settings.torch_threads} torch thread(s), leaving the other cores to {cfg.envs} tab{'' if cfg.envs == 1 else 's'}")
    say(f"Starting parallel training for {cfg.timesteps:,} timesteps")
    say(f"Using {venv.num_envs} parallel environments")  # PPO's envs: tabs x simulations per tab
    chaos = None
    if cfg.chaos:
        on_ray = {"inject": fleet.inject, "hosts": fleet.host_tabs} if cfg.ray else {}
        chaos = ChaosMonkey(parse_spec(cfg.chaos), cfg.timesteps, fleet, events, venv.num_envs, cfg.chaos_overtime,
                            ports=venv.ports, tabs_out=venv.outages.tabs_out, **on_ray)  # the training tabs: the evaluation tab steps only now and then
        settings.train_on = chaos.wants_more_steps
    result = train(
        settings,
        venv,
        say,
        should_stop=lambda: fleet.fatal if fleet else None,
        on_checkpoint=_checkpoint_hook(venv, events),
        on_steps=_both(chaos.on_steps if chaos else None, monitoring.on_steps if monitoring else None),
        record=_recorder(events, monitoring),
        extra_callbacks=monitoring.callbacks() if monitoring else (),
        eval_venv=run.eval_venv,
    )
    _note_result(summary, result, chaos, events)


def _train_settings(cfg: RunConfig) -> TrainSettings:
    return TrainSettings(
        total_timesteps=cfg.timesteps,
        models_dir=cfg.models_dir,
        save_freq=cfg.save_freq,
        load=cfg.load,
        auto_load=cfg.auto_load,
        adapt_spaces=cfg.adapt_spaces,
        seed=cfg.seed,
        tensorboard_dir=cfg.run_dir / "tensorboard",
        progress_bar=_want_progress_bar(cfg.progress),
        ppo=PPOSettings(n_steps=cfg.n_steps, batch_size=cfg.batch_size, ent_coef=cfg.ent_coef),
        keep_checkpoints=cfg.keep_checkpoints,
        max_seconds=cfg.hours * 3600 if cfg.hours else None,
        curriculum=cfg.curriculum,
        stage_ppo=EMBEDDED_STAGE_PPO if cfg.embedded else {},
        torch_threads=trainer_threads(envs=cfg.envs),
        max_episode_steps=cfg.max_episode_steps,
        stage=cfg.stage,
        evaluation=EvalPlan(cfg.eval_freq, cfg.eval_episodes, cfg.eval_max_episode_steps, cfg.seed + EVAL_SEED_OFFSET,
                            deterministic=cfg.deterministic)
        if cfg.evaluates else None,
    )


def _checkpoint_hook(venv: TabVecEnv, events: EventLog) -> Callable[[Path, int], None]:
    """The trainer's on_checkpoint: an event, and the checkpoint's name to each page."""

    def on_checkpoint(path: Path, steps: int) -> None:
        events("checkpoint", {"path": str(path), "steps": steps})
        if not venv.waiting:
            with contextlib.suppress(Exception):
                venv.env_method("set_checkpoint_info", path.stem, steps)

    return on_checkpoint


def _note_result(summary: RunSummary, result: TrainResult, chaos: ChaosMonkey | None, events: EventLog) -> None:
    _fill(summary, result)
    summary.trainer_exceptions = 1 if result.status == "failed" else 0
    if chaos is not None:
        _chaos_verdict(chaos, result, summary, events)
    if result.traceback:
        events("error", {"message": result.message, "traceback": result.traceback}, echo=False)
    if result.message:
        say(f"[Done] {result.status}: {result.message}")


def _chaos_verdict(chaos: ChaosMonkey, result: TrainResult, summary: RunSummary, events: EventLog) -> None:
    """A chaos run is ok only if every planned fault was injected and recovered."""
    report = chaos.finish(result.message if result.status not in ("completed",) else None)
    summary.faults_planned = report.faults_planned
    summary.faults_injected, summary.faults_recovered = report.faults_injected, report.faults_recovered
    summary.faults = {"planned": report.faults_planned, "per_kind": report.per_kind, "recovery_s": report.recovery_s,
                      "missing": report.missing, "overtime_s": report.overtime_s}
    for line in describe(report):
        say(line)
    if not report.ok:
        events("chaos_incomplete", {"missing": report.missing}, echo=False)
        summary.ok = False
        missing = "; ".join(f"{m['kind']}: {m['why']}" for m in report.missing)
        summary.error = summary.error or f"chaos: {len(report.missing)} of {report.faults_planned} planned faults were not injected and recovered ({missing})"


def _evaluate_job(cfg: RunConfig, run: RunPieces, summary: RunSummary) -> None:
    assert run.venv is not None and run.fleet is not None
    policy = str(cfg.load) if cfg.load else "random actions"
    actions = "" if cfg.deterministic or not cfg.load else ", actions sampled from the policy"
    say(f"Evaluating {policy} over {cfg.eval_episodes} episodes on {cfg.envs} tabs (stage {cfg.stage}{actions})")
    recorder = CanvasRecorder(run.fleet, cfg.video, cfg.timescale, cfg.video_episodes, say) if cfg.video else None
    if recorder is not None:
        recorder.start()
    began = time.monotonic()
    try:
        summary.evaluation = evaluation_report(run.venv, cfg.load, cfg.eval_episodes, seed=cfg.seed, say=say,
                                               against_random=cfg.against_random, length_limit=cfg.max_episode_steps,
                                               on_step=recorder.on_step if recorder else None,
                                               after_policy=recorder.stop if recorder else None,
                                               stage=cfg.stage if cfg.embedded else None, deterministic=cfg.deterministic)
    finally:
        video = recorder.finish() if recorder is not None else None  # the file is closed whatever happened
    if video is not None:
        summary.evaluation["video"] = video
    summary.status, summary.ok = "completed", True
    summary.timesteps, summary.episodes = summary.evaluation["steps"], summary.evaluation["episodes"]
    summary.fps = round(summary.timesteps / max(time.monotonic() - began, 1e-9), 1)  # the [Done] line's speed


def _fill(summary: RunSummary, result: TrainResult) -> None:
    summary.status = result.status
    summary.ok = result.status in ("completed", "already_done", "time_up")
    summary.timesteps = result.timesteps
    summary.start_timesteps = result.start_timesteps
    summary.episodes = result.episodes
    summary.episodes_cut_by_failures = result.tab_failures
    summary.fps = round(result.fps, 1)
    summary.checkpoint = str(result.checkpoint) if result.checkpoint else None
    summary.loaded_from = str(result.loaded_from) if result.loaded_from else None
    summary.task = result.task
    if not summary.ok:
        summary.error = result.message


def _recorder(events: EventLog, monitoring: Monitoring | None) -> Any:
    """The trainer's `record` hook: into the event log, and to the monitor (task metrics for status.json)."""

    def record(fields: dict[str, Any]) -> None:
        kind = fields.pop("event")
        if monitoring is not None:
            monitoring.note_training(kind, fields)
        events(kind, fields, echo=False)

    return record


def _both(*hooks: Any) -> Any:
    """One on_steps hook that calls each of `hooks` that is not None."""
    live = [h for h in hooks if h is not None]
    return lambda steps: [h(steps) for h in live]


def _want_progress_bar(progress: str) -> bool:
    if progress == "bar":
        return True
    if progress == "lines":
        return False
    return sys.stdout.isatty()


def _interrupt_once(signum: int, frame: Any) -> None:
    """Ctrl+C or SIGTERM stops training; a second one must not break the checkpoint being saved."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    interrupt()  # KeyboardInterrupt, between two of the tabs' socket callbacks if this thread runs them

