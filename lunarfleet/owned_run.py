"""What a library env opened for itself (page server, browser, tabs, their env) and its event log,
stopped once: by `close()`, by leaving its `with` block, or at interpreter exit."""

from __future__ import annotations

import atexit
import contextlib
from collections.abc import Callable

from orchestrator.config import RunConfig
from orchestrator.events import EventLog
from orchestrator.run_setup import RunPieces, open_run_folder


class FleetStopped(RuntimeError):
    """The tab pool gave up (a tab failed too often): the env cannot step on."""


class OwnedRun:
    def __init__(self, cfg: RunConfig, run_folder: bool) -> None:
        self.cfg = cfg
        self.pieces = RunPieces()
        # The console lines of `lunarfleet train` ([Pool] tab 1 replaced, ...); the files only on request.
        self.events = open_run_folder(cfg) if run_folder else EventLog(None)
        self.closed = False
        self._before_close: list[Callable[[], None]] = []
        atexit.register(self.close)

    def close_first(self, close: Callable[[], None]) -> None:
        """`close` runs before the pieces are stopped (an env built beside them)."""
        self._before_close.append(close)

    def check(self) -> None:
        """Raise if the pool gave up, as `lunarfleet train` stops then."""
        fleet = self.pieces.fleet
        if fleet is not None and fleet.fatal:
            raise FleetStopped(fleet.fatal)

    def close(self) -> None:
        """Stop everything, newest first, each piece even if an earlier one fails."""
        if self.closed:
            return
        self.closed = True
        atexit.unregister(self.close)
        with contextlib.ExitStack() as stack:
            stack.callback(self.events.close)
            stack.callback(self.pieces.close)
            for close in self._before_close:
                stack.callback(close)
