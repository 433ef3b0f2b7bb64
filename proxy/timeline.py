"""A readable timeline of a cassette, for ``rpctape show`` and the demo.

Pure formatting: events in, rows out. Rendering to a terminal is the CLI's job.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from .cassette import Cassette, Event, frame_of

ARROWS = {"c2s": ">", "s2c": "<"}


@dataclass(frozen=True)
class Row:
    """One line of the timeline."""

    t: float
    conn: int
    arrow: str
    kind: str
    what: str
    payload: str


def shorten(text: str, limit: int = 80) -> str:
    """Cut ``text`` to ``limit`` characters with an ellipsis, on one line."""
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe(event: Event, width: int = 80) -> Row:
    """The timeline row of one event."""
    kind = event["kind"]
    arrow = ARROWS.get(event.get("dir", ""), " ")
    what, payload = "", ""
    if kind == "text":
        kind = event.get("type", "text")
        if "response_to" in event:
            what = f"response to {event['response_to']}"
        else:
            what = event.get("method", "")
        payload = frame_of(event).decode(errors="replace")
        if event.get("redacted"):
            what = f"{what} (redacted)".strip()
    elif kind == "binary":
        size = len(base64.b64decode(event["b64"]))
        what, payload = f"{size} bytes", event["b64"]
    elif kind == "open":
        client, upstream = event.get("client_transport", "websocket"), event.get("transport")
        what = f"{client} {event.get('path', '')} -> {upstream} {event.get('upstream', '')}"
        payload = orjson.dumps(event.get("headers", {})).decode()
    elif kind == "close":
        what = f"by {event.get('by')} {event.get('code')}"
        if "exit_code" in event:
            what += f", exit code {event['exit_code']}"
        payload = event.get("reason", "")
    elif kind == "error":
        what = event.get("stage", "")
        payload = event.get("message", "")
    return Row(event["t"], event["conn"], arrow, kind, what, shorten(payload, width))


def format_row(row: Row) -> str:
    """One fixed-width line: time, connection, arrow, kind, method, payload."""
    what = shorten(row.what, 40)
    return f"{row.t:9.3f} {row.conn:>3} {row.arrow} {row.kind:<12} {what:<40} {row.payload}"


def render(events: Iterable[Event], width: int = 160) -> list[str]:
    """The timeline lines of ``events``, each cut to about ``width`` characters."""
    payload_width = max(20, width - 70)
    return [format_row(describe(event, payload_width)) for event in events]


def select(
    events: Iterable[Event], conn: int | None = None, method: str | None = None
) -> list[Event]:
    """Events of one connection and/or one method (requests, notifications, or responses to it)."""
    return [
        e
        for e in events
        if (conn is None or e["conn"] == conn)
        and (method is None or method in (e.get("method"), e.get("response_to")))
    ]


def summary(cassette: Cassette) -> str:
    """One line: connections, frames each way, warnings."""
    dirs = Counter(e.get("dir") for e in cassette.frames())
    line = (
        f"{len(cassette.connections())} connection(s), {dirs['c2s']} frame(s) client>server, "
        f"{dirs['s2c']} frame(s) server>client"
    )
    if cassette.warnings:
        line += f", {len(cassette.warnings)} warning(s)"
    return line
