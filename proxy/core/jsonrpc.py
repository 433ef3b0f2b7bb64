"""The JSON-RPC message model of the app-server wire: parse, classify, pair.

Pure code: no sockets, no event loop. The app-server speaks JSON-RPC 2.0 with the
``"jsonrpc"`` member omitted, one message per websocket text frame; both peers send
requests (the server asks the client for approvals and attestation tokens).
"""

from __future__ import annotations

import enum
import json
import re
from typing import Any, Generic, NamedTuple, TypeVar

import orjson


class Direction(enum.StrEnum):
    """Which way a frame travelled."""

    C2S = "c2s"
    """Client to server."""
    S2C = "s2c"
    """Server to client."""

    @property
    def reverse(self) -> Direction:
        """The opposite direction: where a reply to this frame goes."""
        return Direction.S2C if self is Direction.C2S else Direction.C2S

    @property
    def arrow(self) -> str:
        """``>`` for client to server, ``<`` for server to client."""
        return ">" if self is Direction.C2S else "<"


Message = tuple[bool, bytes]
"""One whole message as it travels: ``(is_text, payload)`` (a websocket frame, a JSONL line)."""


class MessageType(enum.StrEnum):
    """The JSON-RPC shape of one parsed message."""

    REQUEST = "request"
    NOTIFICATION = "notification"
    RESPONSE = "response"
    ERROR = "error"
    BATCH = "batch"
    INVALID = "invalid"
    """JSON that is not a JSON-RPC message (or text that is not JSON at all)."""


NOT_JSON = object()
"""What :func:`lenient_loads` returns for text that is not JSON."""


def _is_id(value: Any) -> bool:
    # JSON-RPC 2.0 section 4: an id is a String, Number, or Null. Booleans are not numbers.
    return value is None or (isinstance(value, str | int | float) and not isinstance(value, bool))


def classify(msg: Any) -> MessageType:
    """Return the JSON-RPC shape of an already parsed message.

    Follows JSON-RPC 2.0 sections 4 and 5 without requiring ``"jsonrpc"``, as the app-server
    does. A response needs an ``id`` and exactly one of ``result`` / ``error``.
    """
    if isinstance(msg, list):
        return MessageType.BATCH
    if not isinstance(msg, dict):
        return MessageType.INVALID
    method = msg.get("method")
    if method is not None:
        if not isinstance(method, str) or "result" in msg or "error" in msg:
            return MessageType.INVALID
        if "id" in msg:
            return MessageType.REQUEST if _is_id(msg["id"]) else MessageType.INVALID
        return MessageType.NOTIFICATION
    if "id" not in msg or not _is_id(msg["id"]):
        return MessageType.INVALID
    has_result, has_error = "result" in msg, "error" in msg
    if has_result and not has_error:
        return MessageType.RESPONSE
    if has_error and not has_result and isinstance(msg["error"], dict):
        return MessageType.ERROR
    return MessageType.INVALID


class Parsed(NamedTuple):
    """One text frame, parsed (a named tuple: it is built for every frame, and a tuple is the
    cheapest immutable record to build).

    ``msg`` is the parsed JSON when orjson can represent it (``None`` with ``has_msg`` false
    otherwise); ``exact`` says whether ``orjson.dumps(msg)`` reproduces the frame byte for byte.
    """

    msg: Any
    has_msg: bool
    exact: bool
    type: MessageType
    method: str | None
    id: Any

    @property
    def id_key(self) -> str | None:
        """A hashable key for the id that keeps ``1`` and ``"1"`` apart."""
        return id_key(self.id) if self.type in _HAS_ID else None


_HAS_ID = frozenset({MessageType.REQUEST, MessageType.RESPONSE, MessageType.ERROR})


def id_key(value: Any) -> str:
    """Key a JSON-RPC id so that ``1``, ``1.0`` and ``"1"`` are distinct."""
    return f"{type(value).__name__}:{value!r}"


