"""`runs/<id>/status.json`: the latest sample and the run's state, for readers in other processes
(`lunarfleet status`, another terminal, after a kill).

It is rewritten after every sample and a last time when the run ends, always atomically, so a
reader never sees half a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from orchestrator.monitor_settings import MonitorSettings
from orchestrator.sample import Sample

STATUS_FILE = "status.json"


def build_status(
    sample: Sample,
    state: str,
    settings: MonitorSettings,
    run_info: dict[str, Any],
    training: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The status: the run's facts, the sample, then the trainer's latest word, then `extra`
    (later keys win, so the final status can override anything)."""
    return {
        **run_info,
        "state": state,
        "pid": os.getpid(),
        "updated": round(sample.time, 3),
        "interval_s": settings.interval_s,
        "tab_memory_limit_mb": settings.tab_memory_limit_mb,
        "memory_floor_mb": settings.memory_floor_mb,
        **sample.to_json(),
        **training,
        **(extra or {}),
    }


def write_status(path: Path, status: dict[str, Any]) -> None:
    """Atomically, so `lunarfleet status` never reads half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(status, indent=1) + "\n")
    os.replace(tmp, path)
