"""Unit tests of proxy.core.recorder: events built from frames, exactly as the format says."""

from __future__ import annotations

import base64
import itertools
from pathlib import Path

import orjson
import pytest

from proxy.core.cassette import frame_of, load
from proxy.core.jsonrpc import Direction
from proxy.core.recorder import Recorder
from proxy.core.redact import Redactor, marker
from proxy.errors import CassetteWriteError
from proxy.wire.store import CassetteWriter
from tests.faults import fail_writes_after

C2S, S2C = Direction.C2S, Direction.S2C


def make_recorder(writer: CassetteWriter | None = None, **kw: object) -> Recorder:
    ticks = itertools.count()
    return Recorder(writer, clock=lambda: next(ticks) * 0.25, **kw)  # type: ignore[arg-type]


def test_text_event_fields() -> None:
    """A compact request is stored as msg only, with derived type and method."""
    rec = make_recorder()
    conn = rec.new_connection()
    rec.open(conn, path="/", headers=[], subprotocol=None, upstream="ws://u")
    event = rec.text(conn, C2S, '{"id":1,"method":"initialize","params":{}}')
    assert event == {
        "seq": 2,
        "t": 0.5,
        "conn": 1,
        "kind": "text",
        "dir": "c2s",
        "type": "request",
        "method": "initialize",
        "msg": {"id": 1, "method": "initialize", "params": {}},
    }


def test_response_names_the_request_it_answers() -> None:
    """Responses in either direction carry response_to."""
    rec = make_recorder()
    conn = rec.new_connection()
    rec.open(conn, path="/", headers=[], subprotocol=None, upstream="ws://u")
    rec.text(conn, C2S, '{"id":1,"method":"model/list"}')
    rec.text(conn, S2C, '{"id":0,"method":"item/commandExecution/requestApproval","params":{}}')
    answer = rec.text(conn, C2S, '{"id":0,"result":{"decision":"accept"}}')
    reply = rec.text(conn, S2C, '{"id":1,"result":{"data":[]}}')
    assert (answer["type"], answer["response_to"]) == (
        "response",
        "item/commandExecution/requestApproval",
    )
    assert (reply["type"], reply["response_to"]) == ("response", "model/list")


@pytest.mark.parametrize(
    "frame",
    [
        '{"id": 1, "method": "a"}',
        '{"x":"\\u00e9\\ud83d\\ude00"}',
        '{"x":1.0,"y":1E2,"z":0.10}',
        '{"n":123456789012345678901234567890}',
        '{"b":1,"a":2}',
        '  {"a":1}  ',
        '{"x":"\\ud800"}',
        "not json at all",
        "",
        '[{"id":1,"method":"a"},{"method":"b"}]',
        "\u00e9\U0001f600",
    ],
)
def test_exact_frame_is_reconstructable(frame: str) -> None:
    """For any text frame, frame_of(event) gives back the exact bytes."""
    rec = make_recorder()
    event = rec.text(rec.new_connection(), C2S, frame)
    assert frame_of(orjson.loads(orjson.dumps(event))) == frame.encode()
    assert ("raw" in event) is (orjson.dumps(event.get("msg")) != frame.encode())


def test_invalid_and_batch_types() -> None:
    """Non-JSON-RPC JSON is invalid; arrays are batches; non-JSON has no msg."""
    rec = make_recorder()
    conn = rec.new_connection()
    assert rec.text(conn, C2S, '{"hello":1}')["type"] == "invalid"
    assert rec.text(conn, C2S, "[]")["type"] == "batch"
    garbage = rec.text(conn, C2S, "garbage")
    assert garbage["type"] == "invalid" and "msg" not in garbage and garbage["raw"] == "garbage"


def test_redacted_frame_keeps_no_raw_with_the_secret() -> None:
    """A secret is replaced in msg and in raw (kept as sent otherwise), listed in redacted."""
    rec = make_recorder()
    conn = rec.new_connection()
    event = rec.text(conn, C2S, '{"id": 0, "result": {"token": "v1.secret", "tokenUsage": 3}}')
    assert event["msg"] == {"id": 0, "result": {"token": marker("v1.secret"), "tokenUsage": 3}}
    assert event["redacted"] == ["/result/token"]
    m = marker("v1.secret")
    assert event["raw"] == '{"id": 0, "result": {"token": "' + m + '", "tokenUsage": 3}}'
    assert b"v1.secret" not in orjson.dumps(event)


