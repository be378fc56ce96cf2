"""The rover app's wire protocol, Python side: strict parsing of page messages, encoding of ours.

Everything that arrives from a socket goes through `parse_page_message`: nothing from a page is
ever evaluated or unpickled, and a malformed message raises `ProtocolError` naming what was
wrong, so the env can treat the tab as failed instead of feeding junk to the trainer.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

OBS_SIZE = 30
ACTION_SIZE = 3
MAX_FRAME_BYTES = 256 * 1024
MAX_INFO_KEYS = 64
MAX_INFO_VALUE_CHARS = 256
MAX_SIMS = 64
FLOAT32_MAX = float(np.finfo(np.float32).max)

PAGE_MESSAGE_TYPES = {
    "reset_complete",
    "state",
    "restart_request",
    "lunarfleet_hello",
    "state_batch",
    "reset_batch",
}


class ProtocolError(ValueError):
    """A page sent something that is not a valid message of the protocol."""


@dataclass
class PageMessage:
    """One validated message from a page. Unused fields keep their defaults."""

    type: str
    observation: np.ndarray | None = None
    reward: float = 0.0
    done: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    # lunarfleet_hello
    sims: int = 1
    # state_batch / reset_batch
    observations: np.ndarray | None = None
    rewards: np.ndarray | None = None
    dones: np.ndarray | None = None
    infos: list[dict[str, Any]] | None = None
    reset_observations: list[np.ndarray | None] | None = None


def parse_page_message(frame: str | bytes) -> PageMessage:
    """Validate one frame from a page and return it as a `PageMessage`."""
    if isinstance(frame, (bytes, bytearray, memoryview)):
        raise ProtocolError("binary frame (the protocol uses JSON text frames)")
    if len(frame) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(frame)} characters exceeds the {MAX_FRAME_BYTES} limit")
    data = loads_json(frame)
    if not isinstance(data, dict):
        raise ProtocolError(f"message is a JSON {type(data).__name__}, expected an object")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("message has no string field 'type'")
    if kind not in PAGE_MESSAGE_TYPES:
        raise ProtocolError(f"unknown message type {kind[:40]!r}")
    if kind == "restart_request":
        return PageMessage(type=kind)
    if kind == "lunarfleet_hello":
        return _parse_hello(data)
    if kind == "state_batch":
        return _parse_state_batch(data)
    if kind == "reset_batch":
        return _parse_reset_batch(data)
    return PageMessage(
        type=kind,
        observation=_observation(data.get("observation"), "observation"),
        reward=_finite(data.get("reward", 0.0), "reward"),
        done=_boolean(data.get("done", False), "done"),
        info=_info(data.get("info", {}), "info"),
    )


def _reject_constant(name: str) -> float:
    raise ProtocolError(f"non-finite number {name} in JSON")


_STRICT_DECODER = json.JSONDecoder(parse_constant=_reject_constant)  # one decoder: json.loads(s, **kw) builds one per call


def loads_json(frame: str) -> Any:
    """One frame's JSON. orjson reads a step's message in a third of json's time; what it refuses
    (NaN, numbers beyond its range, lone surrogates, broken JSON) json then decides, so what is
    accepted and the errors named are json's."""
    try:
        return orjson.loads(frame)
    except orjson.JSONDecodeError:
        pass
    try:
        return _STRICT_DECODER.decode(frame)
    except ProtocolError:
        raise
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"not valid JSON: {exc}") from None


def _parse_hello(data: dict[str, Any]) -> PageMessage:
    sims = data.get("sims", 1)
    if not isinstance(sims, int) or isinstance(sims, bool) or not 1 <= sims <= MAX_SIMS:
        raise ProtocolError(f"hello: 'sims' must be an integer 1..{MAX_SIMS}, got {sims!r:.40}")
    for key, expected in (("observation_size", OBS_SIZE), ("action_size", ACTION_SIZE)):
        if data.get(key, expected) != expected:
            raise ProtocolError(f"hello: {key} {data.get(key)!r:.20} but this trainer uses {expected}")
    return PageMessage(type="lunarfleet_hello", sims=sims)


def _parse_state_batch(data: dict[str, Any]) -> PageMessage:
    observations = _observation_list(data.get("observations"), "observations")
    count = len(observations)
    rewards = np.array([_finite(r, "rewards[]") for r in _list(data.get("rewards"), "rewards", count)])
    dones = np.array([_boolean(d, "dones[]") for d in _list(data.get("dones"), "dones", count)])
    infos = [_info(i, "infos[]") for i in _list(data.get("infos"), "infos", count)]
    resets = [
        None if r is None else _observation(r, "reset_observations[]")
        for r in _list(data.get("reset_observations"), "reset_observations", count)
    ]
    return PageMessage(
        type="state_batch",
        observations=np.stack(observations),
        rewards=rewards,
        dones=dones,
        infos=infos,
        reset_observations=resets,
    )


def _parse_reset_batch(data: dict[str, Any]) -> PageMessage:
    observations = _observation_list(data.get("observations"), "observations")
    infos = [_info(i, "infos[]") for i in _list(data.get("infos"), "infos", len(observations))]
    return PageMessage(type="reset_batch", observations=np.stack(observations), infos=infos)


def _list(value: Any, name: str, length: int | None = None) -> list[Any]:
    if not isinstance(value, list):
        raise ProtocolError(f"field '{name}' missing or not a list")
    if length is not None and len(value) != length:
        raise ProtocolError(f"field '{name}' has {len(value)} entries, expected {length}")
    return value


