"""Tests of proxy.core.faults: the grammar (examples and properties), every kind through the
bridge in record and replay mode, the fired counts, and the dry run."""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from proxy import replay_server
from proxy.core.cassette import load
from proxy.core.faults import (
    GARBAGE,
    GRAMMAR,
    Fault,
    FaultError,
    FaultHits,
    FaultKind,
    FaultSet,
    Hit,
    faults_command,
    format_duration,
    parse_duration,
    parse_fault,
    plan,
    render,
)
from proxy.core.jsonrpc import Direction, MessageType, Pairing, parse
from proxy.core.rules import Action, Engine, Rule, RuleError, load_rules
from proxy.errors import UsageError
from tests.fake_legs import joined, written
from tests.helpers import REPO, C, S, live_exchange, make_tape

TURN = REPO / "cassettes" / "turn-streamed.jsonl"
OVERLOAD = b'{"error":{"code":-32001,"message":"Server overloaded; retry later."},"id":'


def without_t(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != "t"}


# --- the grammar: examples -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "fault", "canonical"),
    [
        ("thread/start:error", Fault("thread/start", FaultKind.ERROR), "thread/start:error"),
        ("thread/start:error=-32001", Fault("thread/start", FaultKind.ERROR), "thread/start:error"),
        (
            "thread/start:error=-32001:Server overloaded; retry later.",
            Fault("thread/start", FaultKind.ERROR),
            "thread/start:error",
        ),
        (
            "turn/start:error=-32600",
            Fault("turn/start", FaultKind.ERROR, code=-32600,
                  message="rpctape fault: error -32600"),
            "turn/start:error=-32600",
        ),
        (
            "turn/start#2:error=5:a: b=c",
            Fault("turn/start", FaultKind.ERROR, 2, code=5, message="a: b=c"),
            "turn/start#2:error=5:a: b=c",
        ),
        (
            "item/agentMessage/delta#2:delay=1s",
            Fault("item/agentMessage/delta", FaultKind.DELAY, 2, ms=1000),
            "item/agentMessage/delta#2:delay=1s",
        ),
        ("x:delay=1.5s", Fault("x", FaultKind.DELAY, ms=1500), "x:delay=1500ms"),
        ("x:delay=250ms", Fault("x", FaultKind.DELAY, ms=250), "x:delay=250ms"),
        ("x:delay=2000ms", Fault("x", FaultKind.DELAY, ms=2000), "x:delay=2s"),
        ("x#007:drop", Fault("x", FaultKind.DROP, 7), "x#7:drop"),
        ("initialize:disconnect", Fault("initialize", FaultKind.DISCONNECT),
         "initialize:disconnect"),
        ("initialize:disconnect=1011", Fault("initialize", FaultKind.DISCONNECT),
         "initialize:disconnect"),
        (
            "initialize:disconnect=4000",
            Fault("initialize", FaultKind.DISCONNECT, code=4000),
            "initialize:disconnect=4000",
        ),
        ("$/x.y_z-1:garbage", Fault("$/x.y_z-1", FaultKind.GARBAGE), "$/x.y_z-1:garbage"),
        ("turn/started:stall", Fault("turn/started", FaultKind.STALL), "turn/started:stall"),
    ],
)  # fmt: skip
def test_specs_parse_to_faults_and_print_canonically(
    spec: str, fault: Fault, canonical: str
) -> None:
    """Each kind parses to its Fault, with defaults filled in, and prints canonically."""
    parsed = parse_fault(spec)
    assert parsed == fault
    assert parsed.spec == str(parsed) == canonical
    assert parse_fault(canonical) == fault


def test_defaults_are_codex_overload_and_1011() -> None:
    """A bare error is codex's overload error; a bare disconnect closes with 1011."""
    error = parse_fault("a:error")
    assert (error.code, error.message) == (-32001, "Server overloaded; retry later.")
    assert parse_fault("a:disconnect").code == 1011
    assert parse_fault("a:drop").nth is None


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("thread/start:eror", "unknown fault 'eror'; valid: error, error=CODE, "
         "error=CODE:MESSAGE, delay=DURATION, drop, disconnect, disconnect=CODE, garbage, stall"),
        ("thread/start", "missing ':' between WHEN and WHAT"),
        (":drop", "no method before ':'"),
        ("a b:drop", "method 'a b' may only hold letters, digits and _ . / $ -"),
        ("x#0:drop", "#0: N counts occurrences from 1 to 1000000000"),
        ("x#:drop", "'#': N is a whole number from 1"),
        ("x#-1:drop", "'#-1': N is a whole number from 1"),
        ("x:drop=1", "drop takes no value: 'drop=1'"),
        ("x:stall=now", "stall takes no value: 'stall=now'"),
        ("x:delay", "delay needs a duration: delay=250ms or delay=2s"),
        ("x:delay=5m", "duration '5m': write 250ms, 2s or 1.5s"),
        ("x:delay=1.2345s", "duration '1.2345s': write 250ms, 2s or 1.5s"),
        ("x:delay=0ms", "duration '0ms': a delay is 1ms to 1 hour"),
        ("x:delay=3601s", "duration '3601s': a delay is 1ms to 1 hour"),
        ("x:error=", "error code '' is not an integer"),
        ("x:error=abc", "error code 'abc' is not an integer"),
        ("x:error=1:", "error=CODE:MESSAGE needs a message after ':'"),
        ("x:error=99999999999", "error code 99999999999 is not a 32-bit integer"),
        ("x:disconnect=1005",
         "close code 1005 cannot be sent; use 1000-1003, 1007-1014 or 3000-4999"),
        ("x:disconnect=-1", "close code '-1' is not a whole number"),
    ],
)  # fmt: skip
def test_bad_specs_name_the_wrong_part_and_show_the_grammar(spec: str, problem: str) -> None:
    """A bad spec is refused with the spec, what is wrong in it, then the grammar."""
    with pytest.raises(FaultError) as caught:
        parse_fault(spec)
    assert caught.value.problem == f"--fault {spec!r}: {problem}"
    assert str(caught.value) == f"--fault {spec!r}: {problem}\n{GRAMMAR}"
    assert isinstance(caught.value, UsageError) and isinstance(caught.value, ValueError)


