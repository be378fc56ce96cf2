"""`lunarfleet dashboard [RUN_DIR]`: the dashboard page of a run, served from its folder.

The same page as `--dashboard` serves during a run, from the same files (orchestrator/dashboard_feed.py),
so it follows a running run (started elsewhere, or with its own dashboard off) and shows a finished
one's final state. Without the run's process there is no live view of a tab: an enlarged tab shows its
latest picture.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from orchestrator.dashboard import start_dashboard
from orchestrator.events import say
from orchestrator.run_setup import stop_signals
from orchestrator.status_command import run_folder
from orchestrator.status_file import STATUS_FILE


def serve_run_folder(
    run_dir: Path | None, runs_dir: Path, port: int, host: str, tell: Callable[[str], None] = say,
    stop: threading.Event | None = None,
) -> int:
    """Serve until Ctrl+C, SIGTERM or `stop`; 1 when there is no run folder to serve."""
    run_dir = run_folder(run_dir, runs_dir)
    if run_dir is None:
        tell(f"lunarfleet: no runs under {runs_dir}/: start one with 'lunarfleet train --dashboard', or name a run folder")
        return 1
    if not (run_dir / STATUS_FILE).exists() and not (run_dir / "events.jsonl").exists():
        tell(f"lunarfleet: {run_dir} is not a run folder (no {STATUS_FILE} or events.jsonl); name one under {runs_dir}/")
        return 1
    if stop is not None:  # a caller that stops it (tests): no signal handlers, which only the main thread may set
        _serve(run_dir, port, host, tell, stop)
        return 0
    stop = threading.Event()
    with stop_signals(lambda signum, frame: stop.set()):
        _serve(run_dir, port, host, tell, stop)
    return 0


def _serve(run_dir: Path, port: int, host: str, tell: Callable[[str], None], stop: threading.Event) -> None:
    dashboard = start_dashboard(run_dir, port, host, tell, live=False)
    tell(f"[Dashboard] Serving {run_dir}; Ctrl+C stops")
    try:
        while not stop.wait(0.5):
            pass
    finally:
        with stop_signals(signal.SIG_IGN) if threading.current_thread() is threading.main_thread() else contextlib.nullcontext():
            dashboard.close()