def test_escaped_secret_drops_raw() -> None:
    """A secret the text pass cannot see (an escaped credential) leaves only the msg."""
    rec = make_recorder()
    conn = rec.new_connection()
    key = "sk-abcdefghij0123456789xyz"
    event = rec.text(conn, C2S, '{"id": 0, "text": "k \\u0073' + key[1:] + '"}')
    assert event["msg"] == {"id": 0, "text": "k " + marker(key)}
    assert event["redacted"] == ["/text"] and "raw" not in event
    escaped_key = rec.text(conn, C2S, '{"id": 0, "result": {"\\u0074oken": "v1.s"}}')
    assert escaped_key["raw"] == '{"id": 0, "result": {"\\u0074oken": "' + marker("v1.s") + '"}}'


def test_redaction_of_frames_orjson_cannot_hold() -> None:
    """Frames without msg lose their secrets in place: the rest of the text is kept."""
    rec = make_recorder()
    conn = rec.new_connection()
    event = rec.text(conn, C2S, '{"token": "s", "x":"\\ud800"}')
    assert event["redacted"] == [""] and "msg" not in event
    assert event["raw"] == '{"token": "' + marker("s") + '", "x":"\\ud800"}'
    broken = rec.text(conn, C2S, '{"token":"s", "a": "\\u00e9')
    assert broken["redacted"] == [""]
    assert broken["raw"] == '{"token":"' + marker("s") + '", "a": "\\u00e9'
    cut = rec.text(conn, C2S, '{"x": 1, "password": "hunt')
    assert cut["raw"] == '{"x": 1, "password": "' + marker("hunt") + '"'
    garbage = rec.text(conn, C2S, '\ufeff{"text": "\\u00e9 no secret"}')
    assert "redacted" not in garbage
    assert garbage["raw"] == '\ufeff{"text": "\\u00e9 no secret"}'


def test_lenient_json_env_and_escaped_secret() -> None:
    """JSON orjson cannot hold: env values go in place; a secret the text pass cannot see
    (escaped) makes the standard library write the frame again, markers in place."""
    rec = make_recorder()
    conn = rec.new_connection()
    env = rec.text(conn, C2S, '{"x":"\\ud800", "env": {"A": 1, "B": null}}')
    assert env["redacted"] == [""]
    assert env["raw"] == '{"x":"\\ud800", "env": {"A": "' + marker(1) + '", "B": null}}'
    key = "sk-abcdefghij0123456789xyz"
    escaped = rec.text(conn, C2S, '{"x":"\\ud800", "t": "\\u0073' + key[1:] + '"}')
    assert escaped["raw"] == '{"x":"\\ud800","t":"' + marker(key) + '"}'


def test_no_redact_records_secrets() -> None:
    """--no-redact keeps the frame as sent."""
    rec = make_recorder(redactor=Redactor.build(enabled=False))
    event = rec.text(rec.new_connection(), C2S, '{"id":0,"result":{"token":"v1.secret"}}')
    assert event["msg"]["result"]["token"] == "v1.secret" and "redacted" not in event


def test_open_redacts_headers_and_close_and_error() -> None:
    """open, close and error events carry their documented fields."""
    rec = make_recorder()
    conn = rec.new_connection()
    opened = rec.open(
        conn,
        path="/?x=1",
        headers=[("Authorization", "Bearer abc"), ("User-Agent", "ua")],
        subprotocol="p1",
        upstream="ws://127.0.0.1:9/?x=1",
    )
    assert opened == {
        "seq": 1,
        "t": 0.25,
        "conn": 1,
        "kind": "open",
        "path": "/?x=1",
        "headers": {"Authorization": marker("Bearer abc"), "User-Agent": "ua"},
        "subprotocol": "p1",
        "upstream": "ws://127.0.0.1:9/?x=1",
        "transport": "websocket",
        "client_transport": "websocket",
    }
    assert rec.open_connections == 1
    closed = rec.close(conn, by="client", code=1000, reason="bye", leg="client")
    assert closed == {
        "seq": 2,
        "t": 0.5,
        "conn": 1,
        "kind": "close",
        "by": "client",
        "code": 1000,
        "reason": "bye",
        "leg": "client",
    }
    assert rec.open_connections == 0
    error = rec.error(2, "cannot reach upstream", stage="connect", status=502)
    assert error["kind"] == "error" and error["stage"] == "connect" and error["conn"] == 2


