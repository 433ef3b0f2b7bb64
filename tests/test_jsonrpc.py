"""Unit tests of proxy.core.jsonrpc: classification, exact-frame detection, pairing."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.jsonrpc import (
    MAX_DEPTH,
    Direction,
    MessageType,
    Pairing,
    classify,
    id_key,
    parse,
    shape,
)


@pytest.mark.parametrize(
    ("msg", "expected"),
    [
        ({"id": 1, "method": "thread/start", "params": {}}, MessageType.REQUEST),
        ({"id": "b8e0", "method": "initialize"}, MessageType.REQUEST),
        ({"id": 0, "method": "attestation/generate", "params": {}}, MessageType.REQUEST),
        ({"jsonrpc": "2.0", "id": None, "method": "x"}, MessageType.REQUEST),
        ({"method": "initialized"}, MessageType.NOTIFICATION),
        ({"method": "turn/started", "params": {}, "emittedAtMs": 1}, MessageType.NOTIFICATION),
        ({"id": 1, "result": {}}, MessageType.RESPONSE),
        ({"id": 1, "result": None}, MessageType.RESPONSE),
        ({"id": 1, "error": {"code": -32600, "message": "Not initialized"}}, MessageType.ERROR),
        ([{"id": 1, "method": "a"}, {"method": "b"}], MessageType.BATCH),
        ([], MessageType.BATCH),
        ({"id": 1}, MessageType.INVALID),
        ({"id": 1, "result": 1, "error": {}}, MessageType.INVALID),
        ({"id": 1, "error": "boom"}, MessageType.INVALID),
        ({"method": 5}, MessageType.INVALID),
        ({"id": True, "method": "x"}, MessageType.INVALID),
        ({"id": {}, "result": 1}, MessageType.INVALID),
        ({"method": "x", "result": 1}, MessageType.INVALID),
        ({"hello": "world"}, MessageType.INVALID),
        ("just a string", MessageType.INVALID),
        (42, MessageType.INVALID),
        (None, MessageType.INVALID),
    ],
)
def test_classify_every_shape(msg: Any, expected: MessageType) -> None:
    """Every JSON-RPC shape, and JSON that is not JSON-RPC, gets its type."""
    assert classify(msg) is expected


@pytest.mark.parametrize(
    ("text", "exact"),
    [
        ('{"id":1,"method":"a"}', True),
        ('{"id": 1, "method": "a"}', False),  # whitespace
        ('{"method":"a","id":1}', True),  # key order is kept
        ('{"x":1.0}', True),
        ('{"x":1e3}', False),
        ('{"x":1.50}', False),
        ('{"x":"\\u00e9"}', False),  # escaped where orjson writes UTF-8
        ('{"x":"é"}', True),
        ('{"x":"\\n"}', True),
        ('{"x":"\\/"}', False),
        ('{"a":1,"a":2}', False),  # duplicate keys collapse
        ("{}\n", False),  # trailing newline
        ('{"x":-0}', False),
    ],
)
def test_exact_frame_detection(text: str, exact: bool) -> None:
    """`exact` is true only when orjson.dumps(msg) reproduces the frame byte for byte."""
    parsed = parse(text)
    assert parsed.has_msg
    assert parsed.exact is exact


def test_big_integer_is_lossy_so_not_exact() -> None:
    """orjson reads an integer beyond 64 bits as a float: kept as msg, but never exact."""
    parsed = parse('{"id":123456789012345678901234567890,"method":"thread/start"}')
    assert (parsed.has_msg, parsed.exact, parsed.type) == (True, False, MessageType.REQUEST)
    assert parsed.msg == {"id": 1.2345678901234568e29, "method": "thread/start"}


def test_lone_surrogate_is_json_orjson_cannot_hold() -> None:
    """A lone surrogate escape: no msg, type and method still known from a lenient parse."""
    parsed = parse('{"id":1,"method":"thread/start","params":{"x":"\\ud800"}}')
    assert (parsed.has_msg, parsed.msg, parsed.exact) == (False, None, False)
    assert (parsed.type, parsed.method, parsed.id) == (MessageType.REQUEST, "thread/start", 1)


@pytest.mark.parametrize("text", ["not json", "", '{"id":1', "NaN", '{"x":NaN}', "\x00"])
def test_not_json(text: str) -> None:
    """Text that is not JSON parses to an invalid message with no msg."""
    parsed = parse(text)
    assert (parsed.has_msg, parsed.type, parsed.method) == (False, MessageType.INVALID, None)


def test_id_key_keeps_types_apart() -> None:
    """1, 1.0 and "1" are different ids."""
    assert len({id_key(1), id_key(1.0), id_key("1")}) == 3


def test_pairing_names_the_answered_method_both_ways() -> None:
    """Client and server requests share id 0 without confusing the pairing."""
    pairing: Pairing[str] = Pairing()
    c2s, s2c = Direction.C2S, Direction.S2C
    assert pairing.observe(c2s, parse('{"id":0,"method":"initialize","params":{}}')) is None
    assert pairing.observe(s2c, parse('{"id":0,"method":"attestation/generate"}')) is None
    assert pairing.pending(c2s) == {"int:0": "initialize"}
    assert pairing.observe(c2s, parse('{"id":0,"result":{"token":"t"}}')) == (
        "attestation/generate"
    )
    assert pairing.observe(s2c, parse('{"id":0,"error":{"code":1,"message":"m"}}')) == (
        "initialize"
    )
    assert pairing.pending(c2s) == {} and pairing.pending(s2c) == {}


def test_pairing_unknown_and_string_ids() -> None:
    """A response to nothing answers nothing; string ids pair with string ids only."""
    pairing: Pairing[str] = Pairing()
    pairing.observe(Direction.C2S, parse('{"id":"7","method":"model/list"}'))
    assert pairing.observe(Direction.S2C, parse('{"id":7,"result":{}}')) is None
    assert pairing.observe(Direction.S2C, parse('{"id":"7","result":{}}')) == "model/list"
    assert pairing.observe(Direction.S2C, parse('{"id":"7","result":{}}')) is None


def test_direction_helpers() -> None:
    """Reverse and arrow of each direction."""
    assert Direction.C2S.reverse is Direction.S2C and Direction.S2C.reverse is Direction.C2S
    assert (Direction.C2S.arrow, Direction.S2C.arrow) == (">", "<")


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_parse_never_raises(data: bytes) -> None:
    """Any bytes at all give a Parsed; msg is present only if orjson writes it back."""
    parsed = parse(data)
    if parsed.has_msg:
        assert (orjson.dumps(parsed.msg) == data) is parsed.exact
    else:
        assert parsed.msg is None and not parsed.exact


@pytest.mark.parametrize("depth", [250, 251, 255, 300, 1024, 1025, 5000])
@pytest.mark.parametrize(("opener", "closer"), [("[", "]"), ('{"a":', "}")])
def test_deep_nesting_is_raw_text_not_a_crash(depth: int, opener: str, closer: str) -> None:
    """Past MAX_DEPTH levels a frame has no msg (recorded raw); nothing raises. Its shape
    comes from orjson's read (up to 1024 levels), past that it is not JSON within limits."""
    parsed = parse((opener * depth + "1" + closer * depth).encode())
    assert parsed.has_msg is (depth <= MAX_DEPTH)
    batch = opener == "[" and depth <= 1024
    assert parsed.type is (MessageType.BATCH if batch else MessageType.INVALID)


