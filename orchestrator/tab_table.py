"""The per-tab table of a sample: which tab is which, what state it is in, how fast it steps.

Each tab's one record (`browser_pool/tab_record.py`) holds what the pool knows (port, renderer
pid, restarts) and what its env reported (steps, failures). `Sources` is how the sampler asks
for the records and for the pids of the other processes, so the same sampler serves a run's
fleet, a bare pool (`lunarfleet tabs`, tests) and fakes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from browser_pool.tab_record import TabRecord
from orchestrator.process_sampling import ProcStats


@dataclass
class TabRow:
    """A tab's line in the table: what the pool and health channel say, beside its renderer's figures."""

    tab: int  # 1-based, as people count tabs (events use the 0-based index)
    index: int
    port: int
    state: str
    steps: int
    steps_per_s: float
    restarts: int
    failures: int
    renderer_pid: int | None
    cpu_percent: float
    pss_mb: float | None
    uss_mb: float | None
    rss_mb: float
    host: int | None = None  # with --ray: the host holding the tab, 1-based as tabs are
    last_failure: str | None = None  # the cause of its latest counted failure (crash, hang, ...)


@dataclass
class Sources:
    """Functions, not values: tabs, renderers, workers and even the browser change while a run heals."""

    tabs: Callable[[], list[TabRecord]]
    browser_pid: Callable[[], int | None]
    driver_pid: Callable[[], int | None] = lambda: None
    worker_pids: Callable[[], list[int | None]] = list
    trainer_pid: int = field(default_factory=os.getpid)


def fleet_sources(fleet: Any, venv: Any | None = None) -> Sources:
    """Sources for a run: the fleet's pool and health channel, and the vec env's workers (`venv`
    may be a function returning the vec env, or None, while it is not made yet)."""
    def workers() -> list[int | None]:
        v = venv() if callable(venv) else venv  # a getter, when the vec env is made after the sampler starts
        return [getattr(p, "pid", None) for p in getattr(v, "processes", [])] if v is not None else []

    sources = pool_sources(fleet.pool)  # the tab records carry the env's reports too
    sources.worker_pids = workers
    return sources


def pool_sources(pool: Any) -> Sources:
    """Sources for a bare pool (no health channel): states come from the pool alone."""
    return Sources(lambda: list(pool.tabs), lambda: pool.browser_pid, lambda: pool.driver_pid)


class TabRates:
    """Each tab's steps per second, from its step count now and at the previous sample."""

    def __init__(self) -> None:
        self._last: dict[int, tuple[int, float]] = {}  # tab index -> (steps, time)

    def row(self, tab: TabRecord, renderer_pid: int | None, proc: ProcStats, now: float, run_since: float | None = None) -> TabRow:
        """The tab's row, with `proc` measured for `renderer_pid`; with `run_since` (the final sample)
        its rate is averaged from then on."""
        return TabRow(
            tab=tab.index + 1, index=tab.index, port=tab.port, state=tab.status(), steps=tab.env_steps,
            steps_per_s=self._rate(tab.index, tab.env_steps, now, run_since), restarts=tab.restarts,
            failures=tab.env_failures,
            renderer_pid=renderer_pid, cpu_percent=proc.cpu_percent, pss_mb=proc.pss_mb, uss_mb=proc.uss_mb,
            rss_mb=proc.rss_mb, host=None if tab.host is None else tab.host + 1,
            last_failure=tab.causes[-1] if tab.causes else None,
        )

    def _rate(self, index: int, steps: int, now: float, run_since: float | None) -> float:
        last = self._last.get(index)
        rate = 0.0
        if run_since is not None:
            rate = steps / max(now - run_since, 1e-3)  # steps of its current env worker
        elif last is not None and now > last[1]:
            done = steps - last[0] if steps >= last[0] else steps  # a new worker counts from 0
            rate = done / (now - last[1])
        self._last[index] = (steps, now)
        return rate
