"""Unit tests of the replay core (proxy.core.planner, replay_session), without sockets or an
event loop."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.codex.dialect import CODEX
from proxy.core.cassette import Cassette, frame_of, new_header
from proxy.core.close import Close
from proxy.core.ids import marked_id_slots
from proxy.core.jsonrpc import Direction, MessageType, id_slots
from proxy.core.modes import MatchOrder, OnMiss, Pace
from proxy.core.ordering import Order
from proxy.core.planner import (
    ANSWER_MISS_CLOSE_CODE,
    NO_MATCH_CLOSE_CODE,
    NO_MATCH_CODE,
    ConnectionReplay,
    ReplayOptions,
    Step,
)
from proxy.core.recorded import Item, recorded_connections
from proxy.core.recorder import Recorder
from proxy.core.redact import Redactor
from proxy.core.replay_report import Miss, ReplayMismatch
from proxy.core.replay_session import Handshake, ReplaySession
from proxy.errors import UsageError
from tests.helpers import C, S, Script, make_tape

CODEX_REPLAY = ReplayOptions(dialect=CODEX)
"""Options as every rpctape door builds them: codex's dialect."""


def replay_of(script: Script, **options: Any) -> ConnectionReplay:
    (recorded,) = recorded_connections(make_tape(script))
    return ConnectionReplay(1, recorded, ReplayOptions.build(dialect=CODEX, **options))


def sent(step: Step) -> list[str]:
    return [out.data.decode() for out in step.send]


INIT = '{"id":1,"method":"initialize","params":{"clientInfo":{"name":"t","version":"1"}}}'
INIT_RESULT = '{"id":1,"result":{"userAgent":"t/0.169.0"}}'
SESSION: Script = [
    (S, '{"method":"hello","params":{}}'),
    (C, INIT),
    (S, INIT_RESULT),
    (C, '{"method":"initialized"}'),
    (C, '{"id":2,"method":"model/list","params":{}}'),
    (S, '{"method":"configWarning","params":{"summary":"x"}}'),
    (S, '{"id":2,"result":{"data":[]}}'),
]


def live_init(request_id: Any, **extra: Any) -> str:
    msg = {"id": request_id, "method": "initialize", **extra}
    msg["params"] = {"clientInfo": {"name": "t", "version": "1"}}
    return orjson.dumps(msg).decode()


def test_prelude_on_connect_then_segments_in_recorded_order() -> None:
    """Server frames before the first client frame go on connect; each match sends its segment."""
    replay = replay_of(SESSION)
    assert sent(replay.connect()) == ['{"method":"hello","params":{}}']
    assert sent(replay.receive(INIT)) == [INIT_RESULT]
    assert sent(replay.receive('{"method":"initialized"}')) == []
    assert sent(replay.receive('{"id":2,"method":"model/list","params":{}}')) == [
        '{"method":"configWarning","params":{"summary":"x"}}',
        '{"id":2,"result":{"data":[]}}',
    ]
    report = replay.report()
    assert (report.client, report.server, report.misses) == ((3, 3), (0, 4), ())


@pytest.mark.parametrize(
    ("live_id", "expected"),
    [
        ("9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d", '"9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d"'),
        (77, "77"),
    ],
)
def test_response_carries_the_live_id(live_id: Any, expected: str) -> None:
    """An integer-id recording answers a string id with that string, and any integer as is."""
    replay = replay_of(SESSION)
    replay.connect()
    step = replay.receive(live_init(live_id, trace={"traceparent": "00-abc"}))
    assert sent(step) == ['{"id":' + expected + ',"result":{"userAgent":"t/0.169.0"}}']


def test_string_recording_answers_integer_ids() -> None:
    """A recording with string ids answers a client that uses integers with its integers."""
    script: Script = [
        (C, '{"id":"req-1","method":"model/list","params":{}}'),
        (S, '{"id":"req-1","result":{"data":[]}}'),
    ]
    replay = replay_of(script)
    assert sent(replay.receive('{"id":1,"method":"model/list","params":{}}')) == [
        '{"id":1,"result":{"data":[]}}'
    ]


