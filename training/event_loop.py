"""A private asyncio loop for synchronous Gymnasium code, run by whichever thread waits for it.

A thread that waits for the loop (`run`, or a `held` block) runs the loop itself meanwhile, so a
tab's reply reaches SB3's thread with no thread switch: two of them a vec step cost ~50 us of a
2-core machine's ~700 us. When nobody has held the loop for IDLE_S, its own daemon thread runs
it: a replacement page must be served during a PPO update too. A thread that already runs an
event loop (a notebook's) cannot run a second one; its calls go to the daemon thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

IDLE_S = 0.01  # how long the loop may go unrun between two holds (SB3's forward pass is ~0.3 ms)

_here = threading.local()  # the LoopThread this thread holds (`interrupt`)


class LoopThread:
    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(_log_quietly)
        self._lock = threading.Lock()
        self._handed = threading.Condition(self._lock)  # the daemon parked the loop, or a holder let go
        self._home = False  # the daemon thread runs the loop
        self._holder: int | None = None  # the thread holding it instead
        self._free_since = time.monotonic()
        self._interrupted = False  # Ctrl+C came while this thread held the loop (`interrupt`)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the loop and wait for its result; past `timeout` it is cancelled
        (TimeoutError). Its own deadlines apply inside."""
        with self.held() as loop:
            if loop is None:
                return asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, timeout), self.loop).result()
            return loop.run_until_complete(asyncio.wait_for(coro, timeout))

    @contextlib.contextmanager
    def held(self) -> Iterator[asyncio.AbstractEventLoop | None]:
        """The loop, for this thread alone to run (`run_until_complete`) until the block ends; None
        where this thread runs another event loop, whose loop thread then runs this one."""
        if _running_loop() is not None:
            yield None
            return
        me = threading.get_ident()
        outer: LoopThread | None = getattr(_here, "loop", None)  # another LoopThread this thread holds
        _here.loop = self  # from here on, Ctrl+C waits for the hold's end (`interrupt`)
        try:
            with self._lock:
                # A hold of this thread's own that Ctrl+C cut short is over.
                while self._holder not in (None, me):
                    self._handed.wait()
                self._holder = me
                if self._home:
                    self.loop.call_soon_threadsafe(self.loop.stop)
                    while self._home:
                        self._handed.wait()
            yield self.loop
        finally:
            with self._lock:
                if self._holder == me:
                    self._holder = None
                    self._free_since = time.monotonic()
                    self._handed.notify_all()
            _here.loop = outer
            if self._interrupted:
                self._interrupted = False
                raise KeyboardInterrupt

    def _serve(self) -> None:
        """Run the loop whenever nobody has held it for IDLE_S, until `stop`."""
        while not self._stopping.is_set():
            with self._lock:
                take = self._holder is None and time.monotonic() - self._free_since >= IDLE_S
                self._home = take
            if not take:
                self._stopping.wait(IDLE_S)
                continue
            try:
                self.loop.run_forever()
            finally:
                with self._lock:
                    self._home = False
                    self._handed.notify_all()

    def _raise_interrupt(self) -> None:
        """Ctrl+C, raised between two of the loop's callbacks, on the thread it came to."""
        if self._interrupted and self._holder == threading.get_ident():
            self._interrupted = False
            raise KeyboardInterrupt

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            if self._home:
                self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self.loop.is_running() and not self.loop.is_closed():
            self.loop.close()


def interrupt() -> None:
    """Raise KeyboardInterrupt for Ctrl+C, from a signal handler. In a thread that holds a
    LoopThread it comes between two of the loop's callbacks (or as the hold ends): a callback cut
    in half would leave a socket's state torn, and closing the tabs would wait out its timeouts."""
    held: LoopThread | None = getattr(_here, "loop", None)
    if held is None:
        raise KeyboardInterrupt
    held._interrupted = True
    held.loop.call_soon_threadsafe(held._raise_interrupt)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _log_quietly(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Unretrieved errors of a dead Playwright driver or socket are expected after a failure."""
    logging.getLogger("lunarfleet.loop").debug("background error: %s", context.get("exception") or context.get("message"))

