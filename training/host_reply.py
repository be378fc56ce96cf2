"""What a Ray host (orchestrator/ray_host.py) answers the Ray transport (training/ray_transport.py)
for one call; light to import, as each host and fake host in tests unpickles it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from training.step_round import Answer


@dataclass
class HostReply:
    """A host's answer to one call: its tabs' answers (by its own tab numbers), what its pool
    said meanwhile, and each of its tabs' step counts."""

    answers: list[tuple[int, Answer]] = field(default_factory=list)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    restarts: list[int] = field(default_factory=list)
    fatal: str | None = None  # the host's pool gave up (its circuit breaker)
