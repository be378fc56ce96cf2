"""`lunarfleet tabs`: only the self-healing tab pool, for people who keep their own trainer.

The original app's `train_ppo_parallel.py` opens WebSocket servers on 8765, 8766, ... and waits for
browser tabs. This command opens those tabs (headless), one per port, and keeps them alive
until Ctrl+C or SIGTERM; it never touches training. With no env workers of ours there is no
health channel, so it relies on what the pool sees itself (crash events, heartbeat hangs,
browser or driver death) plus the page's WebSocket traffic as Playwright reports it: a tab
whose page has had no open WebSocket for a while (the original app gives up after ~10
tries, e.g. when the trainer was started late or restarted) is reloaded, with backoff.

Also here: `page_pool_options`, the pool settings of the page options every command shares
(--connect-click, --init-script, --watch, --record-video).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from browser_pool.chromium import LaunchOptions, find_chromium
from browser_pool.pool import PoolSettings, PoolTab
from browser_pool.processes import sweep_leftovers
from orchestrator.app_server import AppServer, start_app_server
from orchestrator.config import RunConfig
from orchestrator.doctor import playwright_chromium
from orchestrator.events import EventLog, say
from orchestrator.fleet import Fleet

TICK_S = 2.0  # status.json is rewritten, and idle tabs looked for, this often
STATUS_REPEAT_S = 60.0  # the status line is printed when it changes, and at least this often
IDLE_RELOAD_S = (15.0, 30.0, 60.0)  # no open WebSocket this long: reload (then wait longer, up to the last)


def has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def page_pool_options(cfg: RunConfig, tell: Callable[[str], None] = say) -> dict[str, Any]:
    """PoolSettings fields for --connect-click, --init-script, --watch and --record-video."""
    watch = False
    if cfg.watch:
        if has_display():
            watch = True
            tell("[Setup] --watch: tab 1 opens in a visible browser window (closing it only sends tab 1 back to headless)")
        else:
            tell("[Setup] ! --watch: there is no display here (neither DISPLAY nor WAYLAND_DISPLAY is set), so tab 1 "
                 "stays headless like the others. --record-video S records it into the run folder instead.")
    video_dir = None
    if cfg.record_video:
        ffmpeg, how = video_ffmpeg(link=True)
        if ffmpeg is None:
            tell(f"[Setup] ! --record-video: {how}; carrying on without a video")
        else:
            video_dir = str(cfg.run_dir / "videos")
            tell(f"[Setup] Recording tab 1 for {cfg.record_video:g} s from when it opens into {video_dir}/ "
                 f"(then tab 1 reloads unrecorded); ffmpeg: {how}")
    return {
        "connect_click": cfg.connect_click,
        "init_script": cfg.init_script,
        "watch_first": watch,
        "video_dir": video_dir,
        "video_s": cfg.record_video or 60.0,
    }


def video_ffmpeg(link: bool = False) -> tuple[Path | None, str]:
    """The ffmpeg Playwright will record video with, and how it was found.

    Playwright looks only at its own build (`playwright install ffmpeg`, a download that some
    machines cannot make). Where that is missing, an ffmpeg from the imageio-ffmpeg package or
    the PATH serves as well (it needs VP8 and MJPEG): with `link`, it is linked in at the place
    Playwright looks, which is what `playwright install ffmpeg` would fill.
    """
    target = _playwright_ffmpeg_path()
    if target is not None and os.access(target, os.X_OK):
        return target, f"Playwright's own ({target})"
    candidates: list[str] = []
    with contextlib.suppress(Exception):
        import imageio_ffmpeg  # optional: pip install imageio-ffmpeg

        candidates.append(imageio_ffmpeg.get_ffmpeg_exe())
    if found := shutil.which("ffmpeg"):
        candidates.append(found)
    source = next((c for c in candidates if os.access(c, os.X_OK)), None)
    missing = ("no ffmpeg to record with: run 'python -m playwright install ffmpeg', "
               "or 'pip install imageio-ffmpeg', or install ffmpeg (apt-get install ffmpeg)")
    if source is None:
        return None, missing
    if target is None:
        return None, f"{missing} (found {source}, but Playwright uses only its own ffmpeg on {sys.platform})"
    if not link:
        return Path(source), f"{source}"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            target.unlink()  # a dangling link from an earlier install
        target.symlink_to(source)
    except OSError as exc:
        return None, f"{missing} (could not link {source} as {target}: {exc})"
    return target, f"{source}, linked as {target}"


def _playwright_ffmpeg_path() -> Path | None:
    """Where Playwright's driver looks for its ffmpeg on this machine (Linux x64 only here)."""
    if not sys.platform.startswith("linux") or os.uname().machine not in ("x86_64", "AMD64"):
        return None
    try:
        import playwright

        package = Path(playwright.__file__).parent / "driver" / "package"
        browsers = json.loads((package / "browsers.json").read_text())["browsers"]
        revision = next(b["revision"] for b in browsers if b["name"] == "ffmpeg")
    except (OSError, ValueError, KeyError, StopIteration, ImportError):
        return None
    root = os.environ.get("PLAYWRIGHT_BROWSERS_PATH")
    if root == "0":
        base = package / ".local-browsers"
    elif root:
        base = Path(root)
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ms-playwright"
    return base / f"ffmpeg-{revision}" / "ffmpeg-linux"


