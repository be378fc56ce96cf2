"""One run's resource monitoring, wired: what `training_run` starts, feeds and stops.

The parts each live in their own module:
- orchestrator/resource_sampler.py: the sampler thread, a sample every `--monitor-interval` s;
- orchestrator/process_sampling.py: CPU and memory of the run's processes (psutil);
- orchestrator/tab_table.py: the per-tab rows, states and steps/s, and where they come from;
- orchestrator/memory_guard.py: recycling tabs over their memory limit, low-memory warnings;
- orchestrator/status_file.py, orchestrator/samples_log.py: status.json and resources.jsonl;
- orchestrator/tensorboard_scalars.py: the `resources/...` scalars;
- orchestrator/live_view.py: the table on a terminal, `[Monitor]` lines otherwise;
- orchestrator/sizing.py: how many tabs and torch threads a run can afford (used before it starts).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.live_view import LiveView, choose_mode
from orchestrator.monitor_settings import MonitorSettings
from orchestrator.resource_sampler import ResourceSampler
from orchestrator.tab_table import fleet_sources
from orchestrator.tensorboard_scalars import tensorboard_scalars


class Monitoring:
    """The sampler, the live view and the TensorBoard hook of one run, started and stopped together."""

    def __init__(
        self,
        settings: MonitorSettings,
        fleet: Any,
        venv: Any,
        run_dir: Path,
        run_info: dict[str, Any],
        progress: str,
        events: Callable[..., None],
        say: Callable[[str], None],
    ) -> None:
        def recycle(index: int, why: str) -> None:
            say(f"[Monitor] tab {index + 1}: {why}; replacing it at its next episode boundary")
            fleet.request_recycle(index, why)

        self.sampler = ResourceSampler(
            fleet_sources(fleet, venv), settings, run_dir, run_info, recycle,
            warn=lambda message: events("warning", {"message": message}),
        )
        self.view = LiveView(choose_mode(settings.live, progress), say)
        self.sampler.listeners.append(self.view)

    def start(self) -> None:
        self.view.start()
        self.sampler.start()

    def running(self) -> None:
        self.sampler.state = "running"

    def on_steps(self, steps: int) -> None:
        self.sampler.note_steps(steps)

    def note_training(self, kind: str, fields: dict[str, Any]) -> None:
        """A trainer event: `progress` brings the task metrics, `reward_gaming` the verdict, into
        status.json (and so the live view and `lunarfleet status`) from the next sample on."""
        if kind == "progress" and fields.get("task") is not None:
            self.sampler.training = {**self.sampler.training, "task": fields["task"]}
            if fields.get("reward_gaming_now"):  # the warning's figures, refreshed
                self.sampler.training["reward_gaming"] = fields["reward_gaming_now"]
        elif kind == "reward_gaming":
            self.sampler.training = {**self.sampler.training, "reward_gaming": dict(fields)}

    def callbacks(self) -> list[Any]:
        """SB3 callbacks: the latest sample as `resources/...` TensorBoard scalars."""
        from training.trainer import LatestScalars  # torch and SB3: imported only when a run asks for them

        sampler = self.sampler
        return [LatestScalars(lambda: tensorboard_scalars(sampler.latest) if sampler.latest else None)]

    def finish(self, state: str, extra: dict[str, Any] | None = None) -> None:
        """A last sample, the final status.json, and the live view's last frame."""
        try:
            self.sampler.stop(final_state=state, extra=extra)
        finally:
            self.view.stop()
