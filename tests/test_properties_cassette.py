"""Fuzzing the cassette reader with mutated real cassettes (Hypothesis, bounded).

Law: :func:`proxy.core.cassette.load` either succeeds or raises :class:`CassetteError` (one line
naming the file and line), never anything else; and what it accepts, ``rpctape show``'s
timeline and the replay planner take without raising.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from proxy.core.cassette import load, parse_lines
from proxy.errors import CassetteError
from tests.frames import CASSETTES, DEEP, FIELDS, HOSTILE, mutated, use_everything


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=mutated())
def test_mutated_cassettes_load_or_fail_with_one_line(data: bytes) -> None:
    """load raises CassetteError (file:line) or gives a cassette show and replay can use."""
    try:
        tape = parse_lines(data, source="fuzz.jsonl")
    except CassetteError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith("fuzz.jsonl")
        return
    for warning in tape.warnings:
        assert "\n" not in warning and re.match(r"fuzz\.jsonl(:\d+)?: ", warning)
    use_everything(tape)


@pytest.mark.parametrize("path", CASSETTES, ids=lambda p: p.name)
def test_real_cassettes_load_clean(path: Path) -> None:
    """The checked-in cassettes load without a warning and survive show and replay."""
    tape = load(path)
    assert tape.warnings == []
    use_everything(tape)


HEAD = b'{"rpctape":1}\n'


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"seq":1,"conn":1,"kind":"text","dir":"c2s"}',
         "c.jsonl:2: text event has neither 'raw' nor 'msg'"),
        (b'{"seq":1,"t":0,"conn":1,"kind":"binary","dir":"c2s","b64":"%%%"}',
         "c.jsonl:2: binary event has no valid base64 'b64' (Only base64 data is allowed)"),
        (b'{"seq":1,"t":0,"conn":1,"kind":"binary","dir":"c2s"}',
         "c.jsonl:2: binary event has no valid base64 'b64' (not a string)"),
        (b'{"seq":1,"t":0,"conn":1,"kind":"text","dir":"up","raw":""}',
         """c.jsonl:2: text event needs 'dir' "c2s" or "s2c\""""),
        (b'{"seq":1,"t":0,"conn":1,"kind":"text","dir":"c2s","raw":5}',
         "c.jsonl:2: text event's 'raw' is not a string"),
        (b'{"seq":1,"t":0,"conn":1,"kind":"text","dir":"c2s","msg":' + DEEP.encode() + b"}",
         "c.jsonl:2: text event nests too deep to be written back (orjson's limit)"),
        (b'{"seq":true,"conn":1,"kind":"close"}',
         "c.jsonl:2: not a cassette event (needs integer 'seq' and 'conn' and a 'kind' among "
         "['binary', 'close', 'error', 'open', 'text'])"),
        (b"[1]", "c.jsonl:2: not a cassette event (needs integer 'seq' and 'conn' and a 'kind' "
         "among ['binary', 'close', 'error', 'open', 'text'])"),
    ],
)  # fmt: skip
def test_events_that_cannot_be_skipped(line: bytes, message: str) -> None:
    """A frame that cannot be rebuilt (or a line that is no event) is an error naming the line."""
    with pytest.raises(CassetteError) as info:
        parse_lines(HEAD + line + b"\n", source="c.jsonl")
    assert str(info.value) == message