def test_faults_built_in_code_are_checked_too() -> None:
    """The library's Fault(...) refuses what the parser refuses, and what a kind does not take."""
    with pytest.raises(FaultError, match="takes no code"):
        Fault("x", FaultKind.DROP, code=1)
    with pytest.raises(FaultError, match="takes no duration"):
        Fault("x", FaultKind.STALL, ms=5)
    with pytest.raises(FaultError, match="takes no message"):
        Fault("x", FaultKind.GARBAGE, message="m")
    with pytest.raises(FaultError, match="a delay is 1ms to 1 hour"):
        Fault("x", FaultKind.DELAY)
    with pytest.raises(FaultError, match="unknown fault 'boom'"):
        Fault("x", "boom")  # type: ignore[arg-type]
    assert Fault("x", "drop") == Fault("x", FaultKind.DROP)  # type: ignore[arg-type]


def test_durations() -> None:
    """Durations in ms or s (up to three decimals), printed as whole s or ms."""
    assert [parse_duration(t) for t in ("1ms", "250ms", "2s", "1.5s", "0.001s", "3600s")] == [
        1, 250, 2000, 1500, 1, 3_600_000
    ]  # fmt: skip
    assert [format_duration(ms) for ms in (1, 250, 1000, 1500, 3_600_000)] == [
        "1ms", "250ms", "1s", "1500ms", "3600s"
    ]  # fmt: skip


def test_a_fault_given_twice_is_refused() -> None:
    """The same fault twice (in any spelling) would count its firings twice."""
    with pytest.raises(FaultError) as caught:
        FaultSet.parse(["a:delay=1s", "a:delay=1000ms"])
    assert caught.value.problem == "--fault 'a:delay=1s': given twice"


# --- the grammar: properties -----------------------------------------------------------------

METHODS = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./$-",
    min_size=1,
    max_size=30,
)
NTHS = st.none() | st.integers(1, 1_000_000_000)
CLOSE_CODES = st.sampled_from([1000, 1001, 1002, 1003, *range(1007, 1015)]) | st.integers(
    3000, 4999
)
MESSAGES = st.text(min_size=1, max_size=40).filter(
    lambda m: not any(0xD800 <= ord(c) <= 0xDFFF for c in m)
)


@st.composite
def durations(draw: st.DrawFn) -> str:
    """A duration as a person may write it."""
    ms = draw(st.integers(1, 3_600_000))
    form = draw(st.sampled_from(["ms", "s", "canonical"]))
    if form == "ms":
        return f"{ms}ms"
    if form == "s":
        whole, frac = divmod(ms, 1000)
        return f"{whole}.{frac:03d}s" if frac else f"{whole}s"
    return format_duration(ms)


@st.composite
def valid_specs(draw: st.DrawFn) -> str:
    """Any valid spec, canonical or not (explicit defaults, leading zeros, 1.5s)."""
    method = draw(METHODS)
    nth = draw(NTHS)
    when = method if nth is None else f"{method}#{draw(st.sampled_from(['', '0', '00']))}{nth}"
    kind = draw(st.sampled_from(list(FaultKind)))
    if kind is FaultKind.ERROR:
        what = draw(
            st.sampled_from(["error"])
            | st.integers(-(2**31), 2**31 - 1).map(lambda c: f"error={c}")
            | st.tuples(st.integers(-(2**31), 2**31 - 1), MESSAGES).map(
                lambda cm: f"error={cm[0]}:{cm[1]}"
            )
        )
    elif kind is FaultKind.DELAY:
        what = f"delay={draw(durations())}"
    elif kind is FaultKind.DISCONNECT:
        what = draw(st.just("disconnect") | CLOSE_CODES.map(lambda c: f"disconnect={c}"))
    else:
        what = kind.value
    return f"{when}:{what}"


