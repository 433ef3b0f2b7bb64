"""Hypothesis strategies for hostile frames, shared by the property tests (not a test module).

Every category issue 8 names: any Unicode, escaped lone surrogates, any whitespace (pretty
printed JSON with newlines), nesting at and past orjson's limits, every number form,
duplicate keys, a BOM, truncated JSON and plain garbage; and binary payloads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
from hypothesis import strategies as st

from proxy.core.cassette import Cassette, frame_of
from proxy.core.planner import ConnectionReplay, ReplayOptions
from proxy.core.recorded import recorded_connections
from proxy.core.redact import DEFAULT_KEYS, ENV_KEYS, normalise_key
from proxy.core.timeline import render, select, summary
from proxy.wire.store import cassette_files

NUMBER_FORMS = [
    "0", "-0", "1", "-1", "1.0", "-0.0", "1e400", "-1e400", "1E2", "1e-7", "0.10", "2.5e+3",
    str(2**63), str(2**64), str(2**70), str(-(2**70)), "123456789012345678901234567890",
]  # fmt: skip
"""Number texts orjson reads lossily, exactly, or not at all."""

WHITESPACE = st.sampled_from(["", " ", "\n", "\t", "\r\n", "  \n  "])

_SECRET_NAMES = DEFAULT_KEYS | ENV_KEYS
_ANCHORS = ("sk-", "eyj", "akia", "asia", "earer", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "xox")


def holds_no_secret(text: str) -> bool:
    """A conservative check, independent of the redactor's own: no secret key name or
    credential anchor appears anywhere in ``text`` (case and ``-``/``_`` ignored)."""
    folded = text.lower()
    squashed = folded.replace("-", "").replace("_", "")
    return not any(name in squashed for name in _SECRET_NAMES) and not any(
        anchor in folded for anchor in _ANCHORS
    )


def safe_key(key: str) -> bool:
    """A member name that is not a secret and holds no credential shape."""
    return normalise_key(key) not in _SECRET_NAMES and holds_no_secret(key)


SCALARS: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)

JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
    ),
    max_leaves=20,
)


def _escape_ascii(text: str) -> str:
    return json.dumps(text, ensure_ascii=True)


@st.composite
def json_texts(draw: st.DrawFn, value: st.SearchStrategy[Any] = JSON_VALUES) -> str:
    """A JSON value written in one of many ways: compact, pretty, escaped, spaced."""
    msg = draw(value)
    style = draw(st.sampled_from(["orjson", "indent", "ascii", "spaced", "stdlib"]))
    if style == "orjson":
        try:
            return orjson.dumps(msg).decode()
        except orjson.JSONEncodeError:  # integers past 64 bits
            style = "stdlib"
    if style == "indent":
        return json.dumps(msg, indent=draw(st.integers(0, 3)), ensure_ascii=False)
    if style == "ascii":
        return json.dumps(msg, ensure_ascii=True)
    if style == "spaced":
        return draw(WHITESPACE) + json.dumps(msg, ensure_ascii=False) + draw(WHITESPACE)
    return json.dumps(msg, ensure_ascii=False, separators=(",", ":"))


@st.composite
def special_texts(draw: st.DrawFn) -> str:
    """The hand-picked hostile shapes: surrogates, numbers, duplicates, depth, BOM, cuts."""
    kind = draw(st.sampled_from(["surrogate", "number", "dup", "deep", "bom", "cut", "rpc"]))
    if kind == "surrogate":
        unit = draw(st.integers(0xD800, 0xDFFF))
        return '{"id":1,"method":"m","params":{"x":"\\u' + f"{unit:04x}" + '"}}'
    if kind == "number":
        number, result = (draw(st.sampled_from(NUMBER_FORMS)) for _ in "ab")
        return f'{{"id":{number},"result":{result}}}'
    if kind == "dup":
        return '{"id":1,"id":2,"method":"a","method":"b"}'
    if kind == "deep":
        depth = draw(st.sampled_from([1, 200, 249, 250, 251, 253, 254, 255, 300, 1023, 1100]))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        return opener * depth + closer * depth
    if kind == "bom":
        return "\ufeff" + draw(json_texts())
    if kind == "cut":
        text = draw(json_texts())
        return text[: draw(st.integers(0, max(0, len(text) - 1)))]
    method = draw(st.text(max_size=10))
    return json.dumps({"id": draw(SCALARS), "method": method, "params": draw(JSON_VALUES)})


TEXT_FRAMES: st.SearchStrategy[str] = st.one_of(st.text(), json_texts(), special_texts())
"""Any text frame (websocket text frames are valid UTF-8: no surrogate code points)."""

TEXT_FRAMES = TEXT_FRAMES.filter(lambda text: not any(0xD800 <= ord(c) <= 0xDFFF for c in text))

BINARY_FRAMES: st.SearchStrategy[bytes] = st.binary(max_size=256)

SAFE_SCALARS: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20).filter(holds_no_secret),
)

SAFE_VALUES: st.SearchStrategy[Any] = st.recursive(
    SAFE_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8).filter(safe_key), children, max_size=4),
    ),
    max_leaves=20,
)
"""JSON values that hold no secret."""

SECRETS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=12, max_size=24).map(
    lambda s: "Zq" + s
)
"""A secret to plant: long enough not to occur by chance, plain ASCII (no escape forms)."""

GARBAGE = st.text(max_size=30).filter(
    lambda s: '"' not in s and "\\" not in s and holds_no_secret(s)
)
"""Text around a planted member in a frame that is not JSON (no quotes or backslashes)."""


# -- planted secrets ---------------------------------------------------------------------------

SECRET_KEYS = st.sampled_from(
    [
        "token",
        "access_token",
        "apiKey",
        "experimental_bearer_token",
        "accessKeyId",
        "secretAccessKey",
        "sessionToken",
        "client_secret",
        "Password",
        "X-OAI-Attestation",
        "bearer_token",
    ]
)


@st.composite
def planted(draw: st.DrawFn) -> tuple[Any, str, str]:
    """A message without secrets with one planted: (message, the secret's text, marked unit).

    The marked unit is the text the redactor must replace: a whole string value for a secret
    key or an env value, the credential-shaped part of a string otherwise.
    """
    secret = draw(SECRETS)
    how = draw(st.sampled_from(["key", "env", "sk", "jwt", "aws", "bearer", "github"]))
    if how == "key":
        member: dict[str, Any] = {draw(SECRET_KEYS): secret}
        unit = secret
    elif how == "env":
        member = {"env": {"GITHUB_PERSONAL_ACCESS_TOKEN": secret, "HOME": None}}
        unit = secret
    else:
        unit = {
            "sk": f"sk-proj-{secret}9",
            "jwt": f"eyJ{secret}.eyJ{secret}.{secret}",
            "aws": "AKIA" + secret.upper()[:16].ljust(16, "Q"),
            "bearer": f"Bearer {secret}",
            "github": f"ghp_{secret}{secret}{secret}",
        }[how]
        member = {"text": f"use {unit} now"}
    base = draw(SAFE_VALUES.filter(lambda v: isinstance(v, dict)))
    msg: Any = {**base, **member}
    for _ in range(draw(st.integers(0, 3))):
        msg = draw(st.sampled_from([[msg], {"params": msg}, {"id": 1, "result": msg}]))
    return msg, secret, unit


def written(msg: Any, style: str) -> str:
    if style == "compact":
        return json.dumps(msg, ensure_ascii=False, separators=(",", ":"))
    if style == "pretty":
        return json.dumps(msg, indent=2)
    if style == "surrogate":
        return json.dumps([msg, "\ud800"])
    return "[" * 260 + json.dumps(msg) + "]" * 260  # deeper than a msg may nest


# -- mutated cassettes --------------------------------------------------------------------------

CASSETTES = cassette_files([Path(__file__).parent.parent / "cassettes"], recursive=False)
"""The real cassettes checked into the repository."""
LINES = {path.name: path.read_bytes().split(b"\n") for path in CASSETTES}
FIELDS = ["seq", "t", "conn", "kind", "dir", "msg", "raw", "b64", "type", "method",
          "response_to", "redacted", "by", "code", "reason", "forwarded", "path", "headers",
          "subprotocol", "upstream", "message", "stage", "delivered", "origin",
          "exit_code"]  # fmt: skip
HOSTILE: list[Any] = [None, True, 0, -1, 2**70, 1.5, "", "x", "t", [], {}, [1], {"a": 1},
                      "%%%", "AAAA=", "c2s", "text", "close", [[[[]]]]]  # fmt: skip
"""Values of the wrong type (or shape) for every field."""

DEEP = "[" * 300 + "]" * 300


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real cassette with a few lines mutated: fields removed, retyped, nested, cut."""
    lines = list(LINES[draw(st.sampled_from(sorted(LINES)))])
    for _ in range(draw(st.integers(1, 4))):
        number = draw(st.integers(0, len(lines) - 1))
        how = draw(st.sampled_from(["drop", "retype", "deep", "cut", "dup", "garbage", "kind"]))
        try:
            event = orjson.loads(lines[number])
        except orjson.JSONDecodeError:
            event = None
        if how == "cut":
            lines[number] = lines[number][: draw(st.integers(0, len(lines[number])))]
        elif how == "dup":
            lines.insert(number, lines[number])
        elif how == "garbage":
            lines[number] = draw(st.binary(max_size=40))
        elif isinstance(event, dict):
            name = draw(st.sampled_from(FIELDS))
            if how == "drop":
                event.pop(name, None)
            elif how == "retype":
                event[name] = draw(st.one_of(st.sampled_from(HOSTILE), JSON_VALUES))
            elif how == "kind":
                event["kind"] = draw(st.sampled_from(["open", "text", "binary", "close", "x"]))
            else:
                event.pop(name, None)
                text = json.dumps(event)
                lines[number] = f'{text[:-1]}, "{name}": {DEEP}}}'.encode()
                continue
            lines[number] = json.dumps(event).encode()
    return b"\n".join(lines)


def use_everything(tape: Cassette) -> None:
    """What show and replay do with a loaded cassette."""
    render(tape.events)
    render(select(tape.events, method="initialize"))
    summary(tape)
    tape.connections()
    for event in tape.frames():
        frame_of(event)
    options = ReplayOptions()
    for recorded in recorded_connections(tape):
        replay = ConnectionReplay(1, recorded, options)
        replay.connect()
        for index in recorded.client:
            data = frame_of(recorded.items[index].event)
            replay.receive(data.decode() if recorded.items[index].event["kind"] == "text" else data)
        replay.report().render()
