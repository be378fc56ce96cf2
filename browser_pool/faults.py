"""Fault injection: break a tab, the browser or the driver on purpose, the way real runs break.

For tests and for users checking their set-up (`lunarfleet smoke --chaos crash=2,hang=1`).
`hang`, `disconnect` and `garbage` use the embedded page's `window.lunarfleet` hooks;
`crash`, `browser` and `driver` kill processes and work with any page.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

from browser_pool.pool import TabPool

TAB_FAULTS = ("crash", "hang", "disconnect", "garbage")
FLEET_FAULTS = ("browser", "driver")
TRAINER_FAULTS = ("trainer",)  # injected by the orchestrator into its own process, not here
# --ray, injected by the orchestrator (orchestrator/ray_fleet.py): `host` kills a host's Ray actor,
# `host_tree` SIGKILLs the host's process with its browser and driver, as when a machine's processes die
HOST_FAULTS = ("host", "host_tree")
KINDS = TAB_FAULTS + FLEET_FAULTS + TRAINER_FAULTS + HOST_FAULTS

RENDERER_WAIT_S = 10.0  # a crash waits this long for a just-opened page's renderer to be known
# The endless loop starts after evaluate returns, so the injecting call itself does not hang. The
# embedded page's hook also hangs the shared worker that answers its steps (webapp/bridge.js);
# another page's own thread is where it answers.
HANG_SCRIPT = (
    "window.lunarfleet && typeof window.lunarfleet.hang === 'function' ? window.lunarfleet.hang() "
    ": setTimeout(() => { for (;;) {} }, 0)"
)


async def inject(pool: TabPool, kind: str, tab: int) -> None:
    if kind == "crash":
        # A page just (re)opened steps before its renderer is traced: give the trace a moment.
        end = time.monotonic() + RENDERER_WAIT_S
        while not pool.tabs[tab].renderer_pid and time.monotonic() < end:
            await asyncio.sleep(0.1)
        pid = pool.tabs[tab].renderer_pid
        if not pid:
            raise RuntimeError(f"tab {tab + 1} has no known renderer process to kill")
        os.kill(pid, signal.SIGKILL)
    elif kind == "hang":
        await pool.evaluate(tab, HANG_SCRIPT)
    elif kind == "disconnect":
        await pool.evaluate(tab, "window.lunarfleet.disconnect()")
    elif kind == "garbage":
        await pool.evaluate(tab, "window.lunarfleet.sendGarbage()")
    elif kind == "browser":
        _kill(pool.browser_pid, "browser")
    elif kind == "driver":
        _kill(pool.driver_pid, "Playwright driver")
    else:
        raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(KINDS)}")
    await asyncio.sleep(0)


def _kill(pid: int | None, what: str) -> None:
    if not pid:
        raise RuntimeError(f"no {what} process id is known")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def parse_spec(spec: str) -> dict[str, int]:
    """'crash=2,hang=1' -> {'crash': 2, 'hang': 1}, with a clear error for anything else."""
    counts: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        kind, sep, count = part.partition("=")
        kind = kind.strip()
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r} in --chaos; known: {', '.join(KINDS)}")
        try:
            n = int(count) if sep else 1
        except ValueError:
            raise ValueError(f"--chaos {part!r}: the count must be a whole number") from None
        if n < 0:
            raise ValueError(f"--chaos {part!r}: the count must not be negative")
        counts[kind] = counts.get(kind, 0) + n
    return counts
