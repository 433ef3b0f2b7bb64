"""The modes of replay, as explicit enums validated at the edge.

Pure code. Every mode is parsed from the text a person typed (command line, pytest marker,
ini file) by :func:`parse_mode`; a typo fails with the list of valid values. See
docs/replay.md for what each mode does.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import TypeVar

from ..errors import UsageError


class RecordMode(enum.StrEnum):
    """When a cassette is recorded instead of replayed (the names and meanings of VCR.py)."""

    NONE = "none"
    """Replay only; a missing cassette is an error."""
    ONCE = "once"
    """Record through the upstream if the cassette does not exist, else replay only."""
    NEW_EPISODES = "new_episodes"
    """Replay connections that match a recorded one; record the others and append them."""
    ALL = "all"
    """Always record afresh; the old cassette is replaced when recording completes."""

    def records(self, cassette_exists: bool) -> bool:
        """Whether this mode may need the upstream for a cassette that does or does not exist."""
        return plan_for(self, cassette_exists) is not Plan.REPLAY


class Plan(enum.Enum):
    """What a session does, decided from the record mode and whether the cassette exists."""

    REPLAY = "replay"
    """Serve recorded connections only (``none``; ``once`` with a cassette)."""
    RECORD = "record"
    """Relay everything to the upstream and record a new cassette (``all``; ``once``)."""
    EPISODES = "episodes"
    """Replay what matches, relay and append the rest (``new_episodes``)."""


def plan_for(mode: RecordMode, cassette_exists: bool) -> Plan:
    """The record-mode table, once for every door: the plan for ``mode`` given whether the
    cassette file exists."""
    if mode is RecordMode.NEW_EPISODES:
        return Plan.EPISODES
    if mode is RecordMode.ALL or (mode is RecordMode.ONCE and not cassette_exists):
        return Plan.RECORD
    return Plan.REPLAY


class OnMiss(enum.StrEnum):
    """What a client request that matches no recording gets."""

    ERROR = "error"
    """A JSON-RPC error reply (code :data:`proxy.core.planner.NO_MATCH_CODE`) that explains
    the miss."""
    CLOSE = "close"
    """The connection is closed (code :data:`proxy.core.planner.NO_MATCH_CLOSE_CODE`)."""


class Stale(enum.StrEnum):
    """What replaying a cassette recorded with another codex than the pinned one does."""

    WARN = "warn"
    """A warning in the log and a note in the report; the replay goes on."""
    FAIL = "fail"
    """The session refuses to replay it (the test fails, the command exits 2)."""


class MatchOrder(enum.StrEnum):
    """Which recorded client message a live one may match."""

    STRICT = "strict"
    """Only the next unused recorded client message of the connection."""
    ANY_ORDER = "any-order"
    """Any unused recorded client message of the connection (the first that matches)."""


_E = TypeVar("_E", bound=enum.StrEnum)


def parse_mode(kind: type[_E], value: str | _E, what: str) -> _E:
    """``value`` as a member of ``kind``; ``what`` names the option in the error message.

    >>> parse_mode(RecordMode, "once", "record mode")
    <RecordMode.ONCE: 'once'>
    """
    if isinstance(value, kind):
        return value
    try:
        return kind(value)
    except ValueError:
        valid = ", ".join(member.value for member in kind)
        raise UsageError(f"invalid {what} {value!r}; valid values: {valid}") from None


@dataclass(frozen=True)
class Pace:
    """How fast recorded server messages are sent.

    ``factor`` ``None`` is ``fast`` (no waiting); otherwise recorded gaps are divided by it:
    ``1`` is ``recorded``, ``10`` is ten times faster than recorded.
    """

    factor: float | None = None

    @classmethod
    def parse(cls, value: str | float | Pace) -> Pace:
        """``fast``, ``recorded``, or a positive number (a speed-up factor)."""
        if isinstance(value, Pace):
            return value
        if value == "fast":
            return cls(None)
        if value == "recorded":
            return cls(1.0)
        try:
            factor = float(value)
        except ValueError:
            factor = math.nan
        if not math.isfinite(factor) or factor <= 0:
            raise UsageError(
                f"invalid pace {value!r}; valid values: fast, recorded, or a positive "
                "speed-up factor such as 10"
            )
        return cls(factor)

    def delay(self, gap: float) -> float:
        """Seconds to wait before a message recorded ``gap`` seconds after its predecessor."""
        if self.factor is None or gap <= 0:
            return 0.0
        return gap / self.factor

    def __str__(self) -> str:
        if self.factor is None:
            return "fast"
        return "recorded" if self.factor == 1.0 else f"{self.factor:g}"
