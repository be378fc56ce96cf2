"""The strict page-message parser (issue 9): every malformed kind is a ProtocolError naming the problem."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from training.protocol import (
    MAX_FRAME_BYTES,
    MAX_INFO_KEYS,
    MAX_INFO_VALUE_CHARS,
    MAX_SIMS,
    OBS_SIZE,
    PageMessage,
    ProtocolError,
    encode,
    encode_action,
    encode_action_batch,
    parse_page_message,
)

OBS = [round(0.03 * i - 0.4, 3) for i in range(OBS_SIZE)]
INFO = {
    "episode_length": 7,
    "orbs_collected": 1,
    "orbs_deposited_construction": 0,
    "orbs_deposited_berm": 0,
    "collision_occurred": False,
    "zone": "excavation",
    "total_reward": 1.25,
}


def state(**overrides: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "state", "observation": list(OBS), "reward": 0.5, "done": False, "info": dict(INFO)}
    message.update(overrides)
    return message


def without(message: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k != key}


def frame(message: Any) -> str:
    return json.dumps(message)


def obs_with(value_text: str, index: int = 3) -> str:
    """A state frame whose observation holds a raw JSON token (NaN, 1e400, ...) at `index`."""
    values = [json.dumps(v) for v in OBS]
    values[index] = value_text
    return '{"type": "state", "observation": [' + ", ".join(values) + '], "reward": 0.0, "done": false, "info": {}}'


def state_with_info_value(value_text: str) -> str:
    """A state frame whose info holds a raw JSON token at total_reward."""
    return '{"type": "state", "observation": ' + json.dumps(OBS) + ', "info": {"total_reward": ' + value_text + "}}"


def batch(count: int = 2, **overrides: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "state_batch",
        "observations": [list(OBS) for _ in range(count)],
        "rewards": [0.1 * i for i in range(count)],
        "dones": [False] * count,
        "infos": [dict(INFO) for _ in range(count)],
        "reset_observations": [None] * count,
    }
    message.update(overrides)
    return message


def hello(**overrides: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "lunarfleet_hello",
        "protocol": 1,
        "lockstep": True,
        "observation_size": OBS_SIZE,
        "action_size": 3,
        "sims": 1,
    }
    message.update(overrides)
    return message


TEN_MB = 10 * 1024 * 1024

# (kind, frame, words the error must contain)
MALFORMED: list[tuple[str, str | bytes | bytearray | memoryview, list[str]]] = [
    # framing and JSON
    ("truncated JSON", '{"type": "state", "observation": [0.1, 0.2', ["not valid JSON"]),
    ("empty frame", "", ["not valid JSON"]),
    ("trailing junk after the object", frame(state()) + " }", ["not valid JSON"]),
    ("single-quoted pseudo JSON", "{'type': 'state'}", ["not valid JSON"]),
    ("binary frame", frame(state()).encode(), ["binary"]),
    ("binary frame as bytearray", bytearray(b"\x00\x01\x02"), ["binary"]),
    ("binary frame as memoryview", memoryview(b"{}"), ["binary"]),
    ("oversized frame: 10 MB string", "x" * TEN_MB, ["exceeds", str(MAX_FRAME_BYTES)]),
    ("oversized frame: valid JSON padded to 10 MB", frame(state(pad="a" * TEN_MB)), ["exceeds"]),
    ("deeply nested junk: 10000 [", "[" * 10_000, ["not valid JSON"]),
    ("deeply nested junk: 10000 balanced []", "[" * 10_000 + "]" * 10_000, ["not valid JSON"]),
    ("deeply nested junk inside info", '{"type": "state", "info": ' + "[" * 10_000 + "]" * 10_000 + "}", ["not valid JSON"]),
    ("integer of 5000 digits", obs_with("9" * 5000), ["not valid JSON"]),
    # non-finite numbers
    ("NaN in observation", obs_with("NaN"), ["non-finite", "NaN"]),
    ("Infinity in observation", obs_with("Infinity"), ["non-finite", "Infinity"]),
    ("-Infinity in observation", obs_with("-Infinity"), ["non-finite", "-Infinity"]),
    ("1e400 (overflows to inf) in observation", obs_with("1e400"), ["observation", "non-finite"]),
    # observation shape and contents
    ("observation of 29 values", frame(state(observation=OBS[:29])), ["observation", "29 values", "expected 30"]),
    ("observation of 31 values", frame(state(observation=[*OBS, 0.0])), ["observation", "31 values"]),
    ("observation of 0 values", frame(state(observation=[])), ["observation", "0 values"]),
    ("strings in the observation", frame(state(observation=["0.5"] * OBS_SIZE)), ["observation", "non-number", "str"]),
    ("nested lists in the observation", frame(state(observation=[[0.1]] * OBS_SIZE)), ["observation", "non-number", "list"]),
    ("booleans in the observation", frame(state(observation=[True] * OBS_SIZE)), ["observation", "non-number", "bool"]),
    ("nulls in the observation", frame(state(observation=[None] * OBS_SIZE)), ["observation", "non-number"]),
    ("null observation", frame(state(observation=None)), ["observation", "missing or not a list"]),
    ("missing observation", frame(without(state(), "observation")), ["observation", "missing or not a list"]),
    ("observation as an object", frame(state(observation={"0": 0.1})), ["observation", "not a list"]),
    ("observation as a string", frame(state(observation="[0.1, 0.2]")), ["observation", "not a list"]),
    ("missing observation in reset_complete", frame({"type": "reset_complete"}), ["observation"]),
    # the message itself
    ("message is a list", frame([state()]), ["JSON list", "expected an object"]),
    ("message is a number", "42", ["JSON int", "expected an object"]),
    ("message is a string", '"state"', ["JSON str", "expected an object"]),
    ("message is null", "null", ["JSON NoneType", "expected an object"]),
    ("message is a boolean", "true", ["expected an object"]),
    ("missing type", frame(without(state(), "type")), ["'type'"]),
    ("type is a number", frame(state(type=3)), ["'type'"]),
    ("type is null", frame(state(type=None)), ["'type'"]),
    ("type is a list", frame(state(type=["state"])), ["'type'"]),
    ("unknown type", frame(state(type="state2")), ["unknown message type", "state2"]),
    ("our own message type echoed back", frame({"type": "action", "action": [0, 0, 0]}), ["unknown message type"]),
    ("unknown type of 10000 characters", frame({"type": "z" * 10_000}), ["unknown message type"]),
    # reward
    ("reward NaN", frame(state()).replace('"reward": 0.5', '"reward": NaN'), ["non-finite", "NaN"]),
    ("reward 1e400", frame(state()).replace('"reward": 0.5', '"reward": 1e400'), ["reward", "not finite"]),
    ("reward as a string", frame(state(reward="1.0")), ["reward", "not a number", "str"]),
    ("reward as a boolean", frame(state(reward=True)), ["reward", "not a number", "bool"]),
    ("reward null", frame(state(reward=None)), ["reward", "not a number"]),
    ("reward as a list", frame(state(reward=[1.0])), ["reward", "not a number"]),
    # done
    ("done as a number", frame(state(done=1)), ["done", "not a boolean", "int"]),
    ("done as a string", frame(state(done="true")), ["done", "not a boolean", "str"]),
    ("done null", frame(state(done=None)), ["done", "not a boolean"]),
    # info
    ("info as a list", frame(state(info=[1, 2])), ["info", "not an object"]),
    ("info as a string", frame(state(info="{}")), ["info", "not an object"]),
    ("info null", frame(state(info=None)), ["info", "not an object"]),
    ("info with a nested object", frame(state(info={"zone": {"name": "berm"}})), ["info.zone", "nested dict"]),
    ("info with a nested list", frame(state(info={"orbs": [1, 2]})), ["info.orbs", "nested list"]),
    (
        "info with too many keys",
        frame(state(info={f"k{i}": i for i in range(MAX_INFO_KEYS + 1)})),
        ["info", f"{MAX_INFO_KEYS + 1} keys", f"more than {MAX_INFO_KEYS}"],
    ),
    (
        "info with a huge string",
        frame(state(info={"zone": "z" * (MAX_INFO_VALUE_CHARS + 1)})),
        ["info.zone", f"longer than {MAX_INFO_VALUE_CHARS}"],
    ),
    ("info with 1e400", state_with_info_value("1e400"), ["info.total_reward", "not finite"]),
    ("info with NaN", state_with_info_value("NaN"), ["non-finite"]),
    # lunarfleet_hello
    ("hello with sims 0", frame(hello(sims=0)), ["hello", "sims", f"1..{MAX_SIMS}"]),
    ("hello with sims 1000", frame(hello(sims=1000)), ["hello", "sims", "1000"]),
    ("hello with sims 'x'", frame(hello(sims="x")), ["hello", "sims", "'x'"]),
    ("hello with sims true", frame(hello(sims=True)), ["hello", "sims"]),
    ("hello with sims 1.5", frame(hello(sims=1.5)), ["hello", "sims"]),
    ("hello with sims -1", frame(hello(sims=-1)), ["hello", "sims"]),
    ("hello with a huge sims", frame(hello(sims=10**400)), ["hello", "sims"]),
    ("hello with observation_size 29", frame(hello(observation_size=29)), ["hello", "observation_size", "29", "30"]),
    ("hello with observation_size '30'", frame(hello(observation_size="30")), ["hello", "observation_size"]),
    ("hello with action_size 2", frame(hello(action_size=2)), ["hello", "action_size", "2"]),
    # state_batch / reset_batch
    ("state_batch: 3 rewards for 2 observations", frame(batch(2, rewards=[0.0, 0.0, 0.0])), ["rewards", "3 entries", "expected 2"]),
    ("state_batch: 1 done for 2 observations", frame(batch(2, dones=[False])), ["dones", "1 entries", "expected 2"]),
    ("state_batch: 3 infos for 2 observations", frame(batch(2, infos=[{}, {}, {}])), ["infos", "3 entries"]),
    ("state_batch: reset_observations too short", frame(batch(2, reset_observations=[None])), ["reset_observations", "expected 2"]),
    ("state_batch: missing dones", frame(without(batch(2), "dones")), ["dones", "missing or not a list"]),
    ("state_batch: no observations", frame(batch(0)), ["observations", "0 entries", f"1..{MAX_SIMS}"]),
    ("state_batch: 65 observations", frame(batch(MAX_SIMS + 1)), ["observations", f"{MAX_SIMS + 1} entries"]),
    ("state_batch: one observation of 29", frame(batch(2, observations=[OBS, OBS[:29]])), ["observations[]", "29 values"]),
    ("state_batch: a reward NaN", frame(batch(2)).replace('"rewards": [0.0, 0.1]', '"rewards": [0.0, NaN]'), ["non-finite"]),
    ("state_batch: a done as 0", frame(batch(2, dones=[False, 0])), ["dones[]", "not a boolean"]),
    ("state_batch: a reset observation of 3", frame(batch(2, reset_observations=[None, [0, 0, 0]])), ["reset_observations[]", "3 values"]),
    ("state_batch: a nested info", frame(batch(2, infos=[{}, {"a": {}}])), ["infos[].a", "nested"]),
    ("reset_batch: 1 info for 2 observations", frame({"type": "reset_batch", "observations": [OBS, OBS], "infos": [{}]}), ["infos", "expected 2"]),
    ("reset_batch: observations not a list", frame({"type": "reset_batch", "observations": OBS[0], "infos": []}), ["observations", "not a list"]),
]


def test_enough_malformed_kinds() -> None:
    assert len(MALFORMED) >= 25
    assert len({kind for kind, _, _ in MALFORMED}) == len(MALFORMED)


@pytest.mark.parametrize(("kind", "data", "words"), MALFORMED, ids=[kind for kind, _, _ in MALFORMED])
def test_malformed_message_is_a_protocol_error_naming_the_problem(kind: str, data: Any, words: list[str]) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_page_message(data)
    text = str(caught.value)
    for word in words:
        assert word in text, f"{kind}: error {text[:200]!r} does not mention {word!r}"
    assert len(text) < 400, "the error message must stay readable in a log line"


# ---- product bugs: numbers that pass the finite check but are not usable ------------------
HUGE_INT = "1" + "0" * 400  # valid JSON, a Python int far beyond float range


def test_huge_integer_in_observation_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="observation"):
        parse_page_message(obs_with(HUGE_INT))


def test_huge_integer_reward_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="reward"):
        parse_page_message(frame(state()).replace('"reward": 0.5', f'"reward": {HUGE_INT}'))


def test_huge_integer_in_info_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="info"):
        parse_page_message(state_with_info_value(HUGE_INT))


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_observation_beyond_float32_range_never_becomes_inf() -> None:
    try:
        message = parse_page_message(obs_with("1e300"))
    except ProtocolError:
        return
    assert message.observation is not None
    assert np.isfinite(message.observation).all(), f"observation holds {message.observation[3]}"


# ---- valid messages -------------------------------------------------------------------------
def test_state_parses_to_the_right_values() -> None:
    message = parse_page_message(frame(state(reward=-2.5, done=True)))
    assert isinstance(message, PageMessage)
    assert message.type == "state"
    assert message.observation is not None
    assert message.observation.dtype == np.float32
    assert message.observation.shape == (OBS_SIZE,)
    np.testing.assert_allclose(message.observation, np.asarray(OBS, dtype=np.float32))
    assert message.reward == -2.5 and isinstance(message.reward, float)
    assert message.done is True
    assert message.info == INFO


def test_reset_complete_with_integers_and_the_seed_fields() -> None:
    message = parse_page_message(frame({"type": "reset_complete", "observation": [0] * OBS_SIZE, "reward": 0, "done": False, "info": {}}))
    assert message.type == "reset_complete"
    assert message.observation is not None and message.observation.dtype == np.float32
    assert message.observation.tolist() == [0.0] * OBS_SIZE
    assert message.reward == 0.0 and message.done is False and message.info == {}


def test_missing_reward_done_and_info_take_their_defaults() -> None:
    message = parse_page_message(frame({"type": "state", "observation": OBS}))
    assert message.reward == 0.0
    assert message.done is False
    assert message.info == {}


def test_info_keeps_flat_scalars_including_null() -> None:
    info = {"zone": "berm", "collision_occurred": True, "orbs_collected": 3, "total_reward": -1.5, "note": None}
    assert parse_page_message(frame(state(info=info))).info == info


def test_restart_request_needs_no_fields() -> None:
    message = parse_page_message('{"type": "restart_request"}')
    assert message.type == "restart_request"
    assert message.observation is None


def test_hello_parses_sims() -> None:
    message = parse_page_message(frame(hello(sims=4, lockstep=True)))
    assert message.type == "lunarfleet_hello"
    assert message.sims == 4
    minimal = parse_page_message('{"type": "lunarfleet_hello"}')
    assert minimal.sims == 1


def test_state_batch_parses() -> None:
    reset_obs = [0.5] * OBS_SIZE
    message = parse_page_message(
        frame(batch(2, dones=[False, True], rewards=[1, -0.5], reset_observations=[None, reset_obs]))
    )
    assert message.type == "state_batch"
    assert message.observations is not None and message.observations.shape == (2, OBS_SIZE)
    assert message.observations.dtype == np.float32
    assert message.rewards is not None and message.rewards.tolist() == [1.0, -0.5]
    assert message.dones is not None and message.dones.tolist() == [False, True]
    assert message.infos == [INFO, INFO]
    assert message.reset_observations is not None
    assert message.reset_observations[0] is None
    assert message.reset_observations[1].tolist() == reset_obs  # type: ignore[union-attr]


def test_reset_batch_parses() -> None:
    message = parse_page_message(frame({"type": "reset_batch", "observations": [OBS, OBS, OBS], "infos": [{}, {}, {}]}))
    assert message.type == "reset_batch"
    assert message.observations is not None and message.observations.shape == (3, OBS_SIZE)
    assert message.infos == [{}, {}, {}]


def test_frame_just_under_the_limit_is_accepted() -> None:
    text = frame(state(info={"zone": "e"}))
    padded = text[:-1] + " " * (MAX_FRAME_BYTES - len(text)) + "}"
    assert len(padded) == MAX_FRAME_BYTES
    assert parse_page_message(padded).type == "state"


# ---- property-based fuzz --------------------------------------------------------------------
def check_outcome(data: Any) -> None:
    """The parser's contract: a valid PageMessage with finite length-30 observations, or ProtocolError."""
    try:
        message = parse_page_message(data)
    except ProtocolError:
        return
    assert isinstance(message, PageMessage)
    if message.observation is not None:
        assert message.observation.shape == (OBS_SIZE,)
        assert np.isfinite(message.observation).all()
    if message.observations is not None:
        assert message.observations.ndim == 2 and message.observations.shape[1] == OBS_SIZE
        assert np.isfinite(message.observations).all()
    for extra in message.reset_observations or []:
        assert extra is None or (extra.shape == (OBS_SIZE,) and np.isfinite(extra).all())
    if message.type in {"state", "reset_complete"}:
        assert message.observation is not None
        assert math.isfinite(message.reward)
        assert isinstance(message.done, bool)
        assert isinstance(message.info, dict)