def test_events_that_are_repaired_or_skipped() -> None:
    """Bad optional fields are dropped or defaulted, an unknown kind skipped: with warnings."""
    lines = [
        b'{"seq":1,"conn":1,"kind":"close","by":"server","code":"x","reason":5}',
        b'{"seq":2,"t":"x","conn":1,"kind":"x"}',
        b'{"seq":3,"t":1.5,"conn":1,"kind":"text","dir":"c2s","raw":"{}","type":"nope",'
        b'"method":7,"redacted":"/x"}',
        b'{"seq":4,"t":2,"conn":1,"kind":"close","forwarded":{"code":"1000"},"exit_code":1.5}',
        b'{"seq":5,"t":3,"conn":1,"kind":"open","headers":[1],"path":null,"subprotocol":1}',
    ]
    tape = parse_lines(HEAD + b"\n".join(lines) + b"\n", source="c.jsonl")
    assert tape.warnings == [
        "c.jsonl:2: close event has no valid 't' (using 0.0)",
        "c.jsonl:2: close event has an invalid 'code' (ignored)",
        "c.jsonl:2: close event has an invalid 'reason' (ignored)",
        "c.jsonl:3: unknown event kind 'x' skipped",
        "c.jsonl:4: text event has an invalid 'type' (derived: invalid)",
        "c.jsonl:4: text event has an invalid 'method' (ignored)",
        "c.jsonl:4: text event has an invalid 'redacted' (ignored)",
        "c.jsonl:5: close event has an invalid 'forwarded' (ignored)",
        "c.jsonl:5: close event has an invalid 'exit_code' (ignored)",
        "c.jsonl:6: open event has an invalid 'path' (ignored)",
        "c.jsonl:6: open event has an invalid 'headers' (ignored)",
        "c.jsonl:6: open event has an invalid 'subprotocol' (ignored)",
    ]
    assert tape.events == [
        {"seq": 1, "t": 0.0, "conn": 1, "kind": "close", "by": "server", "code": None,
         "reason": ""},
        {"seq": 3, "t": 1.5, "conn": 1, "kind": "text", "dir": "c2s", "raw": "{}",
         "type": "invalid"},
        {"seq": 4, "t": 2, "conn": 1, "kind": "close"},
        {"seq": 5, "t": 3, "conn": 1, "kind": "open", "headers": {}, "path": "",
         "subprotocol": None},
    ]  # fmt: skip
    use_everything(tape)


def test_boolean_format_version_is_not_a_header() -> None:
    """{"rpctape": true} is not version 1."""
    with pytest.raises(CassetteError, match="is not an rpctape cassette"):
        parse_lines(b'{"rpctape":true}\n', source="c.jsonl")


def test_unreadable_file_is_a_cassette_error(tmp_path: Path) -> None:
    """An unreadable path (here: a path through a file) is a CassetteError, not an OSError."""
    blocker = tmp_path / "f"
    blocker.write_text("x")
    with pytest.raises(CassetteError, match=r"cannot read cassette .*f/c\.jsonl: Not a directory"):
        load(blocker / "c.jsonl")


BASE_EVENTS: list[dict[str, Any]] = [
    {"seq": 1, "t": 0, "conn": 1, "kind": "open", "path": "/", "headers": {}, "upstream": "u"},
    {"seq": 2, "t": 0, "conn": 1, "kind": "text", "dir": "c2s", "type": "request",
     "method": "m", "msg": {"id": 1, "method": "m"}},
    {"seq": 3, "t": 0, "conn": 1, "kind": "text", "dir": "s2c", "type": "response",
     "response_to": "m", "msg": {"id": 1, "result": {}}},
    {"seq": 4, "t": 0, "conn": 1, "kind": "binary", "dir": "s2c", "b64": "AAE="},
    {"seq": 5, "t": 0, "conn": 1, "kind": "close", "by": "server", "code": 1000, "reason": "",
     "forwarded": {"code": 1000, "reason": ""}},
    {"seq": 6, "t": 0, "conn": 2, "kind": "error", "message": "m", "stage": "connect"},
]  # fmt: skip


def test_every_field_of_every_kind_with_every_hostile_value() -> None:
    """A deterministic sweep: each field of each event kind set to each wrong-typed value."""
    outcomes: Counter[str] = Counter()
    for index, event in enumerate(BASE_EVENTS):
        for name in FIELDS:
            for value in HOSTILE:
                events = [dict(e) for e in BASE_EVENTS]
                events[index][name] = value
                data = HEAD + "".join(json.dumps(e) + "\n" for e in events).encode()
                try:
                    tape = parse_lines(data, source="c.jsonl")
                except CassetteError as exc:
                    assert str(exc).startswith(f"c.jsonl:{index + 2}: "), (event, name, value)
                    outcomes["refused"] += 1
                    continue
                use_everything(tape)
                outcomes["loaded"] += 1
    assert outcomes["refused"] > 0 and outcomes["loaded"] > 0
