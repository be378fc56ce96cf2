"""What a run's monitoring was asked to do (`--monitor-interval`, `--tab-memory-limit-mb`,
`--memory-floor-mb`, `--live`, `--no-monitor`): one object the CLI fills and the sampler, the
memory guard and the live view read."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.sizing import DEFAULT_MEMORY_FLOOR_MB


@dataclass
class MonitorSettings:
    enabled: bool = True
    interval_s: float = 5.0
    tab_memory_limit_mb: float = 0.0  # 0: no limit
    memory_floor_mb: float = DEFAULT_MEMORY_FLOOR_MB
    live: str = "auto"  # auto (table on a terminal, lines otherwise), table, lines, off