@given(valid_specs())
def test_any_valid_spec_round_trips(spec: str) -> None:
    """parse(print(f)) == f, and the printed form is canonical: printing its parse gives it."""
    fault = parse_fault(spec)
    assert parse_fault(fault.spec) == fault
    assert parse_fault(fault.spec).spec == fault.spec


@given(
    st.builds(
        Fault,
        METHODS,
        st.sampled_from([FaultKind.DROP, FaultKind.GARBAGE, FaultKind.STALL]),
        NTHS,
    )
    | st.builds(
        Fault,
        METHODS,
        st.just(FaultKind.ERROR),
        NTHS,
        st.integers(-(2**31), 2**31 - 1),
        st.none() | MESSAGES,
    )
    | st.builds(Fault, METHODS, st.just(FaultKind.DELAY), NTHS, ms=st.integers(1, 3_600_000))
    | st.builds(Fault, METHODS, st.just(FaultKind.DISCONNECT), NTHS, CLOSE_CODES)
)
def test_any_fault_prints_to_a_spec_that_parses_back(fault: Fault) -> None:
    """A Fault built in code prints to a spec that parses to the same Fault."""
    assert parse_fault(fault.spec) == fault


SPEC_ALPHABET = "abt/_#:=-.0123456789 msdelayerorgbctiudnp\x00é\ud800"


@given(st.text() | st.text(alphabet=SPEC_ALPHABET, max_size=40))
def test_any_text_is_a_fault_or_a_usage_error_with_the_grammar(text: str) -> None:
    """Whatever the text: a Fault, or a FaultError showing the grammar; never another error."""
    try:
        fault = parse_fault(text)
    except FaultError as exc:
        assert str(exc).endswith(GRAMMAR)
        assert exc.problem.startswith(f"--fault {text!r}: ")
    else:
        assert parse_fault(fault.spec) == fault


# --- in the rule engine (pure) -----------------------------------------------------------


def decide(fault_set: FaultSet, *frames: tuple[Direction, bytes]) -> list[Any]:
    """Run frames through one connection's engine, as the bridge pairs them."""
    engine = Engine(fault_set.rules)
    pairing: Pairing[str] = Pairing()
    decisions = []
    for direction, raw in frames:
        parsed = parse(raw)
        decisions.append(engine.decide(direction, raw, parsed, pairing.observe(direction, parsed)))
    return decisions


@pytest.mark.parametrize(
    ("request_id", "id_text"), [(b"7", b"7"), (b'"uuid-1"', b'"uuid-1"'), (b"1.0", b"1.0")]
)
def test_error_answers_with_the_live_id_as_written(request_id: bytes, id_text: bytes) -> None:
    """The error keeps the answer's id byte for byte (``1.0`` stays ``1.0``)."""
    fault_set = FaultSet.parse(["thread/start:error"])
    _, answer = decide(
        fault_set,
        (C, b'{"id":' + request_id + b',"method":"thread/start"}'),
        (S, b'{"id":' + request_id + b',"result":{}}'),
    )
    assert answer.forward is None
    assert answer.instead == [("fault thread/start:error", OVERLOAD + id_text + b"}")]
    assert answer.applied == [("fault thread/start:error", "error")]


def test_rules_of_faults_are_rules_but_not_file_rules() -> None:
    """A fault's rule is a Rule (it goes wherever rules go); "fault" is no rules-file action."""
    (rule,) = FaultSet.parse(["a:drop"]).rules
    assert isinstance(rule, Rule) and rule.action is Action.FAULT and rule.label == "drop"
    assert rule.as_dict() == {"name": "fault a:drop", "action": "fault", "fault": "a:drop"}
    with pytest.raises(RuleError, match="action"):
        Rule.from_dict({"name": "x", "action": "fault"})


def test_client_frames_are_never_hit() -> None:
    """A fault names frames the server sends: the client's request itself goes on."""
    fault_set = FaultSet.parse(["thread/start:drop", "initialized:drop"])
    decisions = decide(
        fault_set,
        (C, b'{"id":1,"method":"thread/start"}'),
        (C, b'{"method":"initialized"}'),
    )
    assert [d.untouched for d in decisions] == [True, True]
    assert fault_set.unfired() == list(fault_set.faults)


# --- through the bridge, record and replay --------------------------------------------------

RECORDING = pytest.mark.parametrize("recording", [True, False], ids=["record", "replay"])


