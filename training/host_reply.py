"""What a Ray host (orchestrator/ray_host.py) answers the Ray transport (training/ray_transport.py)
for one step frame; light to import, as each host and fake host in tests unpickles it.

Frames on the step channel (`training/host_channel.py`) are pickles (`pack`, `unpack`), read
only from a peer that presented a ticket the trainer gave out through Ray: the same trust as
Ray's own calls, which pickle everything they carry.
"""

from __future__ import annotations

import pickle
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


def pack(value: object) -> bytes:
    """A step frame's arguments or a `HostReply`, as the step channel carries them."""
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def unpack(data: bytes) -> Any:
    return pickle.loads(data)
