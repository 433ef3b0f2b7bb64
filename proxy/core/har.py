"""Cassettes to HAR 1.2 and back, with Chrome DevTools' websocket extension.

One HAR entry per connection: the upgrade request (headers as recorded, so after redaction),
a ``101`` response, ``_resourceType: "websocket"`` and ``_webSocketMessages``, each message
``{"type": "send"|"receive", "time": EPOCH_SECONDS, "opcode": 1|2, "data": ...}`` (binary
frames in base64). This is what DevTools writes when it saves a page with a websocket, so the
file opens there and in other HAR viewers, and a DevTools capture imports as a cassette.

Pure conversion: :func:`to_har` and :func:`from_har` take and return plain data; the only
side effect is :func:`import_har` writing through the writer its caller opens.
"""

from __future__ import annotations

import base64
import binascii
import heapq
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

from ..errors import RpctapeError
from ..version import __version__
from .cassette import Cassette, Event, frame_of, new_header
from .jsonrpc import Direction
from .recorder import LineSink, Recorder
from .redact import Redactor

HAR_VERSION = "1.2"
TEXT, BINARY = 1, 2
"""WebSocket opcodes (RFC 6455 section 5.2) as DevTools writes them."""
STDIO_NOTE = (
    "stdio session: the app-server spoke JSON Lines on stdin/stdout, not a websocket; each "
    "line is shown as one text message and the upgrade request and response are made up"
)


class HarError(RpctapeError, ValueError):
    """A HAR file that cannot be imported."""


def _epoch(header: Event) -> float:
    """When the recording started, as epoch seconds (the header's ``created``)."""
    try:
        return datetime.fromisoformat(str(header.get("created"))).timestamp()
    except ValueError:
        return 0.0


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def _headers(pairs: dict[str, Any]) -> list[dict[str, str]]:
    return [{"name": str(k), "value": str(v)} for k, v in pairs.items()]


def _url(open_event: Event | None, header: Event) -> str:
    upstream = str((open_event or header).get("upstream") or header.get("upstream") or "")
    if open_event is None or not upstream.startswith("ws"):
        return upstream
    parts = urlsplit(upstream)
    return f"{parts.scheme}://{parts.netloc}{open_event.get('path') or '/'}"


def _message(event: Event, start: float) -> dict[str, Any]:
    data = frame_of(event)
    binary = event["kind"] == "binary"
    return {
        "type": "send" if event["dir"] == Direction.C2S else "receive",
        "time": round(start + float(event["t"]), 6),
        "opcode": BINARY if binary else TEXT,
        "data": base64.b64encode(data).decode("ascii") if binary else data.decode(),
    }


def _entry(header: Event, conn: int, events: list[Event], start: float) -> dict[str, Any]:
    opened = next((e for e in events if e["kind"] == "open"), None)
    failed = next((e for e in events if e["kind"] == "error" and "status" in e), None)
    transport = (opened or {}).get("transport") or header.get("transport", "websocket")
    client = (opened or {}).get("client_transport", "websocket")
    first, last = float(events[0]["t"]), float(events[-1]["t"])
    request_headers = (opened or failed or {}).get("headers") or {}
    response_headers: dict[str, str] = {}
    status, status_text = 101, "Switching Protocols"
    if opened is not None:
        response_headers = {"Upgrade": "websocket", "Connection": "Upgrade"}
        if opened.get("subprotocol"):
            response_headers["Sec-WebSocket-Protocol"] = str(opened["subprotocol"])
    elif failed is not None:
        status, status_text = int(failed["status"]), str(failed.get("message", ""))
    notes = [f"rpctape connection {conn}"]
    if "stdio" in (transport, client):
        notes.append(STDIO_NOTE)
    for event in events:
        if event["kind"] == "close":
            notes.append(
                f"closed by {event.get('by')} ({event.get('code')} {event.get('reason', '')})"
            )
        elif event["kind"] == "error":
            notes.append(f"error: {event.get('message', '')}")
    return {
        "startedDateTime": _iso(start + first),
        "time": round((last - first) * 1000, 3),
        "request": {
            "method": "GET",
            "url": _url(opened or failed, header),
            "httpVersion": "HTTP/1.1",
            "cookies": [],
            "headers": _headers(request_headers),
            "queryString": [],
            "headersSize": -1,
            "bodySize": 0,
        },
        "response": {
            "status": status,
            "statusText": status_text,
            "httpVersion": "HTTP/1.1",
            "cookies": [],
            "headers": _headers(response_headers),
            "content": {"size": 0, "mimeType": "x-unknown"},
            "redirectURL": "",
            "headersSize": -1,
            "bodySize": 0,
        },
        "cache": {},
        "timings": {"blocked": -1, "dns": -1, "connect": -1, "send": 0, "wait": 0, "receive": 0},
        "comment": "; ".join(notes),
        "_resourceType": "websocket",
        "_webSocketMessages": [
            _message(e, start) for e in events if e["kind"] in ("text", "binary")
        ],
    }


def to_har(cassette: Cassette) -> dict[str, Any]:
    """The HAR document of a cassette: one websocket entry per connection, in order."""
    start = _epoch(cassette.header)
    by_conn: dict[int, list[Event]] = {}
    for event in cassette.events:
        by_conn.setdefault(event["conn"], []).append(event)
    entries = [_entry(cassette.header, c, evs, start) for c, evs in by_conn.items()]
    return {
        "log": {
            "version": HAR_VERSION,
            "creator": {"name": "rpctape", "version": __version__},
            "pages": [],
            "entries": entries,
            "comment": f"rpctape cassette, upstream {cassette.header.get('upstream')}",
        }
    }