def _observation_list(value: Any, name: str) -> list[np.ndarray]:
    items = _list(value, name)
    if not 1 <= len(items) <= MAX_SIMS:
        raise ProtocolError(f"field '{name}' has {len(items)} entries, expected 1..{MAX_SIMS}")
    return [_observation(item, f"{name}[]") for item in items]


def _observation(value: Any, name: str) -> np.ndarray:
    if not isinstance(value, list):
        raise ProtocolError(f"field '{name}' missing or not a list")
    if len(value) != OBS_SIZE:
        raise ProtocolError(f"field '{name}' has {len(value)} values, expected {OBS_SIZE}")
    if _plain_finite_numbers(value):
        return np.array(value, dtype=np.float32)
    for x in value:  # the slow way, to name what is wrong
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise ProtocolError(f"field '{name}' holds a non-number ({type(x).__name__})")
        try:
            number = float(x)
        except OverflowError:
            raise ProtocolError(f"field '{name}' holds a non-finite number (an integer too large for a float)") from None
        if not math.isfinite(number):
            raise ProtocolError(f"field '{name}' holds a non-finite number")
        if abs(number) > FLOAT32_MAX:
            raise ProtocolError(f"field '{name}' holds a number too large for float32")
    return np.asarray(value, dtype=np.float32)


_NUMBER_TYPES = {int, float}


def _plain_finite_numbers(values: list[Any]) -> bool:
    """All ints and floats (no bools), finite and within float32's range: a step's whole check
    in a few C-level passes instead of a Python loop over 30 numbers."""
    if not set(map(type, values)) <= _NUMBER_TYPES:
        return False
    try:
        # NaN or an infinity makes the sum non-finite; an int beyond float range raises OverflowError
        return math.isfinite(sum(values)) and min(values) >= -FLOAT32_MAX and max(values) <= FLOAT32_MAX
    except OverflowError:
        return False


def _finite(value: Any, name: str) -> float:
    """A finite float; JSON integers of any size included (Python ints do not overflow)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProtocolError(f"field '{name}' is not a number ({type(value).__name__})")
    try:
        number = float(value)
    except OverflowError:
        raise ProtocolError(f"field '{name}' is not finite (an integer too large for a float)") from None
    if not math.isfinite(number):
        raise ProtocolError(f"field '{name}' is not finite")
    return number


def _boolean(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ProtocolError(f"field '{name}' is not a boolean ({type(value).__name__})")
    return value


def _info(value: Any, name: str) -> dict[str, Any]:
    """Keep only flat scalar entries of bounded size: info goes into logs and TensorBoard."""
    if not isinstance(value, dict):
        raise ProtocolError(f"field '{name}' is not an object")
    if len(value) > MAX_INFO_KEYS:
        raise ProtocolError(f"field '{name}' has {len(value)} keys, more than {MAX_INFO_KEYS}")
    clean: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, str):
            if len(item) > MAX_INFO_VALUE_CHARS:
                raise ProtocolError(f"field '{name}.{key[:40]}' is a string longer than {MAX_INFO_VALUE_CHARS}")
            clean[key] = item
        elif isinstance(item, bool) or item is None:
            clean[key] = item
        elif isinstance(item, (int, float)):
            clean[key] = _finite(item, f"{name}.{key[:40]}") if isinstance(item, float) or abs(item) > 2**53 else item
        else:
            raise ProtocolError(f"field '{name}.{key[:40]}' is a nested {type(item).__name__}")
    return clean


def encode(kind: str, **fields: Any) -> str:
    """One message from Python to a page, `type` first as the original trainer sends it."""
    return json.dumps({"type": kind, **fields}, separators=(",", ":"))


def encode_action(action: np.ndarray) -> str:
    """An `action` message; the action is clipped to its bounds first (PPO samples outside them)."""
    a = np.asarray(action, dtype=np.float64).reshape(-1)
    if a.shape[0] != ACTION_SIZE:
        raise ValueError(f"action has {a.shape[0]} values, expected {ACTION_SIZE}")
    return '{"type":"action","action":' + _action_text(a.tolist()) + "}"


def encode_action_batch(actions: np.ndarray) -> str:
    """A `step_batch` message, each action clipped as in `encode_action`."""
    rows = np.asarray(actions, dtype=np.float64).reshape(-1, ACTION_SIZE)
    return '{"type":"step_batch","actions":[' + ",".join(map(_action_text, rows.tolist())) + "]}"


def _action_text(action: list[float]) -> str:
    """One action, clipped, as encode() writes it (json writes floats as repr does), without json."""
    speed, turn, dig = action
    return f"[{_clip(speed, -1.0, 1.0)!r},{_clip(turn, -1.0, 1.0)!r},{_clip(dig, 0.0, 1.0)!r}]"


def _clip(x: float, low: float, high: float) -> float:
    if not math.isfinite(x):
        return 0.0
    return round(min(max(float(x), low), high), 6)


def ended_by_time_limit(info: dict[str, Any], max_episode_steps: int) -> bool:
    """The page says done for both ends of an episode: running out of steps without a collision
    is a truncation (PPO bootstraps), not a terminal state."""
    length = info.get("episode_length")
    out_of_time = isinstance(length, (int, float)) and length >= max_episode_steps
    return out_of_time and not info.get("collision_occurred", False)