@RECORDING
async def test_error_replaces_the_answer(recording: bool) -> None:
    """thread/start:error: the client gets codex's overload error with its id, not the
    answer; the cassette shows the answer not forwarded and rpctape's error in its place;
    on replay nothing is written."""
    fault_set = FaultSet.parse(["thread/start:error"])
    _, client, server, journal = joined(fault_set.rules, recording=recording)
    client.receive('{"id":"a","method":"thread/start","params":{}}')
    server.receive('{"id":"a","result":{"thread":{"id":"t-1"}}}', '{"method":"after"}')
    error = b'{"error":{"code":-32001,"message":"Server overloaded; retry later."},"id":"a"}'
    assert client.sent == [(True, error), (True, b'{"method":"after"}')]
    assert fault_set.fired(fault_set.faults[0]) == 1
    if not recording:
        assert [entry[0] for entry in journal] == ["send"] * 3  # no recorder: nothing written
        return
    rule = [{"rule": "fault thread/start:error", "action": "error"}]
    assert [without_t(e) for e in written(journal)] == [
        {"seq": 2, "conn": 1, "kind": "text", "dir": "c2s", "type": "request",
         "method": "thread/start", "msg": {"id": "a", "method": "thread/start", "params": {}}},
        {"seq": 3, "conn": 1, "kind": "text", "dir": "s2c", "type": "response",
         "response_to": "thread/start", "rules": rule, "forwarded": False,
         "msg": {"id": "a", "result": {"thread": {"id": "t-1"}}}},
        {"seq": 4, "conn": 1, "kind": "text", "dir": "s2c", "type": "error",
         "response_to": "thread/start", "origin": "rpctape", "rule": "fault thread/start:error",
         "msg": {"error": {"code": -32001, "message": "Server overloaded; retry later."},
                 "id": "a"}},
        {"seq": 5, "conn": 1, "kind": "text", "dir": "s2c", "type": "notification",
         "method": "after", "msg": {"method": "after"}},
    ]  # fmt: skip


@RECORDING
async def test_error_on_a_server_request_answers_the_server(recording: bool) -> None:
    """An error fault on a server request: rpctape answers the server with the error in the
    client's place; the client never sees the request."""
    fault_set = FaultSet.parse(["item/tool/call:error=-32000:no tools here"])
    _, client, server, journal = joined(fault_set.rules, recording=recording)
    server.receive('{"id":0,"method":"item/tool/call","params":{}}')
    assert client.sent == []
    assert server.sent == [(True, b'{"error":{"code":-32000,"message":"no tools here"},"id":0}')]
    if recording:
        request, answer = written(journal)
        assert (request["forwarded"], request["rules"]) == (
            False, [{"rule": "fault item/tool/call:error=-32000:no tools here", "action": "error"}]
        )  # fmt: skip
        assert (answer["dir"], answer["type"], answer["response_to"], answer["origin"]) == (
            "c2s", "error", "item/tool/call", "rpctape"
        )  # fmt: skip


async def test_error_never_fires_on_a_notification(caplog: pytest.LogCaptureFixture) -> None:
    """A notification cannot be answered: the fault is logged as failed and never fires."""
    fault_set = FaultSet.parse(["configWarning:error"])
    _, client, _, journal = joined(fault_set.rules)
    with caplog.at_level(logging.WARNING, logger="rpctape.rules"):
        client.peer.receive('{"method":"configWarning"}')  # type: ignore[union-attr]
    assert client.sent == [(True, b'{"method":"configWarning"}')]
    assert "rules" not in written(journal)[0]
    assert caplog.messages == [
        "rule 'fault configWarning:error' failed on configWarning: error needs a request or "
        "an answer, got a notification (left unchanged)"
    ]
    assert fault_set.unfired() == list(fault_set.faults)


@RECORDING
async def test_delay_holds_the_nth_frame_and_those_after_it(recording: bool) -> None:
    """delta#2:delay=1s: the first delta goes at once, the second is scheduled a second
    later and the third waits behind it; the other direction is not held."""
    fault_set = FaultSet.parse(["item/agentMessage/delta#2:delay=1s"])
    bridge, client, server, journal = joined(fault_set.rules, recording=recording)
    loop = asyncio.get_running_loop()
    before = loop.time()
    deltas = [f'{{"method":"item/agentMessage/delta","params":{{"delta":"{n}"}}}}' for n in "abc"]
    server.receive(*deltas)
    after = loop.time()
    client.receive('{"method":"up"}')
    assert client.sent == [(True, deltas[0].encode())]
    assert server.sent == [(True, b'{"method":"up"}')]
    held = bridge._held[client]
    assert [message for _, message in held] == [(True, d.encode()) for d in deltas[1:]]
    due = held[0][0]  # the third is due at once, but queued behind the second
    assert before + 1.0 <= due <= after + 1.0 and held[1][0] <= due
    assert bridge._timers[client].when() == due
    if recording:
        events = written(journal)
        assert [(e.get("delay_ms"), e.get("rules")) for e in events[:3]] == [
            (None, None),
            (1000, [{"rule": "fault item/agentMessage/delta#2:delay=1s", "action": "delay"}]),
            (None, None),
        ]
    client.hang_up(1000, "done")