# Numbers a page can realistically send: JSON numbers that fit a float32 and ints that fit a float.
sane_numbers = st.one_of(
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(min_value=-1e30, max_value=1e30, allow_nan=False),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 1e-45]),
)
scalars = st.one_of(st.none(), st.booleans(), sane_numbers, st.text(max_size=20))
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(st.text(max_size=8), children, max_size=6),
    ),
    max_leaves=12,
)
types = st.one_of(
    st.sampled_from(["state", "reset_complete", "restart_request", "lunarfleet_hello", "state_batch", "reset_batch"]),
    st.text(max_size=12),
    json_values,
)
# Observation-like lists: near the right length, mostly numbers, sometimes junk.
junk = st.sampled_from([None, True, False, "0.5", "", [], [0.1], {}, {"x": 1}])
obs_items = st.one_of(sane_numbers, sane_numbers, sane_numbers, junk)
observations = st.one_of(
    st.lists(obs_items, min_size=OBS_SIZE, max_size=OBS_SIZE),
    st.lists(sane_numbers, min_size=OBS_SIZE, max_size=OBS_SIZE),
    st.lists(obs_items, min_size=28, max_size=32),
    json_values,
)
infos = st.one_of(st.dictionaries(st.text(max_size=10), scalars, max_size=8), json_values)
messages = st.fixed_dictionaries(
    {"type": types},
    optional={
        "observation": observations,
        "reward": st.one_of(sane_numbers, json_values),
        "done": st.one_of(st.booleans(), json_values),
        "info": infos,
        "sims": st.one_of(st.integers(min_value=-3, max_value=70), json_values),
        "lockstep": json_values,
        "observation_size": st.one_of(st.just(OBS_SIZE), json_values),
        "observations": st.lists(observations, max_size=3),
        "rewards": st.lists(st.one_of(sane_numbers, junk), max_size=3),
        "dones": st.lists(st.one_of(st.booleans(), junk), max_size=3),
        "infos": st.lists(infos, max_size=3),
        "reset_observations": st.lists(st.one_of(st.none(), observations), max_size=3),
    },
)
# database=None: no .hypothesis folder in the work tree.
FUZZ = settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(st.text(max_size=300))
@example("")
@example("{")
@example("[" * 5000)
@example('{"type": "state", "observation": [NaN]}')
def test_fuzz_arbitrary_text(text: str) -> None:
    check_outcome(text)


