"""Hypothesis strategies for hostile frames, shared by the property tests (not a test module).

Every category issue 8 names: any Unicode, escaped lone surrogates, any whitespace (pretty
printed JSON with newlines), nesting at and past orjson's limits, every number form,
duplicate keys, a BOM, truncated JSON and plain garbage; and binary payloads.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import strategies as st

from proxy.redact import DEFAULT_KEYS, ENV_KEYS, Redactor, normalise_key

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

DEFAULT_REDACTOR = Redactor()