async def test_a_delayed_frame_is_sent_after_its_delay() -> None:
    """A short delay: the frame and the one behind it arrive, in order, once it elapsed."""
    fault_set = FaultSet.parse(["n:delay=20ms"])
    _, client, server, _ = joined(fault_set.rules)
    loop = asyncio.get_running_loop()
    start = loop.time()
    server.receive('{"method":"n"}', '{"method":"m"}')
    while len(client.sent) < 2:
        await asyncio.sleep(0.005)
    assert loop.time() - start >= 0.02
    assert client.sent == [(True, b'{"method":"n"}'), (True, b'{"method":"m"}')]


@RECORDING
async def test_drop_never_sends_the_frame(recording: bool) -> None:
    """turn/start:drop: the answer is not sent, the rest is."""
    fault_set = FaultSet.parse(["turn/start:drop"])
    _, client, server, journal = joined(fault_set.rules, recording=recording)
    client.receive('{"id":3,"method":"turn/start"}')
    server.receive('{"id":3,"result":{}}', '{"method":"turn/started"}')
    assert client.sent == [(True, b'{"method":"turn/started"}')]
    if recording:
        answer = written(journal)[1]
        assert (answer["forwarded"], answer["rules"]) == (
            False, [{"rule": "fault turn/start:drop", "action": "drop"}]
        )  # fmt: skip


@RECORDING
@pytest.mark.parametrize(
    ("spec", "code"), [("initialize:disconnect", 1011), ("initialize:disconnect=4000", 4000)]
)
async def test_disconnect_closes_just_before_the_frame(
    recording: bool, spec: str, code: int
) -> None:
    """initialize:disconnect: the client is closed (1011 or the code given) instead of
    getting the answer; nothing after it in the same read is sent; the server leg follows."""
    fault_set = FaultSet.parse([spec])
    bridge, client, server, journal = joined(fault_set.rules, recording=recording)
    client.receive('{"id":1,"method":"initialize"}')
    server.receive('{"method":"before"}', '{"id":1,"result":{}}', '{"method":"after"}', b"\x01")
    reason = f"rpctape fault {spec}"
    assert fault_set.closed == (code, reason)
    assert client.sent == [(True, b'{"method":"before"}')]
    assert client.closed_with == (code, reason)
    assert server.closed_with == (code, reason)
    await asyncio.wait_for(bridge.wait(), 1)
    if recording:
        events = written(journal)
        assert [(e["kind"], e.get("forwarded"), e.get("rules")) for e in events[1:]] == [
            ("text", None, None),
            ("text", False, [{"rule": f"fault {spec}", "action": "disconnect"}]),
            ("text", False, None),
            ("binary", False, None),
            ("close", {"code": code, "reason": reason}, None),
        ]
        assert (events[-1]["by"], events[-1]["code"]) == ("proxy", code)


@RECORDING
async def test_garbage_takes_the_frames_place(recording: bool) -> None:
    """model/list:garbage: the client gets a text frame that is not JSON instead."""
    fault_set = FaultSet.parse(["model/list:garbage"])
    _, client, server, journal = joined(fault_set.rules, recording=recording)
    client.receive('{"id":2,"method":"model/list"}')
    server.receive('{"id":2,"result":{"data":[]}}')
    assert client.sent == [(True, GARBAGE)] == [(True, b"rpctape fault: not JSON{")]
    if recording:
        _, answer, garbage = (without_t(e) for e in written(journal))
        assert (answer["forwarded"], answer["rules"]) == (
            False, [{"rule": "fault model/list:garbage", "action": "garbage"}]
        )  # fmt: skip
        assert garbage == {
            "seq": 4, "conn": 1, "kind": "text", "dir": "s2c", "type": "invalid",
            "origin": "rpctape", "rule": "fault model/list:garbage",
            "raw": "rpctape fault: not JSON{",
        }  # fmt: skip


@RECORDING
async def test_stall_sends_nothing_more_until_the_client_closes(recording: bool) -> None:
    """turn/started:stall: that frame and every later one to the client (text or binary,
    rpctape's own answers too) are held back for good; the client's messages still reach
    the server; the client's close ends both legs."""
    rules = [
        FaultSet.parse(["turn/started:stall"]).rules[0],
        Rule("local", Action.REPLY, dir=Direction.C2S, method="local", result=1),
    ]
    bridge, client, server, journal = joined(rules, recording=recording)
    server.receive('{"method":"before"}', '{"method":"turn/started"}', '{"method":"item"}')
    server.receive(b"\x00")
    client.receive('{"id":9,"method":"turn/interrupt"}', '{"id":10,"method":"local"}')
    server.receive('{"id":9,"result":{}}')
    assert client.sent == [(True, b'{"method":"before"}')]
    assert server.sent == [(True, b'{"id":9,"method":"turn/interrupt"}')]
    client.hang_up(1000, "bye")
    assert server.closed_with == (1000, "bye")
    await asyncio.wait_for(bridge.wait(), 1)
    if recording:
        stall = [{"rule": "fault turn/started:stall", "action": "stall"}]
        events = written(journal)
        assert [(e.get("dir"), e.get("forwarded"), e.get("rules")) for e in events] == [
            ("s2c", None, None),
            ("s2c", False, stall),
            ("s2c", False, stall),
            ("s2c", False, stall),  # the binary frame
            ("c2s", None, None),
            ("c2s", False, [{"rule": "local", "action": "reply"}]),  # its reply is not sent
            ("s2c", False, stall),
            (None, {"code": 1000, "reason": "bye"}, None),  # the close
        ]


