"""What the tab pool is told: deadlines, breaker, backoff, recycling, watching.

`browser_pool.pool` imports it, so `from browser_pool.pool import PoolSettings` keeps working.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PoolSettings:
    heartbeat_s: float = 2.0
    hang_s: float = 10.0  # a page that does not answer an evaluate this long is hung
    call_s: float = 15.0  # deadline of every other Playwright call
    navigation_s: float = 30.0
    breaker_failures: int = 10  # more failures than this of one tab within the window stop the run
    breaker_window_s: float = 600.0
    # Delay before replacing a tab, by its failures within backoff_window_s: a page that crashes
    # again right after it opens is not reopened in a tight loop, one that fails now and then is
    # replaced at once.
    backoff_s: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0)
    backoff_window_s: float = 60.0
    connect_click: str | None = None  # selector (or text=...) to click after loading, for click-to-connect pages
    init_script: str | None = None  # JS run before the page's own scripts, with {port}, {env_id} filled in
    recycle_steps: int = 0  # replace a tab after this many steps, at an episode boundary (0: never)
    recycle_hours: float = 0.0
    watch_first: bool = False  # open tab 1 in a second, visible browser (the caller checked for a display)
    video_dir: str | None = None  # record tab 1's page as .webm files into this folder
    video_s: float = 60.0  # ... for this long; then tab 1 reopens unrecorded (costing its episode)
