"""Unit tests of proxy.core.timeline: one row per event kind, filters, summary."""

from __future__ import annotations

import base64
from pathlib import Path

import orjson
import pytest

from proxy.cli.views import follow
from proxy.core.cassette import Cassette
from proxy.core.dialect import RecordedVersion, VersionSource
from proxy.core.timeline import (
    Row,
    describe,
    effects,
    format_row,
    header_json,
    header_lines,
    select,
    shorten,
    styled,
    summary,
)
from proxy.errors import CassetteError, CassetteNotFound

OPEN = {"seq": 1, "t": 0.0, "conn": 1, "kind": "open", "path": "/", "headers": {"A": "b"},
        "upstream": "ws://u/", "transport": "websocket", "client_transport": "stdio"}  # fmt: skip
REQ = {"seq": 2, "t": 0.25, "conn": 1, "kind": "text", "dir": "c2s", "type": "request",
       "method": "thread/start", "msg": {"id": 1, "method": "thread/start"}}  # fmt: skip
RESP = {"seq": 3, "t": 0.5, "conn": 2, "kind": "text", "dir": "s2c", "type": "response",
        "response_to": "thread/start", "msg": {"id": 1, "result": {}},
        "redacted": ["/x"]}  # fmt: skip
BIN = {"seq": 4, "t": 0.75, "conn": 1, "kind": "binary", "dir": "s2c",
       "b64": base64.b64encode(b"\x00\x01\x02").decode()}  # fmt: skip
CLOSE = {"seq": 5, "t": 1.0, "conn": 1, "kind": "close", "by": "server", "code": 1006,
         "reason": "dropped"}  # fmt: skip
ERR = {"seq": 6, "t": 1.5, "conn": 3, "kind": "error", "stage": "connect", "message": "no"}


def test_rows_per_kind() -> None:
    """Each kind gets its arrow, kind, what and payload."""
    assert describe(OPEN) == Row(0.0, 1, " ", "open", "stdio / -> websocket ws://u/", '{"A":"b"}')
    assert describe(REQ) == Row(
        0.25, 1, ">", "request", "thread/start", '{"id":1,"method":"thread/start"}'
    )
    assert describe(RESP) == Row(
        0.5, 2, "<", "response", "response to thread/start (redacted)", '{"id":1,"result":{}}'
    )
    assert describe(BIN) == Row(0.75, 1, "<", "binary", "3 bytes", "AAEC")
    assert describe(CLOSE) == Row(1.0, 1, " ", "close", "by server 1006", "dropped")
    exited = {**CLOSE, "by": "proxy", "code": 1000, "exit_code": 0}
    assert describe(exited).what == "by proxy 1000, exit code 0"
    assert describe(ERR) == Row(1.5, 3, " ", "error", "connect", "no")


def test_format_and_shorten() -> None:
    """A row is one fixed-width line; long payloads are cut with an ellipsis."""
    assert shorten("a\nb" * 10, 8) == "a\\nba\\n…"
    line = format_row(describe(REQ))
    assert line == f"    0.250   1 > request      {'thread/start':<40} " + (
        '{"id":1,"method":"thread/start"}'
    )


def test_select_and_summary() -> None:
    """--conn and --method filter (responses count for their method); summary counts."""
    events = [OPEN, REQ, RESP, BIN, CLOSE, ERR]
    assert [e["seq"] for e in select(events, method="thread/start")] == [2, 3]
    assert [e["seq"] for e in select(events, conn=1)] == [1, 2, 4, 5]
    tape = Cassette(None, {"rpctape": 1}, events, warnings=["torn"])
    assert summary(tape) == (
        "3 connection(s), 1 frame(s) client>server, 2 frame(s) server>client, 1 warning(s)"
    )


def test_effects_name_what_rules_did() -> None:
    """Each annotation of docs/rules.md reads as what happened to the frame."""
    assert effects(REQ) == []
    assert effects({**REQ, "rules": [{"rule": "q", "action": "drop"}], "forwarded": False}) == [
        "dropped"
    ]
    patched = {**REQ, "rules": [{"rule": "p", "action": "patch"}, {"rule": "d", "action": "delay"}],
               "delivered": {"id": 1}, "delay_ms": 50}  # fmt: skip
    assert effects(patched) == ["patched", "delayed", "held 50 ms"]
    assert effects({**RESP, "origin": "rpctape", "rule": "fake"}) == ["sent by rpctape (fake)"]
    assert effects({**RESP, "hidden": True, "forwarded": False}) == ["hidden"]
    assert effects({**RESP, "forwarded": False}) == ["not forwarded"]
    faulted = {**RESP, "rules": [{"rule": "fault thread/start:error", "action": "error"}],
               "forwarded": False}  # fmt: skip
    assert effects(faulted) == ["fault: error instead"]
    stalled = {**RESP, "rules": [{"rule": "fault x:stall", "action": "stall"}], "forwarded": False}
    assert effects(stalled) == ["fault: stalled"]


def test_styled_row_is_the_plain_row_plus_effects() -> None:
    """Coloured rows read like format_row, with the rules' effects in brackets."""
    assert styled(describe(REQ), REQ).plain == format_row(describe(REQ))
    dropped = {**REQ, "rules": [{"rule": "q", "action": "drop"}], "forwarded": False}
    assert styled(describe(dropped), dropped).plain == (
        f"    0.250   1 > request      {'thread/start':<40} [dropped] "
        '{"id":1,"method":"thread/start"}'
    )
    server_request = {**REQ, "dir": "s2c"}
    spans = styled(describe(server_request), server_request).spans
    assert [s.style for s in spans] == ["dim", "green", "yellow", "yellow"]


def test_follow_yields_header_events_and_waits_for_whole_lines(tmp_path: Path) -> None:
    """follow(): the header, the events there, then appended lines once they are complete."""
    path = tmp_path / "c.jsonl"
    header = b'{"rpctape":1,"upstream":"ws://u"}\n'
    path.write_bytes(header + orjson.dumps(OPEN) + b"\n" + orjson.dumps(REQ)[:10])
    stream = follow(path, poll=0.01)
    assert next(stream)["upstream"] == "ws://u"
    assert next(stream) == OPEN
    with path.open("ab") as out:
        out.write(orjson.dumps(REQ)[10:] + b"\n\n")
    assert next(stream) == REQ
    with path.open("ab") as out:
        out.write(b"not json\n")
    with pytest.raises(CassetteError, match="corrupt line"):
        next(stream)


def test_follow_missing_file(tmp_path: Path) -> None:
    """A cassette that is not there: the reader's own message."""
    with pytest.raises(CassetteNotFound, match="no cassette at"):
        next(follow(tmp_path / "none.jsonl"))


def test_header_lines_and_json_name_the_codex() -> None:
    """Fields as written (strings bare, others compact JSON); the codex line only when the
    header has no codex field of its own."""
    header = {"rpctape": 1, "upstream": "ws://u", "meta": {"made_by": "x"}}
    meta = RecordedVersion("0.169.0", VersionSource.META)
    assert header_lines(header, meta) == [
        "rpctape: 1",
        "upstream: ws://u",
        'meta: {"made_by":"x"}',
        "codex: 0.169.0 (meta)",
    ]
    assert header_lines(header, None)[-1] == "codex: unknown"
    stamped = {**header, "codex": "0.171.0"}
    assert header_lines(stamped, RecordedVersion("0.171.0", VersionSource.HEADER))[-1] == (
        "codex: 0.171.0"
    )
    assert header_json(header, meta) == {"header": header, "codex": "0.169.0", "codex_from": "meta"}