def test_same_id_is_replayed_byte_for_byte() -> None:
    """When no remapping is needed the recorded bytes go out unchanged, odd spacing included."""
    odd = '{ "id" : 1, "result" : {"x": 1.50} }'
    replay = replay_of([(C, '{"id":1,"method":"m"}'), (S, odd)])
    assert sent(replay.receive('{"id":1,"method":"m"}')) == [odd]


def test_interleaved_responses_are_remapped_by_their_own_request() -> None:
    """A response arriving after later client frames still gets its own request's live id."""
    script: Script = [
        (C, '{"id":1,"method":"turn/start","params":{}}'),
        (C, '{"id":2,"method":"thread/read","params":{}}'),
        (S, '{"id":1,"result":{"turn":"t"}}'),
        (S, '{"method":"turn/completed","params":{}}'),
        (S, '{"id":2,"result":{"thread":"r"}}'),
    ]
    replay = replay_of(script)
    assert sent(replay.receive('{"id":"a","method":"turn/start","params":{}}')) == []
    assert sent(replay.receive('{"id":"b","method":"thread/read","params":{}}')) == [
        '{"id":"a","result":{"turn":"t"}}',
        '{"method":"turn/completed","params":{}}',
        '{"id":"b","result":{"thread":"r"}}',
    ]


def test_ignore_pointer_option() -> None:
    """--ignore /params/cwd lets a request with another cwd match."""
    script: Script = [
        (C, '{"id":1,"method":"thread/start","params":{"cwd":"/rec"}}'),
        (S, '{"id":1,"result":{}}'),
    ]
    live = '{"id":5,"method":"thread/start","params":{"cwd":"/live"}}'
    assert replay_of(script, match_on="exact").receive(live).miss is not None
    step = replay_of(script, ignore=["/params/cwd"], match_on="exact").receive(live)
    assert (sent(step), step.miss) == (['{"id":5,"result":{}}'], None)


TWO: Script = [
    (C, '{"id":1,"method":"a","params":{}}'),
    (S, '{"id":1,"result":"A"}'),
    (C, '{"id":2,"method":"b","params":{}}'),
    (S, '{"id":2,"result":"B"}'),
]


def test_strict_order_refuses_a_later_request_and_says_so() -> None:
    """In strict order, b before a is a miss naming the expected message and --match any-order."""
    replay = replay_of(TWO)
    step = replay.receive('{"id":10,"method":"b","params":{}}')
    assert step.miss is not None
    assert step.miss.render() == (
        "rpctape: no recorded match for request b "
        "(live connection 1, recorded connection 1, client message 1)\n"
        "closest recorded client messages:\n"
        '- seq 2 request a, next in order: method differs: got "b", recorded "a"\n'
        "- seq 4 request b: matches, but strict order expects seq 2 (request a) next; "
        "match any-order allows it"
    )
    (reply,) = step.send
    assert orjson.loads(reply.data) == {
        "id": 10,
        "error": {
            "code": -32099,
            "message": step.miss.render(),
            "data": {
                "rpctape": "no-match",
                "candidates": [
                    {
                        "seq": 2,
                        "description": "request a, next in order",
                        "note": 'method differs: got "b", recorded "a"',
                    },
                    {
                        "seq": 4,
                        "description": "request b",
                        "note": "matches, but strict order expects seq 2 (request a) next; "
                        "match any-order allows it",
                    },
                ],
            },
        },
    }
    assert NO_MATCH_CODE == -32099


