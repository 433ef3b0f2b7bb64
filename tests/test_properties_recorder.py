"""Laws of the recorder and the cassette reader, checked with Hypothesis.

- any text or binary frame: its cassette line loads and ``frame_of`` rebuilds it byte for byte;
- redaction changes nothing in a frame without a secret;
- a planted secret never survives, and only the secret changes.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.core.cassette import frame_of, parse_lines
from proxy.core.jsonrpc import Direction, parse
from proxy.core.recorder import Recorder
from proxy.core.redact import Redactor, marker
from proxy.wire.store import CassetteWriter
from tests.frames import (
    BINARY_FRAMES,
    GARBAGE,
    SAFE_VALUES,
    TEXT_FRAMES,
    holds_no_secret,
    json_texts,
    planted,
    written,
)

HEADER = b'{"rpctape":1}\n'
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def recorder(redact: bool = True) -> Recorder:
    ticks = itertools.count()
    return Recorder(None, Redactor.build(enabled=redact), clock=lambda: next(ticks) * 0.5)


def record_text(rec: Recorder, frame: bytes, direction: Direction = Direction.C2S) -> bytes:
    conn = rec.connections or rec.new_connection()
    _, line = rec.text_line(conn, direction, frame, *rec.inspect(conn, direction, frame))
    return line


def load_one(line: bytes) -> dict[str, Any]:
    tape = parse_lines(HEADER + line)
    assert tape.warnings == []
    (event,) = tape.events
    return event


@FAST
@given(frame=TEXT_FRAMES, direction=st.sampled_from(Direction), redact=st.booleans())
def test_any_text_frame_rebuilds_byte_for_byte(
    frame: str, direction: Direction, redact: bool
) -> None:
    """Recorder -> one cassette line -> reader -> frame_of gives the frame back exactly."""
    if redact and not holds_no_secret(frame):
        redact = False
    raw = frame.encode()
    line = record_text(recorder(redact), raw, direction)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    event = load_one(line)
    assert event == orjson.loads(line)
    assert frame_of(event) == raw
    assert "redacted" not in event
    parsed = parse(raw)
    assert ("raw" in event) is not parsed.exact
    assert ("msg" in event) is parsed.has_msg
    assert event["type"] == parsed.type.value


@FAST
@given(data=BINARY_FRAMES, direction=st.sampled_from(Direction))
def test_any_binary_frame_rebuilds_byte_for_byte(data: bytes, direction: Direction) -> None:
    """Binary frames survive as base64, whatever they hold."""
    rec = recorder()
    _, line = rec.binary_line(rec.new_connection(), direction, data)
    assert frame_of(load_one(line)) == data


@settings(max_examples=40, deadline=None)
@given(frames=st.lists(st.tuples(st.booleans(), TEXT_FRAMES, BINARY_FRAMES), max_size=12))
def test_a_written_cassette_rebuilds_every_frame(frames: list[tuple[bool, str, bytes]]) -> None:
    """record_frames through a real writer: the file loads and every frame rebuilds, in order."""
    batch = [(is_text, text.encode() if is_text else data) for is_text, text, data in frames]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.jsonl"
        writer = CassetteWriter(path, {"rpctape": 1})
        rec = Recorder(writer, Redactor.build(enabled=False))
        conn = rec.new_connection()
        rec.open(conn, path="/", headers=[], subprotocol=None, upstream="ws://u")
        rec.record_frames(conn, Direction.S2C, batch)
        rec.close(conn, by="client", code=1000, reason="")
        writer.close()
        tape = parse_lines(path.read_bytes())
    assert tape.warnings == []
    assert [frame_of(e) for e in tape.frames()] == [payload for _, payload in batch]


@FAST
@given(frame=json_texts(SAFE_VALUES))
def test_redaction_changes_nothing_without_a_secret(frame: str) -> None:
    """JSON without a secret (escapes included, which force the full walk) is kept as sent."""
    event = load_one(record_text(recorder(), frame.encode()))
    assert "redacted" not in event
    assert frame_of(event) == frame.encode()


# -- planted secrets ----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    case=planted(),
    style=st.sampled_from(["compact", "pretty", "surrogate", "deep"]),
    cut=st.booleans(),
    garbage=GARBAGE,
)
def test_planted_secret_never_survives(
    case: tuple[Any, str, str], style: str, cut: bool, garbage: str
) -> None:
    """Wherever a secret stands, in JSON of any shape or in broken text, it is not recorded;
    in JSON only the secret changes: every other byte of the frame is kept."""
    msg, secret, unit = case
    text = written(msg, style)
    if cut:  # not JSON any more: cut just after the secret, with garbage around
        text = garbage + text[: text.index(unit) + len(unit) + 2] + garbage
    line = record_text(recorder(), text.encode())
    assert secret.encode() not in line
    assert unit.encode() not in line
    event = load_one(line)
    assert event["redacted"]
    if not cut and '"env"' not in text:
        assert frame_of(event) == text.replace(unit, marker(unit)).encode()
    elif not cut:
        assert frame_of(event) == text.replace(f'"{unit}"', f'"{marker(unit)}"').encode()


@pytest.mark.parametrize("size", [1, 16 * 1024 * 1024])
def test_precheck_passes_big_frames_without_secrets(size: int) -> None:
    """A frame without secrets, however big, is not walked (the pre-check says no)."""
    chunk = b'{"type":"agentMessage","text":"hello world, tokens used: 12","tokenUsage":{}},'
    frame = b'{"method":"item/completed","params":{"items":[' + chunk * (size // len(chunk))
    frame += b"{}]}}"
    assert not Redactor().might_redact(frame)
