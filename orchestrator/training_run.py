"""The life of one training run: start the page server, the pool and the trainer; stop them all.

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from browser_pool.chromium import LaunchOptions, find_chromium
from browser_pool.faults import parse_spec
from browser_pool.pool import PoolSettings
from browser_pool.processes import sweep_leftovers
from orchestrator.app_server import AppServer, start_app_server
from orchestrator.chaos import ChaosMonkey, describe
from orchestrator.config import RunConfig
from orchestrator.doctor import playwright_chromium
from orchestrator.events import EventLog, say
from orchestrator.fleet import Fleet
from orchestrator.monitor import Monitoring, MonitorSettings, NotEnoughMemory, memory_refusal, trainer_threads
from orchestrator.ports import free_block
from orchestrator.tabs_command import page_pool_options
from training.evaluate import evaluation_report
from training.tab_link import LinkDeadlines, PageSettings
from training.trainer import PPOSettings, TrainResult, TrainSettings, train
from training.vec_env import FleetEnvSettings, make_vec_env


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
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(cfg.run_dir / "config.json")
    events = EventLog(cfg.run_dir / "events.jsonl")
    previous = {sig: signal.signal(sig, _interrupt_once) for sig in (signal.SIGINT, signal.SIGTERM)}
    app: AppServer | None = None
    fleet: Fleet | None = None
    venv: Any = None
    monitor = monitor or MonitorSettings()
    monitoring: Monitoring | None = None
    try:
        refusal = memory_refusal(cfg.envs, floor_mb=monitor.memory_floor_mb, vec_env=cfg.vec_env)
        if refusal:
            raise NotEnoughMemory(refusal)  # before opening a single tab
        for line in sweep_leftovers():
            say(f"[Setup] Cleaned up after an earlier run: {line}")
        choice = find_chromium(cfg.browser, playwright_chromium())
        say(f"[Setup] Browser: {choice.description}")
        base = free_block(cfg.base_port, cfg.envs)
        if base != cfg.base_port:
            say(f"[Setup] ! Ports {cfg.base_port}-{cfg.base_port + cfg.envs - 1} are not all free; using {base}-{base + cfg.envs - 1}")
        ports = list(range(base, base + cfg.envs))
        app_port = cfg.app_port
        if cfg.embedded:
            app = start_app_server(cfg.app_port, say)
            app_port = app.port
        urls = [cfg.tab_url(i, port, app_port) for i, port in enumerate(ports)]
        say(f"[Setup] Creating {cfg.envs} parallel environments on ports {ports[0]}-{ports[-1]}; page {urls[0]}")
        fleet = Fleet(
            urls,
            ports,
            LaunchOptions(executable=choice.executable, headless=not cfg.headed),
            PoolSettings(
                hang_s=cfg.step_timeout,
                recycle_steps=cfg.recycle_steps,
                recycle_hours=cfg.recycle_hours,
                **page_pool_options(cfg),
            ),
            events,
            cfg.token,
        )
        if monitor.enabled:
            run_info = {"run_id": cfg.run_id, "run_dir": str(cfg.run_dir), "command": cfg.command, "envs": cfg.envs,
                        "vec_env": cfg.vec_env, "target_timesteps": cfg.timesteps}
            monitoring = Monitoring(monitor, fleet, lambda: venv, cfg.run_dir, run_info, cfg.progress, events, say)
            monitoring.start()
        env_settings = FleetEnvSettings(
            ports=ports,
            page=PageSettings(
                timescale=cfg.timescale,
                max_episode_steps=cfg.max_episode_steps,
                stage=cfg.stage if cfg.embedded else None,
            ),
            deadlines=LinkDeadlines(step_s=cfg.step_timeout, connect_s=max(cfg.connect_timeout, 60.0)),
            health_port=fleet.health_port,
            run_token=cfg.token,
            page_token=cfg.token if cfg.embedded else None,
            origins=cfg.allowed_origins(urls[0]),
            vec_env=cfg.vec_env,
            sims_per_tab=cfg.sims_per_tab,
            straggler_s=cfg.straggler_grace,
        )
        if cfg.sims_per_tab > 1:
            say(f"[Setup] {cfg.envs} tabs x {cfg.sims_per_tab} simulations = {env_settings.num_envs} environments for PPO "
                f"(rollout {cfg.n_steps} x {env_settings.num_envs} = {cfg.n_steps * env_settings.num_envs:,} steps)")
        venv = make_vec_env(env_settings, on_respawn=lambda i, why: events("worker_respawned", {"env": i, "cause": why}))
        # Every port listens before any tab opens: a page like the original app gives up after ~10 tries.
        venv.get_attr("port")
        fleet.start()
        fleet.wait_connected(cfg.connect_timeout)
        if monitoring is not None:
            monitoring.running()
        summary.startup_s = round(time.monotonic() - began, 3)
        say(f"[Setup] All {cfg.envs} tabs connected in {summary.startup_s:.1f} s")

        if cfg.command == "evaluate":
            _evaluate_job(cfg, venv, summary)
        else:
            _train_job(cfg, fleet, venv, events, monitoring, summary)
    except KeyboardInterrupt:
        summary.status, summary.error = "interrupted", "interrupted before training started"
    except Exception as exc:
        summary.status, summary.error = "failed", f"{type(exc).__name__}: {exc}"
        events("error", {"message": summary.error, "traceback": traceback.format_exc()})
    finally:
        with _no_interrupts():
            if monitoring is not None:
                with contextlib.suppress(Exception):
                    monitoring.finish(summary.status, {"ok": summary.ok, "error": summary.error, "fps": summary.fps,
                                                       **({"task": summary.task} if summary.task else {})})
            if venv is not None:
                summary.worker_respawns = venv.respawns
                summary.frozen_steps = venv.frozen_steps
                venv.close()
            if fleet is not None:
                summary.tab_restarts = sum(t.restarts for t in fleet.pool.tabs)
                summary.tab_failures_seen = sum(h.failures for h in fleet.health.values())
                summary.recovery_s = [round(s, 3) for s in fleet.recoveries()]
                summary.page_restart_requests = events.counts.get("restart_request", 0)
                summary.outages = fleet.outage_summary()
                fleet.stop()
            if app is not None:
                app.close()
            summary.elapsed_s = round(time.monotonic() - began, 2)
            summary.write(cfg.run_dir / "summary.json")
            events.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return summary


def _train_job(cfg: RunConfig, fleet: Fleet, venv: Any, events: EventLog, monitoring: Monitoring | None, summary: RunSummary) -> None:
    def on_checkpoint(path: Path, steps: int) -> None:
        events("checkpoint", {"path": str(path), "steps": steps})
        if not venv.waiting:
            with contextlib.suppress(Exception):
                venv.env_method("set_checkpoint_info", path.stem, steps)

    settings = TrainSettings(
        total_timesteps=cfg.timesteps,
        models_dir=cfg.models_dir,
        save_freq=cfg.save_freq,
        load=cfg.load,
        auto_load=cfg.auto_load,
        seed=cfg.seed,
        tensorboard_dir=cfg.run_dir / "tensorboard",
        progress_bar=_want_progress_bar(cfg.progress),
        ppo=PPOSettings(n_steps=cfg.n_steps, batch_size=cfg.batch_size),
        keep_checkpoints=cfg.keep_checkpoints,
        max_seconds=cfg.hours * 3600 if cfg.hours else None,
        curriculum=cfg.curriculum,
        torch_threads=trainer_threads(envs=cfg.envs),
        max_episode_steps=cfg.max_episode_steps,
    )
    say(f"[Setup] Trainer: {settings.torch_threads} torch thread(s), leaving the other cores to {cfg.envs} tabs")
    say(f"Starting parallel training for {cfg.timesteps:,} timesteps")
    say(f"Using {cfg.envs} parallel environments")
    chaos = None
    if cfg.chaos:
        chaos = ChaosMonkey(parse_spec(cfg.chaos), cfg.timesteps, fleet, events, venv.num_envs, cfg.chaos_overtime)
        settings.train_on = chaos.wants_more_steps
    result = train(
        settings,
        venv,
        say,
        should_stop=lambda: fleet.fatal if fleet else None,
        on_checkpoint=on_checkpoint,
        on_steps=_both(chaos.on_steps if chaos else None, monitoring.on_steps if monitoring else None),
        record=_recorder(events, monitoring),
        extra_callbacks=monitoring.callbacks() if monitoring else (),
    )
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


def _evaluate_job(cfg: RunConfig, venv: Any, summary: RunSummary) -> None:
    policy = str(cfg.load) if cfg.load else "random actions"
    say(f"Evaluating {policy} over {cfg.eval_episodes} episodes on {cfg.envs} tabs (stage {cfg.stage})")
    summary.evaluation = evaluation_report(venv, cfg.load, cfg.eval_episodes, seed=cfg.seed, say=say,
                                           against_random=cfg.against_random, length_limit=cfg.max_episode_steps)
    summary.status, summary.ok = "completed", True
    summary.timesteps, summary.episodes = summary.evaluation["steps"], summary.evaluation["episodes"]


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
    raise KeyboardInterrupt


@contextlib.contextmanager
def _no_interrupts():  # type: ignore[no-untyped-def]
    """Cleanup must finish even if the user presses Ctrl+C again."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