def test_any_order_accepts_independent_requests_in_another_order() -> None:
    """With --match any-order, b then a each get their own recorded answer and live id."""
    replay = replay_of(TWO, match="any-order")
    assert sent(replay.receive('{"id":"x","method":"b","params":{}}')) == [
        '{"id":"x","result":"B"}'
    ]
    assert sent(replay.receive('{"id":"y","method":"a","params":{}}')) == [
        '{"id":"y","result":"A"}'
    ]
    assert replay.report().unused_client == ()


def test_any_order_holds_a_response_until_its_request_arrives() -> None:
    """A recorded response whose request has not been matched yet waits for it."""
    script: Script = [
        (C, '{"id":1,"method":"a"}'),
        (C, '{"id":2,"method":"b"}'),
        (S, '{"id":1,"result":"A"}'),
        (S, '{"id":2,"result":"B"}'),
    ]
    replay = replay_of(script, match="any-order")
    assert sent(replay.receive('{"id":20,"method":"b"}')) == ['{"id":20,"result":"B"}']
    assert sent(replay.receive('{"id":10,"method":"a"}')) == ['{"id":10,"result":"A"}']


APPROVAL: Script = [
    (C, '{"id":"r1","method":"turn/start","params":{}}'),
    (S, '{"id":"r1","result":{}}'),
    (S, '{"method":"item/commandExecution/requestApproval","id":0,"params":{"cmd":"x"}}'),
    (C, '{"id":0,"result":{"decision":"accept"}}'),
    (S, '{"method":"serverRequest/resolved","params":{"requestId":0}}'),
    (S, '{"method":"turn/completed","params":{}}'),
]


def test_server_request_round_trip() -> None:
    """The server request goes out with its recorded id; the client's answer releases the rest."""
    replay = replay_of(APPROVAL)
    assert sent(replay.receive('{"id":5,"method":"turn/start","params":{}}')) == [
        '{"id":5,"result":{}}',
        '{"method":"item/commandExecution/requestApproval","id":0,"params":{"cmd":"x"}}',
    ]
    assert sent(replay.receive('{"id":0,"result":{"decision":"accept"}}')) == [
        '{"method":"serverRequest/resolved","params":{"requestId":0}}',
        '{"method":"turn/completed","params":{}}',
    ]


def test_a_different_answer_to_a_server_request_ends_the_conversation() -> None:
    """Declining what was accepted in the recording is a miss that closes the connection at
    once (4409, the difference in the reason), so the client does not wait for a turn that
    the recording cannot give; already replayed messages are not offered as candidates."""
    replay = replay_of(APPROVAL)
    replay.receive('{"id":5,"method":"turn/start","params":{}}')
    step = replay.receive('{"id":0,"result":{"decision":"decline"}}')
    assert step.send == () and step.miss is not None
    assert step.close == Close(
        ANSWER_MISS_CLOSE_CODE,
        "rpctape: response to item/commandExecution/requestApproval: /result/decision: got "
        '"decline", recorded "accept"',
    )
    assert step.miss.render() == (
        "rpctape: no recorded match for response to id 0 "
        "(live connection 1, recorded connection 1, client message 2)\n"
        "closest recorded client messages:\n"
        "- seq 5 response to item/commandExecution/requestApproval, next in order: "
        '/result/decision: got "decline", recorded "accept"'
    )


def test_a_different_answer_fails_the_turn_in_flight_with_the_reason() -> None:
    """With a recorded turn still to complete, the close comes after that turn's recorded
    `turn/completed`, failed, carrying the reason: codex clients show a failed turn's message
    (codex-app-server-sdk shows nothing of a closed connection). Nothing else changes."""
    turn = '{"id":"u","items":[{"type":"agentMessage"}],"status":"completed","error":null}'
    completed = f'{{"method":"turn/completed","params":{{"threadId":"t","turn":{turn}}}}}'
    script = [*APPROVAL[:-1], (S, completed)]
    replay = replay_of(script)
    replay.receive('{"id":5,"method":"turn/start","params":{}}')
    step = replay.receive('{"id":0,"result":{"decision":"decline"}}')
    reason = (
        "rpctape: response to item/commandExecution/requestApproval: /result/decision: got "
        '"decline", recorded "accept"'
    )
    assert step.close == Close(ANSWER_MISS_CLOSE_CODE, reason)
    assert sent(step) == [
        '{"method":"turn/completed","params":{"threadId":"t","turn":{"id":"u","items":[],'
        '"status":"failed","error":{"message":"' + reason.replace('"', '\\"')
        + ' (rpctape replay: the recording ends here)"}}}}'
    ]
    assert [o.item for o in step.send] == [None]  # rpctape's own frame, not a recorded one


