"""The hook through which a protocol's own conventions reach the protocol-neutral core.

Pure code. The replay core knows JSON-RPC, not codex. Where a replay does better by knowing
the protocol (which client a connection is; how to end a conversation the recording cannot
go on with), it asks its :class:`Dialect`. :data:`NEUTRAL` knows nothing; codex's own is
``proxy.codex.dialect.CODEX``, which every door of rpctape passes in.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .cassette import Cassette, Event
from .matching import Frame


class Dialect:
    """A protocol's conventions, as the replay core asks for them (subclass and override)."""

    name = "neutral"

    def client_name(self, frame: Frame | None) -> Any:
        """The name a client gives itself in ``frame`` (its first message), or ``None``.

        Called when a live connection is paired with a recording: the same name is preferred
        even when matching ignores it."""
        return None

    def failed_turn(self, pending: Iterable[Event], message: str) -> bytes | None:
        """The frame that tells the client its work in flight failed with ``message``, made
        from ``pending`` (the recorded server events not sent yet, in order), or ``None``.

        Sent before the replay closes a conversation the recording cannot go on with, so a
        client that hides close reasons still shows ``message``."""
        return None

    def server_version(self, events: Iterable[Event]) -> str | None:
        """The version the recorded server gave of itself in ``events``, or ``None``.

        Read when a cassette's header does not say which server made it
        (:func:`recorded_version`)."""
        return None


NEUTRAL = Dialect()
"""The dialect that knows no protocol: no client names, no failed turns, no versions."""


class VersionSource(enum.Enum):
    """Where :func:`recorded_version` found a cassette's server version."""

    HEADER = "header"
    """The header's ``codex`` field (written when the recording was committed)."""
    META = "meta"
    """The header's ``meta.codex`` (what ``scripts/record_cassettes.py`` wrote)."""
    RECORDING = "recording"
    """What the recorded server said (for codex: ``initialize``'s ``userAgent``)."""


@dataclass(frozen=True, slots=True)
class RecordedVersion:
    """A cassette's server version and where it was read."""

    version: str
    source: VersionSource

    def describe(self) -> str:
        """``0.169.0 (header)``, as ``rpctape show --header`` and verify's summary print it."""
        return f"{self.version} ({self.source.value})"


VERSION_FIELD = "codex"
"""The header field holding the version of the server a cassette was recorded from."""


def recorded_version(tape: Cassette, dialect: Dialect = NEUTRAL) -> RecordedVersion | None:
    """Which server version recorded ``tape``: the header's ``codex`` field, else its
    ``meta.codex``, else what the recorded server said (``dialect.server_version``)."""
    header = tape.header.get(VERSION_FIELD)
    if isinstance(header, str) and header:
        return RecordedVersion(header, VersionSource.HEADER)
    meta = tape.header.get("meta")
    if isinstance(meta, dict) and isinstance(meta.get(VERSION_FIELD), str) and meta[VERSION_FIELD]:
        return RecordedVersion(meta[VERSION_FIELD], VersionSource.META)
    said = dialect.server_version(tape.events)
    return None if said is None else RecordedVersion(said, VersionSource.RECORDING)


def stale_version(
    tape: Cassette, pinned: str, dialect: Dialect = NEUTRAL
) -> RecordedVersion | None:
    """The version ``tape`` was recorded with when it is not ``pinned`` (the version a
    project is pinned to), else ``None``. A cassette that names no version is not stale:
    nothing says it differs."""
    found = recorded_version(tape, dialect)
    return found if found is not None and found.version != pinned else None


def describe_stale(cassette: str, found: RecordedVersion, pinned: str) -> str:
    """One line naming a stale cassette, the version it was recorded with and the pinned
    one."""
    return (
        f"{cassette} was recorded with codex {found.describe()}, not {pinned} (the pinned "
        "version): re-record it (rpctape verify --update) or pin the version it was made with"
    )
