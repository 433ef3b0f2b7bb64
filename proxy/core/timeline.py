"""A readable timeline of a cassette, for ``rpctape show`` and the demo.

Pure formatting: events in, rows out. Rendering to a terminal is the CLI's job.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from .cassette import Cassette, Event, frame_of
from .dialect import VERSION_FIELD, RecordedVersion

if TYPE_CHECKING:
    from rich.text import Text

HEADER_LINE = b'{"rpctape":1}\n'
"""A minimal header, to check an appended line with the cassette reader's own rules."""

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


def header_lines(header: Event, version: RecordedVersion | None) -> list[str]:
    """``rpctape show --header``: each header field as ``name: value`` (strings as they
    are, other values as compact JSON), then, when the header has no ``codex`` field, the
    version read elsewhere (``codex: 0.169.0 (meta)``, ``codex: unknown``)."""
    lines = [
        f"{name}: {value if isinstance(value, str) else orjson.dumps(value).decode()}"
        for name, value in header.items()
    ]
    if VERSION_FIELD not in header:
        lines.append(f"{VERSION_FIELD}: {'unknown' if version is None else version.describe()}")
    return lines


def header_json(header: Event, version: RecordedVersion | None) -> dict[str, Any]:
    """``rpctape show --header --json``: the header as written, and the version with where
    it was read (``null`` when unknown)."""
    return {
        "header": header,
        VERSION_FIELD: None if version is None else version.version,
        f"{VERSION_FIELD}_from": None if version is None else version.source.value,
    }


# -- what rules did, colour, and following a recording ------------------------------------------

RULE_EFFECTS = {
    "patch": "patched",
    "reply": "replied",
    "drop": "dropped",
    "inject": "injected",
    "delay": "delayed",
    "close": "closed",
    "error": "fault: error instead",
    "disconnect": "fault: disconnected",
    "garbage": "fault: garbage instead",
    "stall": "fault: stalled",
}
"""Rule action (docs/rules.md; a fault's kind, docs/replay.md "Faults") -> what the
timeline and the report say it did."""


def effects(event: Event) -> list[str]:
    """What rules and rpctape did to a frame, from its ``rules``, ``origin``, ``hidden``,
    ``forwarded``, ``delivered`` and ``delay_ms`` fields (docs/rules.md)."""
    done = [
        RULE_EFFECTS.get(str(r.get("action")), str(r.get("action")))
        for r in event.get("rules") or ()
        if isinstance(r, dict)
    ]
    if event.get("origin") == "rpctape":
        done.append("sent by rpctape" + (f" ({event['rule']})" if event.get("rule") else ""))
    if event.get("hidden"):
        done.append("hidden")
    if event.get("forwarded") is False and not done:  # no rule or hiding explains it
        done.append("not forwarded")
    if "delivered" in event and "patched" not in done:
        done.append("patched")
    if event.get("delay_ms"):
        done.append(f"held {event['delay_ms']} ms")
    return list(dict.fromkeys(done))


KIND_STYLES = {
    "request": "bold",
    "error": "bold red",
    "open": "dim",
    "close": "dim",
    "binary": "magenta",
    "invalid": "red",
}


def styled(row: Row, event: Event | None = None) -> Text:
    """:func:`format_row` in colour: arrows by direction, server requests yellow, errors red,
    what rules did in magenta brackets. Plain text when printed where colour is off."""
    from rich.text import Text  # only where a timeline is printed in colour (~20 ms)

    text = Text()
    text.append(f"{row.t:9.3f} {row.conn:>3} ", style="dim")
    text.append(row.arrow, style="cyan" if row.arrow == ">" else "green")
    server_request = row.kind == "request" and row.arrow == "<"
    style = "yellow" if server_request else KIND_STYLES.get(row.kind, "")
    text.append(f" {row.kind:<12} ", style=style)
    text.append(f"{shorten(row.what, 40):<40}", style=style)
    if event is not None and (done := effects(event)):
        text.append(f" [{', '.join(done)}]", style="magenta")
    text.append(f" {row.payload}")
    return text