def test_playback_repeats_answer_a_used_request_again() -> None:
    """allow_playback_repeats: a request matching only a used recording is answered again with
    the live id; without it, it is a miss."""
    script: Script = [
        (C, '{"id":1,"method":"model/list","params":{}}'),
        (S, '{"id":1,"result":{"data":[]}}'),
    ]
    again = '{"id":"second","method":"model/list","params":{}}'
    replay = replay_of(script, allow_playback_repeats=True)
    assert sent(replay.receive('{"id":7,"method":"model/list","params":{}}')) == [
        '{"id":7,"result":{"data":[]}}'
    ]
    assert sent(replay.receive(again)) == ['{"id":"second","result":{"data":[]}}']
    assert replay.repeats == 1 and not replay.report().misses
    plain = replay_of(script)
    plain.receive('{"id":7,"method":"model/list","params":{}}')
    assert plain.receive(again).miss is not None


def test_unmatched_notification_is_a_miss_without_reply() -> None:
    """A notification that matches nothing gets no reply, whatever on_miss says."""
    for on_miss in ("error", "close"):
        step = replay_of(SESSION, on_miss=on_miss).receive('{"method":"initialized"}')
        assert step.send == () and step.close is None and step.miss is not None


def test_on_miss_close() -> None:
    """With --on-miss close, an unmatched request closes the connection with 4404."""
    step = replay_of(SESSION, on_miss="close").receive('{"id":1,"method":"nope"}')
    assert step.send == ()
    assert step.close == Close(4404, "rpctape: no recorded match for request nope")
    assert NO_MATCH_CLOSE_CODE == 4404


def test_used_recording_is_named_in_the_miss() -> None:
    """Sending the same request twice: the second miss says the match was already used."""
    replay = replay_of(SESSION, match_on="exact")
    replay.receive(INIT)
    step = replay.receive(INIT)
    assert step.miss is not None
    assert step.miss.render().splitlines()[2:] == [
        "- seq 5 notification initialized, next in order: "
        "got a request initialize, recorded a notification initialized",
        "- seq 3 request initialize: already replayed (to client message 1); matches",
        "- seq 6 request model/list: method differs: "
        'got "initialize", recorded "model/list"; /params/clientInfo: got {"name":"t",'
        '"version":"1"}, recorded (absent)',
    ]


def test_binary_and_garbage_frames() -> None:
    """Recorded binary and non-JSON frames match byte for byte and replay byte for byte."""
    script: Script = [(C, b"\x00\xff"), (S, b"\x01\x02"), (C, "not json"), (S, "{oops")]
    replay = replay_of(script)
    step = replay.receive(b"\x00\xff")
    assert [(o.data, o.text) for o in step.send] == [(b"\x01\x02", False)]
    assert [(o.data, o.text) for o in replay.receive("not json").send] == [(b"{oops", True)]


def test_redacted_client_secret_still_matches() -> None:
    """A recorded attestation answer with a redacted token matches a live one with another."""
    script: Script = [
        (S, '{"method":"attestation/generate","id":0,"params":{}}'),
        (C, '{"id":0,"result":{"token":"v1.secret"}}'),
        (S, '{"method":"done"}'),
    ]
    replay = replay_of(script)
    assert sent(replay.connect()) == ['{"method":"attestation/generate","id":0,"params":{}}']
    assert sent(replay.receive('{"id":0,"result":{"token":"v1.other"}}')) == ['{"method":"done"}']


