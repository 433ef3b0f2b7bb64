"""The redaction pre-check (Redactor.might_redact) is sound: it says False only when
redacting the frame would change nothing, with hyperscan and with the standard library."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.core import redact
from proxy.core.jsonrpc import NOT_JSON, lenient_loads
from proxy.core.redact import DEFAULT_KEYS, Redactor

ENGINES = [pytest.param(False, id="stdlib")]
if redact.HYPERSCAN:
    ENGINES.append(pytest.param(True, id="hyperscan"))

EXTRA_KEYS = ["clé", "Straße", "a/b", 'q"uote', "back\\slash", "tab\tkey", "-", "my_secret",
              "ΑΣ", "k"]  # fmt: skip
VALUE_PATTERNS = [r"corp-[0-9]{6}", r"^whole$", r"(?<=id=)[0-9]{4}", r"\Aedge", r"x\Z"]


def would_change(redactor: Redactor, raw: bytes) -> bool:
    """The full redaction, as the recorder runs it, changes something in ``raw``."""
    try:
        msg: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        msg = lenient_loads(raw)
    if msg is not NOT_JSON and redactor.redact_json(msg)[1]:
        return True
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return False  # a binary message: never redacted as text
    return redactor.redact_frame_text(text)[1]


def spelled(key: str) -> st.SearchStrategy[str]:
    """``key`` as a frame may spell it: any case per letter, ``-`` and ``_`` anywhere, the
    Kelvin sign for a ``k``."""
    parts = [
        st.sampled_from([ch, ch.upper(), *(["\u212a"] if ch == "k" else [])]).flatmap(
            lambda c: st.sampled_from([c, "-" + c, c + "_", "_-" + c])
        )
        for ch in key
    ]
    return st.tuples(*parts).map("".join) if parts else st.just("")


KEYS = st.one_of(
    st.sampled_from(sorted(DEFAULT_KEYS | {"env"})).flatmap(spelled),
    st.sampled_from(EXTRA_KEYS).flatmap(spelled),
    st.sampled_from(["tokenUsage", "thread_id", "method", "params", "id", "x-request-id"]),
    st.text(max_size=12),
)
CREDENTIALS = st.sampled_from([
    "sk-abc123def456ghi789jkl0", "eyJhbGciOi.eyJzdWIiOi.sig", "AKIAIOSFODNN7EXAMPLE",
    "Bearer abcdefgh12", "bearer\tzzzzzzzzzz", "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "github_pat_abcdefghijklmnopqrstuvwxyz0123", "xoxb-1234567890-abc", "corp-123456",
    "whole", "id=1234", "edge of it", "ends with x", "sk-learn", "task-abc", "<redacted:0123abcd>",
])  # fmt: skip
STRINGS = st.one_of(
    st.text(max_size=20),
    CREDENTIALS,
    st.tuples(st.text(max_size=5), CREDENTIALS, st.text(max_size=5)).map("".join),
)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), STRINGS)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=3)),
    max_leaves=8,
)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """JSON written several ways (compact, spaced, ASCII-escaped), or any text at all."""
    value = draw(VALUES)
    how = draw(st.sampled_from(["orjson", "spaced", "ascii", "text", "cut"]))
    if how == "orjson":
        return orjson.dumps(value)
    if how == "spaced":
        return json.dumps(value, ensure_ascii=False, separators=(" , ", " : ")).encode()
    if how == "ascii":
        return json.dumps(value).encode()  # \u escapes for everything outside ASCII
    if how == "cut":
        text = json.dumps(value, ensure_ascii=False)
        return text[: draw(st.integers(0, len(text)))].encode()
    return draw(st.text(max_size=60)).encode()


@pytest.mark.parametrize("fast", ENGINES)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    raw=frames(),
    extra=st.lists(st.sampled_from(EXTRA_KEYS), max_size=2, unique=True),
    values=st.lists(st.sampled_from(VALUE_PATTERNS), max_size=2, unique=True),
)
def test_precheck_over_approximates_redaction(
    fast: bool, raw: bytes, extra: list[str], values: list[str]
) -> None:
    """Whenever redaction would change a frame, the pre-check says it might."""
    redactor = Redactor.build(extra, values=values)
    redactor = Redactor(
        redactor.keys, True, redactor.values, redactor.headers, redactor.query, fast=fast
    )
    if would_change(redactor, raw):
        assert redactor.might_redact(raw)


@pytest.mark.parametrize("fast", ENGINES)
@pytest.mark.parametrize(
    "frame",
    [
        '{"to\u212aen":"x"}',  # the Kelvin sign lower-cases to "k": a secret key
        '{"cl\u00e9":"x"}',
        '{"CL\u00c9":"x"}',  # outside ASCII, case folds beyond what bytes can
        '{"a\\/b":"x"}',  # an escaped "/" in a key that holds one
        '{"_":"x"}',  # normalises to the empty key that "-" gives
        '{"s":"whole"}',  # an anchored --redact-value pattern sees the string alone
        '{"s":"id=1234"}',
        '{"Access_-Token" :\n"x"}',
        '{"x":1,"my-Secret":2}',
        '{"s":"github_pat_abcdefghijklmnopqrstuvwxyz0123"}',  # no "gh" prefix
    ],
)
def test_precheck_finds_what_bytes_hide(fast: bool, frame: str) -> None:
    """Keys and values that the raw bytes spell differently from the redaction's view."""
    built = Redactor.build(["clé", "a/b", "-", "my_secret"], values=[r"^whole$", r"(?<=id=)\d+"])
    redactor = Redactor(built.keys, True, built.values, built.headers, built.query, fast=fast)
    raw = frame.encode()
    assert would_change(redactor, raw)
    assert redactor.might_redact(raw)


@pytest.mark.parametrize("fast", ENGINES)
@pytest.mark.parametrize(
    "frame",
    [
        b'{"params":{"tokenUsage":{"total":1}}}',
        b'{"text":"my token: abc"}',
        b'{"method":"item/agentMessage/delta","params":{"thread_id":"t","delta":"hi \xc3\xa9"}}',
        b'{"x-request-id":"0199a213-81c0","tokens":3}',
        b'{"method":"big","params":{"text":"' + b"x" * 100_000 + b'"}}',
        b"not json at all",
    ],
)
def test_precheck_passes_ordinary_frames(fast: bool, frame: bytes) -> None:
    """Frames without secrets skip the walk (the pre-check is not simply always True)."""
    redactor = Redactor(fast=fast)
    assert not would_change(redactor, frame)
    assert redactor.might_redact(frame) is False


@pytest.mark.parametrize("fast", ENGINES)
def test_precheck_disabled_and_thread_local(fast: bool) -> None:
    """A disabled redactor never walks; the scan works from other threads too."""
    from concurrent.futures import ThreadPoolExecutor

    assert not Redactor(enabled=False, fast=fast).might_redact(b'{"token":"x"}')
    redactor = Redactor(fast=fast)
    frames = [b'{"token":"x"}', b'{"a":"b"}'] * 50
    with ThreadPoolExecutor(4) as pool:
        found = list(pool.map(redactor.might_redact, frames))
    assert found == [True, False] * 50