def parse(data: bytes | str) -> Parsed:
    """Parse one text frame and classify it; never raises, whatever the bytes.

    Text that orjson cannot hold within its limits (not JSON; JSON with lone surrogate
    escapes; nesting deeper than orjson reads or writes) gets ``msg=None``: such a frame is
    recorded as raw text. If it is still JSON (the standard library's parse, or orjson's parse
    too deep to write back), the derived type, method and id come from that parse. orjson reads
    integers beyond 64 bits as floats: such a frame keeps its lossy ``msg`` and is never
    ``exact``.
    """
    raw = data.encode(errors="surrogatepass") if isinstance(data, str) else data
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _unrepresentable(lenient_loads(raw))
    if len(raw) < 2 * MAX_DEPTH:  # too short to nest MAX_DEPTH deep: only exactness to learn
        try:
            exact = orjson.dumps(msg) == raw
        except orjson.JSONEncodeError:  # e.g. an integer orjson reads but cannot write
            return _unrepresentable(msg)
    else:
        try:  # one write tells both: exactness, and that MAX_DEPTH is not exceeded
            wrapped = orjson.dumps(_nest(msg, _DEPTH_MARGIN))
        except orjson.JSONEncodeError:  # nested deeper than MAX_DEPTH
            return _unrepresentable(msg)
        # startswith at an offset compares in place (memcmp); a memoryview comparison walks
        # the bytes one by one (17 ms on 10 MiB) and a slice copies them.
        exact = len(wrapped) == len(raw) + 2 * _DEPTH_MARGIN and wrapped.startswith(
            raw, _DEPTH_MARGIN
        )
    return Parsed(msg, True, exact, *shape(msg))


MAX_DEPTH = 250
"""Deepest nesting a frame's ``msg`` may have: orjson writes 254 levels, and a cassette line
puts ``msg`` inside the event (with room to spare for tools that wrap events)."""

_DEPTH_MARGIN = 254 - MAX_DEPTH


def _nest(value: Any, levels: int) -> Any:
    for _ in range(levels):
        value = [value]
    return value


def _unrepresentable(fallback: Any) -> Parsed:
    """A frame recorded as raw text: no ``msg``, shape derived from ``fallback`` if it is JSON."""
    if fallback is NOT_JSON:
        return Parsed(None, False, False, MessageType.INVALID, None, None)
    return Parsed(None, False, False, *shape(fallback))


def lenient_loads(raw: bytes) -> Any:
    """The standard library's parse (lone surrogates, big integers, deeper nesting than
    orjson), or :data:`NOT_JSON`; never raises."""

    def reject_constant(name: str) -> Any:
        raise ValueError(name)

    try:
        return json.loads(raw, parse_constant=reject_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return NOT_JSON


_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def member_spans(text: str) -> dict[str, tuple[int, int]] | None:
    """Where each top-level member's value of a JSON object stands in ``text``.

    Returns ``{key: (start, end)}`` with ``text[start:end]`` the value exactly as written (the
    last one for a duplicate key, as parsers keep), or ``None`` if ``text`` is not a JSON object
    (or nests too deep for the standard library). Only the top level is walked in Python; each
    value is skipped by the standard library's C scanner.
    """
    found = members(text)
    return None if found is None else {key: (start, end) for key, start, end in found}


def members(text: str, pos: int = 0) -> list[tuple[str, int, int]] | None:
    """The members of the JSON object at ``pos`` (after optional whitespace) in file order:
    ``(key, start, end)`` of each value; ``None`` unless an object starts there and, when
    ``pos`` is 0, fills the text."""
    try:
        found, end = _members(text, pos)
    except (ValueError, RecursionError, IndexError):
        return None
    if pos == 0 and text[end:].strip(" \t\n\r"):
        return None
    return found


def object_end(text: str, pos: int) -> int | None:
    """The end of the JSON object starting at ``pos``, or ``None``."""
    try:
        return _members(text, pos)[1]
    except (ValueError, RecursionError, IndexError):
        return None


def _members(text: str, pos: int) -> tuple[list[tuple[str, int, int]], int]:
    pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
    if text[pos] != "{":
        raise ValueError("not an object")
    found: list[tuple[str, int, int]] = []
    pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
    if text[pos] == "}":
        return found, pos + 1
    while True:
        if text[pos] != '"':
            raise ValueError("expected a key")
        key, pos = _DECODER.raw_decode(text, pos)
        pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
        if text[pos] != ":":
            raise ValueError("expected ':'")
        start = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
        _, end = _DECODER.raw_decode(text, start)
        found.append((key, start, end))
        pos = _WS.match(text, end).end()  # type: ignore[union-attr]
        if text[pos] == "}":
            return found, pos + 1
        if text[pos] != ",":
            raise ValueError("expected ',' or '}'")
        pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]