@dataclass
class SocketWatch:
    """What Playwright saw of one tab's WebSockets since its page (re)opened."""

    opened_at: float = field(default_factory=time.monotonic)
    open_sockets: int = 0
    connections: int = 0  # sockets that carried at least one frame
    idle_since: float = field(default_factory=time.monotonic)  # no open socket since (when open_sockets == 0)
    idle_reloads: int = 0  # reloads in a row for having no socket (reset once one opens)

    @property
    def connected(self) -> bool:
        return self.open_sockets > 0


class TabsCommand:
    """N tabs at ports base..base+N-1, kept alive by the pool until stopped."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.ports = list(range(cfg.base_port, cfg.base_port + cfg.envs))
        self.sockets: dict[int, SocketWatch] = {i: SocketWatch() for i in range(cfg.envs)}
        self._stop = False

    # ---- the WebSocket view, from Playwright's events (on the pool's loop) -----------------
    def _on_page(self, tab: PoolTab, page: Any) -> None:
        previous = self.sockets.get(tab.index)
        watch = self.sockets[tab.index] = SocketWatch(idle_reloads=previous.idle_reloads if previous else 0)

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
            watch = self.sockets[tab.index]
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
            watch = self.sockets[tab.index]
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

    def _write_status(self, fleet: Fleet) -> dict[str, Any]:
        data = self.status(fleet)
        path = self.cfg.run_dir / "status.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)
        return data

    @staticmethod
    def _status_line(data: dict[str, Any]) -> str:
        parts = [
            f"{t['tab']}:{t['port']} {'connected' if t['connected'] else t['state']} (pid {t['renderer_pid']}, {t['restarts']} restarts)"
            for t in data["tabs"]
        ]
        up = sum(1 for t in data["tabs"] if t["connected"])
        return f"[Tabs] {up}/{len(parts)} connected · " + " · ".join(parts)

    # ---- life ------------------------------------------------------------------------------
    def run(self) -> int:
        cfg = self.cfg
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(cfg.run_dir / "config.json")
        events = EventLog(cfg.run_dir / "events.jsonl")
        previous = {sig: signal.signal(sig, self._request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        app: AppServer | None = None
        fleet: Fleet | None = None
        code = 0
        try:
            for line in sweep_leftovers():
                say(f"[Setup] Cleaned up after an earlier run: {line}")
            choice = find_chromium(cfg.browser, playwright_chromium())
            say(f"[Setup] Browser: {choice.description}")
            app_port = cfg.app_port
            if cfg.embedded:
                app = start_app_server(cfg.app_port, say)
                app_port = app.port
            urls = [cfg.tab_url(i, port, app_port) for i, port in enumerate(self.ports)]
            say(f"[Tabs] Opening {cfg.envs} tabs for WebSocket ports {self.ports[0]}-{self.ports[-1]}; page {urls[0]}")
            settings = PoolSettings(hang_s=cfg.step_timeout, **page_pool_options(cfg))
            fleet = Fleet(urls, self.ports, LaunchOptions(executable=choice.executable, headless=not cfg.headed),
                          settings, events, cfg.token)
            fleet.pool.on_page = self._on_page
            fleet.run(fleet.pool.start(), timeout=cfg.connect_timeout + 60)
            for tab in fleet.pool.tabs:
                say(f"[Tabs] tab {tab.index + 1} -> ws://localhost:{tab.port} (renderer pid {tab.renderer_pid})")
            self._write_status(fleet)
            say(f"[Tabs] Running; status in {cfg.run_dir / 'status.json'}. Ctrl+C stops and closes every tab.")
            last_line = ""
            next_status = 0.0
            while not self._stop:
                if fleet.fatal:
                    say(f"[Tabs] ✗ stopping: {fleet.fatal}")
                    code = 1
                    break
                fleet.run(self._reload_idle(fleet), timeout=30)
                data = self._write_status(fleet)
                line = self._status_line(data)
                if line != last_line or time.monotonic() >= next_status:
                    say(line)
                    last_line, next_status = line, time.monotonic() + STATUS_REPEAT_S
                self._sleep(TICK_S)
        except KeyboardInterrupt:
            pass
        except Exception as exc:
            events("error", {"message": f"{type(exc).__name__}: {exc}"})
            say(f"[Tabs] ✗ {type(exc).__name__}: {exc}")
            code = 1
        finally:
            for sig in previous:
                signal.signal(sig, signal.SIG_IGN)  # cleanup must finish
            if fleet is not None:
                with contextlib.suppress(Exception):
                    self._write_status(fleet)
                fleet.stop()
            if app is not None:
                app.close()
            events.close()
            say("[Tabs] Stopped; every tab and the browser are closed.")
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return code

    def _request_stop(self, signum: int, frame: Any) -> None:
        self._stop = True

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stop and time.monotonic() < end:
            time.sleep(0.1)


def run_tabs(cfg: RunConfig) -> int:
    return TabsCommand(cfg).run()