async def test_nth_counts_per_connection_and_firings_per_session() -> None:
    """Two connections sharing one FaultSet: #2 hits the second delta of each; the fault
    fired twice in the session."""
    fault_set = FaultSet.parse(["d#2:drop", "never:drop"])
    sent = []
    for _ in range(2):
        _, client, server, _ = joined(fault_set.rules, recording=False)
        server.receive('{"method":"d","params":1}', '{"method":"d","params":2}')
        server.receive('{"method":"d","params":3}')
        sent.append([payload for _, payload in client.sent])
    assert sent == [[b'{"method":"d","params":1}', b'{"method":"d","params":3}']] * 2
    drop, never = fault_set.faults
    assert (fault_set.fired(drop), fault_set.fired(never)) == (2, 0)
    assert fault_set.unfired() == [never] and fault_set.closed is None
    assert fault_set.report_lines() == ["rpctape: fault never:drop never fired"]
    assert fault_set.summary() == [
        {"fault": "d#2:drop", "fired": 2},
        {"fault": "never:drop", "fired": 0},
    ]


async def test_faults_run_after_rules_on_the_same_frame() -> None:
    """A rules-file patch and a fault on the same frame: both act and both are named."""
    patch = Rule("tag", Action.PATCH, dir=Direction.S2C, method="n", set={"/x": 1})
    fault_set = FaultSet.parse(["n:delay=1ms"])
    _, client, _, journal = joined([patch, *fault_set.rules])
    client.peer.receive('{"method":"n"}')  # type: ignore[union-attr]
    while not client.sent:
        await asyncio.sleep(0.005)
    assert client.sent == [(True, b'{"method":"n","x":1}')]
    assert written(journal)[0]["rules"] == [
        {"rule": "tag", "action": "patch"},
        {"rule": "fault n:delay=1ms", "action": "delay"},
    ]


# --- replay over a websocket, with a client of our own ------------------------------------------


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def receive(ws: ClientConnection) -> bytes:
    """The next frame as bytes, within 5 seconds."""
    frame = await asyncio.wait_for(ws.recv(), 5)
    return frame.encode() if isinstance(frame, str) else frame


async def test_replay_error_on_thread_start_over_a_websocket() -> None:
    """Replaying turn-streamed with thread/start:error: the client's thread/start gets
    codex's overload error with its own id in place of the answer; the notifications before
    it come as recorded; the cassette is unchanged."""
    before = digest(TURN)
    exchange = live_exchange(load(TURN), 1)
    at = next(i for i, (_, m) in enumerate(exchange) if m and b'"thread/start"' in m)
    request = orjson.loads(exchange[at][1] or b"")
    recorded = exchange[at + 1][0]
    answered = [
        OVERLOAD + orjson.dumps(request["id"]) + b"}"
        if orjson.loads(f).get("id") == request["id"] else f
        for f in recorded
    ]  # fmt: skip
    assert answered[:-1] == recorded[:-1] and answered[-1] != recorded[-1]
    fault_set = FaultSet.parse(["thread/start:error"])
    async with replay_server(TURN, rules=fault_set.rules) as url, connect(url) as ws:
        for expected, message in exchange[: at + 1]:
            assert [await receive(ws) for _ in expected] == expected
            assert message is not None
            await ws.send(message.decode())
        assert [await receive(ws) for _ in answered] == answered
    assert fault_set.unfired() == []
    assert digest(TURN) == before


async def test_replay_disconnect_on_initialize_over_a_websocket() -> None:
    """initialize:disconnect: the client's connection closes with 1011 instead of the answer."""
    (expected, message), *_ = live_exchange(load(TURN), 1)
    fault_set = FaultSet.parse(["initialize:disconnect"])
    assert expected == [] and message is not None
    async with replay_server(TURN, rules=fault_set.rules) as url, connect(url) as ws:
        await ws.send(message.decode())
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
        1011, "rpctape fault initialize:disconnect"
    )  # fmt: skip
    assert fault_set.unfired() == []


