"""Redaction: keep secrets out of cassettes, never out of the wire.

Pure code. What counts as a secret (the list is in docs/cassette-format.md):

- a JSON member whose key, normalised (lower case, ``_`` and ``-`` removed), is exactly one of
  the configured keys: ``access_token`` and ``accessToken`` are secrets, ``tokenUsage`` is not;
- every value of an ``env`` map, wherever it stands (``mcp_servers.*.env`` in config results);
- a header whose normalised name is in the header list (``Authorization``, ``Cookie``,
  ``X-OAI-Attestation``, ...), and a URL query parameter whose name is in the query list
  (``?token=``, ``api_key``, ``code``, ...) in recorded paths, URLs and messages;
- any text shaped like a credential, wherever it stands: ``sk-...`` API keys, JWTs
  (``eyJ...``), AWS key ids (``AKIA...``), ``Bearer ...``, GitHub and Slack tokens, plus the
  patterns given with ``--redact-value``.

A secret is replaced by ``"<redacted:xxxxxxxx>"``, the first 8 hex digits of its SHA-256, so
equal secrets stay recognisably equal. Redaction is idempotent: a marker is never redacted
again. Nothing else changes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import orjson

from ..errors import UsageError
from . import pointer as _pointer
from .jsonrpc import members, object_end

_hyperscan: Any = None
"""The hyperscan module (the optional ``fast`` extra), imported by the first redactor that
scans with it (:func:`_hyperscan_module`); ``False`` where it does not import."""


def _hyperscan_module() -> Any:
    """hyperscan, or ``None`` where it is not installed (imported once, when first needed:
    a replay that redacts nothing never loads it)."""
    global _hyperscan
    if _hyperscan is None:
        try:
            import hyperscan
        except ImportError:  # pragma: no cover - the standard library's passes do the same work
            _hyperscan = False
        else:
            _hyperscan = hyperscan
    return _hyperscan or None


def __getattr__(name: str) -> Any:
    """``HYPERSCAN``: whether the pre-check can scan with hyperscan (see
    :attr:`Redactor.fast`), answered by importing it on first use."""
    if name == "HYPERSCAN":
        return _hyperscan_module() is not None
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


DEFAULT_KEYS: frozenset[str] = frozenset(
    {
        "token",
        "accesstoken",
        "refreshtoken",
        "idtoken",
        "authtoken",
        "bearertoken",
        "experimentalbearertoken",
        "sessiontoken",
        "apikey",
        "openaiapikey",
        "xapikey",
        "secret",
        "clientsecret",
        "privatekey",
        "password",
        "passwd",
        "authorization",
        "proxyauthorization",
        "cookie",
        "setcookie",
        "accesskeyid",
        "secretaccesskey",
        "awsaccesskeyid",
        "awssecretaccesskey",
        "awssessiontoken",
        "xoaiattestation",
    }
)
"""Normalised JSON keys redacted by default; documented in docs/cassette-format.md."""

ENV_KEYS: frozenset[str] = frozenset({"env"})
"""Normalised keys whose value is a map of environment variables: every value is a secret."""

DEFAULT_HEADERS: frozenset[str] = DEFAULT_KEYS | frozenset(
    {"xauthtoken", "xaccesstoken", "xamzsecuritytoken", "xgoogapikey", "apisecret"}
)
"""Normalised header names whose values are redacted."""

DEFAULT_QUERY: frozenset[str] = DEFAULT_KEYS | frozenset(
    {"key", "code", "auth", "sig", "signature", "xamzsignature", "xamzcredential", "apisecret"}
)
"""Normalised URL query parameter names whose values are redacted."""

DEFAULT_VALUE_PATTERNS: tuple[str, ...] = (
    r"\bsk-(?=[A-Za-z0-9_-]*[0-9])[A-Za-z0-9_-]{20,}",  # OpenAI-style API keys
    r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",  # JSON Web Tokens
    r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b",  # AWS access key ids
    r"\b[Bb]earer[ \t]+[A-Za-z0-9._~+/-]{8,}=*",  # a bearer credential anywhere
    r"\bgh[pousr]_[A-Za-z0-9]{30,}",  # GitHub tokens
    r"\bgithub_pat_[A-Za-z0-9_]{30,}",  # GitHub fine-grained tokens
    r"\bxox[abprs]-[A-Za-z0-9-]{10,}",  # Slack tokens
)
"""Text shaped like a credential, redacted wherever it stands."""

_VALUE_ANCHORS: tuple[bytes, ...] = (b"sk-", b"eyJ", b"AKIA", b"ASIA", b"earer", b"xox")
"""Literal bytes one of which every default value pattern contains (the fast pre-check),
with :data:`_GITHUB_ANCHOR`."""
_GITHUB_ANCHOR = re.compile(rb"g(?:h[pousr]_|ithub_pat_)")
"""The GitHub tokens' anchors in one search (its literal prefix ``g`` keeps it one pass)."""