def test_pacing_uses_recorded_gaps() -> None:
    """fast sends at once; recorded waits each recorded gap; a factor divides it."""
    for pace, delay in (("fast", 0.0), ("recorded", 0.5), ("10", 0.05)):
        step = replay_of(SESSION, pace=pace).receive(INIT)
        assert [o.delay for o in step.send] == [delay]
    assert str(Pace.parse("4")) == "4" and str(Pace.parse("recorded")) == "recorded"


def test_close_like_the_recorded_server() -> None:
    """A recording the server closed closes the live connection once everything is replayed."""
    (recorded,) = recorded_connections(make_tape(TWO, server_closes=True))
    replay = ConnectionReplay(1, recorded, CODEX_REPLAY)
    assert replay.receive('{"id":1,"method":"a","params":{}}').close is None
    assert replay.receive('{"id":2,"method":"b","params":{}}').close == Close(1000, "bye")


def test_session_pairs_connections_in_recording_order() -> None:
    """Three recorded connections that fit alike serve three live ones in turn (the lowest
    number first); a fourth is a miss."""
    tape = make_tape(*([(C, f'{{"method":"n{i}"}}')] for i in range(3)))
    session = ReplaySession(tape, CODEX_REPLAY, "three.jsonl")
    claims = [session.pair(session.open(), Handshake(), None) for _ in range(4)]
    assert [c.recorded.conn for c in claims if isinstance(c, ConnectionReplay)] == [1, 2, 3]
    miss = claims[3]
    assert isinstance(miss, Miss)
    assert miss.render() == (
        "rpctape: no recorded match for a new connection (live connection 4)\n"
        "all 3 recorded connection(s) of three.jsonl were already replayed"
    )


def test_pair_matching_for_new_episodes() -> None:
    """new_episodes picks, among the unused recorded connections whose first frame matches,
    the best fit (here the first); none left that matches: None (recorded live instead)."""
    tape = make_tape([(C, '{"method":"a"}')], [(C, '{"method":"b"}')], [(C, '{"method":"b"}')])
    session = ReplaySession(tape, CODEX_REPLAY, "t")
    first = session.pair_matching(session.open(), Handshake(), '{"method":"b"}')
    second = session.pair_matching(session.open(), Handshake(), '{"method":"b"}')
    assert first is not None and second is not None
    assert (first.recorded.conn, second.recorded.conn) == (2, 3)
    assert session.pair_matching(session.open(), Handshake(), '{"method":"b"}') is None


def test_report_text_and_check() -> None:
    """The report names unused messages and misses; check() raises unless it is clean."""
    tape = make_tape(TWO, [(C, '{"method":"x"}')])
    session = ReplaySession(tape, ReplayOptions(on_miss=OnMiss.ERROR, dialect=CODEX), "t.jsonl")
    replay = session.pair(session.open(), Handshake(), '{"id":1,"method":"a","params":{}}')
    assert isinstance(replay, ConnectionReplay)
    for out in replay.receive('{"id":1,"method":"a","params":{}}').send:
        replay.delivered(out)
    replay.receive('{"method":"zzz"}')
    report = session.report()
    assert report.render() == (
        "rpctape replay report for t.jsonl: 1 live connection(s), 1 miss(es), "
        "2 recorded client message(s) not replayed, 1 recorded server message(s) not sent\n"
        "live connection 1 = recorded connection 1: 1 of 2 client message(s) matched, "
        "1 of 2 server message(s) sent\n"
        "  not replayed: seq 4 > request b\n"
        "  not sent: seq 5 < response to b\n"
        "  miss: rpctape: no recorded match for notification zzz "
        "(live connection 1, recorded connection 1, client message 2)\n"
        "    closest recorded client messages:\n"
        "    - seq 4 request b, next in order: got a notification zzz, recorded a request b\n"
        "recorded connection 2: never replayed: 0 of 1 client message(s) matched, "
        "0 of 0 server message(s) sent\n"
        "  not replayed: seq 8 > notification x"
    )
    assert not report.clean
    with pytest.raises(ReplayMismatch) as info:
        report.check()
    assert str(info.value) == report.render()