@FUZZ
@given(st.binary(max_size=64))
def test_fuzz_arbitrary_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(ProtocolError, match="binary"):
        parse_page_message(data)


@FUZZ
@given(json_values)
def test_fuzz_arbitrary_json_values(value: Any) -> None:
    check_outcome(json.dumps(value))


@FUZZ
@given(messages)
def test_fuzz_message_shaped_objects(message: dict[str, Any]) -> None:
    check_outcome(json.dumps(message))


@settings(FUZZ, max_examples=60)
@given(messages, st.integers(min_value=0, max_value=2000), st.sampled_from(["", "}", "]", ",", "NaN", "\x00", '"']))
def test_fuzz_mutilated_messages(message: dict[str, Any], cut: int, tail: str) -> None:
    text = json.dumps(message)
    check_outcome(text[:cut] + tail)
    check_outcome(text.replace("0", "NaN", 1))
    check_outcome(text.replace("1", "Infinity", 1))


# The same property with the whole range of JSON numbers (huge ints, floats beyond float32):
# fails on the bugs documented above.
wide_numbers = st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.just(10**400), st.just(1e300))


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@settings(max_examples=50, deadline=None, database=None)
@given(st.lists(wide_numbers, min_size=OBS_SIZE, max_size=OBS_SIZE), wide_numbers)
@example([10**400] * OBS_SIZE, 0)
@example([1e300] * OBS_SIZE, 0)
def test_fuzz_full_range_numbers(observation: list[Any], reward: Any) -> None:
    check_outcome(json.dumps({"type": "state", "observation": observation, "reward": reward}))


