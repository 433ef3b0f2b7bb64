"""The JSON-RPC message model of the app-server wire: parse, classify, pair.

Pure code: no sockets, no event loop. The app-server speaks JSON-RPC 2.0 with the
``"jsonrpc"`` member omitted, one message per websocket text frame; both peers send
requests (the server asks the client for approvals and attestation tokens).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

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


class MessageType(enum.StrEnum):
    """The JSON-RPC shape of one parsed message."""

    REQUEST = "request"
    NOTIFICATION = "notification"
    RESPONSE = "response"
    ERROR = "error"
    BATCH = "batch"
    INVALID = "invalid"
    """JSON that is not a JSON-RPC message (or text that is not JSON at all)."""


_NOT_JSON = object()


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


@dataclass(frozen=True, slots=True)
class Parsed:
    """One text frame, parsed.

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
    """Parse one text frame and classify it.

    Text that orjson rejects (not JSON, or JSON it cannot hold such as lone surrogate
    escapes) gets ``msg=None``; if the standard library can still parse it, the derived type
    and method come from that parse. orjson reads integers beyond 64 bits as floats: such a
    frame keeps its lossy ``msg`` and is never ``exact``.
    """
    raw = data.encode() if isinstance(data, str) else data
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        fallback = _lenient_loads(raw)
        if fallback is _NOT_JSON:
            return Parsed(None, False, False, MessageType.INVALID, None, None)
        kind = classify(fallback)
        return Parsed(None, False, False, kind, _method(fallback, kind), _id(fallback, kind))
    exact = orjson.dumps(msg) == raw
    kind = classify(msg)
    return Parsed(msg, True, exact, kind, _method(msg, kind), _id(msg, kind))


def _lenient_loads(raw: bytes) -> Any:
    def reject_constant(name: str) -> Any:
        raise ValueError(name)

    try:
        return json.loads(raw, parse_constant=reject_constant)
    except ValueError:
        return _NOT_JSON


def _method(msg: Any, kind: MessageType) -> str | None:
    if kind in (MessageType.REQUEST, MessageType.NOTIFICATION):
        method: str = msg["method"]
        return method
    return None


def _id(msg: Any, kind: MessageType) -> Any:
    return msg["id"] if kind in _HAS_ID else None


class Pairing:
    """Remembers open requests in both directions to name the method a response answers.

    One instance per connection. Call :meth:`observe` for every frame in the order it was
    forwarded; it returns the method of the request a response or error answers, if known.
    Requests from the client are answered by the server and the reverse, so each direction
    has its own table (the server's ids count from 0 and may equal the client's).
    """

    def __init__(self) -> None:
        self._open: dict[Direction, dict[str, str]] = {Direction.C2S: {}, Direction.S2C: {}}

    def observe(self, direction: Direction, parsed: Parsed) -> str | None:
        """Record a request, or resolve a response; return the answered method or ``None``."""
        key = parsed.id_key
        if key is None:
            return None
        if parsed.type is MessageType.REQUEST:
            assert parsed.method is not None
            self._open[direction][key] = parsed.method
            return None
        return self._open[direction.reverse].pop(key, None)

    def pending(self, direction: Direction) -> dict[str, str]:
        """Requests sent in ``direction`` still waiting for an answer (id key to method)."""
        return dict(self._open[direction])