def test_options_are_validated_with_the_valid_values() -> None:
    """A typo in a mode lists the valid values."""
    from proxy.errors import UsageError

    with pytest.raises(UsageError) as info:
        ReplayOptions.build(match="anyorder")
    assert str(info.value) == "invalid match order 'anyorder'; valid values: strict, any-order"
    assert ReplayOptions.build(match="any-order").match is MatchOrder.ANY_ORDER


# --- pairing live connections with recorded ones by what they say -----------------------------


def handshake_tape(*conns: tuple[str, list[tuple[str, str]], str | None, Script]) -> Cassette:
    """A cassette of connections with their own path, headers and subprotocol."""
    ticks = itertools.count()
    recorder = Recorder(None, Redactor(), clock=lambda: next(ticks) * 0.5)
    events: list[dict[str, Any]] = []
    for path, headers, subprotocol, script in conns:
        conn = recorder.new_connection()
        events.append(
            recorder.open(
                conn, path=path, headers=headers, subprotocol=subprotocol, upstream="ws://up"
            )
        )
        events.extend(recorder.text(conn, direction, str(data)) for direction, data in script)
    return Cassette(None, new_header("ws://up"), events)


def init_named(name: str, request_id: int = 1) -> str:
    params = {"clientInfo": {"name": name, "version": "1"}}
    return orjson.dumps({"id": request_id, "method": "initialize", "params": params}).decode()


def named(name: str) -> tuple[str, list[tuple[str, str]], str | None, Script]:
    return ("/", [("Host", "127.0.0.1:1")], None, [(C, init_named(name)), (S, INIT_RESULT)])


HANDSHAKE = Handshake("/", (("Host", "127.0.0.1:2"), ("Sec-WebSocket-Key", "abc")))


def paired(session: ReplaySession, first: str | None, handshake: Handshake = HANDSHAKE) -> int:
    claim = session.pair(session.open(), handshake, first)
    assert isinstance(claim, ConnectionReplay)
    return claim.recorded.conn


def test_pair_by_client_name_whatever_the_order_of_connecting() -> None:
    """B's client speaking first gets B's recording, though match_on codex ignores
    clientInfo; then A gets A's. Host and Sec-WebSocket-Key vary and are not compared."""
    session = ReplaySession(handshake_tape(named("a"), named("b")), CODEX_REPLAY, "t.jsonl")
    assert paired(session, init_named("b", 7)) == 2
    assert paired(session, init_named("a", 8)) == 1
    assert [c.notes for c in session.report().connections] == [(), ()]


def test_pair_tie_is_noted_and_the_first_recording_chosen() -> None:
    """A client name no recording has: both fit equally; the lower number is chosen and the
    report says so."""
    session = ReplaySession(handshake_tape(named("a"), named("b")), CODEX_REPLAY, "t.jsonl")
    assert paired(session, init_named("c")) == 1
    (first, _) = session.report().connections
    assert first.notes == (
        "recorded connections 1, 2 fit equally; chose 1, the first",
        "chose recorded connection 1 despite: clientInfo.name: got 'c', recorded 'a'",
    )
    assert first.render()[1:3] == [f"  note: {n}" for n in first.notes]


def test_pair_prefers_a_matching_first_message_over_the_name() -> None:
    """A recording whose first message matches wins over one with the same client name."""
    tape = handshake_tape(
        ("/", [], None, [(C, init_named("a")), (S, INIT_RESULT)]),
        ("/", [], None, [(C, '{"id":1,"method":"model/list","params":{}}')]),
    )
    session = ReplaySession(tape, CODEX_REPLAY, "t.jsonl")
    assert paired(session, '{"id":3,"method":"model/list","params":{}}') == 2


