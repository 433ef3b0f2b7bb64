"""Law of id remapping in replay: a remapped id is the client's id, byte for byte."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.cassette import Cassette, new_header
from proxy.core.jsonrpc import Direction, raw_id, with_raw_id
from proxy.core.planner import ConnectionReplay, ReplayOptions
from proxy.core.recorded import recorded_connections
from proxy.core.recorder import Recorder
from proxy.core.redact import Redactor
from tests.frames import NUMBER_FORMS, WHITESPACE

REPLY = '{"id":7,"result":{"data":[1,2.50,"\\u00e9"]}}'


def replay_for(reply: str) -> ConnectionReplay:
    """One recorded connection: a request with id 7 answered by ``reply``."""
    ticks = itertools.count()
    rec = Recorder(None, Redactor(), clock=lambda: next(ticks) * 0.5)
    conn = rec.new_connection()
    events = [
        rec.open(conn, path="/", headers=[], subprotocol=None, upstream="ws://u"),
        rec.text(conn, Direction.C2S, '{"id":7,"method":"model/list","params":{}}'),
        rec.text(conn, Direction.S2C, reply),
    ]
    (recorded,) = recorded_connections(Cassette(None, new_header("ws://u"), events))
    return ConnectionReplay(1, recorded, ReplayOptions())


ID_TEXTS = st.one_of(
    st.integers().map(str),
    st.sampled_from([n for n in NUMBER_FORMS if "e400" not in n]),
    st.text().map(lambda s: json.dumps(s, ensure_ascii=False)),
    st.text().map(lambda s: json.dumps(s, ensure_ascii=True)),
    st.sampled_from(['"a\\"b\\u00e9"', '"\\/"', "null", '""']),
)
"""The id of a live request as its client wrote it: every JSON-RPC id form and escape."""

MISSED_ID_TEXTS = st.one_of(ID_TEXTS, st.sampled_from(['"\\ud800"', "1e400", "-1e400"]))
"""Also ids that make a request JSON orjson cannot hold: such a request is matched byte for
byte (docs/replay.md), so it misses, and the miss reply still echoes the id."""


@settings(max_examples=300, deadline=None)
@given(id_text=ID_TEXTS, before=WHITESPACE, after=WHITESPACE)
def test_replayed_reply_carries_the_clients_id_verbatim(
    id_text: str, before: str, after: str
) -> None:
    """The reply's id is the live request's id text; every other byte is the recording's."""
    replay = replay_for(REPLY)
    live = '{"method":"model/list","id":' + before + id_text + after + ',"params":{}}'
    (out,) = replay.receive(live).send
    assert raw_id(out.data) == id_text.encode()
    assert out.data == ('{"id":' + id_text + REPLY[len('{"id":7') :]).encode()


@settings(max_examples=100, deadline=None)
@given(id_text=MISSED_ID_TEXTS)
def test_miss_reply_carries_the_clients_id_verbatim(id_text: str) -> None:
    """rpctape's own error reply to an unmatched request echoes the id exactly too."""
    replay = replay_for(REPLY)
    (out,) = replay.receive('{"id":' + id_text + ',"method":"other"}').send
    assert raw_id(out.data) == id_text.encode()
    assert json.loads(out.data)["error"]["code"] == -32099


def test_big_integer_id_is_not_a_float() -> None:
    """2**70 is answered as 2**70, not 1.1805916207174113e+21 (issue 8)."""
    (out,) = replay_for(REPLY).receive(f'{{"id":{2**70},"method":"model/list"}}').send
    assert out.data.startswith(b'{"id":1180591620717411303424,')


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"id":1}', b"1"),
        (' {\n "a" : {"id": 2},\t"id" : -0.0e1 } ', b"-0.0e1"),
        ('{"id":1,"id":"two"}', b'"two"'),  # the last, as parsers keep
        ('{"\\u0069d":3}', b"3"),  # an escaped key is still "id"
        ('{"a":1}', None),
        ('[{"id":1}]', None),
        ('{"id":1', None),
        ('{"id":1} x', None),
        ("", None),
        ("[" * 5000, None),
    ],
)
def test_raw_id(text: str, expected: bytes | None) -> None:
    """raw_id finds the top-level id as written, or says there is none."""
    assert raw_id(text.encode()) == expected


def test_with_raw_id_keeps_every_other_byte() -> None:
    """Only the id's span changes."""
    data = b'{ "id" : 7 , "result" : {"id": 7} }'
    assert with_raw_id(data, b'"x"') == b'{ "id" : "x" , "result" : {"id": 7} }'
    assert with_raw_id(b'{"result":1}', b"1") is None
