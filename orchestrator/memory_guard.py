"""The memory guards, acting on each resource sample while a run trains.

A tab over `--tab-memory-limit-mb` is asked to be recycled (the fleet replaces it at its next
episode boundary, so no episode is cut short); low system memory is warned about before the
kernel starts killing tabs or workers. Both speak once per occasion, not at every sample.
"""

from __future__ import annotations

from collections.abc import Callable

from orchestrator.monitor_settings import MonitorSettings
from orchestrator.sample import Sample
from orchestrator.tab_table import TabRow

# A tab over its memory limit again this soon after being replaced: the limit is likely too low.
RECYCLE_WARN_WINDOW_S = 60.0


class MemoryGuard:
    """Reads the limits from `settings` at every check; `recycle(index, why)` and `warn(message)`
    are how it acts. Warnings also go into the sample, so status.json and the live view show them."""

    def __init__(
        self,
        settings: MonitorSettings,
        recycle: Callable[[int, str], None] | None,
        warn: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.recycle = recycle
        self.warn = warn
        self._recycle_asked: dict[int, tuple[int | None, float]] = {}  # tab index -> (renderer pid, when)
        self._limit_warned = False
        self._low_memory = False

    def check(self, sample: Sample) -> None:
        self._recycle_tabs_over_limit(sample)
        self._watch_system_memory(sample)

    def _recycle_tabs_over_limit(self, sample: Sample) -> None:
        limit = self.settings.tab_memory_limit_mb
        if limit <= 0 or self.recycle is None:
            return
        for row in sample.tabs:
            over = row.pss_mb is not None and row.pss_mb > limit and row.state == "stepping"
            asked = self._recycle_asked.get(row.index)
            if not over or (asked is not None and asked[0] == row.renderer_pid):
                continue  # one request per renderer: the next one is the replacement's
            if asked is not None and sample.time - asked[1] < RECYCLE_WARN_WINDOW_S:
                self._warn_limit_too_low(sample, row, limit)
            self._recycle_asked[row.index] = (row.renderer_pid, sample.time)
            self.recycle(row.index, f"{row.pss_mb:.0f} MB PSS, over the {limit:g} MB limit")

    def _warn_limit_too_low(self, sample: Sample, row: TabRow, limit: float) -> None:
        """Once a run: a replacement over the limit this soon says the limit, not the tab, is wrong."""
        if self._limit_warned:
            return
        self._limit_warned = True
        self._say(sample, (
            f"tab {row.tab} is over --tab-memory-limit-mb {limit:g} again soon after being replaced "
            f"({row.pss_mb:.0f} MB PSS): the limit may be below what a fresh tab needs"
        ))

    def _watch_system_memory(self, sample: Sample) -> None:
        """Warns on going below the floor, and again only after recovering 20% above it."""
        floor = self.settings.memory_floor_mb
        available = sample.system["mem_available_mb"]
        if floor > 0 and available < floor and not self._low_memory:
            self._low_memory = True
            self._say(sample, (
                f"only {available:,.0f} MB of memory available, below the floor of {floor:,.0f} MB: "
                "close other programs or run fewer --envs next time (the kernel may kill a tab or worker)"
            ))
        elif self._low_memory and available > floor * 1.2:
            self._low_memory = False

    def _say(self, sample: Sample, message: str) -> None:
        sample.warnings.append(message)
        self.warn(message)
