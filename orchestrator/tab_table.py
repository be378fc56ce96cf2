"""The per-tab table of a sample: which tab is which, what state it is in, how fast it steps.

The pool knows ports, renderer pids and restarts; the health channel knows whether an env is
talking to a tab and how many steps it took. `Sources` is how the sampler asks for both, and for
the pids of the other processes, so the same sampler serves a run's fleet, a bare pool
(`lunarfleet tabs`, tests) and fakes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from orchestrator.process_sampling import ProcStats


@dataclass
class TabInfo:
    """What the pool and the health channel know of one tab, read by the sampler."""

    index: int
    port: int
    state: str
    renderer_pid: int | None
    restarts: int = 0
    failures: int = 0
    steps: int = 0  # steps its env worker has reported (restarts at 0 with a new worker)


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


@dataclass
class Sources:
    """Functions, not values: tabs, renderers, workers and even the browser change while a run heals."""

    tabs: Callable[[], list[TabInfo]]
    browser_pid: Callable[[], int | None]
    driver_pid: Callable[[], int | None] = lambda: None
    worker_pids: Callable[[], list[int | None]] = list
    trainer_pid: int = field(default_factory=os.getpid)


def tab_state(pool_state: str, restarts: int, health: Any | None) -> str:
    """One word for a tab: connecting, stepping, restarting, failed (or connected, closed).

    The pool knows whether a page is being (re)opened; the health channel knows whether an env
    is talking to it (`PortHealth`).
    """
    if pool_state in ("failed", "closed"):
        return pool_state
    if pool_state == "restarting" or (pool_state in ("new", "loading") and restarts):
        return "restarting"
    if pool_state in ("new", "loading") or health is None:
        return "connecting"
    if getattr(health, "failed_at", None) is not None and not health.connected:
        return "restarting"
    if health.connected:
        return "stepping" if health.stepping_at else "connected"
    return "connecting"


def fleet_sources(fleet: Any, venv: Any | None = None) -> Sources:
    """Sources for a run: the fleet's pool and health channel, and the vec env's workers (`venv`
    may be a function returning the vec env, or None, while it is not made yet)."""
    pool = fleet.pool

    def tabs() -> list[TabInfo]:
        out = []
        for tab in pool.tabs:
            h = fleet.health.get(tab.port)
            out.append(
                TabInfo(
                    tab.index, tab.port, tab_state(tab.state, tab.restarts, h), tab.renderer_pid,
                    tab.restarts, h.failures if h else 0, h.steps if h else 0,
                )
            )
        return out

    def workers() -> list[int | None]:
        v = venv() if callable(venv) else venv  # a getter, when the vec env is made after the sampler starts
        return [getattr(p, "pid", None) for p in getattr(v, "processes", [])] if v is not None else []

    return Sources(tabs, lambda: pool.browser_pid, lambda: pool.driver_pid, workers)


def pool_sources(pool: Any) -> Sources:
    """Sources for a bare pool (no health channel): states come from the pool alone."""

    def tabs() -> list[TabInfo]:
        return [
            TabInfo(t.index, t.port, tab_state(t.state, t.restarts, None) if t.state != "loaded" else "loaded",
                    t.renderer_pid, t.restarts)
            for t in pool.tabs
        ]

    return Sources(tabs, lambda: pool.browser_pid, lambda: pool.driver_pid)


class TabRates:
    """Each tab's steps per second, from its step count now and at the previous sample."""

    def __init__(self) -> None:
        self._last: dict[int, tuple[int, float]] = {}  # tab index -> (steps, time)

    def row(self, tab: TabInfo, proc: ProcStats, now: float, run_since: float | None = None) -> TabRow:
        """The tab's row; with `run_since` (the final sample) its rate is averaged from then on."""
        return TabRow(
            tab=tab.index + 1, index=tab.index, port=tab.port, state=tab.state, steps=tab.steps,
            steps_per_s=self._rate(tab, now, run_since), restarts=tab.restarts, failures=tab.failures,
            renderer_pid=tab.renderer_pid, cpu_percent=proc.cpu_percent, pss_mb=proc.pss_mb, uss_mb=proc.uss_mb,
            rss_mb=proc.rss_mb,
        )

    def _rate(self, tab: TabInfo, now: float, run_since: float | None) -> float:
        last = self._last.get(tab.index)
        rate = 0.0
        if run_since is not None:
            rate = tab.steps / max(now - run_since, 1e-3)  # steps of its current env worker
        elif last is not None and now > last[1]:
            done = tab.steps - last[0] if tab.steps >= last[0] else tab.steps  # a new worker counts from 0
            rate = done / (now - last[1])
        self._last[tab.index] = (tab.steps, now)
        return rate
