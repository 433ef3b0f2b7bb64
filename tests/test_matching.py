"""Unit tests of proxy.matching: the named matchers and what they say when they fail."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from proxy.errors import UsageError
from proxy.matching import (
    ABSENT,
    DEFAULT_IGNORE,
    Difference,
    Frame,
    Rules,
    differences,
    explain,
    matches,
)


def recorded(msg: Any = None, *, raw: str | None = None, **fields: Any) -> Frame:
    """A recorded c2s text event, as the recorder writes it."""
    event: dict[str, Any] = {"seq": 1, "t": 0.0, "conn": 1, "kind": "text", "dir": "c2s"}
    if msg is not None:
        event["msg"] = msg
    if raw is not None:
        event["raw"] = raw
    event.update(fields)
    return Frame.recorded(event)


def live(msg: Any) -> Frame:
    return Frame.live(orjson.dumps(msg).decode())


RULES = Rules.build()


def test_request_matches_whatever_its_id_and_trace() -> None:
    """Ids of any type and the official client's trace and jsonrpc members are ignored."""
    rec = recorded({"id": 1, "method": "model/list", "params": {}})
    got = live(
        {"jsonrpc": "2.0", "id": "9b2c", "method": "model/list", "params": {}, "trace": {"t": 1}}
    )
    assert matches(got, rec, RULES)
    assert explain(got, rec, RULES).failures == ()


def test_default_ignore_pointers() -> None:
    """The defaults are exactly /trace and /jsonrpc."""
    assert DEFAULT_IGNORE == ("/trace", "/jsonrpc")
    assert Rules.build().ignore == frozenset({"/trace", "/jsonrpc"})


def test_params_difference_is_named_with_shortened_values() -> None:
    """A differing member is reported by pointer with both values, long ones shortened."""
    rec = recorded({"id": 1, "method": "thread/start", "params": {"cwd": "/home/x" * 10}})
    got = live({"id": 1, "method": "thread/start", "params": {"cwd": "/tmp/a"}})
    verdict = explain(got, rec, RULES)
    assert not verdict.matched
    assert verdict.render() == (
        '/params/cwd: got "/tmp/a", recorded "/home/x/home/x/home/x/home/x/home/x/...'
    )
    assert [f.matcher for f in verdict.failures] == ["body"]


def test_ignore_pointer_makes_it_match() -> None:
    """--ignore /params/cwd makes a differing cwd irrelevant; other members still count."""
    rec = recorded({"id": 1, "method": "thread/start", "params": {"cwd": "/a", "x": 1}})
    got = live({"id": 1, "method": "thread/start", "params": {"cwd": "/b", "x": 1}})
    rules = Rules.build(["/params/cwd"])
    assert matches(got, rec, rules)
    worse = live({"id": 1, "method": "thread/start", "params": {"cwd": "/b", "x": 2}})
    assert explain(worse, rec, rules).render() == "/params/x: got 2, recorded 1"


def test_method_and_missing_members() -> None:
    """Method differences and members present on one side only are all reported."""
    rec = recorded({"id": 1, "method": "turn/start", "params": {"threadId": "t", "input": []}})
    got = live({"id": 1, "method": "thread/start", "params": {"extra": True}})
    assert explain(got, rec, RULES).render() == (
        'method differs: got "thread/start", recorded "turn/start"; '
        '/params/threadId: got (absent), recorded "t"; '
        "/params/input: got (absent), recorded []; "
        "/params/extra: got true, recorded (absent)"
    )


def test_more_than_four_differences_are_counted() -> None:
    """Only four differences are spelled out; the rest are counted."""
    rec = recorded({"id": 1, "method": "m", "params": {k: 0 for k in "abcdef"}})
    got = live({"id": 1, "method": "m", "params": {k: 1 for k in "abcdef"}})
    text = explain(got, rec, RULES).render()
    assert text.endswith("/params/d: got 1, recorded 0; and 2 more")


