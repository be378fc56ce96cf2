"""One record per tab, read by everyone who asks how a tab is.

The pool owns the records (`TabPool.tabs`) and writes the page's side; the fleet writes `env`
from what the tab's env reports over the health socket; `lunarfleet tabs` writes `sockets` from
Playwright's WebSocket events; the monitor and the chaos driver only read. A tab's state word
(`TabRecord.status`) therefore has one rule, in this file.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from playwright.async_api import Page


@dataclass
class EnvReport:
    """What the env stepping a tab said of it over the health socket (written by the fleet)."""

    connected: bool = False
    ever_connected: bool = False
    failed_at: float | None = None  # wall clock of an unrecovered failure
    failed_cause: str = ""
    failures: int = 0  # failures of the tab its env saw
    steps: int = 0  # steps its env reported (restarts at 0 with a new worker)
    steps_at: float = 0.0
    steps_per_s: float = 0.0
    stepping_at: float = 0.0  # wall clock of the latest reset against a live page
    recoveries: list[float] = field(default_factory=list)
    reporter: Any = None  # the env's health socket address, where recycle requests go
    recycle_asked_at: float | None = None  # wall clock of the recycle request the env has not acted on
    opened_seen: float = 0.0  # the tab's opened_at when steps_at_open was taken
    steps_at_open: int = 0  # the env's step count when its current tab opened
    frozen_since: float | None = None  # wall clock of the first frozen step of an outage not yet over


@dataclass
class SocketWatch:
    """What Playwright saw of the page's WebSockets since it (re)opened (`lunarfleet tabs`)."""

    opened_at: float = field(default_factory=time.monotonic)
    open_sockets: int = 0
    connections: int = 0  # sockets that carried at least one frame
    idle_since: float = field(default_factory=time.monotonic)  # no open socket since (when open_sockets == 0)
    idle_reloads: int = 0  # reloads in a row for having no socket (reset once one opens)

    @property
    def connected(self) -> bool:
        return self.open_sockets > 0


@dataclass
class TabRecord:
    index: int
    url: str
    port: int
    page: Page | None = None
    renderer_pid: int | None = None
    state: str = "new"  # the pool's: new, loading, loaded, connected, stepping, restarting, failed, closed
    restarts: int = 0
    opened_at: float = 0.0  # wall clock of the latest (re)open
    failures: deque[float] = field(default_factory=deque)  # times of the pool's counted failures (breaker, backoff)
    causes: deque[str] = field(default_factory=lambda: deque(maxlen=20))
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    recycle_reason: str | None = None  # set by `request_recycle`: replace at the next episode boundary
    env: EnvReport | None = None  # None when no env of ours reports on it (a bare pool, `lunarfleet tabs`)
    host: int | None = None  # with --ray: the host (machine) holding it, 0-based (orchestrator/ray_fleet.py)
    sockets: SocketWatch = field(default_factory=SocketWatch)

    def status(self) -> str:
        """The tab's state word in the monitor's table and status.json."""
        if self.env is None and self.state == "loaded":
            return "loaded"
        return tab_state(self.state, self.restarts, self.env)

    @property
    def env_steps(self) -> int:
        return self.env.steps if self.env else 0

    @property
    def env_failures(self) -> int:
        return self.env.failures if self.env else 0


def tab_state(pool_state: str, restarts: int, env: EnvReport | None) -> str:
    """One word for a tab: connecting, stepping, frozen, replacing, failed (or connected, closed).

    "frozen": its env gives it frozen steps (slow or hung, not yet replaced) while the others step on.

    The pool knows whether a page is being (re)opened; the env's reports say whether it is
    talking to the page.
    """
    if pool_state in ("failed", "closed"):
        return pool_state
    if pool_state == "restarting" or (pool_state in ("new", "loading") and restarts):
        return "replacing"
    if pool_state in ("new", "loading") or env is None:
        return "connecting"
    if env.failed_at is not None and not env.connected:
        return "replacing"
    if env.frozen_since is not None:
        return "frozen"
    if env.connected:
        return "stepping" if env.stepping_at else "connected"
    return "connecting"
