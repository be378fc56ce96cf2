"""The pool of tabs: N pages in one headless Chromium, each kept alive at its own URL.

Replace, never repair: a tab that crashed, hung or misbehaved is closed (its renderer killed
if closing fails) and a fresh page opens at the same URL, so it connects to the same port.
The whole browser dying means relaunching it with all tabs; the Playwright driver dying means
a new Playwright instance. Restarts back off, and a tab that keeps failing trips a circuit
breaker that the orchestrator turns into a clean stop.

All methods run on the pool's own asyncio loop. `on_event(kind, fields)` reports everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any

import psutil
from playwright.async_api import Browser, BrowserContext, Page, Playwright, async_playwright
from playwright.async_api import Error as PlaywrightError

from browser_pool import processes
from browser_pool.chromium import LaunchOptions
from browser_pool.pool_settings import PoolSettings
from browser_pool.tab_record import TabRecord

log = logging.getLogger("lunarfleet.pool")
EventCallback = Callable[[str, dict[str, Any]], None]


class TabPool:
    def __init__(
        self,
        urls: list[str],
        ports: list[int],
        launch: LaunchOptions,
        settings: PoolSettings | None = None,
        on_event: EventCallback | None = None,
    ) -> None:
        self.tabs = [TabRecord(index=i, url=u, port=p) for i, (u, p) in enumerate(zip(urls, ports, strict=True))]
        self.launch_options = launch
        self.settings = settings or PoolSettings()
        self._emit = on_event or (lambda kind, fields: None)
        self._pw: Playwright | None = None
        self._browser: Browser | None = None
        self._context: BrowserContext | None = None
        self._browser_pid: int | None = None
        self._driver_pid: int | None = None
        self._profiles: list[str] = []  # the profile folders of our browsers, deleted at close
        self._trace_lock = asyncio.Lock()
        self._relaunch_lock = asyncio.Lock()
        self._watch_task: asyncio.Task[None] | None = None
        self._closing = False
        self.fatal: str | None = None  # set when the circuit breaker trips
        self.browser_restarts = 0
        self.driver_restarts = 0
        # Tab 1 may live apart (--watch, --record-video): its own context, in a headed browser for watching.
        self._first_browser: Browser | None = None
        self._first_browser_pid: int | None = None
        self._first_context: BrowserContext | None = None
        self._video_task: asyncio.Task[None] | None = None
        self._video_done = False
        self.videos: list[str] = []  # finished video files of tab 1
        self.on_page: Callable[[TabRecord, Page], None] | None = None  # sees every new page before it loads

    # ---- start and stop ----------------------------------------------------------------
    async def start(self) -> None:
        await self._launch()
        await asyncio.gather(*(self._open(tab) for tab in self.tabs))
        self._check_renderers()
        self._watch_task = asyncio.create_task(self._watch())

    async def _launch(self) -> None:
        drivers_before = {d.pid for d in processes.playwright_drivers(os.getpid())}
        self._pw = await async_playwright().start()
        # This process may run other pools (lunarfleet.make_vec_env twice): ours is the new driver.
        new_drivers = [d.pid for d in processes.playwright_drivers(os.getpid()) if d.pid not in drivers_before]
        self._driver_pid = new_drivers[0] if new_drivers else None
        opts = self.launch_options
        self._browser = await asyncio.wait_for(
            self._pw.chromium.launch(
                executable_path=opts.executable,
                headless=opts.headless,
                args=opts.args(os.getpid()),
            ),
            self.settings.navigation_s,
        )
        self._browser.on("disconnected", lambda _: self._on_browser_gone())
        self._context = await self._browser.new_context(viewport={"width": 800, "height": 600})
        ours = [p for p in processes.marked_browsers(os.getpid()) if processes.is_alive(p.pid)]
        newest = max(ours, key=lambda p: p.create_time(), default=None)
        self._browser_pid = newest.pid if newest else None
        folder = newest and processes.profile_dir(newest)
        if folder:
            self._profiles.append(folder)
            processes.record_profile(os.getpid(), folder)
        self._emit("browser_launched", {"pid": self._browser_pid, "version": self._browser.version})
        await self._launch_first()

    async def _launch_first(self) -> None:
        """Tab 1's own context: in a visible browser (--watch) and/or recording video."""
        s, opts = self.settings, self.launch_options
        recording = bool(s.video_dir) and not self._video_done
        if not (s.watch_first or recording):
            return
        assert self._pw is not None and self._browser is not None
        host = self._browser
        if s.watch_first:
            try:
                first = await asyncio.wait_for(
                    self._pw.chromium.launch(executable_path=opts.executable, headless=False, args=opts.args(os.getpid())),
                    self.settings.navigation_s,
                )
            except Exception as exc:
                self._emit("warning", {"message": f"cannot open the watch window ({exc!r:.200}); tab 1 stays headless"})
            else:
                self._first_browser = host = first
                first.on("disconnected", self._on_first_gone)
                pids = [p for p in processes.marked_browsers(os.getpid()) if p.pid != self._browser_pid]
                newest = max(pids, key=lambda p: p.create_time(), default=None)
                self._first_browser_pid = newest.pid if newest else None
                if newest and (folder := processes.profile_dir(newest)):
                    self._profiles.append(folder)
                    processes.record_profile(os.getpid(), folder)
                self._emit("watch_window", {"pid": self._first_browser_pid})
        options: dict[str, Any] = {"viewport": {"width": 800, "height": 600}}
        if recording:
            os.makedirs(str(s.video_dir), exist_ok=True)
            options.update(record_video_dir=str(s.video_dir), record_video_size={"width": 800, "height": 600})
        self._first_context = await host.new_context(**options)

    async def close(self) -> None:
        """Close every tab, the browser and the driver; kill whatever does not go quietly."""
        self._closing = True
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch_task
        if self._video_task is not None:
            self._video_task.cancel()
        for tab in self.tabs:
            tab.state = "closed"
        await self._shutdown_browser()
        processes.forget_profiles(os.getpid(), self._profiles)

    async def _shutdown_browser(self) -> None:
        browser_pid, driver_pid = self._browser_pid, self._driver_pid
        await self._shutdown_first()
        if self._browser is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._browser.close(), 10)
        if self._pw is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pw.stop(), 10)
        for pid in (browser_pid, driver_pid):
            if pid and processes.wait_gone([pid], 2.0):
                with contextlib.suppress(psutil.Error):
                    processes.kill_tree(psutil.Process(pid))
        self._browser = self._context = self._pw = None

    async def _shutdown_first(self) -> None:
        """Close tab 1's own context (which writes its video) and the watch browser."""
        context, self._first_context = self._first_context, None
        browser, self._first_browser = self._first_browser, None
        page = self.tabs[0].page if self.tabs else None
        video = page.video if page is not None and context is not None and page.context is context else None
        if context is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(context.close(), 10)
            await self._keep_video(video)
        if browser is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(browser.close(), 10)
        if self._first_browser_pid and processes.wait_gone([self._first_browser_pid], 2.0):
            with contextlib.suppress(psutil.Error):
                processes.kill_tree(psutil.Process(self._first_browser_pid))
        self._first_browser_pid = None

    def _on_first_gone(self, browser: Browser) -> None:
        """The watch window was closed (by a person, say): tab 1 carries on headless."""
        if self._closing or browser is not self._first_browser:
            return  # our own shutdown
        self._first_browser = self._first_context = None
        self._emit("warning", {"message": "the watch window was closed; tab 1 reopens headless"})
        self._spawn(self.replace(0, "watch_window_closed", "the watch window was closed"))

    async def _keep_video(self, video: Any) -> None:
        """Give a finished recording of tab 1 a readable name: tab1-1.webm, tab1-2.webm, ..."""
        if video is None:
            return
        with contextlib.suppress(Exception):
            source = await asyncio.wait_for(video.path(), 10)
            target = os.path.join(os.path.dirname(source), f"tab1-{len(self.videos) + 1}.webm")
            os.replace(source, target)
            self.videos.append(target)
            self._emit("video_saved", {"tab": 0, "path": target})

    async def _end_video(self) -> None:
        """After `video_s`, move tab 1 out of the recording context (a reload: the page reconnects)."""
        await asyncio.sleep(self.settings.video_s)
        tab = self.tabs[0]
        async with tab.lock:
            if self._closing or self._first_context is None:
                return
            self._video_done = True
            page, tab.page = tab.page, None
            context, self._first_context = self._first_context, None
            video = page.video if page is not None else None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(context.close(), 10)  # closes the page and writes the file
            await self._keep_video(video)
            if self._first_browser is not None:  # still watched: a fresh, unrecorded context there
                self._first_context = await self._first_browser.new_context(viewport={"width": 800, "height": 600})
            try:
                await self._open(tab)
            except Exception as exc:
                self._emit("warning", {"message": f"reopening tab 1 after its video failed: {exc!r}"[:300]})
                tab.state = "failed"

    # ---- one tab -----------------------------------------------------------------------
    async def _open(self, tab: TabRecord) -> None:
        assert self._context is not None and self._browser is not None
        tab.state = "loading"
        tab.opened_at = time.time()
        tab.renderer_pid = None  # known again once the new page is traced (its env may step before)
        context = self._first_context if tab.index == 0 and self._first_context is not None else self._context
        page = await asyncio.wait_for(context.new_page(), self.settings.call_s)
        tab.page = page
        if self.on_page is not None:
            self.on_page(tab, page)
        page.on("crash", lambda _: self._spawn(self.replace(tab.index, "crash", "the page crashed")))
        if self.settings.init_script:
            script = self.settings.init_script.replace("{port}", str(tab.port)).replace("{env_id}", str(tab.index))
            await page.add_init_script(script)
        await page.goto(tab.url, timeout=self.settings.navigation_s * 1000, wait_until="load")
        if self.settings.connect_click:
            await page.click(self.settings.connect_click, timeout=self.settings.call_s * 1000)
        async with self._trace_lock:
            browser = self._first_browser if context is self._first_context and self._first_browser else self._browser
            tab.renderer_pid = await asyncio.wait_for(processes.renderer_pid(browser, page), self.settings.call_s)
        if tab.state == "loading":
            tab.state = "loaded"
        self._emit("tab_opened", {"tab": tab.index, "port": tab.port, "renderer_pid": tab.renderer_pid})
        if page.video is not None and self._video_task is None:  # the recording window starts now
            self._video_task = asyncio.ensure_future(self._end_video())

    def _check_renderers(self) -> None:
        pids = [t.renderer_pid for t in self.tabs]
        if None in pids or len(set(pids)) != len(pids):
            self._emit(
                "warning",
                {"message": f"tabs share renderer processes ({pids}): one crash may take several tabs; "
                 "do not pass --process-per-site"},
            )

    def record_failure(self, index: int, cause: str) -> bool:
        """Count a failure of a tab; True when it trips the circuit breaker (the run must stop)."""
        tab = self.tabs[index]
        now = time.time()
        tab.failures.append(now)
        tab.causes.append(cause)
        while tab.failures and tab.failures[0] < now - self.settings.breaker_window_s:
            tab.failures.popleft()
        if len(tab.failures) > self.settings.breaker_failures and not self.fatal:
            self.fatal = (
                f"tab {index + 1} (port {tab.port}) failed {len(tab.failures)} times in "
                f"{self.settings.breaker_window_s / 60:.0f} min (causes: {', '.join(tab.causes)}); "
                "stopping the run. Check the page at " + tab.url
            )
            tab.state = "failed"
            self._emit("breaker", {"tab": index, "message": self.fatal})
        return self.fatal is not None

    async def replace(
        self, index: int, cause: str, detail: str = "", since: float | None = None, counted: bool = False
    ) -> None:
        """Replace tab `index`. Failures reported before its latest (re)open are ignored.

        Tabs are healed even after the breaker tripped: the trainer stops at its next check, and a
        tab left dead would block it in a step until then.
        """
        tab = self.tabs[index]
        if self._closing:
            return
        if since is not None and since < tab.opened_at:
            return  # already replaced after this failure was seen
        async with tab.lock:
            if self._closing or (since is not None and since < tab.opened_at):
                return
            started = time.monotonic()
            if not counted:
                self.record_failure(index, cause)
            tab.state = "restarting"
            self._emit("tab_failed", {"tab": index, "port": tab.port, "cause": cause, "detail": detail})
            delay = backoff_delay(tab.failures, time.time(), self.settings)
            if delay:
                await asyncio.sleep(delay)
            await self._swap_page(tab, cause, detail, started)

    async def _swap_page(self, tab: TabRecord, cause: str, detail: str, started: float) -> None:
        """Close a tab's page and open a fresh one at the same URL (the caller holds tab.lock)."""
        try:
            await self._close_page(tab)
            await self._open(tab)
        except Exception as exc:  # the browser or driver may be gone: the watcher handles that
            if not self._closing:  # at the run's end the pool closing under it is no news
                self._emit("warning", {"message": f"replacing tab {tab.index + 1} ({cause}) failed: {exc!r}"[:300]})
            tab.state = "failed"
            return
        tab.restarts += 1
        self._emit(
            "tab_replaced",
            {"tab": tab.index, "port": tab.port, "cause": cause, "detail": detail,
             "seconds": round(time.monotonic() - started, 3), "renderer_pid": tab.renderer_pid},
        )

    def request_recycle(self, index: int, reason: str) -> None:
        """Ask for a working tab to be replaced at its next episode boundary (e.g. over its memory
        limit). The orchestrator passes this on to the tab's env, and calls `recycle` when the env
        has ended an episode and waits for the new page."""
        tab = self.tabs[index]
        if tab.recycle_reason is None and not self._closing:
            tab.recycle_reason = reason
            self._emit("tab_recycle_requested", {"tab": index, "port": tab.port, "reason": reason})

    async def recycle(self, index: int, reason: str) -> None:
        """Replace a tab on purpose, its env waiting for the new page: no failure, no backoff."""
        tab = self.tabs[index]
        tab.recycle_reason = None
        if self._closing:
            return
        async with tab.lock:
            tab.state = "restarting"
            await self._swap_page(tab, "recycle", reason, time.monotonic())

    async def _close_page(self, tab: TabRecord) -> None:
        page, tab.page = tab.page, None
        if page is None:
            return
        video = page.video
        with contextlib.suppress(Exception):
            await asyncio.wait_for(page.close(), 5)
        await self._keep_video(video)
        if tab.renderer_pid and processes.wait_gone([tab.renderer_pid], 0.5):
            with contextlib.suppress(OSError):
                os.kill(tab.renderer_pid, signal.SIGKILL)

    # ---- watching ------------------------------------------------------------------------
    async def _watch(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.settings.heartbeat_s)
            if self._closing:
                continue
            if self._driver_pid and not processes.is_alive(self._driver_pid):
                await self._relaunch("driver", "the Playwright driver died")
                continue
            if self._browser is None or not self._browser.is_connected() or (
                self._browser_pid and not processes.is_alive(self._browser_pid)
            ):
                await self._relaunch("browser", "the browser process died")
                continue
            await asyncio.gather(*(self._heartbeat(tab) for tab in self.tabs))

    async def _heartbeat(self, tab: TabRecord) -> None:
        if tab.page is None or tab.state in ("restarting", "loading", "closed") or tab.lock.locked():
            return
        since = time.time()
        try:
            await asyncio.wait_for(tab.page.evaluate("1"), self.settings.hang_s)
        except TimeoutError:
            await self.replace(tab.index, "hang", f"the page did not answer for {self.settings.hang_s:g} s", since)
        except PlaywrightError as exc:
            if "crash" in str(exc).lower():
                await self.replace(tab.index, "crash", str(exc)[:200], since)

    def _on_browser_gone(self) -> None:
        if not self._closing:
            self._spawn(self._relaunch("browser", "the browser disconnected"))

    async def _relaunch(self, what: str, why: str) -> None:
        """Start the browser (and for a dead driver, Playwright) again, with all tabs."""
        if self._relaunch_lock.locked():
            return
        async with self._relaunch_lock:
            if self._closing:
                return
            started = time.monotonic()
            self._emit("browser_failed", {"what": what, "cause": why})
            for tab in self.tabs:
                tab.state = "restarting"
                tab.page = None
            await self._shutdown_browser()
            await self._launch()
            await asyncio.gather(*(self._open(tab) for tab in self.tabs))
            for tab in self.tabs:
                tab.restarts += 1
            if what == "driver":
                self.driver_restarts += 1
            else:
                self.browser_restarts += 1
            self._emit("browser_restarted", {"what": what, "seconds": round(time.monotonic() - started, 3)})

    # ---- for the orchestrator ----------------------------------------------------------
    async def trace(self, seconds: float, categories: list[str]) -> bytes:
        """A Chromium trace of the whole browser for `seconds` (lunarfleet bench --profile), taken
        between the traces that find each new page's renderer."""
        assert self._browser is not None
        async with self._trace_lock:
            await self._browser.start_tracing(categories=categories)
            try:
                await asyncio.sleep(seconds)
            finally:
                trace = await self._browser.stop_tracing()
        return trace

    @property
    def browser_pid(self) -> int | None:
        return self._browser_pid

    @property
    def driver_pid(self) -> int | None:
        return self._driver_pid

    async def evaluate(self, index: int, script: str) -> Any:
        page = self.tabs[index].page
        if page is None:
            raise RuntimeError(f"tab {index + 1} has no page right now")
        return await asyncio.wait_for(page.evaluate(script), self.settings.call_s)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        task.add_done_callback(_log_task_error)


def _log_task_error(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("pool task failed: %r", task.exception())


def backoff_delay(failures: Sequence[float], now: float, settings: PoolSettings) -> float:
    """Seconds to wait before replacing a tab whose failures (wall clock, the latest included) are given."""
    recent = sum(1 for t in failures if t >= now - settings.backoff_window_s)
    return settings.backoff_s[min(max(recent - 1, 0), len(settings.backoff_s) - 1)]
