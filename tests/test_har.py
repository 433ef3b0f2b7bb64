"""Tests of proxy.core.har: cassette -> HAR (DevTools websocket entries) -> cassette, byte for
byte."""

from __future__ import annotations

import base64
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.core.cassette import Cassette, frame_of, load, new_header
from proxy.core.har import STDIO_NOTE, HarError, import_har, to_har
from proxy.core.jsonrpc import Direction
from proxy.core.recorder import Recorder
from proxy.core.redact import Redactor
from proxy.wire.store import CassetteWriter, cassette_files

CASSETTES = cassette_files([Path(__file__).parent.parent / "cassettes"], recursive=False)


def frames_by_conn(tape: Cassette) -> dict[int, list[tuple[str, str, bytes]]]:
    """Every frame of every connection: (kind, dir, exact bytes), in order."""
    out: dict[int, list[tuple[str, str, bytes]]] = {}
    for event in tape.frames():
        out.setdefault(event["conn"], []).append((event["kind"], event["dir"], frame_of(event)))
    return out


def round_trip(tape: Cassette, tmp_path: Path) -> Cassette:
    har = orjson.loads(orjson.dumps(to_har(tape)))  # through JSON, as a file would
    target = tmp_path / "back.jsonl"
    import_har(har, Redactor.build(), lambda h: CassetteWriter(target, h, overwrite=True))
    return load(target)


@pytest.mark.parametrize("path", CASSETTES, ids=[p.stem for p in CASSETTES])
def test_real_cassette_round_trips(path: Path, tmp_path: Path) -> None:
    """Every frame of a real cassette survives cassette -> HAR -> cassette byte for byte."""
    tape = load(path)
    back = round_trip(tape, tmp_path)
    assert frames_by_conn(back) == frames_by_conn(tape)
    assert [e["kind"] for e in back.events if e["kind"] == "open"] == ["open"] * len(
        [e for e in tape.events if e["kind"] == "open"]
    )
    for old, new in zip(tape.frames(), back.frames(), strict=True):
        assert new.get("method") == old.get("method")
        assert new.get("response_to") == old.get("response_to")


def test_export_shape() -> None:
    """One websocket entry per connection, DevTools' field names, times in epoch seconds."""
    tape = load(CASSETTES[0])  # attestation.jsonl
    har = to_har(tape)
    assert har["log"]["version"] == "1.2"
    (entry,) = har["log"]["entries"]
    assert entry["_resourceType"] == "websocket"
    assert entry["response"]["status"] == 101
    assert entry["request"]["url"] == "ws://127.0.0.1:40583/"
    assert {"name": "Upgrade", "value": "websocket"} in entry["request"]["headers"]
    messages = entry["_webSocketMessages"]
    assert len(messages) == len(tape.frames())
    first = messages[0]
    assert first["type"] == "send" and first["opcode"] == 1
    assert first["data"] == frame_of(tape.frames()[0]).decode()
    # created 2026-11-23T21:50:49+00:00, first frame at t=0.007958
    assert first["time"] == pytest.approx(1795470649.007958, abs=1e-5)
    assert messages[1]["type"] == "receive"


def test_binary_and_stdio_export(tmp_path: Path) -> None:
    """Binary frames are opcode 2 in base64; a stdio session says so in its comment."""
    header = new_header("stdio:codex app-server", transport="stdio")
    writer = CassetteWriter(tmp_path / "s.jsonl", header)
    recorder = Recorder(writer, clock=lambda: 0.0)
    conn = recorder.new_connection()
    recorder.open(
        conn, path="", headers=[], subprotocol=None, upstream="stdio:codex app-server",
        transport="stdio", client_transport="stdio",
    )  # fmt: skip
    recorder.binary(conn, Direction.S2C, b"\xff\x00")
    writer.close()
    (entry,) = to_har(load(tmp_path / "s.jsonl"))["log"]["entries"]
    assert entry["_webSocketMessages"][0]["opcode"] == 2
    assert entry["_webSocketMessages"][0]["data"] == base64.b64encode(b"\xff\x00").decode()
    assert STDIO_NOTE in entry["comment"]