def test_binary_and_counters() -> None:
    """Binary frames are base64; frames are counted per direction."""
    rec = make_recorder()
    conn = rec.new_connection()
    event = rec.binary(conn, S2C, b"\xff\xfe\x00")
    assert event["b64"] == base64.b64encode(b"\xff\xfe\x00").decode()
    rec.text(conn, C2S, "{}")
    assert (rec.frames[C2S], rec.frames[S2C]) == (1, 1)


def test_written_before_return(tmp_path: Path) -> None:
    """Each event is in the file when the method returns (nothing buffered)."""
    path = tmp_path / "c.jsonl"
    writer = CassetteWriter(path, {"rpctape": 1})
    rec = make_recorder(writer)
    conn = rec.new_connection()
    rec.text(conn, C2S, '{"method":"initialized"}')
    assert load(path).events[-1]["method"] == "initialized"
    rec.text(conn, S2C, '{"method":"turn/started","params":{}}')
    assert [e["seq"] for e in load(path).events] == [1, 2]
    writer.close()


def test_record_frames_writes_a_batch_in_one_line_set(tmp_path: Path) -> None:
    """Frames that arrived together are written together, in order, before returning."""
    path = tmp_path / "c.jsonl"
    writer = CassetteWriter(path, {"rpctape": 1})
    rec = make_recorder(writer)
    conn = rec.new_connection()
    frames = [
        (True, b'{"method":"a","params":{}}'),
        (False, b"\x00\x01"),
        (True, b'{ "method": "b" }'),
        (True, b'{"id":0,"result":{"token":"s"}}'),
    ]
    events = rec.record_frames(conn, S2C, frames)
    writer.close()
    lines = path.read_bytes().splitlines()[1:]
    assert [orjson.loads(line) for line in lines] == events
    assert [frame_of(e) for e in events[:3]] == [f for _, f in frames[:3]]
    assert events[3]["msg"] == {"id": 0, "result": {"token": marker("s")}}
    assert rec.frames[S2C] == 4


