"""The dashboard's pictures of the headless tabs: a small JPEG of each tab's canvas now and then.

Every tab that is stepping is asked, in turn, for a snapshot of its simulation 0 (the embedded
page's `window.lunarfleet.snapshot()`, webapp/bridge.js; for another page its first canvas), one
tab every `every_s / tabs` seconds so the cost is spread evenly; a tab that starts stepping (at the
start, or on a new page after a replacement) is pictured at once, and every tab a last time at the end. The JPEG goes to
`<run>/thumbnails/tab-N.jpg`, where the dashboard server (orchestrator/dashboard.py) finds it, live
or after the run. A tab that is frozen (slow or hung), being replaced, connecting or failed is skipped: a snapshot never
waits on a tab that is busy recovering. The tab enlarged on the dashboard (`focus`) is taken at
FOCUS_FPS, larger, while someone looks at it.

It runs as a task on the pool's own asyncio loop, as every Playwright call of the pool does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from browser_pool.pool import TabPool
    from browser_pool.tab_record import TabRecord

EVERY_S = 5.0  # each tab's picture is this old at most
THUMB_WIDTH = 240  # pixels
FOCUS_WIDTH = 680  # the embedded arena's own width
FOCUS_FPS = 4.0
FOCUS_HOLD_S = 10.0  # the enlarged view asks again every few seconds; after this long unasked, it is closed
QUALITY = 0.6
SNAPSHOT_S = 5.0
NEW_TAB_CHECK_S = 0.25  # how soon a tab that starts stepping (at the start, after a replacement) gets its picture  # a snapshot that takes longer is given up (the tab is busy)
THUMBNAILS_DIR = "thumbnails"
PAGE_UP = ("loaded", "connected", "stepping")  # the pool's states of a tab whose page is up (browser_pool/tab_record.py)

# The embedded page draws on demand; another page (--url) is read from its first canvas, if it has one
# that is not tainted by pictures of another origin.
SNAPSHOT_JS = """([width, quality]) => {
  const began = performance.now();
  const take = () => {
    const lf = window.lunarfleet;
    if (lf && typeof lf.snapshot === 'function') return lf.snapshot(width, quality);
    const canvas = document.querySelector('canvas');
    if (!canvas || !canvas.width || !canvas.height) return null;
    const small = document.createElement('canvas');
    small.width = Math.min(width, canvas.width);
    small.height = Math.round(canvas.height * small.width / canvas.width);
    small.getContext('2d').drawImage(canvas, 0, 0, small.width, small.height);
    try { return small.toDataURL('image/jpeg', quality); } catch (error) { return null; }
  };
  const picture = take();
  return [picture, performance.now() - began];
}"""


def thumbnail_path(folder: Path, tab: int) -> Path:
    """Tab `tab` (1-based, as people count tabs)."""
    return folder / f"tab-{tab}.jpg"


class Thumbnailer:
    """Snapshots of the pool's tabs into `folder`, on the pool's loop (`start(loop)`, `stop()`)."""

    def __init__(self, pool: TabPool, folder: Path, every_s: float = EVERY_S) -> None:
        self.pool = pool
        self.folder = folder
        self.every_s = every_s
        self.taken = 0
        self.skipped = 0  # tabs passed over because they were busy (replacing, connecting) or gave no picture
        # Their cost, for `lunarfleet bench`: the pages' time drawing and encoding (the renderers' main
        # threads), and this side's decoding and writing.
        self.page_ms = 0.0
        self.python_s = 0.0
        self._pictured: dict[int, float] = {}  # tab index -> opened_at of the page last pictured
        self._focus: tuple[int, float] | None = None  # (tab index, wall clock of the latest ask)
        self._task: asyncio.Future[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._loop = loop
        self._task = asyncio.run_coroutine_threadsafe(self._run(), loop)

    def stop(self) -> None:
        """Stop, after a last picture of each tab: the final state stays shown."""
        task, self._task = self._task, None
        if task is None or self._loop is None or self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(task.cancel)
        with contextlib.suppress(Exception):
            task.result(timeout=SNAPSHOT_S + 5)
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._last_pictures(), self._loop).result(timeout=SNAPSHOT_S + 5)

    async def _last_pictures(self) -> None:
        for index in range(len(self.pool.tabs)):
            await self.take(index, THUMB_WIDTH, last=True)

    def focus(self, tab: int | None) -> None:
        """Tab `tab` (0-based) is enlarged on a dashboard: take it at FOCUS_FPS for FOCUS_HOLD_S; None: no more."""
        self._focus = None if tab is None else (tab, time.time())

    def focused(self) -> int | None:
        if self._focus is None or time.time() - self._focus[1] > FOCUS_HOLD_S:
            return None
        index = self._focus[0]
        return index if 0 <= index < len(self.pool.tabs) else None

    async def _run(self) -> None:
        next_tab, next_at = 0, time.monotonic()
        while True:
            tabs = len(self.pool.tabs)
            if (new := self._without_picture()) is not None:  # a tab that (re)opened is shown as soon as it steps
                await self.take(new, THUMB_WIDTH)
            elif tabs and time.monotonic() >= next_at:
                await self.take(next_tab % tabs, THUMB_WIDTH)
                next_tab, next_at = next_tab + 1, time.monotonic() + self.every_s / tabs
            focused = self.focused()
            if focused is not None:  # the enlarged tab, between the others' turns
                await self.take(focused, FOCUS_WIDTH)
                await asyncio.sleep(1 / FOCUS_FPS)
            else:
                await asyncio.sleep(min(max(next_at - time.monotonic(), 0.01), NEW_TAB_CHECK_S))

    def _without_picture(self) -> int | None:
        """A stepping tab with no picture of its current page yet."""
        for tab in self.pool.tabs:
            if self._pictured.get(tab.index) != tab.opened_at and tab.status() == "stepping":
                return tab.index
        return None

    async def take(self, index: int, width: int, last: bool = False) -> bool:
        """One snapshot of tab `index` into its file; False when the tab was busy or gave no picture.
        `last`: the run's end, when the tabs' envs are gone but their pages still show the last step."""
        tab = self.pool.tabs[index]
        page, opened_at = tab.page, tab.opened_at
        if page is None or tab.lock.locked() or (not last and not _page_up(tab)):
            self.skipped += 1
            return False
        try:
            data_url, page_ms = await asyncio.wait_for(page.evaluate(SNAPSHOT_JS, [width, QUALITY]), SNAPSHOT_S)
        except Exception:  # the page went away or is busy: the next round tries again
            self.skipped += 1
            return False
        began = time.thread_time()
        self.page_ms += float(page_ms or 0.0)
        if not isinstance(data_url, str) or not data_url.startswith("data:image/jpeg;base64,"):
            self.skipped += 1
            self._pictured[index] = opened_at  # a page without a canvas: not asked again and again
            return False
        _write_atomically(thumbnail_path(self.folder, index + 1), base64.b64decode(data_url.split(",", 1)[1]))
        self._pictured[index] = opened_at
        self.taken += 1
        self.python_s += time.thread_time() - began
        return True


def _page_up(tab: TabRecord) -> bool:
    """The tab's page is up and neither slow nor hung (frozen) nor being replaced: a snapshot never
    adds work to a tab that is busy recovering."""
    return tab.state in PAGE_UP and tab.status() not in ("replacing", "frozen")


def _write_atomically(path: Path, data: bytes) -> None:
    """The dashboard server never sends half a picture."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