def test_deep_request_keeps_its_shape() -> None:
    """A request with deep params is still a request (for pairing), without msg."""
    parsed = parse(b'{"id":1,"method":"m","params":' + b"[" * 300 + b"]" * 300 + b"}")
    assert (parsed.has_msg, parsed.type, parsed.method, parsed.id) == (
        False,
        MessageType.REQUEST,
        "m",
        1,
    )


@pytest.mark.parametrize(
    "text", ['\ufeff{"id":1,"method":"m"}', '{"id":1,"method":"m"}\n', "1e400", "-0"]
)
def test_bom_newline_and_numbers_are_not_exact(text: str) -> None:
    """A BOM, a trailing newline, 1e400 and -0 cannot be rebuilt from msg."""
    assert not parse(text.encode()).exact


@settings(max_examples=100, deadline=None)
@given(
    value=st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text()),
        lambda inner: st.one_of(st.lists(inner), st.dictionaries(st.text(), inner)),
        max_leaves=20,
    ),
    pad=st.integers(0, 600),
    spaced=st.booleans(),
)
def test_exactness_of_frames_long_enough_to_nest_deep(
    value: object, pad: int, spaced: bool
) -> None:
    """Frames of 2 * MAX_DEPTH bytes and more take the one-write depth check: `exact`
    still says whether orjson.dumps(msg) rebuilds the frame byte for byte."""
    data = orjson.dumps({"method": "m", "params": {"v": value, "pad": "x" * pad}})
    if spaced:
        data = data.replace(b'"pad":', b'"pad" :')
    parsed = parse(data)
    assert parsed.has_msg
    assert parsed.exact is (not spaced)
    assert parsed.exact is (orjson.dumps(parsed.msg) == data)


_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
_JSON_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=8,
)
_MEMBERS = st.sampled_from(["id", "method", "params", "result", "error", "jsonrpc"])


@settings(max_examples=400)
@given(
    msg=st.dictionaries(_MEMBERS, _JSON_VALUES | st.dictionaries(st.text(max_size=2), _SCALARS))
    | _JSON_VALUES
)
def test_shape_agrees_with_classify(msg: Any) -> None:
    """The one-pass shape of a frame (type, method, id) is what classify() says, with the
    method of a request or notification and the id of a request, response or error."""
    kind = classify(msg)
    method = msg["method"] if kind in (MessageType.REQUEST, MessageType.NOTIFICATION) else None
    has_id = kind in (MessageType.REQUEST, MessageType.RESPONSE, MessageType.ERROR)
    assert shape(msg) == (kind, method, msg["id"] if has_id else None)
    assert type(shape(msg)[0]) is MessageType


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (b'{"id":1,"method":"m","params":{}}', (MessageType.REQUEST, "m", 1)),
        (b'{"method":"m"}', (MessageType.NOTIFICATION, "m", None)),
        (b'{"id":"a","result":null}', (MessageType.RESPONSE, None, "a")),
        (b'{"id":null,"error":{"code":1}}', (MessageType.ERROR, None, None)),
        (b'{"id":true,"result":1}', (MessageType.INVALID, None, None)),
        (b'{"id":1,"method":"m","result":1}', (MessageType.INVALID, None, None)),
        (b'{"id":1,"error":"no"}', (MessageType.INVALID, None, None)),
        (b'{"id":[1],"method":"m"}', (MessageType.INVALID, None, None)),
        (b'[{"method":"m"}]', (MessageType.BATCH, None, None)),
        (b'"text"', (MessageType.INVALID, None, None)),
    ],
)
def test_shape_examples(frame: bytes, expected: tuple[MessageType, str | None, Any]) -> None:
    parsed = parse(frame)
    assert (parsed.type, parsed.method, parsed.id) == expected
    assert shape(orjson.loads(frame)) == expected
