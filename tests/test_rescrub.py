"""proxy.core.rescrub: today's redaction applied again to a written cassette.

Laws (Hypothesis): a cassette recorded with redaction off, rescrubbed, is byte for byte the
cassette recorded with redaction on; rescrubbing twice is rescrubbing once; a cassette
without a secret comes back identical; a cassette redacted with the defaults, rescrubbed with
more keys, is the one recorded with those keys. Examples: a secret of every kind the recorder
redacts, planted and taken out, and nothing else changed.
"""

from __future__ import annotations

import base64
import itertools
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.core.cassette import event_lines, frame_of, parse_lines
from proxy.core.jsonrpc import Direction
from proxy.core.planner import ConnectionReplay, ReplayOptions
from proxy.core.recorded import recorded_connections
from proxy.core.recorder import Recorder
from proxy.core.redact import Redactor, marker
from proxy.core.rescrub import Place, rescrub
from proxy.errors import CassetteError
from tests.frames import (
    BINARY_FRAMES,
    SAFE_VALUES,
    SECRETS,
    TEXT_FRAMES,
    holds_no_secret,
    json_texts,
    planted,
    written,
)
from tests.helpers import CASSETTES

HEADER = b'{"rpctape":1,"created":"2026-01-01T00:00:00+00:00","tool":"rpctape 0.1.0"}\n'
C2S, S2C = Direction.C2S, Direction.S2C
EXTRA = Redactor.build(["note"], values=[r"corp-[0-9]{6}"])
"""A redactor with a --redact-key and a --redact-value."""


# -- sessions, recorded ------------------------------------------------------------------------


@dataclass
class Session:
    """What the recorder sees on one connection (the property tests' input)."""

    headers: list[tuple[str, str]] = field(default_factory=list)
    path: str = "/"
    upstream: str = "ws://127.0.0.1:4222/"
    frames: list[tuple[Direction, bool, bytes, Any]] = field(default_factory=list)
    """``(direction, is_text, payload, delivered)``; ``delivered`` is a rule's message or
    ``None``."""
    error: tuple[str, list[tuple[str, str]]] | None = None
    reason: str = ""


def record(session: Session, redactor: Redactor) -> bytes:
    """The cassette the recorder writes for ``session`` (a fixed clock)."""
    ticks = itertools.count()
    rec = Recorder(None, redactor, clock=lambda: next(ticks) * 0.5)
    conn = rec.new_connection()
    opened = rec.open(
        conn,
        path=session.path,
        headers=session.headers,
        subprotocol=None,
        upstream=session.upstream,
    )
    lines = [HEADER, event_lines([opened])]
    for direction, is_text, payload, delivered in session.frames:
        if is_text:
            extra = None if delivered is None else {"delivered": delivered, "origin": "r"}
            inspected = rec.inspect(conn, direction, payload)
            lines.append(rec.text_line(conn, direction, payload, *inspected, extra=extra)[1])
        else:
            lines.append(rec.binary_line(conn, direction, payload)[1])
    if session.error is not None:
        message, headers = session.error
        lines.append(event_lines([rec.error(conn, message, headers=headers, path=session.path)]))
    lines.append(event_lines([rec.close(conn, by="client", code=1000, reason=session.reason)]))
    return b"".join(lines)


def plain(session: Session) -> bytes:
    return record(session, Redactor.build(enabled=False))


# -- strategies ---------------------------------------------------------------------------------

_HEADER_NAMES = ["Authorization", "Cookie", "X-OAI-Attestation", "X-Api-Key", "User-Agent", "Host"]


@st.composite
def credentials(draw: st.DrawFn) -> str:
    """A value that is a secret wherever it stands (or a harmless one)."""
    secret = draw(SECRETS)
    return draw(
        st.sampled_from(
            [
                f"Bearer {secret}",
                f"sk-proj-{secret}9",
                f"eyJ{secret}.eyJ{secret}.{secret}",
                f"ghp_{secret}{secret}{secret}",
                "corp-123456",
                secret,
                "python-websockets/15",
            ]
        )
    )


@st.composite
def extra_planted(draw: st.DrawFn) -> Any:
    """A message with a secret only :data:`EXTRA` knows (its key or its value pattern)."""
    base = draw(SAFE_VALUES.filter(lambda v: isinstance(v, dict)))
    member = draw(st.sampled_from([{"note": draw(SECRETS)}, {"text": "id corp-123456 ok"}]))
    return {"id": 1, "result": {**base, **member}}