def test_pair_by_path_then_headers() -> None:
    """Same first messages: the same path wins, then fewer differing headers."""
    script: Script = [(C, init_named("a")), (S, INIT_RESULT)]
    tape = handshake_tape(
        ("/other", [("User-Agent", "x")], None, script),
        ("/", [("User-Agent", "y")], None, script),
        ("/", [("User-Agent", "x")], None, script),
    )
    session = ReplaySession(tape, CODEX_REPLAY, "t.jsonl")
    live = Handshake("/", (("user-agent", "x"), ("Host", "h")))
    assert paired(session, init_named("a"), live) == 3
    assert paired(session, init_named("a"), live) == 2
    assert paired(session, init_named("a"), live) == 1
    assert [c.notes for c in session.report().connections] == [
        (),
        (),
        ("chose recorded connection 1 despite: path: got '/', recorded '/other'",),
    ]


def test_pair_when_nothing_matches_takes_the_closest_and_its_miss_explains() -> None:
    """No recording starts with the live message: the closest is replayed (noted), and the
    message itself is an ordinary miss of that connection."""
    tape = handshake_tape(
        ("/", [], None, [(C, '{"id":1,"method":"a","params":{"x":1}}')]),
        ("/", [], None, [(C, '{"id":1,"method":"a","params":{"x":2,"y":3}}')]),
    )
    session = ReplaySession(tape, CODEX_REPLAY, "t.jsonl")
    live = session.open()
    replay = session.pair(live, Handshake(), '{"id":1,"method":"a","params":{"x":5}}')
    assert isinstance(replay, ConnectionReplay)
    assert replay.recorded.conn == 1
    step = replay.receive('{"id":1,"method":"a","params":{"x":5}}')
    assert step.miss is not None and step.matched is None
    assert session.report().connections[0].notes == (
        "no unused recorded connection starts with this client message; replaying the "
        "closest, recorded connection 1 (first client message differs (see its miss))",
    )


def test_pair_with_none_left_is_a_miss() -> None:
    """Every recording used: pairing is the miss of there being none left."""
    session = ReplaySession(handshake_tape(named("a")), CODEX_REPLAY, "t.jsonl")
    assert paired(session, init_named("a")) == 1
    assert session.none_left(session.open()) is not None
    miss = session.pair(session.open(), HANDSHAKE, init_named("a"))
    assert isinstance(miss, Miss)
    assert miss.render() == (
        "rpctape: no recorded match for a new connection (live connection 3)\n"
        "all 1 recorded connection(s) of t.jsonl were already replayed"
    )


def test_speaks_first_and_subprotocol_before_the_choice() -> None:
    """A recording whose server spoke first is chosen at the handshake; the subprotocol is
    one an unused recording negotiated that the client offers."""
    tape = handshake_tape(
        ("/", [], "v2", [(S, '{"method":"hello"}')]),
        ("/", [], "v1", [(C, init_named("a"))]),
    )
    session = ReplaySession(tape, CODEX_REPLAY, "t.jsonl")
    offers = Handshake("/", (), ("v1", "v3"))
    assert session.subprotocol(offers) == "v1"
    assert session.subprotocol(Handshake("/", (), ("v3",))) is None
    assert session.speaks_first(offers)
    assert paired(session, None, offers) == 1
    assert not session.speaks_first(offers)
    assert session.subprotocol(Handshake("/", (), ("v2",))) is None


def test_gone_before_speaking_is_noted_and_uses_nothing() -> None:
    """A client that closes before its first message leaves every recording unused."""
    session = ReplaySession(handshake_tape(named("a")), CODEX_REPLAY, "t.jsonl")
    session.gone_before_speaking(session.open())
    lines = session.report().render().splitlines()
    assert lines[1:4] == [
        "live connection 1: no recorded connection: 0 of 0 client message(s) matched, "
        "0 of 0 server message(s) sent",
        "  note: closed before its first message; no recorded connection was used",
        "recorded connection 1: never replayed: 0 of 1 client message(s) matched, "
        "0 of 1 server message(s) sent",
    ]


