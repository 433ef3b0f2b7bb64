"""The cassette file format (v1): versioned, append-only JSON Lines.

The first line is a header ``{"rpctape": 1, ...}``; every following line is one event. The
contract is written down in docs/cassette-format.md. This module only reads and writes lines;
:mod:`proxy.recorder` decides what goes in them.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from . import CASSETTE_FORMAT_VERSION, __version__
from .errors import CassetteError, CassetteNotFound, CassetteVersionError

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


class CassetteWriter:
    """Appends cassette lines to a file created with mode 0600.

    Each :meth:`append` is one ``write(2)`` of whole lines, so a process killed at any point
    leaves every earlier line intact and at most the last line torn. Nothing is buffered in
    this process: an event is in the operating system's hands when ``append`` returns.
    """

    def __init__(self, path: Path, header: Event, *, overwrite: bool = False) -> None:
        self.path = path
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if overwrite else os.O_EXCL)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._fd: int | None = os.open(path, flags, 0o600)
        except FileExistsError:
            raise CassetteError(
                f"{path} already exists; choose another path or pass --overwrite"
            ) from None
        os.fchmod(self._fd, 0o600)
        self.append([header])

    @classmethod
    def append_to(cls, path: Path) -> CassetteWriter:
        """Open an existing cassette to append events (no new header).

        A torn last line (a recorder killed mid-write) is cut off first, so appended lines
        never follow half a line; a whole last line missing its newline gets one.
        """
        writer = cls.__new__(cls)
        writer.path = path
        fd = os.open(path, os.O_RDWR | os.O_APPEND)
        try:
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):
                cut = data.rfind(b"\n") + 1
                try:
                    whole = isinstance(orjson.loads(data[cut:]), dict)
                except orjson.JSONDecodeError:
                    whole = False
                if whole:
                    os.write(fd, b"\n")
                else:
                    os.ftruncate(fd, cut)
        except BaseException:
            os.close(fd)
            raise
        writer._fd = fd
        return writer

    def append(self, events: Iterable[Event]) -> None:
        """Write ``events`` as lines, in one system call when possible."""
        self.append_lines(
            b"".join(orjson.dumps(e, option=orjson.OPT_APPEND_NEWLINE) for e in events)
        )

    def append_lines(self, data: bytes) -> None:
        """Write already serialised lines (each ending in ``\\n``) in one system call."""
        if self._fd is None:
            raise CassetteError(f"cassette {self.path} is closed")
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def close(self) -> None:
        """Flush to disk and close; safe to call twice."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


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
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise CassetteError(f"{source}:{number}: corrupt line ({exc})") from None
        _check_event(event, source, number)
        events.append(event)
    if torn_tail.strip():
        try:
            event = orjson.loads(torn_tail)
            _check_event(event, source, len(lines) + 1)
            events.append(event)
            warnings.append(f"{source}: last line has no newline (kept)")
        except (orjson.JSONDecodeError, CassetteError):
            warnings.append(
                f"{source}:{len(lines) + 1}: torn last line ({len(torn_tail)} bytes) ignored; "
                "the recorder was probably killed while writing it"
            )
    return _migrate(Cassette(path, header, events, warnings), source)


def _header(line: bytes, source: str) -> Event:
    try:
        header = orjson.loads(line)
    except orjson.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or not isinstance(header.get("rpctape"), int):
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


def _check_event(event: Any, source: str, number: int) -> None:
    if (
        not isinstance(event, dict)
        or not isinstance(event.get("seq"), int)
        or event.get("kind") not in EVENT_KINDS
        or not isinstance(event.get("conn"), int)
    ):
        raise CassetteError(
            f"{source}:{number}: not a cassette event (needs integer 'seq' and 'conn' "
            f"and a 'kind' among {sorted(EVENT_KINDS)})"
        )


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
