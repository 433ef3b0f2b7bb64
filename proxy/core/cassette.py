"""The cassette file format (v1): versioned, append-only JSON Lines.

The first line is a header ``{"rpctape": 1, ...}``; every following line is one event. The
contract is written down in docs/cassette-format.md. This module only reads and writes lines;
:mod:`proxy.core.recorder` decides what goes in them.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from ..errors import CassetteError, CassetteNotFound, CassetteVersionError
from ..version import CASSETTE_FORMAT_VERSION, __version__
from .jsonrpc import parse

Event = dict[str, Any]

EVENT_KINDS = frozenset({"open", "text", "binary", "close", "error"})

# Step-by-step migrations: MIGRATIONS[n] turns a version-n (header, events) into version n+1.
# There is no version before 1 yet; the table is where the next format change goes.
MIGRATIONS: dict[int, Callable[[Event, list[Event]], tuple[Event, list[Event]]]] = {}


def new_header(
    upstream: str, *, transport: str = "websocket", meta: dict[str, Any] | None = None
) -> Event:
    """The first line of a new cassette."""
    return {
        "rpctape": CASSETTE_FORMAT_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "tool": f"rpctape {__version__}",
        "upstream": upstream,
        "transport": transport,
        "meta": meta or {},
    }


def frame_of(event: Event) -> bytes:
    """The exact bytes of a ``text`` or ``binary`` event's frame.

    The rule of docs/cassette-format.md: ``raw`` if present, else ``orjson.dumps(msg)``;
    binary frames are ``b64``. A redacted frame reconstructs with the markers in place.
    """
    kind = event.get("kind")
    if kind == "binary":
        return base64.b64decode(event["b64"])
    if kind != "text":
        raise CassetteError(f"event {event.get('seq')} is a {kind!r} event, not a frame")
    raw = event.get("raw")
    if raw is not None:
        return str(raw).encode()
    if "msg" not in event:
        raise CassetteError(f"text event {event.get('seq')} has neither 'raw' nor 'msg'")
    return orjson.dumps(event["msg"])


def event_lines(events: Iterable[Event]) -> bytes:
    """``events`` as cassette lines: compact JSON, one per line, each ending in ``\\n``."""
    return b"".join(orjson.dumps(e, option=orjson.OPT_APPEND_NEWLINE) for e in events)


@dataclass
class Cassette:
    """A loaded cassette: its header, its events in file order, and what the reader noticed."""

    path: Path | None
    header: Event
    events: list[Event]
    warnings: list[str] = field(default_factory=list)
    original_version: int = CASSETTE_FORMAT_VERSION
    """The format version the file was written in, before migration."""

    def connections(self) -> list[int]:
        """Connection ids in order of first appearance."""
        seen: dict[int, None] = {}
        for event in self.events:
            seen.setdefault(event["conn"], None)
        return list(seen)

    def frames(self, conn: int | None = None) -> list[Event]:
        """The ``text`` and ``binary`` events, optionally of one connection."""
        return [
            e
            for e in self.events
            if e["kind"] in ("text", "binary") and (conn is None or e["conn"] == conn)
        ]


def load(path: Path | str) -> Cassette:
    """Read a cassette file; see :func:`parse_lines` for what is checked."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CassetteNotFound(f"no cassette at {path}") from None
    except IsADirectoryError:
        raise CassetteError(f"{path} is a directory, not a cassette file") from None
    except OSError as exc:
        raise CassetteError(f"cannot read cassette {path}: {exc.strerror or exc}") from None
    return parse_lines(data, source=str(path), path=path)


