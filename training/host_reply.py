"""What a Ray host (orchestrator/ray_host.py) answers the Ray transport (training/ray_transport.py)
for one step frame; light to import, as each host and fake host in tests unpickles it.

Frames on the step channel (`training/host_channel.py`) are pickles (`pack`, `unpack`), read
only from a peer that presented a ticket the trainer gave out through Ray: the same trust as
Ray's own calls, which pickle everything they carry. A `HostReply` crosses flattened, its
answers as tuples and their arrays as bytes: pickling the dataclasses and numpy arrays
themselves cost 21 us to write and 16 us to read for a 2-tab reply here, flattened 6 and 11
(branch exp-step-channel, experiments/step-channel/reply_codec.py), and each of these is on
a vec step's critical path (the host writes, the trainer reads).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from training.step_round import Answer, Back, Failed, Stepped

_REPLY = "host-reply"  # the first item of a flattened HostReply
_STEPPED, _BACK, _FAILED = 0, 1, 2


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
    if isinstance(value, HostReply):
        value = (_REPLY, [_flat(i, a) for i, a in value.answers], value.events, value.steps, value.restarts, value.fatal)
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def unpack(data: bytes) -> Any:
    value = pickle.loads(data)
    if type(value) is tuple and value and value[0] == _REPLY:
        _, answers, events, steps, restarts, fatal = value
        return HostReply([_answer(flat) for flat in answers], events, steps, restarts, fatal)
    return value


def _flat(i: int, a: Answer) -> tuple[Any, ...]:
    if isinstance(a, Stepped):
        return (i, _STEPPED, _bytes(a.obs), _bytes(a.rewards), _bytes(a.dones), a.infos, a.recycling, a.reset_infos)
    if isinstance(a, Back):
        return (i, _BACK, _bytes(a.obs), a.reset_infos)
    return (i, _FAILED, a.cause, a.info)


def _answer(flat: tuple[Any, ...]) -> tuple[int, Answer]:
    i, kind = flat[0], flat[1]
    if kind == _STEPPED:
        obs, rewards, dones, infos, recycling, reset_infos = flat[2:]
        return i, Stepped(_array(obs), _array(rewards), _array(dones), infos, recycling, reset_infos)
    if kind == _BACK:
        return i, Back(_array(flat[2]), flat[3])
    return i, Failed(flat[2], flat[3])


def _bytes(a: np.ndarray) -> tuple[bytes, str, tuple[int, ...]]:
    return a.tobytes(), a.dtype.str, a.shape


def _array(flat: tuple[bytes, str, tuple[int, ...]]) -> np.ndarray:
    data, dtype, shape = flat
    return np.frombuffer(data, dtype).reshape(shape).copy()  # writable, as the other transports' arrays


def ray_error_cause(exc: BaseException) -> str:
    """What a Ray error reports as its cause: its last line (the exception a host's or actor
    constructor's code raised; Ray's messages run to many lines)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(exc).__name__