_KELVIN = "\u212a".encode()
"""The only character outside ASCII whose lower case is ASCII (``"\u212a".lower() == "k"``):
a key spelled with it is a secret key, so a frame holding it takes the full walk."""

_ESCAPED = frozenset('"\\/\b\f\n\r\t')
"""Characters a JSON string may write as a two-character escape (``\\/`` for ``/``)."""

_CONTEXT = re.compile(r"\^|\$|\\[AZ]|\(\?<?[=!]")
"""Parts of a regex that look past the text they match (anchors, lookarounds)."""
MARKER = re.compile(r"<redacted:[0-9a-f]{8}>")
"""A redaction marker (never redacted again)."""

_FOLD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")

# A JSON string literal (unrolled: no per-character alternation), and one followed by ':'.
_STRING = r'"[^"\\]*(?:\\.[^"\\]*)*"'
_MEMBER = re.compile(_STRING + r"[ \t\n\r]*:[ \t\n\r]*", re.DOTALL)
_STRING_AT = re.compile(_STRING, re.DOTALL)
_OPEN_STRING_AT = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*\\?\Z', re.DOTALL)
_SCALAR_AT = re.compile(r"[^,}\]\s]+")
_SKIP_TO_BRACKET = re.compile(r'[^"\[\]{}]*')
# A query parameter; trailing punctuation of a sentence ("...?token=x: refused") is not
# part of the value.
_QUERY_PARAM = re.compile(
    r"([?&;])([^=&;#\s\"'<>]*)=([^&;#\s\"'<>]*?)(?=[:.,)]*(?:[&;#\s\"'<>]|\Z))"
)
_USERINFO = re.compile(r"(//[^/?#@\s:\"']*:)([^/?#@\s\"']+)@")


def normalise_key(key: str) -> str:
    """Lower-case ``key`` and drop ``_`` and ``-``: ``Access-Token`` becomes ``accesstoken``."""
    return key.lower().replace("_", "").replace("-", "")


def marker(value: Any) -> str:
    """The replacement for a secret: ``<redacted:`` + 8 hex digits of its SHA-256 + ``>``."""
    if isinstance(value, str):
        data = value.encode(errors="surrogatepass")
    else:
        try:
            data = orjson.dumps(value)
        except TypeError:  # orjson.JSONEncodeError: integers past 64 bits, deep nesting
            data = repr(value).encode(errors="surrogatepass")
    return f"<redacted:{hashlib.sha256(data).hexdigest()[:8]}>"


def is_marker(value: Any) -> bool:
    """Whether ``value`` is a redaction marker (a string and nothing else)."""
    return isinstance(value, str) and MARKER.fullmatch(value) is not None


def compile_values(patterns: Iterable[str]) -> re.Pattern[str] | None:
    """One regex for ``patterns`` (``--redact-value``); an invalid one is a :class:`UsageError`."""
    patterns = list(patterns)
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise UsageError(
                f"--redact-value {pattern!r}: not a regular expression ({exc})"
            ) from None
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{p})" for p in patterns))