def test_kind_mismatch_stops_there() -> None:
    """A notification never matches a request of the same method."""
    rec = recorded({"id": 1, "method": "initialized"})
    got = live({"method": "initialized"})
    verdict = explain(got, rec, RULES)
    assert verdict.render() == "got a notification initialized, recorded a request initialized"
    assert [f.matcher for f in verdict.failures] == ["kind"]


def test_response_matched_on_the_server_request_it_answers() -> None:
    """A client response must carry the recorded server request id and the same result."""
    rec = recorded({"id": 0, "result": {"decision": "accept"}})
    assert matches(live({"id": 0, "result": {"decision": "accept"}}), rec, RULES)
    assert explain(live({"id": 1, "result": {"decision": "accept"}}), rec, RULES).render() == (
        "answers another server request: got id 1, recorded id 0"
    )
    assert explain(live({"id": 0, "result": {"decision": "decline"}}), rec, RULES).render() == (
        '/result/decision: got "decline", recorded "accept"'
    )
    assert not matches(live({"id": "0", "result": {"decision": "accept"}}), rec, RULES)


def test_redacted_pointer_matches_any_value() -> None:
    """A member the recorder redacted matches whatever secret the live client sends."""
    rec = recorded(
        {"id": 0, "result": {"token": "<redacted:0123abcd>"}}, redacted=["/result/token"]
    )
    assert matches(live({"id": 0, "result": {"token": "v1.fresh"}}), rec, RULES)
    assert not matches(live({"id": 0, "result": {"token": "v1", "x": 1}}), rec, RULES)


def test_non_json_batch_and_binary_frames_match_byte_for_byte() -> None:
    """Frames that are not JSON-RPC messages must be identical, bytes and frame type."""
    assert matches(Frame.live("not json"), recorded(raw="not json"), RULES)
    assert explain(Frame.live("not JSON"), recorded(raw="not json"), RULES).render() == (
        "bytes differ: got 'not JSON', recorded 'not json'"
    )
    batch = '[{"id":1,"method":"a"}]'
    assert matches(Frame.live(batch), recorded(orjson.loads(batch)), RULES)
    assert not matches(Frame.live('[{"id":2,"method":"a"}]'), recorded(orjson.loads(batch)), RULES)
    event: dict[str, Any] = {"seq": 1, "conn": 1, "kind": "binary", "dir": "c2s", "b64": "AAE="}
    assert matches(Frame.live(b"\x00\x01"), Frame.recorded(event), RULES)
    assert explain(Frame.live("\x00\x01"), Frame.recorded(event), RULES).render() == (
        "got a text frame '\\x00\\x01', recorded a binary frame (2 bytes)"
    )
    assert base64.b64decode(event["b64"]) == b"\x00\x01"


def test_whitespace_does_not_matter_for_json_rpc() -> None:
    """JSON-RPC messages are compared as JSON, not as text."""
    rec = recorded({"id": 1, "method": "m", "params": {"a": 1}})
    assert matches(Frame.live('{ "method" : "m", "params": {"a": 1.0}, "id": 7 }'), rec, RULES)


def test_booleans_are_not_numbers() -> None:
    """true and 1 differ, as they do in JSON."""
    assert differences(True, 1, frozenset()) == [Difference("", True, 1)]
    assert differences([1, 2], [1], frozenset()) == [Difference("/1", 2, ABSENT)]


def test_pointer_escapes() -> None:
    """Keys holding / and ~ are escaped in pointers (RFC 6901)."""
    assert differences({"a/b": 1, "c~d": 1}, {"a/b": 2, "c~d": 1}, frozenset()) == [
        Difference("/a~1b", 1, 2)
    ]
    assert differences({"a/b": 1}, {"a/b": 2}, frozenset({"/a~1b"})) == []


@pytest.mark.parametrize("pointer", ["params/cwd", "/a~2b"])
def test_invalid_pointer_is_a_usage_error(pointer: str) -> None:
    """A pointer without a leading slash or with a bad escape is refused, with an example."""
    with pytest.raises(UsageError, match="invalid JSON pointer"):
        Rules.build([pointer])
