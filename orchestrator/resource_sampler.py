"""The resource sampler: a thread beside the trainer that samples the run every few seconds.

A sample reads the machine, the trainer and its env workers, the Playwright driver, the browser
and each tab's renderer (mapped to tab numbers through the pool's renderer pids). Each one is
appended to resources.jsonl, rewrites status.json, passes the memory guard and is handed to the
listeners (the live view). Monitoring must never take the run down: a sample that fails is
warned about and the next one is taken as usual.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.memory_guard import MemoryGuard
from orchestrator.monitor_settings import MonitorSettings
from orchestrator.process_sampling import ProcessSampler
from orchestrator.sample import Sample
from orchestrator.samples_log import SamplesLog
from orchestrator.status_file import STATUS_FILE, build_status, write_status
from orchestrator.tab_table import Sources, TabRates

Listener = Callable[[Sample, dict[str, Any]], None]  # a sample and the status built from it


class ResourceSampler:
    """Samples every `interval_s` on its own thread; writes the samples and status files."""

    def __init__(
        self,
        sources: Sources,
        settings: MonitorSettings | None = None,
        run_dir: Path | None = None,
        run_info: dict[str, Any] | None = None,
        recycle: Callable[[int, str], None] | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.sources = sources
        self.settings = settings or MonitorSettings()
        self.run_dir = run_dir
        self.run_info = dict(run_info or {})
        self.warn = warn or (lambda message: None)
        self.guard = MemoryGuard(self.settings, recycle, self.warn)
        self.listeners: list[Listener] = []
        self.state = "starting"  # what status.json says while sampling: starting, running
        self.latest: Sample | None = None
        # What the trainer last said (`Monitoring.note_training`): task metrics, the reward-gaming verdict.
        self.training: dict[str, Any] = {}
        self.samples = 0
        self.timesteps = 0
        self._processes = ProcessSampler()
        self._rates = TabRates()
        self._began = time.time()
        self._last_timesteps: tuple[int, float] = (0, time.monotonic())
        self._fps = 0.0
        self._running_since: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._samples_log = SamplesLog(run_dir) if run_dir is not None else None

    # ---- life ------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="resource-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        if self._stop.wait(min(1.0, self.settings.interval_s)):  # a first CPU reading needs some time
            return
        while True:
            try:
                self.sample()
            except Exception as exc:  # monitoring must never take the run down
                self.warn(f"resource sampler: {type(exc).__name__}: {exc}")
            if self._stop.wait(self.settings.interval_s):
                return

    def stop(self, final_state: str | None = None, extra: dict[str, Any] | None = None) -> None:
        """Stop sampling; with `final_state`, take one last sample and write the final status."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.interval_s + 10)
            self._thread = None
        if final_state is not None:
            with contextlib.suppress(Exception):
                self.sample(state=final_state, extra=extra, act=False)
        with self._lock:
            if self._samples_log is not None:
                self._samples_log.close()
                self._samples_log = None

    def note_steps(self, timesteps: int) -> None:
        """The trainer's step count (called after every vec step; cheap)."""
        self.timesteps = timesteps

    # ---- one sample ------------------------------------------------------------------------
    def sample(self, state: str | None = None, extra: dict[str, Any] | None = None, act: bool = True) -> Sample:
        """One sample now. `act=False` is the final one: no guards, and rates averaged over the run."""
        state = state or self.state
        with self._lock:
            if state == "running" and self._running_since is None:
                self._running_since = time.time()
            sample = self._measure(whole_run=not act)
            if act:
                self.guard.check(sample)
            self.latest = sample
            self.samples += 1
            status = self._record(sample, state, extra)
        for listener in list(self.listeners):
            with contextlib.suppress(Exception):
                listener(sample, status)
        return sample

    def status(self, sample: Sample, state: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        return build_status(sample, state, self.settings, self.run_info, self.training, extra)

    def _record(self, sample: Sample, state: str, extra: dict[str, Any] | None) -> dict[str, Any]:
        """Into resources.jsonl and status.json; the status, for the listeners."""
        if self._samples_log is not None:
            self._samples_log.write(sample.to_json())
        status = self.status(sample, state, extra)
        if self.run_dir is not None:
            write_status(self.run_dir / STATUS_FILE, status)
        return status

    def _measure(self, whole_run: bool = False) -> Sample:
        now, mono = time.time(), time.monotonic()
        src = self.sources
        tabs = src.tabs()
        # Read once: the pool swaps a tab's renderer on its own thread, and a row must name the pid it measured.
        renderer_pids = [t.renderer_pid for t in tabs]
        procs = self._processes.read(src.trainer_pid, src.worker_pids(), src.driver_pid(), src.browser_pid(), renderer_pids)
        since = self._running_since if whole_run else None
        rows = [self._rates.row(t, pid, procs.renderer(pid), now, since) for t, pid in zip(tabs, renderer_pids, strict=True)]
        return Sample(
            time=now, elapsed_s=now - self._began, timesteps=self.timesteps, fps=self._trainer_fps(mono),
            system=procs.system, trainer=procs.trainer, workers=procs.workers, driver=procs.driver,
            browser=procs.browser, helpers=procs.helpers, tabs=rows, chromium_pss_mb=procs.chromium_pss_mb,
        )

    def _trainer_fps(self, mono: float) -> float:
        """Steps per second since the step count last changed; 0 once it stood still for two intervals."""
        steps, at = self._last_timesteps
        if self.timesteps != steps and mono > at:
            self._fps = max(self.timesteps - steps, 0) / (mono - at)
            self._last_timesteps = (self.timesteps, mono)
        elif mono - at > 2 * self.settings.interval_s:
            self._fps = 0.0
        return self._fps
