"""``rpctape report``: a cassette as one self-contained HTML page (a sequence diagram).

:func:`rows` turns events into plain rows (lanes, request/response links, latencies, what
rules did); :func:`render_html` puts them as JSON into the page template
(``report_assets/report.html``, CSS and JavaScript inline: the page never touches the
network). The JavaScript draws only the rows in view, so a 10,000-frame cassette stays fast.
"""

from __future__ import annotations

import html
import re
from importlib import resources
from typing import Any

import orjson

from .cassette import Cassette, Event, frame_of
from .jsonrpc import id_key
from .timeline import effects

Row = dict[str, Any]


def _text(event: Event) -> str:
    try:
        return frame_of(event).decode(errors="replace")
    except Exception:  # a frame the reader cannot rebuild still gets a row
        return ""


def _lanes(event: Event) -> tuple[str, str]:
    """Where the arrow starts and ends: ``client``, ``rpctape`` or ``server``."""
    direction = event.get("dir")
    src, dst = ("client", "server") if direction == "c2s" else ("server", "client")
    if event.get("origin") == "rpctape":
        src = "rpctape"  # rpctape's own reply or injection, in the direction it travelled
    if event.get("forwarded") is False or event.get("hidden"):
        dst = "rpctape"  # stopped at rpctape: dropped, answered locally, a hidden answer
    return src, dst


def _row(event: Event) -> Row:
    kind = event["kind"]
    row: Row = {"seq": event["seq"], "t": event.get("t", 0.0), "conn": event["conn"], "kind": kind}
    if kind in ("text", "binary"):
        src, dst = _lanes(event)
        row.update(dir=event["dir"], src=src, dst=dst, type=event.get("type", kind))
        row["label"] = event.get("method") or (
            f"↩ {event['response_to']}" if event.get("response_to") else event.get("type", kind)
        )
        row["method"] = event.get("method") or event.get("response_to") or ""
        row["json"] = _text(event) if kind == "text" else event.get("b64", "")
        if kind == "binary":
            row["label"] = "binary frame"
        if "delivered" in event:
            row["delivered"] = orjson.dumps(event["delivered"]).decode()
        if event.get("redacted"):
            row["redacted"] = True
        row["effects"] = effects(event)
        row["server_request"] = event.get("type") == "request" and event["dir"] == "s2c"
        row["error"] = event.get("type") == "error"
    elif kind == "open":
        row["label"] = f"open {event.get('path', '')} → {event.get('upstream', '')}"
        row["json"] = orjson.dumps(event).decode()
    elif kind == "close":
        row["label"] = (
            f"close by {event.get('by')} {event.get('code')} {event.get('reason', '')}".strip()
        )
        if "exit_code" in event:
            row["label"] += f" (exit code {event['exit_code']})"
        row["json"] = orjson.dumps(event).decode()
    else:
        row["label"] = f"error: {event.get('message', '')}"
        row["error"] = True
        row["json"] = orjson.dumps(event).decode()
    return row


def rows(events: list[Event]) -> list[Row]:
    """One row per event, requests linked to their responses (``pair``) with ``latency_ms``.

    Pairing is per connection: a request going one way is answered by the first later
    response or error with the same id going the other way.
    """
    out = [_row(e) for e in events]
    pending: dict[tuple[int, str, str], int] = {}
    for index, event in enumerate(events):
        msg = event.get("msg")
        if event["kind"] != "text" or not isinstance(msg, dict) or "id" not in msg:
            continue
        key = id_key(msg["id"])
        kind = event.get("type")
        if kind == "request":
            pending[(event["conn"], event["dir"], key)] = index
        elif kind in ("response", "error"):
            other = "s2c" if event["dir"] == "c2s" else "c2s"
            start = pending.pop((event["conn"], other, key), None)
            if start is not None:
                latency = round((event["t"] - events[start]["t"]) * 1000, 3)
                out[start].update(pair=event["seq"], latency_ms=latency)
                out[index].update(pair=events[start]["seq"], latency_ms=latency)
    return out


def _embed(data: Any) -> str:
    """JSON safe inside ``<script>``: no ``<``, ``>``, ``&`` or line separators left raw."""
    text = orjson.dumps(data).decode()
    for char, escape in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escape)
    return text


def template() -> str:
    """The page template shipped in the package."""
    return resources.files(__package__).joinpath("report_assets/report.html").read_text("utf-8")


def render_html(cassette: Cassette, title: str) -> str:
    """The whole page for ``cassette``."""
    header = cassette.header
    info = {
        "title": title,
        "upstream": header.get("upstream"),
        "transport": header.get("transport", "websocket"),
        "created": header.get("created"),
        "tool": header.get("tool"),
        "warnings": cassette.warnings,
    }
    values = {
        "TITLE": html.escape(title),
        "INFO": _embed(info),
        "ROWS": _embed(rows(cassette.events)),
    }
    return re.sub(r"\{\{(TITLE|INFO|ROWS)\}\}", lambda m: values[m.group(1)], template())


CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
"""How the browser tests and scripts/report_screenshot.py open a report in Debian's chromium
(headless, as root, with no background traffic to hosts a closed network cannot reach)."""
