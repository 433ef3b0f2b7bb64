"""The cassette file format (v1): versioned, append-only JSON Lines.

The first line is a header ``{"rpctape": 1, ...}``; every following line is one event. The
contract is written down in docs/cassette-format.md. This module only reads and writes lines;
:mod:`proxy.core.recorder` decides what goes in them.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable, Iterable, Iterator
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


class Cassette:
    """A loaded cassette: its header, its events in file order, and what the reader noticed.

    A cassette read from a file keeps each checked line as its bytes, not as the parsed event
    (a parsed event takes ten to twenty times its line's memory): :attr:`events` parses them
    all on first use, :meth:`entries` one at a time without keeping them (what a replay's
    preparation reads).
    """

    __slots__ = ("_events", "_lines", "header", "original_version", "path", "warnings")

    def __init__(
        self,
        path: Path | None,
        header: Event,
        events: list[Event] | None = None,
        warnings: list[str] | None = None,
        original_version: int = CASSETTE_FORMAT_VERSION,
        *,
        lines: list[bytes | Event] | None = None,
    ) -> None:
        self.path = path
        self.header = header
        self.warnings: list[str] = [] if warnings is None else warnings
        self.original_version = original_version
        """The format version the file was written in, before migration."""
        self._events = events if events is not None or lines is not None else []
        self._lines = lines if events is None else None

    def __repr__(self) -> str:
        count = len(self._events if self._events is not None else self._lines or ())
        return f"Cassette(path={self.path!r}, {count} event(s))"

    @property
    def events(self) -> list[Event]:
        """Every event, in file order (parsed from the kept lines on first use, then kept)."""
        if self._events is None:
            lines = self._lines or ()
            self._events = [
                orjson.loads(line) if isinstance(line, bytes) else line for line in lines
            ]
            self._lines = None
        return self._events

    @events.setter
    def events(self, events: list[Event]) -> None:
        self._events, self._lines = events, None

    def entries(self) -> Iterator[tuple[bytes | None, Event]]:
        """Each event with its line: ``(line, event)`` where the event is exactly
        ``orjson.loads(line)`` (not kept: parse the line again for it), ``(None, event)``
        for an event held as parsed (repaired when read, or built in code)."""
        if self._lines is None:
            for event in self.events:
                yield None, event
            return
        loads = orjson.loads
        for line in self._lines:
            if isinstance(line, bytes):
                yield line, loads(line)
            else:
                yield None, line

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
    # Each checked line is kept as its bytes (the event is orjson.loads of it, parsed again
    # where needed); an event the check repaired (it always says so in a warning) is kept as
    # the repaired dict.
    kept: list[bytes | Event] = []
    keep = kept.append
    loads = orjson.loads
    last_t = 0.0
    for number, line in enumerate(lines[1:], start=2):
        try:
            event = loads(line)
        except orjson.JSONDecodeError as exc:
            if not line.strip():
                continue
            raise CassetteError(f"{source}:{number}: corrupt line ({exc})") from None
        seen = len(warnings)
        checked = _check_event(event, line, source, number, warnings, last_t)
        if checked is not None:
            keep(line if len(warnings) == seen else checked)
            last_t = checked["t"]
    if torn_tail.strip():
        where = f"{source}:{len(lines) + 1}"
        try:
            event = loads(torn_tail)
            tail_warnings: list[str] = []
            checked = _check_event(event, torn_tail, where, None, tail_warnings, last_t)
        except (orjson.JSONDecodeError, CassetteError):
            warnings.append(
                f"{where}: torn last line ({len(torn_tail)} bytes) ignored; "
                "the recorder was probably killed while writing it"
            )
        else:
            warnings += tail_warnings
            if checked is not None:
                kept.append(torn_tail if not tail_warnings else checked)
            warnings.append(f"{source}: last line has no newline (kept)")
    return _migrate(Cassette(path, header, None, warnings, lines=kept), source)


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
    event: Any, line: bytes, source: str, number: int | None, warnings: list[str], last_t: float
) -> Event | None:
    """Validate one event so that code reading it can trust every documented field's type.

    Raises :class:`CassetteError` (``file:line: ...``) for a line that is not an event or a
    frame that cannot be rebuilt; appends a warning and returns ``None`` for an event it can
    skip (an unknown kind); repairs, with a warning, optional fields of the wrong type.

    Runs once per line of every cassette read: the usual case (``int``, ``float`` and
    ``str`` as orjson reads them) is decided with exact type checks before the general ones,
    and the place (``source:number``, or ``source`` alone) is written only into a message.
    """
    if type(event) is not dict:
        raise CassetteError(_NOT_AN_EVENT.format(_at(source, number)))
    seq, conn, kind = event.get("seq"), event.get("conn"), event.get("kind")
    if not (
        (type(seq) is int or _is_int(seq))
        and (type(conn) is int or _is_int(conn))
        and isinstance(kind, str)
    ):
        raise CassetteError(_NOT_AN_EVENT.format(_at(source, number)))
    fields = _FIELDS.get(kind)
    if fields is None:
        warnings.append(f"{_at(source, number)}: unknown event kind {kind!r} skipped")
        return None
    if len(line) > _DEEP and line.count(b"[") + line.count(b"{") > _DEEP:
        try:
            orjson.dumps([[event]])
        except orjson.JSONEncodeError:
            raise CassetteError(
                f"{_at(source, number)}: {kind} event nests too deep to be written back "
                "(orjson's limit)"
            ) from None
    t = event.get("t")
    if (not (type(t) is float or type(t) is int) or not math.isfinite(t)) and (
        not isinstance(t, int | float) or isinstance(t, bool) or not math.isfinite(t)
    ):
        warnings.append(f"{_at(source, number)}: {kind} event has no valid 't' (using {last_t})")
        event["t"] = last_t
    if kind == "text" or kind == "binary":
        _check_frame(event, kind, source, number, warnings)
    elif "dir" in event:  # only frames have a direction
        warnings.append(f"{_at(source, number)}: {kind} event has an invalid 'dir' (ignored)")
        del event["dir"]
    for name in fields:
        if name in event:
            valid, default = fields[name]
            if not valid(event[name]):
                where = _at(source, number)
                warnings.append(f"{where}: {kind} event has an invalid {name!r} (ignored)")
                if default is _DROP:
                    del event[name]
                else:
                    event[name] = default
    return event


def _at(source: str, number: int | None) -> str:
    """``source:number`` (or ``source``) for a message about a line."""
    return source if number is None else f"{source}:{number}"


_NOT_AN_EVENT = (
    "{}: not a cassette event (needs integer 'seq' and 'conn' "
    f"and a 'kind' among {sorted(EVENT_KINDS)})"
)


def _check_frame(
    event: Event, kind: str, source: str, number: int | None, warnings: list[str]
) -> None:
    """A frame event must say its direction and rebuild exactly; else the cassette is corrupt."""
    direction = event.get("dir")
    if direction != "c2s" and direction != "s2c":  # not "in DIRECTIONS": it may be unhashable
        raise CassetteError(f'{_at(source, number)}: {kind} event needs \'dir\' "c2s" or "s2c"')
    if kind == "binary":
        b64 = event.get("b64")
        try:
            if not isinstance(b64, str):
                raise ValueError("not a string")
            base64.b64decode(b64, validate=True)
        except (ValueError, binascii.Error) as exc:
            raise CassetteError(
                f"{_at(source, number)}: binary event has no valid base64 'b64' ({exc})"
            ) from None
        return
    if "raw" in event:
        if not isinstance(event["raw"], str):
            raise CassetteError(f"{_at(source, number)}: text event's 'raw' is not a string")
    elif "msg" not in event:
        raise CassetteError(f"{_at(source, number)}: text event has neither 'raw' nor 'msg'")
    if "delivered" in event:
        try:
            orjson.dumps(event["delivered"])
        except orjson.JSONEncodeError:
            raise CassetteError(
                f"{_at(source, number)}: text event's 'delivered' cannot be written back"
            ) from None
    mtype = event.get("type", _ABSENT)
    if mtype is not _ABSENT and (not isinstance(mtype, str) or mtype not in MESSAGE_TYPES):
        derived = parse(frame_of(event)).type.value
        where = _at(source, number)
        warnings.append(f"{where}: text event has an invalid 'type' (derived: {derived})")
        event["type"] = derived


_ABSENT = object()


def _migrate(cassette: Cassette, source: str) -> Cassette:
    version = cassette.original_version = cassette.header["rpctape"]
    if version >= CASSETTE_FORMAT_VERSION:
        return cassette  # the lines stay lines: nothing to migrate
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