@st.composite
def text_frames(draw: st.DrawFn) -> bytes:
    how = draw(st.sampled_from(["any", "planted", "extra", "safe"]))
    if how == "any":
        return draw(TEXT_FRAMES).encode()
    if how == "safe":
        return draw(json_texts(SAFE_VALUES)).encode()
    msg = draw(planted())[0] if how == "planted" else draw(extra_planted())
    style = draw(st.sampled_from(["compact", "pretty", "surrogate", "deep"]))
    return written(msg, style).encode()


def _writable(msg: Any) -> bool:
    """What a rule can deliver: a message orjson writes (no integer past 64 bits)."""
    try:
        orjson.dumps(msg)
    except orjson.JSONEncodeError:
        return False
    return True


@st.composite
def sessions(draw: st.DrawFn) -> Session:
    names = draw(st.lists(st.sampled_from(_HEADER_NAMES), unique=True, max_size=4))
    headers = [(name, draw(credentials())) for name in names]
    secret = draw(SECRETS)
    frames: list[tuple[Direction, bool, bytes, Any]] = []
    for _ in range(draw(st.integers(0, 6))):
        direction = draw(st.sampled_from(Direction))
        if draw(st.integers(0, 5)) == 0:
            frames.append((direction, False, draw(BINARY_FRAMES), None))
            continue
        delivered = draw(st.one_of(st.none(), planted().map(lambda c: c[0]).filter(_writable)))
        frames.append((direction, True, draw(text_frames()), delivered))
    error = None
    if draw(st.booleans()):
        error = (f"cannot reach ws://h/?token={secret}", [("Cookie", draw(credentials()))])
    return Session(
        headers=headers,
        path=draw(st.sampled_from(["/", f"/?token={secret}&x=1", "/?code=corp-123456"])),
        upstream=draw(
            st.sampled_from(["ws://127.0.0.1:4222/", f"ws://u:{secret}@127.0.0.1:4222/"])
        ),
        frames=frames,
        error=error,
        reason=draw(st.sampled_from(["", "bye", f"key sk-proj-{secret}9 refused"])),
    )


LAWS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- laws ---------------------------------------------------------------------------------------


@LAWS
@given(session=sessions(), redactor=st.sampled_from([Redactor(), EXTRA]))
def test_rescrubbing_a_plain_recording_is_recording_redacted(
    session: Session, redactor: Redactor
) -> None:
    """Recorded with redaction off, then rescrubbed: byte for byte what the recorder writes
    with redaction on; every line the redactor leaves alone is the plain line."""
    data = plain(session)
    done = rescrub(data, redactor)
    assert done.data == record(session, redactor)
    old, new = data.split(b"\n"), done.data.split(b"\n")
    assert [n for n, (a, b) in enumerate(zip(old, new, strict=True), 1) if a != b] == done.lines
    assert sorted({place.line for place in done.places}) == done.lines


@LAWS
@given(session=sessions(), redactor=st.sampled_from([Redactor(), EXTRA]))
def test_rescrubbing_twice_is_rescrubbing_once(session: Session, redactor: Redactor) -> None:
    """A marker is never redacted again: the second run changes nothing and finds nothing."""
    once = rescrub(plain(session), redactor)
    twice = rescrub(once.data, redactor)
    assert twice.data == once.data
    assert (twice.places, twice.lines, twice.changed) == ([], [], False)


@LAWS
@given(session=sessions())
def test_more_keys_on_a_redacted_cassette_is_recording_with_them(session: Session) -> None:
    """A cassette recorded with the defaults, rescrubbed with a --redact-key and a
    --redact-value, is the one recorded with them from the start (``redacted`` pointers
    merged in the message's order)."""
    done = rescrub(record(session, Redactor()), EXTRA)
    assert done.data == record(session, EXTRA)


@LAWS
@given(
    frames=st.lists(
        st.tuples(st.sampled_from(Direction), json_texts(SAFE_VALUES), BINARY_FRAMES),
        max_size=8,
    ),
    reason=st.text(max_size=20).filter(holds_no_secret),
)
def test_a_cassette_without_a_secret_comes_back_identical(
    frames: list[tuple[Direction, str, bytes]], reason: str
) -> None:
    """Nothing to redact: the same bytes, nothing found."""
    session = Session(
        headers=[("Host", "127.0.0.1:4222")],
        frames=[(d, i % 2 == 0, t.encode() if i % 2 == 0 else b, None)
                for i, (d, t, b) in enumerate(frames)],
        reason=reason,
    )  # fmt: skip
    data = plain(session)
    done = rescrub(data, Redactor())
    assert done.data == data
    assert (done.places, done.changed) == ([], False)


