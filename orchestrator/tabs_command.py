"""`lunarfleet tabs`: only the self-healing tab pool, for people who keep their own trainer.

The original app's `train_ppo_parallel.py` opens WebSocket servers on 8765, 8766, ... and waits for
browser tabs. This command opens those tabs (headless), one per port, and keeps them alive
until Ctrl+C or SIGTERM; it never touches training. With no env workers of ours there is no
health channel, so it relies on what the pool sees itself (crash events, heartbeat hangs,
browser or driver death) plus the page's WebSocket traffic as Playwright reports it: a tab
whose page has had no open WebSocket for a while (the original app gives up after ~10
tries, e.g. when the trainer was started late or restarted) is reloaded, with backoff.

The set-up (browser, page server, fleet) is `orchestrator/run_setup.py`'s, as for `train`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from typing import Any

from browser_pool.tab_record import SocketWatch, TabRecord
from orchestrator.config import RunConfig
from orchestrator.events import EventLog, say
from orchestrator.fleet import Fleet
from orchestrator.run_setup import (
    RunPieces,
    find_browser,
    open_dashboard,
    open_fleet,
    open_run_folder,
    stop_signals,
    tab_urls,
)

TICK_S = 2.0  # status.json is rewritten, and idle tabs looked for, this often
STATUS_REPEAT_S = 60.0  # the status line is printed when it changes, and at least this often
IDLE_RELOAD_S = (15.0, 30.0, 60.0)  # no open WebSocket this long: reload (then wait longer, up to the last)


class TabsCommand:
    """N tabs at ports base..base+N-1, kept alive by the pool until stopped."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.ports = list(range(cfg.base_port, cfg.base_port + cfg.envs))
        self._stop = False

    # ---- the WebSocket view, from Playwright's events (on the pool's loop) -----------------
    def _on_page(self, tab: TabRecord, page: Any) -> None:
        watch = tab.sockets = SocketWatch(idle_reloads=tab.sockets.idle_reloads)  # the record's WebSocket view

        def on_websocket(ws: Any) -> None:
            state = {"open": True, "counted": False}

            def traffic(_: Any) -> None:
                if not state["counted"] and state["open"]:
                    state["counted"] = True
                    watch.open_sockets += 1
                    watch.connections += 1
                    watch.idle_reloads = 0
                    ws.remove_listener("framesent", traffic)
                    ws.remove_listener("framereceived", traffic)

            def closed(_: Any = None) -> None:
                if state["open"]:
                    state["open"] = False
                    if state["counted"]:
                        watch.open_sockets -= 1
                        if watch.open_sockets == 0:
                            watch.idle_since = time.monotonic()

            ws.on("framesent", traffic)
            ws.on("framereceived", traffic)
            ws.on("close", closed)
            ws.on("socketerror", closed)

        page.on("websocket", on_websocket)

    async def _reload_idle(self, fleet: Fleet) -> None:
        """Reload a tab whose page has had no WebSocket for a while (the trainer was not there yet)."""
        now = time.monotonic()
        for tab in fleet.pool.tabs:
            watch = tab.sockets
            if watch.connected or tab.state in ("loading", "restarting", "closed", "new") or tab.lock.locked():
                continue
            wait = IDLE_RELOAD_S[min(watch.idle_reloads, len(IDLE_RELOAD_S) - 1)]
            if now - max(watch.idle_since, watch.opened_at) < wait:
                continue
            watch.idle_reloads += 1
            fleet.events("tab_idle", {"tab": tab.index, "port": tab.port, "seconds": round(wait)}, echo=False)
            say(f"[Tabs] tab {tab.index + 1} (port {tab.port}) has had no WebSocket connection for {wait:.0f} s; "
                f"reloading it (is your trainer listening on ws://localhost:{tab.port}?)")
            fleet.loop.create_task(
                fleet.pool.replace(tab.index, "no_connection", f"no WebSocket for {wait:.0f} s", counted=True)
            )
            await asyncio.sleep(0)

    # ---- status ------------------------------------------------------------------------------
    def status(self, fleet: Fleet) -> dict[str, Any]:
        tabs = []
        for tab in fleet.pool.tabs:
            watch = tab.sockets
            tabs.append({
                "tab": tab.index + 1,
                "port": tab.port,
                "state": tab.state,
                "connected": watch.connected,
                "connections": watch.connections,
                "renderer_pid": tab.renderer_pid,
                "restarts": tab.restarts,
                "url": tab.url,
            })
        return {
            "time": round(time.time(), 3),
            "command": "tabs",
            "pid": os.getpid(),
            "browser_pid": fleet.pool.browser_pid,
            "browser_restarts": fleet.pool.browser_restarts,
            "driver_restarts": fleet.pool.driver_restarts,
            "fatal": fleet.fatal,
            "tabs": tabs,
        }

    def _write_status(self, fleet: Fleet, data: dict[str, Any] | None = None) -> dict[str, Any]:
        data = data or self.status(fleet)
        return write_tabs_status(self.cfg, data)

    @staticmethod
    def _status_line(data: dict[str, Any]) -> str:
        return status_line(data)

    # ---- life ------------------------------------------------------------------------------
    def run(self) -> int:
        events = open_run_folder(self.cfg)
        run = RunPieces()
        code = 0
        with stop_signals(self._request_stop):
            try:
                fleet = self.open_pool(run, events)
                self._write_status(fleet)
                if self.cfg.dashboard:
                    open_dashboard(run, self.cfg)
                say(f"[Tabs] Running; status in {self.cfg.run_dir / 'status.json'}. Ctrl+C stops and closes every tab.")
                code = self._keep_alive(fleet)
            except KeyboardInterrupt:
                pass
            except Exception as exc:
                events("error", {"message": f"{type(exc).__name__}: {exc}"})
                say(f"[Tabs] ✗ {type(exc).__name__}: {exc}")
                code = 1
            finally:
                with stop_signals(signal.SIG_IGN):  # cleanup must finish
                    self._close(run, events)
        return code

    def open_pool(self, run: RunPieces, events: EventLog) -> Fleet:
        """The browser with one tab per port, each page loaded (the pages connect when the trainer listens).
        Also what a Ray host of `tabs --ray` opens on its machine (orchestrator/ray_host.py)."""
        cfg = self.cfg
        browser = find_browser(cfg.browser)
        urls = tab_urls(run, cfg, self.ports)
        say(f"[Tabs] Opening {cfg.envs} tabs for WebSocket ports {self.ports[0]}-{self.ports[-1]}; page {urls[0]}")
        fleet = open_fleet(run, cfg, browser, self.ports, urls, events)
        fleet.pool.on_page = self._on_page
        fleet.run(fleet.pool.start(), timeout=cfg.connect_timeout + 60)
        for tab in fleet.pool.tabs:
            say(f"[Tabs] tab {tab.index + 1} -> ws://localhost:{tab.port} (renderer pid {tab.renderer_pid})")
        return fleet

    def tick(self, fleet: Fleet) -> dict[str, Any]:
        """One round of keeping alive: reload the tabs idle too long; the status now."""
        fleet.run(self._reload_idle(fleet), timeout=30)
        return self.status(fleet)

    def _keep_alive(self, fleet: Fleet) -> int:
        """Until stopped: reload idle tabs, rewrite status.json, print the status line when it changes."""
        last_line = ""
        next_status = 0.0
        while not self._stop:
            if fleet.fatal:
                say(f"[Tabs] ✗ stopping: {fleet.fatal}")
                return 1
            line = self._status_line(self._write_status(fleet, self.tick(fleet)))
            if line != last_line or time.monotonic() >= next_status:
                say(line)
                last_line, next_status = line, time.monotonic() + STATUS_REPEAT_S
            self._sleep(TICK_S)
        return 0

    def _close(self, run: RunPieces, events: EventLog) -> None:
        try:
            if run.fleet is not None:
                with contextlib.suppress(Exception):
                    self._write_status(run.fleet)
        finally:
            run.close()
        events.close()
        say("[Tabs] Stopped; every tab and the browser are closed.")

    def _request_stop(self, signum: int, frame: Any) -> None:
        self._stop = True

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stop and time.monotonic() < end:
            time.sleep(0.1)


def write_tabs_status(cfg: RunConfig, data: dict[str, Any]) -> dict[str, Any]:
    """status.json of a `tabs` run, replaced atomically."""
    path = cfg.run_dir / "status.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
    return data


def status_line(data: dict[str, Any]) -> str:
    """The console line of the tabs' state (with --ray, each tab named with its host)."""
    parts = [
        ("" if t.get("host") is None else f"host {t['host']} ")
        + f"{t['tab']}:{t['port']} {'connected' if t['connected'] else t['state']} "
        f"(pid {t['renderer_pid']}, {t['restarts']} restarts)"
        for t in data["tabs"]
    ]
    up = sum(1 for t in data["tabs"] if t["connected"])
    return f"[Tabs] {up}/{len(parts)} connected · " + " · ".join(parts)


def run_tabs(cfg: RunConfig) -> int:
    if cfg.ray is not None:
        from orchestrator.ray_fleet import run_tabs_on_ray  # Ray is imported only when asked for

        return run_tabs_on_ray(cfg)
    return TabsCommand(cfg).run()

