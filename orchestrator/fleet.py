"""The fleet: the app server, the tab pool and the health channel, wired together.

The pool and the env workers never talk directly. Env workers send health datagrams (see
`training/health.py`); the fleet listens and turns "the tab on port P failed" into "replace
tab P", and "a page connected to port P" into recovery times. What the envs report is kept in
the `env` part of each tab's one record (`browser_pool/tab_record.py`), where the monitor reads it.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from browser_pool.chromium import LaunchOptions
from browser_pool.pool import PoolSettings, TabPool
from browser_pool.tab_record import EnvReport, TabRecord
from orchestrator.events import EventLog, say
from training.event_loop import LoopThread

# A page that closed its own socket usually reconnects by itself (the embedded page and the
# original app both do); it is replaced only if it has not come back within this grace.
RECONNECT_GRACE_S = 5.0
REPLACE_NOW = {"hang", "crash"}
# The page's own doing, not a fault of the tab: the original app's watchdog (restart_request, then
# it closes its socket and reconnects) and a page that came back by itself between two steps.
# They cost the episode but never count toward the circuit breaker.
PAGE_RESTARTS = {"watchdog", "page_reconnected"}
# A recycle request the env has not acted on is sent again after this long (a respawned worker
# has a new socket; a datagram may be lost).
RECYCLE_ASK_AGAIN_S = 10.0


class SetupTimeout(RuntimeError):
    pass


class Fleet:
    def __init__(
        self,
        urls: list[str],
        ports: list[int],
        launch: LaunchOptions,
        pool_settings: PoolSettings,
        events: EventLog,
        run_token: str,
    ) -> None:
        self.ports = ports
        self.events = events
        self.run_token = run_token
        self.outages: list[dict[str, Any]] = []  # "outage" reports of the envs, in order
        self._loop = LoopThread("tab-pool")
        self.pool = TabPool(urls, ports, launch, pool_settings, on_event=events)
        self._tabs = {tab.port: tab for tab in self.pool.tabs}
        for tab in self.pool.tabs:
            tab.env = EnvReport()  # the fleet is the one that writes what the tab's env reports
        self._transport: asyncio.DatagramTransport | None = None
        self.health_port = self._loop.run(self._listen())
        self._start_future: Any = None

    # ---- life --------------------------------------------------------------------------
    def start(self) -> None:
        """Open the browser and all tabs in the background (see `wait_connected`)."""
        self._start_future = asyncio.run_coroutine_threadsafe(self.pool.start(), self._loop.loop)

    def wait_connected(self, timeout_s: float) -> float:
        """Wait until every tab's page is connected, saying each as it connects, as the original app's trainer does."""
        began = time.monotonic()
        announced: set[int] = set()
        while True:
            if self._start_future is not None and self._start_future.done():
                self._start_future.result()  # raises the browser start-up error, if any
            for port, tab in self._tabs.items():
                if self._env(tab).ever_connected and port not in announced:
                    announced.add(port)
                    say(f"[Setup] ✓ Browser tab {tab.index + 1} connected! (port {port})")
            if len(announced) == len(self.ports):
                return time.monotonic() - began
            if time.monotonic() - began > timeout_s:
                missing = [f"tab {t.index + 1} (port {p})" for p, t in self._tabs.items() if p not in announced]
                raise SetupTimeout(
                    f"{', '.join(missing)} never connected within {timeout_s:.0f} s. Check that the page URL is "
                    "right (--url), that the page connects to ws://localhost:PORT, and run 'lunarfleet doctor'."
                )
            time.sleep(0.05)

    def stop(self) -> None:
        try:
            if self._start_future is not None and not self._start_future.done():
                self._start_future.cancel()
            self._loop.run(self.pool.close(), timeout=60)
        finally:
            try:
                self._loop.run(self._close_channel(), timeout=5)
            finally:
                self._loop.stop()

    async def _close_channel(self) -> None:
        if self._transport is not None:
            self._transport.close()
            await asyncio.sleep(0)  # its socket is released in the callback this lets run

    @property
    def health(self) -> dict[int, EnvReport]:
        """What each tab's env reports, by port: the `env` part of the pool's tab records."""
        return {port: self._env(tab) for port, tab in self._tabs.items()}

    @staticmethod
    def _env(tab: TabRecord) -> EnvReport:
        assert tab.env is not None, "the fleet gives every tab an EnvReport"
        return tab.env

    @property
    def fatal(self) -> str | None:
        return self.pool.fatal

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop.loop

    def run(self, coro: Any, timeout: float | None = None) -> Any:
        return self._loop.run(coro, timeout)

    # ---- the health channel ------------------------------------------------------------
    async def _listen(self) -> int:
        loop = asyncio.get_running_loop()
        fleet = self

        class Protocol(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                fleet._on_datagram(data, addr)

        transport, _ = await loop.create_datagram_endpoint(Protocol, local_addr=("127.0.0.1", 0))
        self._transport = transport  # type: ignore[assignment]
        return int(transport.get_extra_info("sockname")[1])

    def _on_datagram(self, data: bytes, addr: Any = None) -> None:
        try:
            message = json.loads(data)
            port = int(message["port"])
        except (ValueError, KeyError, TypeError):
            return
        if message.get("token") != self.run_token or port not in self._tabs:
            return
        tab = self._tabs[port]
        h, event, now = self._env(tab), message.get("event"), time.time()
        if event in ("steps", "stepping"):
            # The env that steps the tab is the one that acts on recycle requests.
            h.reporter = addr or h.reporter
        match event:
            case "connected":
                h.connected = h.ever_connected = True
            case "stepping":
                self._on_stepping(tab, now)
            case "failed":
                self._on_failed(tab, message, now)
            case "steps":
                self._on_steps(tab, message, now)
            case "recycle_ready":
                self._on_recycle_ready(tab)
            case "refused":
                self.events("refused", {"port": port, "reason": message.get("reason")})
            case "restart_request":
                self.events("restart_request", {"tab": tab.index, "port": port}, echo=False)
        self._ask_env_to_recycle(tab)

    def _on_stepping(self, tab: TabRecord, now: float) -> None:
        """The env reset its tab against a live page: the tab works (again)."""
        h = self._env(tab)
        h.connected = h.ever_connected = True
        h.stepping_at = now
        self._recycle_if_due(tab)
        if h.failed_at is not None:
            seconds = now - h.failed_at
            h.recoveries.append(seconds)
            fields = {"tab": tab.index, "port": tab.port, "cause": h.failed_cause, "seconds": round(seconds, 3)}
            self.events("tab_recovered", fields)
            h.failed_at = None

    def _on_failed(self, tab: TabRecord, message: dict[str, Any], now: float) -> None:
        """The env saw its tab fail: replace it now, or when the page has not come back by itself."""
        h, cause = self._env(tab), str(message.get("cause"))
        h.connected = False
        h.failures += 1
        if h.failed_at is None:
            h.failed_at, h.failed_cause = float(message.get("time", now)), cause
        self.events("env_saw_failure", {"tab": tab.index, "port": tab.port, "cause": cause, "detail": message.get("detail")})
        if cause in REPLACE_NOW:
            self._loop.loop.create_task(self.pool.replace(tab.index, cause, str(message.get("detail", "")), h.failed_at))
        elif cause in PAGE_RESTARTS or cause == "disconnected":
            # It reconnects by itself (or its browser is being relaunched: that is no failure of
            # this tab); if it is not back within the grace, that is a failure, counted then.
            self._loop.loop.call_later(RECONNECT_GRACE_S, self._replace_if_still_gone, tab.port, h.failed_at, False)
        else:
            # The page misbehaved (garbage, ...): counted now. The env dropped the socket and a
            # live page reconnects by itself, costing one episode.
            self.pool.record_failure(tab.index, cause)
            self._loop.loop.call_later(RECONNECT_GRACE_S, self._replace_if_still_gone, tab.port, h.failed_at)

    def _on_steps(self, tab: TabRecord, message: dict[str, Any], now: float) -> None:
        """The env's step count: the tab's speed, and periodic recycling."""
        h, steps = self._env(tab), int(message.get("steps", 0))
        if h.steps_at and steps > h.steps:
            h.steps_per_s = (steps - h.steps) / max(now - h.steps_at, 1e-6)
        h.steps, h.steps_at = steps, now
        self._recycle_if_due(tab)

    def _on_recycle_ready(self, tab: TabRecord) -> None:
        """The env ended an episode and waits for the new page instead of resetting the old one."""
        self._env(tab).recycle_asked_at = None
        reason, tab.recycle_reason = tab.recycle_reason or "asked again by its env", None
        self._loop.loop.create_task(self.pool.recycle(tab.index, reason))

    def record_outage(self, kind: str, message: dict[str, Any]) -> None:
        """The vec env's view of a tab that was slow or replaced (training/outages.py). Called in
        the trainer process (`make_vec_env(..., on_outage=)`), so none is lost when the run ends."""
        tab = self._tabs[int(message["port"])]
        record_outage(kind, message, self._env(tab), {"tab": tab.index}, self.outages, self.events)

    def _ask_env_to_recycle(self, tab: TabRecord) -> None:
        """Tell the env of a tab due for recycling to swap it at its next episode boundary."""
        h, now = self._env(tab), time.time()
        if tab.recycle_reason is None or h.reporter is None or self._transport is None:
            return
        if h.recycle_asked_at is not None and now - h.recycle_asked_at < RECYCLE_ASK_AGAIN_S:
            return
        h.recycle_asked_at = now
        request = {"token": self.run_token, "event": "recycle", "port": tab.port}
        self._transport.sendto(json.dumps(request).encode(), h.reporter)

    def request_recycle(self, index: int, reason: str) -> None:
        """Replace tab `index` at its next episode boundary (the memory guard); from any thread."""
        self._loop.loop.call_soon_threadsafe(self.pool.request_recycle, index, reason)

    def _recycle_if_due(self, tab: TabRecord) -> None:
        """Periodic recycling (--recycle-steps/--recycle-hours): long-lived pages leak memory."""
        settings, h = self.pool.settings, self._env(tab)
        if tab.opened_at != h.opened_seen:
            h.opened_seen, h.steps_at_open = tab.opened_at, h.steps
        reason = None
        if settings.recycle_hours and time.time() - tab.opened_at >= settings.recycle_hours * 3600:
            reason = f"open for {settings.recycle_hours:g} h"
        elif settings.recycle_steps and h.steps - h.steps_at_open >= settings.recycle_steps:
            reason = f"{h.steps - h.steps_at_open:,} steps since it opened"
        if reason and tab.recycle_reason is None:
            self.pool.request_recycle(tab.index, reason)

    def _replace_if_still_gone(self, port: int, failed_at: float, counted: bool = True) -> None:
        tab = self._tabs[port]
        h = self._env(tab)
        if h.failed_at == failed_at and not h.connected:
            self._loop.loop.create_task(
                self.pool.replace(tab.index, h.failed_cause, "the page did not reconnect", failed_at, counted=counted)
            )

    def note_fault(self, port: int, cause: str) -> None:
        """An injected fault: recovery time is measured from this moment."""
        h = self._env(self._tabs[port])
        h.failed_at, h.failed_cause = time.time(), cause

    def outage_summary(self) -> dict[str, Any]:
        return outage_summary(self.outages)

    def recoveries(self) -> list[float]:
        return [s for h in self.health.values() for s in h.recoveries]

    def tab_restarts(self) -> int:
        return sum(t.restarts for t in self.pool.tabs)


def outage_summary(outages: list[dict[str, Any]]) -> dict[str, Any]:
    """Frozen steps and the other tabs' longest wait, over all outages of the run."""
    waits = [float(o["others_longest_wait_s"] or 0.0) for o in outages]
    return {
        "count": len(outages),
        "frozen_steps": sum(int(o["frozen_steps"] or 0) for o in outages),
        "others_longest_wait_s": max(waits, default=0.0),
        "longest_outage_s": max((float(o["seconds"] or 0.0) for o in outages), default=0.0),
    }


def record_outage(
    kind: str, message: dict[str, Any], report: EnvReport, where: dict[str, Any], outages: list[dict[str, Any]],
    events: EventLog,
) -> None:
    """An outage as it began (the tab is "frozen", tab_record.tab_state, until it ends) and as it
    ended: its frozen steps, and how long the other tabs waited for it. `where` names the tab."""
    where = {**where, "port": int(message["port"])}
    if kind == "outage_began":
        report.frozen_since = time.time()
        events("tab_frozen", {**where, "cause": message.get("cause")}, echo=False)
        return
    report.frozen_since = None
    keys = ("cause", "seconds", "frozen_steps", "others_longest_wait_s", "until_run_end")
    fields = {**where, **{k: message[k] for k in keys if k in message}}
    outages.append(fields)
    events("tab_outage", fields, echo=False)