def parse_lines(data: bytes, *, source: str = "<cassette>", path: Path | None = None) -> Cassette:
    """Parse cassette bytes, migrating old versions and tolerating a torn last line.

    Raises :class:`CassetteError` for a file that is not a cassette or has a corrupt line in
    the middle, :class:`CassetteVersionError` for a newer format than this rpctape reads.
    """
    lines = data.split(b"\n")
    torn_tail = lines.pop() if lines else b""  # text after the last newline: torn or empty
    if not lines and not torn_tail:
        raise CassetteError(f"{source} is empty, not an rpctape cassette")
    if not lines:
        lines, torn_tail = [torn_tail], b""
    header = _header(lines[0], source)
    warnings: list[str] = []
    events: list[Event] = []
    last_t = 0.0
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise CassetteError(f"{source}:{number}: corrupt line ({exc})") from None
        checked = _check_event(event, line, f"{source}:{number}", warnings, last_t)
        if checked is not None:
            events.append(checked)
            last_t = checked["t"]
    if torn_tail.strip():
        where = f"{source}:{len(lines) + 1}"
        try:
            event = orjson.loads(torn_tail)
            tail_warnings: list[str] = []
            checked = _check_event(event, torn_tail, where, tail_warnings, last_t)
        except (orjson.JSONDecodeError, CassetteError):
            warnings.append(
                f"{where}: torn last line ({len(torn_tail)} bytes) ignored; "
                "the recorder was probably killed while writing it"
            )
        else:
            warnings += tail_warnings
            if checked is not None:
                events.append(checked)
            warnings.append(f"{source}: last line has no newline (kept)")
    return _migrate(Cassette(path, header, events, warnings), source)


def _header(line: bytes, source: str) -> Event:
    try:
        header = orjson.loads(line)
    except orjson.JSONDecodeError:
        header = None
    if (
        not isinstance(header, dict)
        or not isinstance(header.get("rpctape"), int)
        or isinstance(header["rpctape"], bool)
    ):
        raise CassetteError(
            f"{source} is not an rpctape cassette: its first line is not a header "
            'with an integer "rpctape" format version'
        )
    version = header["rpctape"]
    if version > CASSETTE_FORMAT_VERSION:
        raise CassetteVersionError(
            f"{source} uses cassette format {version}, but this rpctape ({__version__}) reads "
            f"formats up to {CASSETTE_FORMAT_VERSION}: upgrade rpctape"
        )
    if version < 1:
        raise CassetteError(f"{source} has an invalid format version {version}")
    return header