@dataclass(frozen=True)
class Redactor:
    """Replaces secrets in messages, text, headers and URLs; ``enabled=False`` records all."""

    keys: frozenset[str] = DEFAULT_KEYS
    enabled: bool = True
    values: tuple[str, ...] = ()
    """Extra credential patterns (``--redact-value``), on top of the defaults."""
    headers: frozenset[str] = DEFAULT_HEADERS
    query: frozenset[str] = DEFAULT_QUERY
    fast: bool = field(default=True, compare=False)
    """Scan with hyperscan where it is installed (the ``fast`` extra); ``False`` uses the
    standard library's passes (the same answers, several times slower on big frames)."""
    _probe: re.Pattern[bytes] = field(init=False, repr=False, compare=False)
    _non_ascii_keys: bool = field(init=False, repr=False, compare=False)
    _escaped_keys: bool = field(init=False, repr=False, compare=False)
    _values: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _extra_values: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _extra_context: bool = field(init=False, repr=False, compare=False)
    _scan: Callable[[bytes], int] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = sorted(self.keys | ENV_KEYS)
        ascii_names = tuple(key for key in names if key.isascii())
        # On the frame with ASCII case folded and "-" and "_" dropped, a secret key is a
        # plain literal in quotes followed by a colon (the empty key too: "-" normalises
        # to it). Keys outside ASCII are not looked for: a frame outside ASCII is walked.
        object.__setattr__(self, "_probe", re.compile(rb'"' + _trie(ascii_names) + rb'"\s*:'))
        object.__setattr__(self, "_non_ascii_keys", len(ascii_names) < len(names))
        escaped = any(not _ESCAPED.isdisjoint(key) for key in names)
        object.__setattr__(self, "_escaped_keys", escaped)
        extra = compile_values(self.values)
        object.__setattr__(self, "_extra_values", extra)
        context = any(_CONTEXT.search(p) for p in self.values)
        object.__setattr__(self, "_extra_context", context)
        every = [*DEFAULT_VALUE_PATTERNS, *self.values]
        object.__setattr__(self, "_values", re.compile("|".join(f"(?:{p})" for p in every)))
        fast = self.fast and _hyperscan_module() is not None
        scan = _Hyperscan(ascii_names) if fast else None
        object.__setattr__(self, "_scan", scan)

    @classmethod
    def build(
        cls, extra_keys: Iterable[str] = (), *, enabled: bool = True, values: Iterable[str] = ()
    ) -> Redactor:
        """The default lists plus ``extra_keys`` (normalised for you; they also apply to
        headers and query parameters) and ``values`` (regexes of credential-shaped text)."""
        extra = frozenset(normalise_key(k) for k in extra_keys)
        return cls(
            DEFAULT_KEYS | extra,
            enabled,
            tuple(values),
            DEFAULT_HEADERS | extra,
            DEFAULT_QUERY | extra,
        )

    def is_secret(self, key: str) -> bool:
        """Whether a JSON member named ``key`` is redacted."""
        return self.enabled and normalise_key(key) in self.keys

    def is_secret_header(self, name: str) -> bool:
        """Whether the value of a header named ``name`` is redacted."""
        return self.enabled and normalise_key(name) in self.headers

    # -- the hot path --

    def might_redact(self, raw: bytes) -> bool:
        """Fast pre-check on a raw frame: ``False`` means redaction changes nothing.

        A few C-speed scans, no per-character Python: literal anchors of credential shapes
        and the secret keys (ASCII case folded, ``-`` and ``_`` ignored). What the scans
        cannot see forces the full walk: ``\\u`` escapes, a frame outside ASCII when a key
        is (or the Kelvin sign, which lower-cases to ``k``), a backslash when a key holds a
        character JSON escapes or ``--redact-value`` patterns are given.
        """
        if not self.enabled:
            return False
        scan = self._scan
        found = _SEPARATED
        if scan is not None:  # hyperscan: anchors, escapes, keys in one pass
            found = scan(raw)
            if found == _FOUND:
                return True
        elif (  # the literal anchors of _VALUE_ANCHORS, unrolled: no generator per frame
            # Each search is a pass over the frame; one for a single byte (memchr) is several
            # times cheaper than one for a few, so an anchor holding a byte rare in JSON-RPC
            # frames ("J", "K", "S", a backslash) is looked for only where that byte is.
            b"sk-" in raw
            or (b"J" in raw and b"eyJ" in raw)
            or (b"K" in raw and b"AKIA" in raw)
            or (b"S" in raw and b"ASIA" in raw)
            or b"earer" in raw
            or b"xox" in raw
            or _GITHUB_ANCHOR.search(raw) is not None
            or (b"\\" in raw and b"\\u" in raw)  # an escape may hide a key or a credential
        ):
            return True
        if not raw.isascii() and (self._non_ascii_keys or (scan is None and _KELVIN in raw)):
            return True
        if self._escaped_keys and b"\\" in raw:
            return True
        if self._extra_values is not None and self._extra_match(raw):
            return True
        if found == _NOTHING:
            return False
        # The probe starts with a quote, which keeps the regex engine's scan cheap; a plain
        # alternation of the keys (no anchor) costs several times more on every frame, and
        # the keys as a trie (_trie) cost at each quote half what their list does.
        return self._probe.search(raw.translate(_FOLD, b"-_")) is not None

    def _extra_match(self, raw: bytes) -> bool:
        """Whether a ``--redact-value`` pattern may match a string of the frame (or the
        frame's text, which is what a frame that is not JSON gets redacted as)."""
        extra = self._extra_values
        assert extra is not None
        if b"\\" in raw:  # a string's text is not what the frame spells
            return True
        text = raw.decode(errors="replace")
        if extra.search(text) is not None:
            return True
        if not self._extra_context:
            # Without anchors or lookarounds a match inside a string is a match in the text.
            return False
        # A pattern that looks at the edges (``^secret$``) sees each string on its own.
        return any(extra.search(m.group()[1:-1]) is not None for m in _STRING_AT.finditer(text))

    # -- parsed JSON --

    def redact_json(self, msg: Any) -> tuple[Any, list[str]]:
        """Return ``msg`` with secrets replaced, and the JSON pointers that were replaced.

        The input is not modified; unchanged subtrees are shared with the result. Raises
        :class:`RecursionError` only for nesting deeper than Python's recursion limit.
        """
        if not self.enabled:
            return msg, []
        pointers: list[str] = []
        return self._walk(msg, "", pointers), pointers

    def _walk(self, node: Any, path: str, pointers: list[str]) -> Any:
        if isinstance(node, str):
            new = self.redact_values(node)
            if new is not node:
                pointers.append(path)
            return new
        if isinstance(node, dict):
            out: dict[str, Any] | None = None
            for key, value in node.items():
                here = f"{path}/{_pointer.token(key)}"
                name = normalise_key(key)
                if name in self.keys:
                    new = self._secret(value, here, pointers)
                elif name in ENV_KEYS and isinstance(value, dict | list):
                    new = self._env(value, here, pointers)
                else:
                    new = self._walk(value, here, pointers)
                if new is not value:
                    out = dict(node) if out is None else out
                    out[key] = new
            return node if out is None else out
        if isinstance(node, list):
            items: list[Any] | None = None
            for index, value in enumerate(node):
                new = self._walk(value, f"{path}/{index}", pointers)
                if new is not value:
                    items = list(node) if items is None else items
                    items[index] = new
            return node if items is None else items
        return node

    @staticmethod
    def _secret(value: Any, here: str, pointers: list[str]) -> Any:
        if value is None or is_marker(value):
            return value
        pointers.append(here)
        return marker(value)

    def _env(self, env: dict[str, Any] | list[Any], here: str, pointers: list[str]) -> Any:
        """Every value of an environment map (or list) is a secret."""
        if isinstance(env, dict):
            out = {
                k: self._secret(v, f"{here}/{_pointer.token(k)}", pointers) for k, v in env.items()
            }
            return env if all(out[k] is env[k] for k in env) else out
        items = [self._secret(v, f"{here}/{i}", pointers) for i, v in enumerate(env)]
        return env if all(a is b for a, b in zip(items, env, strict=True)) else items

    # -- text --

    def redact_values(self, text: str) -> str:
        """``text`` with every credential-shaped value replaced (the same object if none)."""
        if not self.enabled:
            return text
        new = self._values.sub(_mark, text)
        return text if new == text else new

    def redact_text(self, text: str) -> str:
        """Free text (a path, a URL, a message, a close reason): secret query parameters,
        URL passwords and credential-shaped values replaced; the same object if none."""
        if not self.enabled:
            return text
        new = _QUERY_PARAM.sub(self._query_param, text)
        new = _USERINFO.sub(lambda m: m.group(1) + _mark_text(m.group(2)) + "@", new)
        new = self.redact_values(new)
        return text if new == text else new

    def _query_param(self, match: re.Match[str]) -> str:
        sep, name, value = match.groups()
        if not value or is_marker(value) or normalise_key(unquote(name)) not in self.query:
            return match.group(0)
        return f"{sep}{name}={marker(unquote(value))}"

    def redact_frame_text(self, text: str) -> tuple[str, bool]:
        """Redact a text frame that is not JSON orjson can hold, in place: each secret is
        replaced and every other character kept. Returns the text and whether it changed.

        Looks for ``"key": value`` pairs with a secret (or ``env``) key, even in truncated or
        broken JSON (a value cut off by the end of the text is redacted to the end), then for
        credential-shaped values anywhere.
        """
        if not self.enabled:
            return text, False
        pieces: list[str] = []
        done = 0
        for match in _MEMBER.finditer(text):
            if match.start() < done:
                continue
            name = normalise_key(_decode_string(match.group(0)[: match.group(0).rindex(":")]))
            if name not in self.keys and name not in ENV_KEYS:
                continue
            start = match.end()
            end, value = _value_at(text, start)
            if end == start or value is None or is_marker(value):
                continue
            if name in ENV_KEYS:
                if not text.startswith(("{", "["), start):
                    continue
                env = self._env_text(text, start)
                if env is not None:
                    pieces += [text[done:start], env]
                    done = object_end(text, start) or end
                    continue
            pieces += [text[done:start], f'"{marker(value)}"']
            done = end
        pieces.append(text[done:])
        new = self.redact_values("".join(pieces))
        return new, new != text

    @staticmethod
    def _env_text(text: str, start: int) -> str | None:
        """A well-formed env object's text with each value replaced (keys and layout kept)."""
        found = members(text, start)
        end = object_end(text, start)
        if found is None or end is None:
            return None
        pieces, done = [], start
        for _, value_start, value_end in found:
            value = json.loads(text[value_start:value_end])
            if value is None or is_marker(value):
                continue
            pieces += [text[done:value_start], f'"{marker(value)}"']
            done = value_end
        pieces.append(text[done:end])
        return "".join(pieces)

    # -- headers --

    def redact_headers(self, headers: Iterable[tuple[str, str]]) -> dict[str, str]:
        """Headers as a dict (repeated names joined with ``, ``), secret values replaced."""
        out: dict[str, str] = {}
        for name, value in headers:
            if is_marker(value) or not self.enabled:
                shown = value
            elif self.is_secret_header(name):
                shown = marker(value)
            else:
                shown = self.redact_text(value)
            out[name] = f"{out[name]}, {shown}" if name in out else shown
        return out


