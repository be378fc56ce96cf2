"""`lunarfleet bench`, (f): the embedded page in real-time mode (`realtime=1`, one step per 60 Hz
frame, as the original app), compared with lock-step in the summary (`bench_results.py`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.bench_session import Bench


def realtime_phase(bench: Bench) -> None:
    for n in sorted(set(bench.s.realtime_tabs)):
        # a browser of n tabs: only the front one is visible
        with bench.browser(n, extra="&realtime=1"), bench.vec_env(n, "inline", 1) as venv:
            row = bench.row("realtime", n, 1, venv)
            row.note = "page steps on its 60 Hz animation frame"
            if n > 1:
                row.note += "; tabs share one headless window, hidden ones get no frames"