# -- import ------------------------------------------------------------------------------------


def _websocket_entries(har: Any) -> list[dict[str, Any]]:
    try:
        entries = har["log"]["entries"]
    except (TypeError, KeyError):
        raise HarError("not a HAR file: no log.entries") from None
    if not isinstance(entries, list):
        raise HarError("not a HAR file: log.entries is not a list")
    found = [
        e
        for e in entries
        if isinstance(e, dict)
        and (e.get("_resourceType") == "websocket" or "_webSocketMessages" in e)
    ]
    if not found:
        raise HarError(
            "the HAR file has no websocket entry; in Chrome DevTools, open the Network panel "
            "before the page connects, then 'Save all as HAR with content'"
        )
    return found


def _frame(message: Any, where: str) -> tuple[Direction, bool, bytes]:
    """(direction, is_text, payload) of one ``_webSocketMessages`` item."""
    if not isinstance(message, dict) or message.get("type") not in ("send", "receive"):
        raise HarError(f"{where}: a websocket message needs type 'send' or 'receive'")
    direction = Direction.C2S if message["type"] == "send" else Direction.S2C
    data, opcode = message.get("data", ""), message.get("opcode", TEXT)
    if not isinstance(data, str) or opcode not in (TEXT, BINARY):
        raise HarError(f"{where}: a websocket message needs string data and opcode 1 or 2")
    if opcode == TEXT:
        try:
            return direction, True, data.encode()
        except UnicodeEncodeError:
            raise HarError(f"{where}: text message data is not valid Unicode") from None
    try:
        return direction, False, base64.b64decode(data, validate=True)
    except binascii.Error:
        raise HarError(f"{where}: binary message data is not base64") from None


def _entry_start(entry: dict[str, Any], fallback: float) -> float:
    try:
        return datetime.fromisoformat(str(entry.get("startedDateTime"))).timestamp()
    except ValueError:
        return fallback


Step = tuple[float, int, int, str, Any]
"""(time, entry, index, what, payload): one thing to record, in merge order."""


def _steps(index: int, entry: dict[str, Any]) -> Iterator[Step]:
    messages = entry.get("_webSocketMessages") or []
    if not isinstance(messages, list):
        raise HarError(f"entry {index}: _webSocketMessages is not a list")
    times = [float(m["time"]) for m in messages if isinstance(m, dict) and "time" in m]
    opened = _entry_start(entry, min(times, default=0.0))
    yield opened, index, -1, "open", entry
    last = opened
    for n, message in enumerate(messages):
        where = f"entry {index} message {n}"
        when = message.get("time", last) if isinstance(message, dict) else last
        last = max(last, float(when))
        yield last, index, n, "frame", _frame(message, where)
    yield last, index, len(messages), "close", None


def _open_fields(entry: dict[str, Any]) -> dict[str, Any]:
    request = entry.get("request") or {}
    url = str(request.get("url", ""))
    parts = urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    headers = [
        (str(h.get("name", "")), str(h.get("value", "")))
        for h in request.get("headers") or []
        if isinstance(h, dict) and not str(h.get("name", "")).startswith(":")
    ]
    protocols = [
        str(h.get("value"))
        for h in (entry.get("response") or {}).get("headers") or []
        if isinstance(h, dict) and str(h.get("name", "")).lower() == "sec-websocket-protocol"
    ]
    upstream = f"{parts.scheme}://{parts.netloc}/" if parts.netloc else url
    return {
        "path": path,
        "headers": headers,
        "subprotocol": protocols[0] if protocols else None,
        "upstream": upstream,
    }


class CassetteSink(LineSink, Protocol):
    """A new cassette's lines (:class:`proxy.wire.store.CassetteWriter`), closed once written."""

    def close(self) -> None: ...


def import_har(
    har: Any, redactor: Redactor, open_cassette: Callable[[Event], CassetteSink]
) -> Recorder:
    """Write a cassette from the websocket entries of a HAR document, through the writer
    ``open_cassette`` opens for its header (the caller's file; this module writes none).

    Connections are numbered in entry order; their messages are merged by time (each entry's
    own order kept) so the cassette reads like a recording of them. Returns the recorder
    (its counters say what was written).
    """
    entries = _websocket_entries(har)
    steps = list(heapq.merge(*(_steps(i, e) for i, e in enumerate(entries, start=1))))
    first = _open_fields(entries[0])
    now = [steps[0][0] if steps else 0.0]
    header = new_header(first["upstream"], meta={"imported_from": "har"})
    if steps:
        header["created"] = datetime.fromtimestamp(now[0], UTC).isoformat(timespec="seconds")
    writer = open_cassette(header)
    try:
        recorder = Recorder(writer, redactor, clock=lambda: now[0])
        conns: dict[int, int] = {}
        for when, index, _n, what, payload in steps:
            now[0] = when
            if what == "open":
                conns[index] = recorder.new_connection()
                recorder.open(conns[index], **_open_fields(payload))
            elif what == "frame":
                direction, is_text, data = payload
                if is_text:
                    recorder.text(conns[index], direction, data)
                else:
                    recorder.binary(conns[index], direction, data)
            else:
                recorder.close(
                    conns[index], by="client", code=1000, reason="imported from HAR", leg="client"
                )
    finally:
        writer.close()
    return recorder