# -- examples: every kind of secret -------------------------------------------------------------

SK = "sk-proj-Zq4f9d8s7a6s5d4f3g2h1j0k"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.c2lnbmF0dXJl"
AKIA = "AKIAZQ4F9D8S7A6S5D4F"
BEARER_VALUE = "Zqb3ar3rT0k3nV4lu3"
GHP = "ghp_Zq4f9d8s7a6s5d4f3g2h1j0k1l2m3n4b5v6"
GITHUB_PAT = "github_pat_Zq4f9d8s7a6s5d4f3g2h1j0k1l2m3n4b5v6"
SLACK = "xoxb-Zq4f9d8s7a6s5d4f"
ATTESTATION = "Zqattest4f9d8s7a6s5d4"
CORP = "corp-123456"
SK_ERROR = "sk-proj-Zqerror4f9d8s7a6s5d4f3"

SECRETS_PLANTED = {
    "apiKey": "Zqapikey4f9d8s7a6s",
    "access_token": "Zqaccess4f9d8s7a6s",
    "refreshToken": "Zqrefresh4f9d8s7a6",
    "secretAccessKey": "Zqsecretaccess4f9d8",
    "password": "Zqpassword4f9d8s7",
    "experimental_bearer_token": "Zqexpbearer4f9d8s7",
}


def planted_session() -> Session:
    """One connection holding a secret of every kind the recorder redacts, with redaction off."""
    keyed = {"id": 7, "result": {"config": {**SECRETS_PLANTED, "tokenUsage": {"total": 3}}}}
    server = {"command": "gh", "env": {"GH_TOKEN": "Zqenv4f9d8s7a6"}}
    env = {"id": 8, "result": {"mcp_servers": {"gh": server}}}
    delta = f"keys {SK} {JWT} {AKIA} Bearer {BEARER_VALUE} {GHP} {GITHUB_PAT} {SLACK}"
    shapes = {"method": "item/agentMessage/delta", "params": {"delta": delta}}
    delivered = {"id": 11, "params": {"apiKey": "Zqdelivered4f9"}}
    extra = {"id": 9, "method": "thread/start", "params": {"cwd": "/home/alice/work", "n": CORP}}
    frames: list[tuple[Direction, bool, bytes, Any]] = [
        (C2S, True, b'{"id":1,"method":"initialize","params":{"clientInfo":{"name":"c"}}}', None),
        (S2C, True, b'{"id":1,"result":{"userAgent":"c/0.169.0"}}', None),
        (S2C, True, orjson.dumps(keyed), None),
        (S2C, True, orjson.dumps(env), None),
        (S2C, True, orjson.dumps(shapes), None),
        (S2C, True, b'{"id":0,"method":"attestation/generate","params":{}}', None),
        (C2S, True, orjson.dumps({"id": 0, "result": {"token": ATTESTATION}}), None),
        (C2S, True, orjson.dumps(extra), None),
        (C2S, True, b'{ "id": 10, "method": "x", "params": { "token": "Zqpretty4f9d8s7" } }', None),
        (S2C, True, b'oops {"token": "Zqbroken4f9d8s7", "tail', None),
        (C2S, True, b'{"id":11,"method":"y","params":{}}', delivered),
        (S2C, False, b"\x00binary sk-proj-inbinary00000000000000", None),
        (S2C, True, b'{"method":"item/completed","params":{"tokens":5,"text":"hello"}}', None),
    ]  # fmt: skip
    return Session(
        headers=[
            ("Host", "127.0.0.1:4223"),
            ("Authorization", f"Bearer {BEARER_VALUE}"),
            ("Cookie", "session=Zqcookie4f9d8s7"),
            ("X-OAI-Attestation", '{"v":1,"t":"Zqhdrattest4f9"}'),
            ("X-Api-Key", "Zqxapikey4f9d8s7"),
        ],
        path="/?token=Zqquery4f9d8s7&x=1",
        upstream="ws://alice:Zqpasswd4f9d8s7@127.0.0.1:4222/",
        frames=frames,
        error=(f"upstream said: bad key {SK_ERROR}", [("Cookie", "a=Zqerrcookie4f9")]),
        reason="closed: ?api_key=Zqreason4f9d8s7",
    )  # fmt: skip


