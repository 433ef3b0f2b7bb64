"""Turns what the relay sees into cassette events, and appends them.

No sockets and no event loop: the relay calls these methods in the order frames are
forwarded, and each method writes its event before returning, so the relay can forward the
frame knowing its line is already in the file.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import orjson

from .cassette import Event, event_lines
from .jsonrpc import NOT_JSON, Direction, MessageType, Pairing, Parsed, lenient_loads, parse
from .redact import Redactor

_ABSENT = object()

# An enum's .value is a Python-level property; these lookups cost a third of it per frame.
_DIRECTION: dict[Direction, str] = {member: member.value for member in Direction}
_TYPE: dict[MessageType, str] = {member: member.value for member in MessageType}

log = logging.getLogger("rpctape.recorder")

FrameValidator = Callable[[Direction, Any, str | None], list[tuple[str, str]]]
"""Checks one parsed message (direction, message, the method a response answers) and returns
its violations as ``(JSON pointer, message)`` pairs (see
:meth:`proxy.codex.schema.Validator.pairs`)."""


class LineSink(Protocol):
    """Where a recorder's lines go (:class:`proxy.wire.store.CassetteWriter` on disk): one
    call per batch of whole lines; it raises :class:`~proxy.errors.CassetteWriteError` when
    they cannot be written."""

    def append_lines(self, data: bytes) -> None: ...


class Recorder:
    """Numbers events, pairs requests with responses, redacts, and writes.

    ``writer`` may be ``None`` to build events without a file (tests, dry runs). The clock is
    monotonic; ``t`` is seconds since the recorder was created.
    """

    def __init__(
        self,
        writer: LineSink | None,
        redactor: Redactor | None = None,
        clock: Callable[[], float] = time.monotonic,
        *,
        after: Sequence[Event] = (),
        validator: FrameValidator | None = None,
    ) -> None:
        self.writer = writer
        self.validator = validator
        """Checks every text frame; what it finds goes into the event (``violations``)."""
        self.violations = 0
        """Violations the validator found so far."""
        self._redactor = redactor
        self._clock = clock
        # Continuing a cassette (``after`` its events): seq, conn and t carry on from them.
        self._start = clock() - max((float(e.get("t", 0.0)) for e in after), default=0.0)
        self._seq = max((e["seq"] for e in after), default=0)
        self._conns = max((e["conn"] for e in after), default=0)
        self._pairing: dict[int, Pairing[str]] = {}
        self.frames: Counter[Direction] = Counter()
        """Frames recorded per direction: only those whose lines were written (a batch whose
        write failed is not counted)."""
        self._unwritten: Counter[Direction] = Counter()
        """Frames whose events are built but whose lines are not written yet."""
        self.open_connections = 0

    @property
    def redactor(self) -> Redactor:
        """The redactor (the default one, built when first needed: a replay's recorder,
        which writes nothing, never builds it)."""
        if self._redactor is None:
            self._redactor = Redactor()
        return self._redactor

    def watch(self, conn: int) -> None:
        """Pair the requests and responses of connection ``conn`` without recording its
        opening (a replay's bridge: the rules still see what each response answers)."""
        self._pairing[conn] = Pairing()

    @property
    def connections(self) -> int:
        """Connection ids handed out so far (including failed attempts)."""
        return self._conns

    def new_connection(self) -> int:
        """Allocate the id of a new client connection."""
        self._conns += 1
        return self._conns

    def _event(self, conn: int, kind: str, fields: dict[str, Any]) -> Event:
        self._seq += 1
        return {
            "seq": self._seq,
            "t": round(self._clock() - self._start, 6),
            "conn": conn,
            "kind": kind,
            **fields,
        }

    def _write(self, events: Iterable[Event]) -> None:
        self._write_lines(event_lines(events))

    def open(
        self,
        conn: int,
        *,
        path: str,
        headers: Iterable[tuple[str, str]],
        subprotocol: str | None,
        upstream: str,
        transport: str = "websocket",
        client_transport: str = "websocket",
    ) -> Event:
        """Record an accepted connection (after the upstream connection succeeded)."""
        self._pairing[conn] = Pairing()
        self.open_connections += 1
        fields = {
            "path": path,
            "headers": headers,
            "subprotocol": subprotocol,
            "upstream": upstream,
            "transport": transport,
            "client_transport": client_transport,
        }
        event = self._event(conn, "open", redact_fields(self.redactor, "open", fields))
        self._write([event])
        return event

    def text(self, conn: int, direction: Direction, data: str | bytes) -> Event:
        """Record one text frame; write it before returning."""
        raw = data.encode() if isinstance(data, str) else data
        event, line = self._text(conn, direction, raw)
        self._write_lines(line)
        return event

    def record_frames(
        self, conn: int, direction: Direction, frames: Sequence[tuple[bool, bytes]]
    ) -> list[Event]:
        """Record frames that arrived together (``(is_text, payload)``) in one write.

        The relay calls this with every complete message one read brought in, then forwards
        them: the durability rule holds for the whole batch.
        """
        events: list[Event] = []
        lines: list[bytes] = []
        for is_text, payload in frames:
            if is_text:
                event, line = self.text_line(
                    conn, direction, payload, *self.inspect(conn, direction, payload)
                )
            else:
                event = self._binary_event(conn, direction, payload)
                line = orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)
            events.append(event)
            lines.append(line)
        self._write_lines(b"".join(lines))
        return events

    def _write_lines(self, data: bytes) -> None:
        """Append lines; then the frames among them count as recorded (see :attr:`frames`)."""
        try:
            if self.writer is not None:
                self.writer.append_lines(data)
        except BaseException:
            self._unwritten.clear()
            raise
        if self._unwritten:
            self.frames.update(self._unwritten)
            self._unwritten.clear()

    def _text(self, conn: int, direction: Direction, raw: bytes) -> tuple[Event, bytes]:
        """The event of one text frame and its cassette line; advances pairing and counters."""
        parsed, response_to = self.inspect(conn, direction, raw)
        return self.text_line(conn, direction, raw, parsed, response_to)

    def inspect(self, conn: int, direction: Direction, raw: bytes) -> tuple[Parsed, str | None]:
        """Parse a text frame and pair it: the parse and the method a response answers.

        Call once per frame, in forwarding order, then :meth:`text_line` to record it.
        """
        parsed = parse(raw)
        pairing = self._pairing.get(conn)
        if pairing is None or parsed.type is MessageType.INVALID:
            return parsed, None
        return parsed, pairing.observe(direction, parsed)

    def text_line(
        self,
        conn: int,
        direction: Direction,
        raw: bytes,
        parsed: Parsed,
        response_to: str | None,
        extra: dict[str, Any] | None = None,
    ) -> tuple[Event, bytes]:
        """Build (not write) the event and line of an inspected text frame.

        ``extra`` adds fields (what rules did); a ``delivered`` message in it is redacted too.
        """
        # The event is built in place, in its field order (seq, t, conn, kind, dir, type, ...):
        # this runs for every frame the relay forwards.
        self._seq += 1
        event: Event = {
            "seq": self._seq,
            "t": round(self._clock() - self._start, 6),
            "conn": conn,
            "kind": "text",
            "dir": _DIRECTION[direction],
            "type": _TYPE[parsed.type],
        }
        if parsed.method is not None:
            event["method"] = parsed.method
        if response_to is not None:
            event["response_to"] = response_to
        if extra:
            event.update(extra)
            if "delivered" in extra and self.redactor.enabled:
                event["delivered"] = self.redactor.redact_json(extra["delivered"])[0]
        if self.validator is not None and parsed.has_msg:
            self._validate(event, direction, raw, parsed.msg, response_to)
        self._unwritten[direction] += 1
        return event, frame_line(event, raw, parsed, self.redactor)

    def _validate(
        self,
        fields: dict[str, Any],
        direction: Direction,
        raw: bytes,
        msg: Any,
        response_to: str | None,
    ) -> None:
        """Annotate a frame with its schema violations. A message may quote the offending
        value, so a frame holding secrets is checked in its redacted form, and each message
        is redacted as text too. A failing validator is logged; the frame is recorded all the
        same."""
        assert self.validator is not None
        if self.redactor.might_redact(raw):
            msg = self.redactor.redact_json(msg)[0]
        try:
            found = self.validator(direction, msg, response_to)
        except Exception:
            log.exception("schema validator failed on a %s frame (not annotated)", direction)
            return
        if found:
            redact = self.redactor.redact_text
            fields["violations"] = [
                {"pointer": redact(pointer), "message": redact(message)}
                for pointer, message in found
            ]
            self.violations += len(found)

    def write(self, lines: Sequence[bytes]) -> None:
        """Append lines built by :meth:`text_line` (and friends) in one write."""
        self._write_lines(b"".join(lines))

    def binary_line(
        self, conn: int, direction: Direction, data: bytes, extra: dict[str, Any] | None = None
    ) -> tuple[Event, bytes]:
        """Build (not write) the event and line of a binary frame (``extra``: what rules did,
        e.g. ``forwarded: false``)."""
        event = self._binary_event(conn, direction, data)
        if extra:
            event.update(extra)
        return event, orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)

    def binary(self, conn: int, direction: Direction, data: bytes) -> Event:
        """Record one binary frame (base64 in ``b64``); write it before returning."""
        event = self._binary_event(conn, direction, data)
        self._write([event])
        return event

    def _binary_event(self, conn: int, direction: Direction, data: bytes) -> Event:
        self._unwritten[direction] += 1
        fields: dict[str, Any] = {"dir": direction.value}
        redacted = redact_binary(self.redactor, data)
        if redacted is not None:
            data, fields["redacted"] = redacted
        fields["b64"] = base64.b64encode(data).decode("ascii")
        return self._event(conn, "binary", fields)

    def close(self, conn: int, *, by: str, code: int | None, reason: str, **extra: Any) -> Event:
        """Record the end of a connection: who closed it (client, server or proxy) and how."""
        if self._pairing.pop(conn, None) is not None:
            self.open_connections -= 1
        fields = redact_fields(self.redactor, "close", {"reason": reason})
        if "forwarded" in extra:  # in its place among the extra fields
            extra["forwarded"] = redact_fields(self.redactor, "close", extra)["forwarded"]
        event = self._event(conn, "close", {"by": by, "code": code, **fields, **extra})
        self._write([event])
        return event

    def error(self, conn: int, message: str, **fields: Any) -> Event:
        """Record something that went wrong on a connection (e.g. the upstream refused).

        The message, and ``path``, ``upstream`` and ``headers`` fields, are redacted (a
        ``headers`` dict or list of pairs already redacted stays as it is)."""
        fields = redact_fields(self.redactor, "error", {"message": message, **fields})
        event = self._event(conn, "error", fields)
        self._write([event])
        return event


