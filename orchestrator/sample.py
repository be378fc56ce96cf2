"""One resource sample: the record every reader of the sampler shares.

The samples file, status.json, the live view, TensorBoard and the memory guard all read the same
`Sample`, so they never disagree about a moment of the run. Its JSON form rounds floats to two
places to keep resources.jsonl and status.json readable.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from orchestrator.process_sampling import ProcStats
from orchestrator.tab_table import TabRow


@dataclass
class Sample:
    """The machine, each process of the run and each tab at one moment, plus what the guards said."""

    time: float
    elapsed_s: float
    timesteps: int
    fps: float
    system: dict[str, float]
    trainer: ProcStats
    workers: list[ProcStats]
    driver: ProcStats
    browser: ProcStats
    helpers: ProcStats  # every other Chromium process: GPU, network, zygotes, spare renderers
    tabs: list[TabRow]
    chromium_pss_mb: float
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return _rounded(asdict(self))


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 2)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value