PLANTED_STRINGS = [
    *SECRETS_PLANTED.values(), "Zqenv4f9d8s7a6", SK, JWT, AKIA, BEARER_VALUE, GHP, GITHUB_PAT,
    SLACK, ATTESTATION, "/home/alice/work", CORP, "Zqpretty4f9d8s7", "Zqbroken4f9d8s7",
    "Zqdelivered4f9", "Zqcookie4f9d8s7", "Zqhdrattest4f9", "Zqxapikey4f9d8s7", "Zqquery4f9d8s7",
    "Zqpasswd4f9d8s7", SK_ERROR, "Zqerrcookie4f9", "Zqreason4f9d8s7",
]  # fmt: skip


def test_every_kind_of_secret_is_taken_out_and_nothing_else_changes() -> None:
    """Planted secrets of every kind (keys, env, shapes, headers, query, password in a URL,
    close reason, error, attestation token, a pretty frame, broken text, a rule's delivered
    message, a binary frame holding text, --redact-key, --redact-value): none survives; every
    other line is the same."""
    redactor = Redactor.build(["cwd"], values=[r"corp-[0-9]{6}"])
    data = plain(planted_session())
    for secret in PLANTED_STRINGS:
        assert secret.encode() in data, secret
    done = rescrub(data, redactor, source="s.jsonl")
    for secret in PLANTED_STRINGS:
        assert secret.encode() not in done.data, secret
    assert done.data == record(planted_session(), redactor)
    old, new = data.split(b"\n"), done.data.split(b"\n")
    kept = [n for n, (a, b) in enumerate(zip(old, new, strict=True), 1) if a == b]
    binary = b"sk-proj-inbinary00000000000000"  # in a binary frame's base64
    assert binary in base64.b64decode(orjson.loads(old[13])["b64"])
    assert binary not in base64.b64decode(orjson.loads(new[13])["b64"])
    assert kept == [1, 3, 4, 8, 15, 18]  # header, initialize, no secret, the end
    assert done.lines == [2, 5, 6, 7, 9, 10, 11, 12, 13, 14, 16, 17]
    assert [place.render("s.jsonl") for place in done.places] == [
        "s.jsonl:2: seq 1 conn 1 open path",
        "s.jsonl:2: seq 1 conn 1 open header Authorization",
        "s.jsonl:2: seq 1 conn 1 open header Cookie",
        "s.jsonl:2: seq 1 conn 1 open header X-OAI-Attestation",
        "s.jsonl:2: seq 1 conn 1 open header X-Api-Key",
        "s.jsonl:2: seq 1 conn 1 open upstream",
        "s.jsonl:5: seq 4 conn 1 text /result/config/apiKey",
        "s.jsonl:5: seq 4 conn 1 text /result/config/access_token",
        "s.jsonl:5: seq 4 conn 1 text /result/config/refreshToken",
        "s.jsonl:5: seq 4 conn 1 text /result/config/secretAccessKey",
        "s.jsonl:5: seq 4 conn 1 text /result/config/password",
        "s.jsonl:5: seq 4 conn 1 text /result/config/experimental_bearer_token",
        "s.jsonl:6: seq 5 conn 1 text /result/mcp_servers/gh/env/GH_TOKEN",
        "s.jsonl:7: seq 6 conn 1 text /params/delta",
        "s.jsonl:9: seq 8 conn 1 text /result/token",
        "s.jsonl:10: seq 9 conn 1 text /params/cwd",
        "s.jsonl:10: seq 9 conn 1 text /params/n",
        "s.jsonl:11: seq 10 conn 1 text /params/token",
        "s.jsonl:12: seq 11 conn 1 text frame text",
        "s.jsonl:13: seq 12 conn 1 text delivered /params/apiKey",
        "s.jsonl:14: seq 13 conn 1 binary frame text",
        "s.jsonl:16: seq 15 conn 1 error message",
        "s.jsonl:16: seq 15 conn 1 error header Cookie",
        "s.jsonl:16: seq 15 conn 1 error path",
        "s.jsonl:17: seq 16 conn 1 close reason",
    ]