async def test_replay_delay_on_the_second_delta_over_a_websocket() -> None:
    """item/agentMessage/delta#2:delay=1s: the second delta comes at least a second after
    the request that started the turn (the hold starts once the server had it), and every
    frame still arrives exactly as recorded."""
    before = digest(TURN)
    fault_set = FaultSet.parse(["item/agentMessage/delta#2:delay=1s"])
    loop = asyncio.get_running_loop()
    seen: list[tuple[float, float, bytes]] = []  # sent: when the last client message went
    sent = loop.time()
    exchange = live_exchange(load(TURN), 1)
    async with replay_server(TURN, rules=fault_set.rules) as url, connect(url) as ws:
        for expected, message in exchange:
            for _ in expected:
                frame = await receive(ws)
                seen.append((sent, loop.time(), frame))
            if message is not None:
                sent = loop.time()
                await ws.send(message.decode())
    assert [frame for *_, frame in seen] == [f for expected, _ in exchange for f in expected]
    deltas = [(s, t) for s, t, frame in seen if b'"item/agentMessage/delta"' in frame]
    assert len(deltas) == 3
    started, second = deltas[1]
    assert second - started >= 1.0
    assert b'"turn/completed"' in seen[-1][2]
    assert fault_set.fired(fault_set.faults[0]) == 1
    assert digest(TURN) == before


STDIO_DOOR = """
import asyncio, sys
from proxy.core.faults import FaultSet
from proxy import ReplayServer

async def main() -> int:
    faults = FaultSet.parse(sys.argv[2:])
    await ReplayServer(sys.argv[1], rules=faults.rules).serve_stdio()
    sys.stderr.write(f"closed={faults.closed}\\n")
    return 1 if faults.closed else 0

sys.exit(asyncio.run(main()))
"""
"""The smallest stdio door: replay on stdio with faults, exit 1 after a disconnect."""


async def test_disconnect_over_stdio_ends_stdout_before_the_answer() -> None:
    """initialize:disconnect on a stdio replay: stdout ends without the answer while the
    client still holds stdin open, and the door learns the close from the FaultSet."""
    initialize = next(e for e in load(TURN).frames() if e.get("method") == "initialize")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", STDIO_DOOR, str(TURN), "initialize:disconnect",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        proc.stdin.write(orjson.dumps(initialize["msg"]) + b"\n")
        await proc.stdin.drain()
        assert await asyncio.wait_for(proc.stdout.read(), 10) == b""
        assert await asyncio.wait_for(proc.wait(), 10) == 1
        stderr = await proc.stderr.read()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert stderr.decode().endswith("closed=(1011, 'rpctape fault initialize:disconnect')\n")


# --- the dry run ------------------------------------------------------------------------


def test_plan_on_a_shipped_cassette() -> None:
    """Exact hits on cassettes/turn-streamed.jsonl for each kind of WHEN."""
    faults = [
        parse_fault(s)
        for s in (
            "thread/start:error",
            "item/agentMessage/delta:delay=250ms",
            "item/agentMessage/delta#2:drop",
            "initialize:disconnect",
            "turn/started:stall",
            "configWarning:error",
            "item/agentMessage/delta#4:garbage",
            "initialized:drop",
        )
    ]
    planned = plan(load(TURN), faults)
    delta, resp, note = "item/agentMessage/delta", MessageType.RESPONSE, MessageType.NOTIFICATION
    assert planned == [
        FaultHits(faults[0], (Hit(1, 8, resp, "thread/start"),)),
        FaultHits(faults[1], (Hit(1, 18, note, delta), Hit(1, 19, note, delta),
                              Hit(1, 20, note, delta))),
        FaultHits(faults[2], (Hit(1, 19, note, delta),)),
        FaultHits(faults[3], (Hit(1, 3, resp, "initialize"),)),
        FaultHits(faults[4], (Hit(1, 14, note, "turn/started"),)),
        FaultHits(faults[5], (), cannot=1),
        FaultHits(faults[6], ()),
        FaultHits(faults[7], ()),  # a client notification: never a server frame
    ]  # fmt: skip
    assert render(planned) == (
        "fault thread/start:error hits 1 recorded frame:\n"
        "  connection 1 seq 8: < response to thread/start\n"
        "fault item/agentMessage/delta:delay=250ms hits 3 recorded frames:\n"
        "  connection 1 seq 18: < notification item/agentMessage/delta\n"
        "  connection 1 seq 19: < notification item/agentMessage/delta\n"
        "  connection 1 seq 20: < notification item/agentMessage/delta\n"
        "fault item/agentMessage/delta#2:drop hits 1 recorded frame:\n"
        "  connection 1 seq 19: < notification item/agentMessage/delta\n"
        "fault initialize:disconnect hits 1 recorded frame:\n"
        "  connection 1 seq 3: < response to initialize\n"
        "fault turn/started:stall hits 1 recorded frame:\n"
        "  connection 1 seq 14: < notification turn/started\n"
        "fault configWarning:error hits no recorded frame (it names 1 notification(s); "
        "error cannot answer one)\n"
        "fault item/agentMessage/delta#4:garbage hits no recorded frame\n"
        "fault initialized:drop hits no recorded frame\n"
    )