def test_a_batch_whose_write_failed_is_not_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The counters (the summary's "N frame(s)") hold exactly the frames in the file: a batch
    the disk refused is not counted, nor anything after it."""
    path = tmp_path / "c.jsonl"
    writer = CassetteWriter(path, {"rpctape": 1})
    rec = make_recorder(writer)
    conn = rec.new_connection()
    fail_writes_after(monkeypatch, 1)
    rec.record_frames(conn, S2C, [(True, b'{"method":"a"}'), (False, b"\x00")])
    with pytest.raises(CassetteWriteError):
        rec.record_frames(conn, S2C, [(True, b'{"method":"b"}'), (True, b'{"method":"c"}')])
    with pytest.raises(CassetteWriteError):
        rec.binary(conn, C2S, b"\x01")
    assert (rec.frames[C2S], rec.frames[S2C]) == (0, 2)
    assert len(load(path).frames(conn)) == 2


@pytest.mark.parametrize(
    "frame",
    [b'{"method":"a","params":{"x":[1,2.5,"\xc3\xa9"]}}', b'{"id":1,"result":null}', b"[]"],
)
def test_spliced_line_equals_serialised_event(frame: bytes) -> None:
    """The fast path's line is byte-identical to orjson.dumps(event)."""
    rec = make_recorder()
    event, line = rec._text(rec.new_connection(), C2S, frame)
    assert line == orjson.dumps(event) + b"\n"
    assert list(event)[-1] == "msg"


def test_recorder_continues_a_cassette() -> None:
    """after=events: seq, conn and t carry on from the cassette's last event."""
    after = [{"seq": 7, "t": 3.5, "conn": 2, "kind": "close"}]
    rec = Recorder(None, clock=lambda: 100.0, after=after)
    conn = rec.new_connection()
    event = rec.text(conn, C2S, "{}")
    assert (conn, event["seq"], event["t"]) == (3, 8, 3.5)


def test_open_error_and_close_carry_no_secret() -> None:
    """Query tokens in path and upstream, attestation headers, URLs in messages: redacted."""
    rec = make_recorder()
    conn = rec.new_connection()
    opened = rec.open(
        conn,
        path="/?token=q1&x=1",
        headers=[("X-OAI-Attestation", "v1.att"), ("Cookie", "c=1"), ("Host", "h")],
        subprotocol=None,
        upstream="ws://127.0.0.1:9/?token=q1&x=1",
    )
    assert opened["path"] == f"/?token={marker('q1')}&x=1"
    assert opened["upstream"] == f"ws://127.0.0.1:9/?token={marker('q1')}&x=1"
    assert opened["headers"] == {
        "X-OAI-Attestation": marker("v1.att"),
        "Cookie": marker("c=1"),
        "Host": "h",
    }
    shown = rec.redactor.redact_headers([("Authorization", "Bearer abcdefgh1")])
    error = rec.error(
        2,
        "cannot reach upstream ws://u/?api_key=k9: refused",
        stage="connect",
        path="/?api_key=k9",
        headers=shown,
        upstream="ws://u/?api_key=k9",
    )
    assert error["message"] == f"cannot reach upstream ws://u/?api_key={marker('k9')}: refused"
    assert error["path"] == f"/?api_key={marker('k9')}"
    assert error["upstream"] == f"ws://u/?api_key={marker('k9')}"
    assert error["headers"] == {"Authorization": marker("Bearer abcdefgh1")}  # not twice
    closed = rec.close(conn, by="server", code=1011, reason="bad key sk-abc0123456789012345678")
    assert closed["reason"] == f"bad key {marker('sk-abc0123456789012345678')}"
    for event in (opened, error, closed):
        line = orjson.dumps(event)
        assert all(s not in line for s in (b"q1", b"v1.att", b"k9", b"abcdefgh1", b"sk-abc"))


def test_a_binary_frame_holding_json_text_is_redacted_like_a_text_frame() -> None:
    """An apiKey sent in a binary frame whose payload is JSON text reaches the cassette
    redacted, as it would in a text frame (and a binary frame that is not text stays as is)."""
    secret = "sk-proj-" + "Zq9" * 16
    frame = orjson.dumps({"id": 1, "method": "account/login/start",
                          "params": {"type": "apiKey", "apiKey": secret}})  # fmt: skip
    recorder = make_recorder()
    conn = recorder.new_connection()
    recorder.open(conn, path="/", headers=(), subprotocol=None, upstream="ws://x")
    binary, _ = recorder.binary_line(conn, Direction.C2S, frame)
    text_event, _ = recorder.text_line(conn, Direction.C2S, frame, *recorder.inspect(
        conn, Direction.C2S, frame))  # fmt: skip
    payload = base64.b64decode(binary["b64"])
    assert secret.encode() not in payload and secret.encode() not in orjson.dumps(binary)
    assert payload == orjson.dumps(text_event["msg"])
    assert binary["redacted"] == text_event["redacted"] == ["/params/apiKey"]
    opaque = bytes(range(256)) + secret.encode()
    untouched, _ = recorder.binary_line(conn, Direction.C2S, opaque)
    assert base64.b64decode(untouched["b64"]) == opaque and "redacted" not in untouched


def test_a_close_reason_passed_on_is_redacted_too() -> None:
    """A close event's reason and the reason forwarded to the other leg are both free text
    the recorder redacts (a peer may close with a secret in its reason)."""
    secret = "sk-proj-" + "Zq9" * 16
    recorder = make_recorder()
    conn = recorder.new_connection()
    recorder.open(conn, path="/", headers=(), subprotocol=None, upstream="ws://x")
    event = recorder.close(
        conn,
        by="server",
        code=4000,
        reason=f"bad key {secret}",
        leg="server",
        forwarded={"code": 4000, "reason": f"key {secret}"},
    )
    line = orjson.dumps(event)
    assert secret.encode() not in line
    assert event["forwarded"] == {"code": 4000, "reason": f"key {marker(secret)}"}
    assert list(event) == ["seq", "t", "conn", "kind", "by", "code", "reason", "leg", "forwarded"]