# -- the one place that redacts what the recorder writes (also rpctape redact's engine) -------


def frame_line(event: Event, raw: bytes, parsed: Parsed, redactor: Redactor) -> bytes:
    """Complete a text event with its frame and return its cassette line.

    ``event`` holds every field but the frame's (``seq`` ... ``violations``, in the order
    they are written); this adds ``redacted``, ``raw`` and ``msg`` as docs/cassette-format.md
    says (the secrets replaced by ``redactor``) and serialises it. The recorder calls it for
    every text frame; :mod:`proxy.core.rescrub` calls it to redact a recorded frame again.
    """
    if redactor.might_redact(raw):
        redacted = redact_frame(redactor, raw, parsed)
        if redacted is not None:
            msg, text, event["redacted"] = redacted
            if text is not None:
                event["raw"] = text
            if msg is not _ABSENT:
                event["msg"] = msg
            return orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)
    if parsed.exact:
        # The frame is exactly orjson.dumps(msg), so it is compact JSON on one line:
        # splice it in instead of serialising it again.
        head = orjson.dumps(event)
        event["msg"] = parsed.msg
        return b"".join((head[:-1], b',"msg":', raw, b"}\n"))
    event["raw"] = raw.decode()
    if parsed.has_msg:
        event["msg"] = parsed.msg
    return orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)


