"""`runs/<id>/resources.jsonl`: every resource sample of a run, one JSON line each.

Appended and flushed a line at a time, so the morning report (orchestrator/report.py) can read
it for a finished run, a running one, and one that was killed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SAMPLES_FILE = "resources.jsonl"


class SamplesLog:
    """Opens (and creates) the run folder's samples file for appending until `close()`."""

    def __init__(self, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(run_dir / SAMPLES_FILE, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()