def _trie(words: Iterable[str]) -> bytes:
    """A regex matching exactly ``words`` (ASCII), their common prefixes factored out:
    ``access(?:keyid|token)`` instead of ``accesskeyid|accesstoken`` (the regex engine tries
    the alternatives of a group one by one, so a trie fails sooner)."""
    tree: dict[str, Any] = {}
    for word in words:
        node = tree
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}  # the end of a word

    def emit(node: dict[str, Any]) -> bytes:
        branches = [
            b"" if char == "" else re.escape(char.encode()) + emit(rest)
            for char, rest in sorted(node.items())
        ]
        return branches[0] if len(branches) == 1 else b"(?:" + b"|".join(branches) + b")"

    return emit(tree) if tree else b""


def _mark(match: re.Match[str]) -> str:
    return marker(match.group(0))


def _mark_text(text: str) -> str:
    return text if is_marker(text) else marker(text)


def _decode_string(literal: str) -> str:
    """The text of a JSON string literal (its quotes included), or its inside if invalid."""
    literal = literal.rstrip(" \t\n\r")
    try:
        value = json.loads(literal)
    except ValueError:
        return literal[1:-1]
    return value if isinstance(value, str) else literal[1:-1]


def _value_at(text: str, start: int) -> tuple[int, Any]:
    """The end of the JSON value starting at ``start`` (or of the text, if it is cut off) and
    what to hash for its marker: the decoded string, or the value's text."""
    if start >= len(text):
        return start, None
    char = text[start]
    if char == '"':
        match = _STRING_AT.match(text, start)
        if match is not None:
            return match.end(), _decode_string(match.group(0))
        cut = _OPEN_STRING_AT.match(text, start)
        end = cut.end() if cut is not None else len(text)
        return end, text[start + 1 : end]
    if char in "[{":
        end = _container_end(text, start)
        return end, text[start:end]
    match = _SCALAR_AT.match(text, start)
    if match is None:
        return start, None
    word = match.group(0)
    return match.end(), None if word == "null" else word