# ---- encoding our messages ------------------------------------------------------------------
def decode_action(text: str) -> list[float]:
    message = json.loads(text)
    assert list(message) == ["type", "action"], "type goes first, as the original trainer sends it"
    assert message["type"] == "action"
    return message["action"]


def test_encode_action_passes_values_in_bounds() -> None:
    assert decode_action(encode_action(np.array([0.25, -0.5, 0.75], dtype=np.float32))) == [0.25, -0.5, 0.75]


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ([2.0, -3.0, 5.0], [1.0, -1.0, 1.0]),
        ([-7.0, 9.0, -0.5], [-1.0, 1.0, 0.0]),
        ([1.0000001, -1.0000001, 1.0000001], [1.0, -1.0, 1.0]),
        ([float("nan"), 0.5, float("nan")], [0.0, 0.5, 0.0]),
        ([0.5, float("nan"), 0.5], [0.5, 0.0, 0.5]),
    ],
)
def test_encode_action_clips_to_bounds_and_maps_nan_to_zero(action: list[float], expected: list[float]) -> None:
    assert decode_action(encode_action(np.array(action))) == expected


def test_encode_action_output_is_strict_json_within_bounds_for_infinities() -> None:
    text = encode_action(np.array([np.inf, -np.inf, np.inf]))
    values = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in an action"))["action"]
    assert -1.0 <= values[0] <= 1.0 and -1.0 <= values[1] <= 1.0 and 0.0 <= values[2] <= 1.0