def test_plan_counts_nth_per_connection() -> None:
    """#2 is the second frame on each recorded connection, not in the whole cassette."""
    conn = [(C, '{"id":1,"method":"m"}'), (S, '{"id":1,"result":1}'), (S, '{"method":"n"}'),
            (S, '{"method":"n"}'), (S, '{"method":"n"}')]  # fmt: skip
    tape = make_tape(conn, conn[:4])
    (hits,) = plan(tape, [parse_fault("n#2:drop")])
    n = [(e["conn"], e["seq"]) for e in tape.frames() if e.get("method") == "n"]
    assert [c for c, _ in n] == [1, 1, 1, 2, 2]
    assert [(h.conn, h.seq) for h in hits.hits] == [n[1], n[4]]


def test_faults_command_exit_status_and_output() -> None:
    """0 when every fault hits, 1 when one hits none, 2 for a bad spec or cassette."""
    out, err = io.StringIO(), io.StringIO()
    assert faults_command(TURN, ["thread/start:error"], out=out, err=err) == 0
    assert out.getvalue() == (
        "fault thread/start:error hits 1 recorded frame:\n"
        "  connection 1 seq 8: < response to thread/start\n"
    )
    assert err.getvalue() == ""
    out = io.StringIO()
    assert faults_command(TURN, ["thread/start:error", "x:drop"], out=out, err=err) == 1
    assert out.getvalue().endswith("fault x:drop hits no recorded frame\n")
    out = io.StringIO()
    assert faults_command(TURN, ["thread/start:eror"], out=out, err=err) == 2
    assert out.getvalue() == ""
    assert err.getvalue() == (
        "rpctape: error: --fault 'thread/start:eror': unknown fault 'eror'; valid: error, "
        "error=CODE, error=CODE:MESSAGE, delay=DURATION, drop, disconnect, disconnect=CODE, "
        f"garbage, stall\n{GRAMMAR}\n"
    )
    err = io.StringIO()
    assert faults_command(REPO / "nothing.jsonl", ["a:drop"], out=out, err=err) == 2
    assert err.getvalue() == f"rpctape: error: no cassette at {REPO / 'nothing.jsonl'}\n"
    err = io.StringIO()
    assert faults_command(TURN, [], out=out, err=err) == 2
    assert err.getvalue() == "rpctape: error: give at least one --fault SPEC\n"


# --- the overload recipe (docs/replay.md) ------------------------------------------------------


def test_a_rules_file_can_answer_with_the_retryable_overload_shape(tmp_path: Path) -> None:
    """The official SDK retries only errors whose data says server_overloaded: a rules-file
    reply can send that shape (the real server's own error, from --fault, has no data)."""
    rules_file = tmp_path / "overloaded.toml"
    rules_file.write_text(
        "[[rules]]\n"
        'name = "overloaded once, retryable"\n'
        'dir = "c2s"\n'
        'method = "thread/start"\n'
        "nth = 1\n"
        'action = "reply"\n'
        'error = { code = -32001, message = "Server overloaded; retry later.", '
        'data = { codex_error_info = "server_overloaded" } }\n'
    )
    engine = Engine(load_rules([rules_file]))
    first, second = (
        engine.decide(C, raw, parse(raw), None)
        for raw in (b'{"id":"a","method":"thread/start"}', b'{"id":"b","method":"thread/start"}')
    )
    assert first.forward is None and first.to_sender == [(
        "overloaded once, retryable",
        b'{"id":"a","error":{"code":-32001,"message":"Server overloaded; retry later.",'
        b'"data":{"codex_error_info":"server_overloaded"}}}',
    )]  # fmt: skip
    assert second.untouched  # the retry reaches the server (or the recording)


async def test_the_retryable_shape_on_a_replay_then_the_retry_gets_the_recording(
    tmp_path: Path,
) -> None:
    """Over a websocket replay: the first thread/start gets the retryable overload error
    from the rules file; the same request again gets the recorded answer."""
    rules_file = tmp_path / "overloaded.toml"
    rules_file.write_text(
        '[[rules]]\nname = "busy"\ndir = "c2s"\nmethod = "thread/start"\nnth = 1\n'
        'action = "reply"\nerror = { code = -32001, message = "Server overloaded; retry '
        'later.", data = { codex_error_info = "server_overloaded" } }\n'
    )
    exchange = live_exchange(load(TURN), 1)
    at = next(i for i, (_, m) in enumerate(exchange) if m and b'"thread/start"' in m)
    message = exchange[at][1]
    assert message is not None
    live_id = orjson.dumps(orjson.loads(message)["id"])
    async with replay_server(TURN, rules=load_rules([rules_file])) as url, connect(url) as ws:
        for expected, sent in exchange[:at]:
            assert [await receive(ws) for _ in expected] == expected
            assert sent is not None
            await ws.send(sent.decode())
        assert [await receive(ws) for _ in exchange[at][0]] == exchange[at][0]
        await ws.send(message.decode())
        assert await receive(ws) == (
            b'{"id":' + live_id + b',"error":{"code":-32001,"message":"Server overloaded; '
            b'retry later.","data":{"codex_error_info":"server_overloaded"}}}'
        )
        await ws.send(message.decode())
        recorded = exchange[at + 1][0]
        assert [await receive(ws) for _ in recorded] == recorded