def _container_end(text: str, start: int) -> int:
    """The end of the object or array at ``start``, or ``len(text)`` if it never closes.

    Steps over strings and runs of plain characters with regexes, so Python only loops
    once per string and bracket.
    """
    depth, pos, size = 0, start, len(text)
    while pos < size:
        char = text[pos]
        if char == '"':
            match = _STRING_AT.match(text, pos)
            if match is None:
                return size
            pos = match.end()
            continue
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth == 0:
                return pos + 1
        pos = _SKIP_TO_BRACKET.match(text, pos + 1).end()  # type: ignore[union-attr]
    return size


_NOTHING, _FOUND, _SEPARATED = 0, 1, 2
"""What :class:`_Hyperscan` reports: no anchor and no key; a sure hit; a key with ``-`` or
``_`` inside it (the folded probe decides)."""


class _Hyperscan:
    """The pre-check's scans as one hyperscan database: the credential anchors, ``\\u``
    escapes, the Kelvin sign, the secret keys (ASCII case-insensitive, ``-`` and ``_`` around
    them), and any key with a ``-`` or ``_`` inside (which the folded probe then checks).

    The database is compiled on the first scan (tens of ms) and shared by redactors with
    the same keys; each thread scans with its own scratch space (a scan runs without the GIL).
    """

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = keys
        self._db: Any = None
        self._local = threading.local()

    def __call__(self, raw: bytes) -> int:
        db = self._db
        if db is None:
            db = self._db = _hyperscan_database(self.keys)
        local = self._local
        scratch = getattr(local, "scratch", None)
        if scratch is None:
            scratch = local.scratch = _hyperscan.Scratch(db)
        seen: list[int] = []
        try:
            db.scan(raw, match_event_handler=_on_match, context=seen, scratch=scratch)
        except _hyperscan.ScanTerminated:
            return _FOUND
        return _SEPARATED if seen else _NOTHING