def test_encode_action_accepts_a_2d_row_and_rejects_a_wrong_size() -> None:
    assert decode_action(encode_action(np.array([[0.1, 0.2, 0.3]]))) == [0.1, 0.2, 0.3]
    with pytest.raises(ValueError, match="expected 3"):
        encode_action(np.array([0.1, 0.2]))


def test_encode_action_batch_clips_every_row() -> None:
    message = json.loads(encode_action_batch(np.array([[2.0, 0.0, -1.0], [np.nan, -0.5, 0.5]])))
    assert message["type"] == "step_batch"
    assert message["actions"] == [[1.0, 0.0, 0.0], [0.0, -0.5, 0.5]]


def test_action_messages_are_written_as_json_writes_them() -> None:
    rows = np.random.default_rng(3).uniform(-2, 2, size=(5, 3))
    rows[0] = [-0.0, 1e-7, 0.1234565]
    batch = encode_action_batch(rows)
    assert batch == encode("step_batch", actions=json.loads(batch)["actions"])
    single = encode_action(rows[1])
    assert single == encode("action", action=json.loads(single)["action"])


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=3, max_size=3))
def test_fuzz_encode_action_always_in_bounds(action: list[float]) -> None:
    values = json.loads(encode_action(np.array(action, dtype=np.float32)), parse_constant=lambda name: pytest.fail(name))["action"]
    assert len(values) == 3
    assert -1.0 <= values[0] <= 1.0 and -1.0 <= values[1] <= 1.0 and 0.0 <= values[2] <= 1.0
    for raw, sent in zip(action, values, strict=True):
        if math.isnan(raw):
            assert sent == 0.0