def test_import_devtools_capture(tmp_path: Path) -> None:
    """A DevTools-style capture imports; headers are redacted on the way in."""
    har = {
        "log": {
            "entries": [
                {"request": {"url": "http://example.test/x"}, "_resourceType": "document"},
                {
                    "startedDateTime": "2026-01-01T00:00:00.000Z",
                    "_resourceType": "websocket",
                    "request": {
                        "url": "ws://127.0.0.1:4222/?a=1",
                        "headers": [
                            {"name": "Authorization", "value": "Bearer abc"},
                            {"name": ":authority", "value": "x"},
                        ],
                    },
                    "response": {"status": 101, "headers": []},
                    "_webSocketMessages": [
                        {
                            "type": "send",
                            "time": 1767225600.5,
                            "opcode": 1,
                            "data": '{"id":1,"method":"initialize"}',
                        },
                        {
                            "type": "receive",
                            "time": 1767225600.75,
                            "opcode": 1,
                            "data": '{"id":1,"result":{}}',
                        },
                    ],
                },
            ]
        }
    }
    recorder = import_har(har, Redactor.build(), lambda h: CassetteWriter(tmp_path / "c.jsonl", h))
    tape = load(tmp_path / "c.jsonl")
    assert recorder.frames[Direction.C2S] == recorder.frames[Direction.S2C] == 1
    opened = tape.events[0]
    assert opened["path"] == "/?a=1"
    assert opened["headers"]["Authorization"].startswith("<redacted:")
    assert ":authority" not in opened["headers"]
    assert [e["t"] for e in tape.events] == [0.0, 0.5, 0.75, 0.75]
    assert tape.events[2]["response_to"] == "initialize"
    assert tape.header["upstream"] == "ws://127.0.0.1:4222/"


@pytest.mark.parametrize(
    ("har", "message"),
    [
        ({}, "not a HAR file: no log.entries"),
        ({"log": {"entries": []}}, "the HAR file has no websocket entry"),
        (
            {"log": {"entries": [{"_webSocketMessages": [{"type": "up"}]}]}},
            "entry 1 message 0: a websocket message needs type 'send' or 'receive'",
        ),
        (
            {
                "log": {
                    "entries": [
                        {"_webSocketMessages": [{"type": "send", "opcode": 2, "data": "!!"}]}
                    ]
                }
            },
            "entry 1 message 0: binary message data is not base64",
        ),
    ],
)
def test_import_rejects(har: object, message: str, tmp_path: Path) -> None:
    """A file that is not a usable HAR fails with one line naming the problem."""
    with pytest.raises(HarError) as caught:
        import_har(har, Redactor.build(), lambda h: CassetteWriter(tmp_path / "c.jsonl", h))
    assert str(caught.value).startswith(message)


FRAMES = st.lists(
    st.tuples(
        st.booleans(),
        st.sampled_from(list(Direction)),
        st.one_of(st.text(max_size=40).map(str.encode), st.binary(max_size=40)),
    ),
    max_size=12,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(conns=st.lists(FRAMES, min_size=1, max_size=3))
def test_any_frames_round_trip(conns: list[list[tuple[bool, Direction, bytes]]],
                               tmp_path: Path) -> None:  # fmt: skip
    """Law: arbitrary text and binary frames on several connections rebuild byte for byte."""
    path = tmp_path / "any.jsonl"
    writer = CassetteWriter(path, new_header("ws://127.0.0.1:1"), overwrite=True)
    clock = [0.0]
    recorder = Recorder(writer, Redactor.build(), clock=lambda: clock[0])
    ids = [recorder.new_connection() for _ in conns]
    for conn in ids:
        recorder.open(conn, path="/", headers=[], subprotocol=None, upstream="ws://127.0.0.1:1/")
    for conn, frames in zip(ids, conns, strict=True):
        for is_text, direction, data in frames:
            clock[0] += 0.001
            if is_text and data.decode(errors="ignore").encode() == data:
                recorder.text(conn, direction, data)
            else:
                recorder.binary(conn, direction, data)
    writer.close()
    tape = load(path)
    assert frames_by_conn(round_trip(tape, tmp_path)) == frames_by_conn(tape)


async def test_imported_capture_replays_cleanly(tmp_path: Path) -> None:
    """A cassette imported from HAR is served by the replay server: the client's recorded
    messages get the recorded answers, and nothing is missed or left over."""
    from websockets.asyncio.client import connect

    from proxy import ReplayServer

    source = load(CASSETTES[-1])  # two-turns.jsonl
    back = round_trip(source, tmp_path)
    assert back.path is not None
    server = ReplayServer(back.path)
    url = await server.start()
    try:
        async with connect(url) as ws:
            for event in back.frames():
                if event["dir"] == "c2s":
                    await ws.send(frame_of(event).decode())
            expected = [frame_of(e) for e in back.frames() if e["dir"] == "s2c"]
            got = []
            for _ in expected:
                frame = await ws.recv()
                got.append(frame.encode() if isinstance(frame, str) else frame)
    finally:
        await server.close()
    assert got == expected
    assert server.report.clean, server.report.render()