_SEPARATED_ID = 99
"""The id of the pattern of a key with ``-`` or ``_`` inside."""


def _on_match(pattern: int, start: int, end: int, flags: int, seen: list[int]) -> bool:
    if pattern == _SEPARATED_ID:
        seen.append(end)
        return False  # keep scanning: an anchor may still follow
    return True  # stop: the frame is walked


@functools.lru_cache(maxsize=16)
def _hyperscan_database(keys: tuple[str, ...]) -> Any:
    def literal(key: str) -> bytes:
        return b"".join(bytes([c]) if chr(c).isalnum() else b"\\x%02x" % c for c in key.encode())

    sure = [rb"sk-", rb"eyJ", rb"A[KS]IA", rb"earer", rb"xox", rb"gh[pousr]_|github_pat_",
            rb"\\u", b"".join(b"\\x%02x" % c for c in _KELVIN)]  # fmt: skip
    secret = rb'"[-_]*(?:' + b"|".join(literal(k) for k in keys) + rb')[-_]*"\s*:'
    separated = rb'[-_][^"\\]*[^-_"\\][^"\\]*"\s*:'
    hyperscan = _hyperscan_module()
    single, fold = hyperscan.HS_FLAG_SINGLEMATCH, hyperscan.HS_FLAG_CASELESS
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    db.compile(
        expressions=[*sure, secret, separated],
        ids=[*range(len(sure) + 1), _SEPARATED_ID],
        elements=len(sure) + 2,
        flags=[single] * len(sure) + [single | fold] * 2,
    )
    return db