def redact_frame(
    redactor: Redactor, raw: bytes, parsed: Parsed
) -> tuple[Any, str | None, list[str]] | None:
    """Take the secrets out of a text frame: ``(msg, raw, pointers)`` for its event, or
    ``None`` when it holds none. Everything but the secrets is kept where the format can
    say it: ``msg`` of an exact frame, else the frame's text redacted in place. ``msg`` is
    ``_ABSENT`` for a frame that has none."""
    if parsed.has_msg:
        msg, pointers = redactor.redact_json(parsed.msg)
        if not pointers:
            return None
        if parsed.exact:
            return msg, None, pointers
        text, _ = redactor.redact_frame_text(raw.decode())
        try:  # keep the text if nothing is left in it (e.g. an escaped secret)
            again = orjson.loads(text)
            left = redactor.redact_json(again)[1]
        except orjson.JSONDecodeError:
            left = [""]
        return (again, text, pointers) if not left else (msg, None, pointers)
    text, changed = redactor.redact_frame_text(raw.decode())
    if parsed.type is not MessageType.INVALID or text.lstrip().startswith(("{", "[")):
        # JSON orjson cannot hold (lone surrogates, deep nesting): check that nothing is
        # left, in the redacted text or (if the text pass broke it) in the frame.
        try:
            for candidate in (text, raw.decode()):
                lenient = lenient_loads(candidate.encode())
                if lenient is NOT_JSON:
                    continue
                redacted, left = redactor.redact_json(lenient)
                if left:
                    text, changed = json.dumps(redacted, separators=(",", ":")), True
                break
        except RecursionError:  # deeper than Python walks: the text pass is all we do
            pass
    return (_ABSENT, text, [""]) if changed else None


