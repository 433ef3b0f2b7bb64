"""Turns what the relay sees into cassette events, and appends them.

No sockets and no event loop: the relay calls these methods in the order frames are
forwarded, and each method writes its event before returning, so the relay can forward the
frame knowing its line is already in the file.
"""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson

from .cassette import CassetteWriter, Event
from .jsonrpc import Direction, MessageType, Pairing, Parsed, parse
from .redact import Redactor, marker


class Recorder:
    """Numbers events, pairs requests with responses, redacts, and writes.

    ``writer`` may be ``None`` to build events without a file (tests, dry runs). The clock is
    monotonic; ``t`` is seconds since the recorder was created.
    """

    def __init__(
        self,
        writer: CassetteWriter | None,
        redactor: Redactor | None = None,
        clock: Callable[[], float] = time.monotonic,
        *,
        after: Sequence[Event] = (),
    ) -> None:
        self.writer = writer
        self.redactor = redactor or Redactor()
        self._clock = clock
        # Continuing a cassette (``after`` its events): seq, conn and t carry on from them.
        self._start = clock() - max((float(e.get("t", 0.0)) for e in after), default=0.0)
        self._seq = max((e["seq"] for e in after), default=0)
        self._conns = max((e["conn"] for e in after), default=0)
        self._pairing: dict[int, Pairing] = {}
        self.frames: Counter[Direction] = Counter()
        """Frames recorded per direction."""
        self.open_connections = 0

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
        if self.writer is not None:
            self.writer.append(events)

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
        event = self._event(
            conn,
            "open",
            {
                "path": path,
                "headers": self.redactor.redact_headers(headers),
                "subprotocol": subprotocol,
                "upstream": upstream,
                "transport": transport,
                "client_transport": client_transport,
            },
        )
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
                event, line = self._text(conn, direction, payload)
            else:
                event = self._binary_event(conn, direction, payload)
                line = orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)
            events.append(event)
            lines.append(line)
        self._write_lines(b"".join(lines))
        return events

    def _write_lines(self, data: bytes) -> None:
        if self.writer is not None:
            self.writer.append_lines(data)

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
        fields: dict[str, Any] = {"dir": direction.value, "type": parsed.type.value}
        if parsed.method is not None:
            fields["method"] = parsed.method
        if response_to is not None:
            fields["response_to"] = response_to
        if extra:
            fields.update(extra)
            if "delivered" in extra and self.redactor.enabled:
                fields["delivered"] = self.redactor.redact_json(extra["delivered"])[0]
        self.frames[direction] += 1
        msg = parsed.msg
        if self.redactor.might_redact(raw):
            if parsed.has_msg:
                msg, pointers = self.redactor.redact_json(msg)
                if pointers:
                    fields["redacted"] = pointers
            else:
                text, pointers = self._redact_unrepresentable(raw.decode())
                if pointers:
                    fields["redacted"] = pointers
                    fields["raw"] = text
            if pointers:
                event = self._event(conn, "text", fields)
                if parsed.has_msg:
                    event["msg"] = msg
                return event, orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)
        if not parsed.exact:
            fields["raw"] = raw.decode()
        event = self._event(conn, "text", fields)
        if not parsed.has_msg:
            return event, orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)
        # The frame is exactly orjson.dumps(msg): splice it in instead of serialising twice.
        head = orjson.dumps(event)
        event["msg"] = msg
        return event, b"".join((head[:-1], b',"msg":', raw, b"}\n"))

    def write(self, lines: Sequence[bytes]) -> None:
        """Append lines built by :meth:`text_line` (and friends) in one write."""
        self._write_lines(b"".join(lines))

    def binary_line(self, conn: int, direction: Direction, data: bytes) -> tuple[Event, bytes]:
        """Build (not write) the event and line of a binary frame."""
        event = self._binary_event(conn, direction, data)
        return event, orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)

    def _redact_unrepresentable(self, data: str) -> tuple[str, list[str]]:
        """Redact a frame orjson cannot hold: re-serialised by the standard library if it is
        JSON at all, else replaced whole by a marker (pointer ``""``)."""
        try:
            lenient = json.loads(data)
        except ValueError:
            return marker(data), [""]
        redacted, pointers = self.redactor.redact_json(lenient)
        if not pointers:
            return data, []
        return json.dumps(redacted, separators=(",", ":")), pointers

    def binary(self, conn: int, direction: Direction, data: bytes) -> Event:
        """Record one binary frame (base64 in ``b64``); write it before returning."""
        event = self._binary_event(conn, direction, data)
        self._write([event])
        return event

    def _binary_event(self, conn: int, direction: Direction, data: bytes) -> Event:
        self.frames[direction] += 1
        b64 = base64.b64encode(data).decode("ascii")
        return self._event(conn, "binary", {"dir": direction.value, "b64": b64})

    def close(self, conn: int, *, by: str, code: int | None, reason: str, **extra: Any) -> Event:
        """Record the end of a connection: who closed it (client, server or proxy) and how."""
        if self._pairing.pop(conn, None) is not None:
            self.open_connections -= 1
        event = self._event(conn, "close", {"by": by, "code": code, "reason": reason, **extra})
        self._write([event])
        return event

    def error(self, conn: int, message: str, **fields: Any) -> Event:
        """Record something that went wrong on a connection (e.g. the upstream refused)."""
        event = self._event(conn, "error", {"message": message, **fields})
        self._write([event])
        return event