def test_a_match_names_the_recorded_item() -> None:
    """Step.matched is the recorded client item a live frame matched (for the ordering)."""
    replay = replay_of(SESSION)
    replay.connect()
    assert replay.receive(INIT).matched == 1
    assert replay.receive('{"method":"initialized"}').matched == 3


def test_order_and_hold_timeout_options() -> None:
    """order and hold_timeout are validated with the list of valid values or the range."""
    options = ReplayOptions.build(order="global", hold_timeout=2.5)
    assert (options.order, options.hold_timeout) == (Order.GLOBAL, 2.5)
    assert CODEX_REPLAY.order is Order.THREAD
    with pytest.raises(UsageError) as info:
        ReplayOptions.build(order="threads")
    assert str(info.value) == "invalid order 'threads'; valid values: thread, global, none"
    for bad in (0, -1.0, float("nan"), float("inf"), True):
        with pytest.raises(UsageError) as info:
            ReplayOptions.build(hold_timeout=bad)
        assert str(info.value) == (
            f"invalid hold timeout {bad!r}; give a number of seconds above 0"
        )


def test_pair_matching_for_new_episodes_prefers_the_client_name() -> None:
    """new_episodes: among recordings whose first message matches, the same client name
    wins; a first message none starts with is left for the live server (None)."""
    session = ReplaySession(handshake_tape(named("a"), named("b")), CODEX_REPLAY, "t.jsonl")
    replay = session.pair_matching(session.open(), HANDSHAKE, init_named("b"))
    assert replay is not None and replay.recorded.conn == 2
    assert session.pair_matching(session.open(), HANDSHAKE, '{"id":1,"method":"x"}') is None
    replay = session.pair_matching(session.open(), HANDSHAKE, init_named("b"))
    assert replay is not None and replay.recorded.conn == 1


# --- the cut around a recorded reply's id ----------------------------------------------------

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6) | st.just("\x00rpctape:id\x00"),  # the marker the slow path writes
)
_MEMBERS = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)


def _server_item(msg: dict[str, Any]) -> Item:
    event = {"seq": 2, "t": 0.0, "conn": 1, "kind": "text", "dir": "s2c", "msg": msg}
    return Item(0, event, Direction.S2C, MessageType.RESPONSE, 0.0, None, None, frame_of(event))


@settings(max_examples=300)
@given(
    rid=_SCALARS,
    members=st.dictionaries(st.text(max_size=6).filter(lambda k: k != "id"), _MEMBERS, max_size=4),
    position=st.integers(0, 4),
)
def test_id_slots_fast_path_agrees_with_the_marker_and_the_spans(
    rid: Any, members: dict[str, Any], position: int
) -> None:
    """The cut right after a leading id (the fast path) is the cut the marker rewrite and the
    member scanner find, wherever the id stands and whatever the other members hold; the two
    parts around the id rebuild the recorded frame byte for byte."""
    pairs = list(members.items())
    pairs.insert(min(position, len(pairs)), ("id", rid))
    msg = dict(pairs)
    item = _server_item(msg)
    slots = item.id_slots
    assert slots is not None
    assert slots == marked_id_slots(msg, item.data) == id_slots(item.data)
    assert slots[0] + orjson.dumps(rid) + slots[1] == item.data


def test_id_slots_examples() -> None:
    """A leading id is cut out after ``{"id":``; a later one where it stands."""
    assert _server_item({"id": 7, "result": {}}).id_slots == (b'{"id":', b',"result":{}}')
    assert _server_item({"result": {"id": 1}, "id": "a"}).id_slots == (
        b'{"result":{"id":1},"id":',
        b"}",
    )