def redact_binary(redactor: Redactor, data: bytes) -> tuple[bytes, list[str]] | None:
    """A binary frame whose payload is text (JSON or not) is redacted like a text frame:
    its new bytes and the pointers redacted, or ``None`` when it holds no secret (or is not
    UTF-8 text, which has no secret a redactor knows)."""
    if not redactor.might_redact(data):
        return None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    found = redact_frame(redactor, data, parse(data))
    if found is None:
        return None
    msg, text, pointers = found
    return (text.encode() if text is not None else orjson.dumps(msg)), pointers


def redact_fields(redactor: Redactor, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
    """The fields of an ``open``, ``close`` or ``error`` event with their secrets replaced
    (a new dict; the others are kept as they are). ``headers`` may be pairs or a dict (an
    already redacted one stays as it is: markers are never redacted again).

    - ``open``: ``path`` and ``upstream`` as free text, ``headers`` by name and value;
    - ``close``: ``reason``, and ``forwarded``'s ``reason`` (what was passed on), as free text;
    - ``error``: ``message``, and ``path`` and ``upstream`` when they are strings, as free
      text; ``headers`` (a dict or a list of pairs) by name and value.
    """
    out = dict(fields)
    for name in _TEXT_FIELDS[kind]:
        if isinstance(out.get(name), str):
            out[name] = redactor.redact_text(out[name])
    forwarded = out.get("forwarded")
    if kind == "close" and isinstance(forwarded, dict) and isinstance(forwarded.get("reason"), str):
        out["forwarded"] = {**forwarded, "reason": redactor.redact_text(forwarded["reason"])}
    if kind == "close" or "headers" not in out:
        return out
    headers = out["headers"]
    if isinstance(headers, dict):
        out["headers"] = redactor.redact_headers(headers.items())
    elif kind == "open" or isinstance(headers, list | tuple):
        out["headers"] = redactor.redact_headers(headers)
    return out


_TEXT_FIELDS: dict[str, tuple[str, ...]] = {
    "open": ("path", "upstream"),
    "close": ("reason",),
    "error": ("message", "path", "upstream"),
}