def test_the_redacted_lines_are_what_the_recorder_writes() -> None:
    """Exact lines: a key secret in an exact frame, a pretty frame keeps its layout, broken
    text gets ``redacted: [""]``, headers and reasons get markers."""
    new = rescrub(plain(planted_session()), Redactor()).data.split(b"\n")
    assert orjson.loads(new[8]) == {
        "seq": 8, "t": 4.0, "conn": 1, "kind": "text", "dir": "c2s", "type": "response",
        "response_to": "attestation/generate", "redacted": ["/result/token"],
        "msg": {"id": 0, "result": {"token": marker(ATTESTATION)}},
    }  # fmt: skip
    pretty = orjson.loads(new[10])
    assert pretty["raw"] == (
        f'{{ "id": 10, "method": "x", "params": {{ "token": "{marker("Zqpretty4f9d8s7")}" }} }}'
    )
    assert pretty["redacted"] == ["/params/token"]
    broken = orjson.loads(new[11])
    assert broken["raw"] == f'oops {{"token": "{marker("Zqbroken4f9d8s7")}", "tail'
    assert (broken["redacted"], "msg" in broken) == ([""], False)
    opened = orjson.loads(new[1])
    assert opened["headers"]["Authorization"] == marker(f"Bearer {BEARER_VALUE}")
    assert opened["headers"]["Host"] == "127.0.0.1:4223"
    assert opened["path"] == f"/?token={marker('Zqquery4f9d8s7')}&x=1"
    assert opened["upstream"] == f"ws://alice:{marker('Zqpasswd4f9d8s7')}@127.0.0.1:4222/"
    assert orjson.loads(new[16])["reason"] == f"closed: ?api_key={marker('Zqreason4f9d8s7')}"


def test_a_second_run_changes_nothing() -> None:
    """Rescrubbing the rescrubbed cassette: same bytes, no place."""
    once = rescrub(plain(planted_session()), EXTRA)
    again = rescrub(once.data, EXTRA)
    assert (again.data, again.places, again.changed) == (once.data, [], False)


def test_the_rescrubbed_cassette_replays_as_before() -> None:
    """A shipped cassette rescrubbed with more keys loads without warnings, and its client
    messages (as now recorded) are each answered, in order, with nothing left over."""
    for path in CASSETTES:
        done = rescrub(path.read_bytes(), Redactor.build(["cwd", "codexHome", "userAgent"]))
        assert done.changed, path
        tape = parse_lines(done.data)
        assert tape.warnings == []
        for recorded in recorded_connections(tape):
            replay = ConnectionReplay(1, recorded, ReplayOptions())
            replay.connect()
            for index in recorded.client:
                replay.receive(frame_of(recorded.items[index].event).decode())
            report = replay.report()
            assert not report.misses and not report.unused_client, path


def test_a_torn_last_line_is_redacted_as_text() -> None:
    """Readers ignore a torn last line, but a secret in it is still in the file."""
    data = HEADER + b'{"seq":1,"t":0,"conn":1,"kind":"text","dir":"c2s","msg":{"token":"Zqtorn4f9d'
    done = rescrub(data, Redactor())
    assert done.data == HEADER + (
        b'{"seq":1,"t":0,"conn":1,"kind":"text","dir":"c2s","msg":{"token":"'
        + marker("Zqtorn4f9d").encode()
        + b'"'
    )
    assert done.places == [Place(2, None, None, "torn", "torn last line")]


def test_schema_violations_lose_the_secrets_they_quote() -> None:
    """A violation's message quoting a secret value gets its marker, as if the validator had
    seen the redacted message."""
    secret = "Zqviol4f9d8s7"
    quoted = f"'{secret}'"
    event = {
        "seq": 1, "t": 0.0, "conn": 1, "kind": "text", "dir": "c2s", "type": "request",
        "method": "x",
        "violations": [{"pointer": "/params/token", "message": f"{quoted} is not an integer"}],
        "msg": {"id": 1, "method": "x", "params": {"token": secret}},
    }  # fmt: skip
    done = rescrub(HEADER + orjson.dumps(event) + b"\n", Redactor())
    (line,) = done.data.split(b"\n")[1:-1]
    assert orjson.loads(line)["violations"] == [
        {"pointer": "/params/token", "message": f"'{marker(secret)}' is not an integer"}
    ]  # fmt: skip
    assert [p.where for p in done.places] == ["violations", "/params/token"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "s.jsonl is empty, not an rpctape cassette"),
        (b"not a header\n", "s.jsonl is not an rpctape cassette"),
        (HEADER + b"{broken\n" + b'{"seq":2}\n', "s.jsonl:2: corrupt line"),
    ],
)
def test_what_is_not_a_cassette_is_refused_naming_the_line(data: bytes, message: str) -> None:
    """The reader's own errors: nothing is rescrubbed."""
    with pytest.raises(CassetteError) as caught:
        rescrub(data, Redactor(), source="s.jsonl")
    assert str(caught.value).startswith(message)


def test_redaction_off_changes_nothing() -> None:
    """A disabled redactor (never what rpctape redact builds) leaves the bytes."""
    data = plain(planted_session())
    assert rescrub(data, Redactor.build(enabled=False)).data == data