def raw_id(data: bytes | str) -> bytes | None:
    """The ``id`` of a JSON-RPC message exactly as its sender wrote it (``None`` if absent).

    ``2**70``, ``-0``, ``1.0`` or ``"a\\"b\\u00e9"`` come back byte for byte, where a parse
    would turn them into a float, ``0``, or an unescaped string.
    """
    text = data.decode(errors="surrogatepass") if isinstance(data, bytes) else data
    spans = member_spans(text)
    if spans is None or "id" not in spans:
        return None
    start, end = spans["id"]
    return text[start:end].encode(errors="surrogatepass")


def id_slots(data: bytes) -> tuple[bytes, bytes] | None:
    """``data`` (a JSON object) cut around its top-level ``id`` value: what stands before it
    and after it, so that any id text can be put in between. ``None`` without an ``id``."""
    text = data.decode(errors="surrogatepass")
    spans = member_spans(text)
    if spans is None or "id" not in spans:
        return None
    start, end = spans["id"]
    return text[:start].encode(errors="surrogatepass"), text[end:].encode(errors="surrogatepass")


def with_raw_id(data: bytes, id_text: bytes) -> bytes | None:
    """``data`` (a JSON object) with its top-level ``id`` value replaced by ``id_text``.

    Every other byte is kept. ``None`` if ``data`` is not an object with an ``id``.
    """
    slots = id_slots(data)
    return None if slots is None else b"".join((slots[0], id_text, slots[1]))


def shape(msg: Any) -> tuple[MessageType, str | None, Any]:
    """:func:`classify`, with the method and the id that go with the type (``None`` where the
    type has none), in one pass: this runs for every frame the relay forwards."""
    if type(msg) is dict:  # what nearly every frame is: no enum comparisons on the way
        method = msg.get("method")
        if method is not None:
            if not isinstance(method, str) or "result" in msg or "error" in msg:
                return _INVALID
            if "id" not in msg:
                return MessageType.NOTIFICATION, method, None
            ident = msg["id"]
            return (MessageType.REQUEST, method, ident) if _is_id(ident) else _INVALID
        if "id" not in msg:
            return _INVALID
        ident = msg["id"]
        if not _is_id(ident):
            return _INVALID
        has_result, has_error = "result" in msg, "error" in msg
        if has_result and not has_error:
            return MessageType.RESPONSE, None, ident
        if has_error and not has_result and isinstance(msg["error"], dict):
            return MessageType.ERROR, None, ident
        return _INVALID
    kind = classify(msg)  # a list (a batch), a scalar, a dict subclass
    named = kind is MessageType.REQUEST or kind is MessageType.NOTIFICATION
    return kind, msg["method"] if named else None, msg["id"] if kind in _HAS_ID else None


_INVALID: tuple[MessageType, None, None] = (MessageType.INVALID, None, None)


_T = TypeVar("_T")


class Pairing(Generic[_T]):
    """Remembers open requests in both directions to name what a response answers: the one
    place requests and responses are paired.

    One instance per connection. Call :meth:`observe` for every frame in the order it was
    forwarded; it returns the method of the request a response or error answers, if known
    (a ``Pairing[str]``). :meth:`opened` and :meth:`answered` pair anything else a request is
    known by (the replay's recorded items pair by their index). Requests from the client are
    answered by the server and the reverse, so each direction has its own table (the server's
    ids count from 0 and may equal the client's).
    """

    def __init__(self) -> None:
        self._open: dict[Direction, dict[str, _T]] = {Direction.C2S: {}, Direction.S2C: {}}

    def opened(self, direction: Direction, key: str, value: _T) -> None:
        """A request with id ``key`` went in ``direction``, known as ``value``."""
        self._open[direction][key] = value

    def answered(self, direction: Direction, key: str) -> _T | None:
        """A response or error with id ``key`` went in ``direction``: what it answers, once."""
        return self._open[direction.reverse].pop(key, None)

    def observe(self: Pairing[str], direction: Direction, parsed: Parsed) -> str | None:
        """Record a request, or resolve a response; return the answered method or ``None``."""
        key = parsed.id_key
        if key is None:
            return None
        if parsed.type is MessageType.REQUEST:
            assert parsed.method is not None
            self._open[direction][key] = parsed.method
            return None
        return self._open[direction.reverse].pop(key, None)

    def pending(self, direction: Direction) -> dict[str, _T]:
        """Requests sent in ``direction`` still waiting for an answer (id key to method)."""
        return dict(self._open[direction])