DIRECTIONS = frozenset({"c2s", "s2c"})
MESSAGE_TYPES = frozenset({"request", "notification", "response", "error", "batch", "invalid"})
_DEEP = 240
"""A line with more brackets than this is checked for nesting orjson cannot write back."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_optional_str(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _is_optional_int(value: Any) -> bool:
    return value is None or _is_int(value)


def _is_headers(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def _is_forwarded(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and _is_int(value.get("code", 1000))
        and isinstance(value.get("reason", ""), str)
    )


def _is_pointers(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(p, str) for p in value)


# Optional fields per kind: (check, what a bad value is replaced by, or _DROP to remove it).
_DROP = object()
_FIELDS: dict[str, dict[str, tuple[Callable[[Any], bool], Any]]] = {
    "open": {
        "path": (_is_str, ""),
        "headers": (_is_headers, {}),
        "subprotocol": (_is_optional_str, None),
        "upstream": (_is_str, ""),
        "transport": (_is_str, _DROP),
        "client_transport": (_is_str, _DROP),
    },
    "text": {
        "method": (_is_str, _DROP),
        "response_to": (_is_str, _DROP),
        "redacted": (_is_pointers, _DROP),
        "forwarded": (lambda v: isinstance(v, bool), _DROP),
        "origin": (_is_str, _DROP),
    },
    "binary": {
        "origin": (_is_str, _DROP),
        "forwarded": (lambda v: isinstance(v, bool), _DROP),
        "redacted": (_is_pointers, _DROP),
    },
    "close": {
        "by": (_is_str, _DROP),
        "leg": (_is_str, _DROP),
        "code": (_is_optional_int, None),
        "reason": (_is_str, ""),
        "forwarded": (_is_forwarded, _DROP),
        "exit_code": (_is_int, _DROP),
    },
    "error": {
        "message": (_is_str, ""),
        "stage": (_is_str, _DROP),
        "leg": (_is_str, _DROP),
        "path": (_is_str, _DROP),
        "upstream": (_is_str, _DROP),
        "headers": (_is_headers, _DROP),
    },
}


def _check_event(
    event: Any, line: bytes, where: str, warnings: list[str], last_t: float
) -> Event | None:
    """Validate one event so that code reading it can trust every documented field's type.

    Raises :class:`CassetteError` (``file:line: ...``) for a line that is not an event or a
    frame that cannot be rebuilt; appends a warning and returns ``None`` for an event it can
    skip (an unknown kind); repairs, with a warning, optional fields of the wrong type.
    """
    if (
        not isinstance(event, dict)
        or not _is_int(event.get("seq"))
        or not _is_int(event.get("conn"))
        or not isinstance(event.get("kind"), str)
    ):
        raise CassetteError(
            f"{where}: not a cassette event (needs integer 'seq' and 'conn' "
            f"and a 'kind' among {sorted(EVENT_KINDS)})"
        )
    kind = event["kind"]
    if kind not in EVENT_KINDS:
        warnings.append(f"{where}: unknown event kind {kind!r} skipped")
        return None
    if line.count(b"[") + line.count(b"{") > _DEEP:
        try:
            orjson.dumps([[event]])
        except orjson.JSONEncodeError:
            raise CassetteError(
                f"{where}: {kind} event nests too deep to be written back (orjson's limit)"
            ) from None
    t = event.get("t")
    if not isinstance(t, int | float) or isinstance(t, bool) or not math.isfinite(t):
        warnings.append(f"{where}: {kind} event has no valid 't' (using {last_t})")
        event["t"] = last_t
    if kind in ("text", "binary"):
        _check_frame(event, where, warnings)
    elif "dir" in event:  # only frames have a direction
        warnings.append(f"{where}: {kind} event has an invalid 'dir' (ignored)")
        del event["dir"]
    for name, (valid, default) in _FIELDS[kind].items():
        if name in event and not valid(event[name]):
            warnings.append(f"{where}: {kind} event has an invalid {name!r} (ignored)")
            if default is _DROP:
                del event[name]
            else:
                event[name] = default
    return event


def _check_frame(event: Event, where: str, warnings: list[str]) -> None:
    """A frame event must say its direction and rebuild exactly; else the cassette is corrupt."""
    kind = event["kind"]
    if not isinstance(event.get("dir"), str) or event["dir"] not in DIRECTIONS:
        raise CassetteError(f'{where}: {kind} event needs \'dir\' "c2s" or "s2c"')
    if kind == "binary":
        b64 = event.get("b64")
        try:
            if not isinstance(b64, str):
                raise ValueError("not a string")
            base64.b64decode(b64, validate=True)
        except (ValueError, binascii.Error) as exc:
            raise CassetteError(
                f"{where}: binary event has no valid base64 'b64' ({exc})"
            ) from None
        return
    if "raw" in event and not isinstance(event["raw"], str):
        raise CassetteError(f"{where}: text event's 'raw' is not a string")
    if "raw" not in event and "msg" not in event:
        raise CassetteError(f"{where}: text event has neither 'raw' nor 'msg'")
    if "delivered" in event:
        try:
            orjson.dumps(event["delivered"])
        except orjson.JSONEncodeError:
            raise CassetteError(
                f"{where}: text event's 'delivered' cannot be written back"
            ) from None
    if "type" in event and (
        not isinstance(event["type"], str) or event["type"] not in MESSAGE_TYPES
    ):
        derived = parse(frame_of(event)).type.value
        warnings.append(f"{where}: text event has an invalid 'type' (derived: {derived})")
        event["type"] = derived


def _migrate(cassette: Cassette, source: str) -> Cassette:
    version = cassette.original_version = cassette.header["rpctape"]
    header, events = cassette.header, cassette.events
    while version < CASSETTE_FORMAT_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise CassetteError(f"{source}: no migration from cassette format {version}")
        header, events = step(header, events)
        version += 1
        header = {**header, "rpctape": version}
    cassette.header, cassette.events = header, events
    return cassette
