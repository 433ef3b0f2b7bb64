"""Unit tests of proxy.core.modes: the mode enums, their validation, and pacing."""

from __future__ import annotations

import pytest

from proxy.core.modes import MatchOrder, OnMiss, Pace, Plan, RecordMode, parse_mode, plan_for
from proxy.errors import UsageError


def test_record_modes_are_vcr_names() -> None:
    """The four record modes carry VCR.py's names."""
    assert [m.value for m in RecordMode] == ["none", "once", "new_episodes", "all"]


@pytest.mark.parametrize(
    ("kind", "value", "what", "message"),
    [
        (
            RecordMode,
            "new-episodes",
            "record mode",
            "invalid record mode 'new-episodes'; valid values: none, once, new_episodes, all",
        ),
        (
            OnMiss,
            "ignore",
            "on-miss action",
            "invalid on-miss action 'ignore'; valid values: error, close",
        ),
        (
            MatchOrder,
            "any",
            "match order",
            "invalid match order 'any'; valid values: strict, any-order",
        ),
    ],
)
def test_typo_lists_the_valid_values(
    kind: type[RecordMode | OnMiss | MatchOrder], value: str, what: str, message: str
) -> None:
    """A typo fails with a UsageError (also a ValueError) naming every valid value."""
    with pytest.raises(UsageError) as info:
        parse_mode(kind, value, what)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


def test_parse_accepts_members_and_their_text() -> None:
    """Enum members pass through; their values parse to them."""
    assert parse_mode(RecordMode, RecordMode.ALL, "record mode") is RecordMode.ALL
    assert parse_mode(MatchOrder, "any-order", "match order") is MatchOrder.ANY_ORDER


@pytest.mark.parametrize(
    ("mode", "exists", "records", "plan"),
    [
        (RecordMode.NONE, True, False, Plan.REPLAY),
        (RecordMode.NONE, False, False, Plan.REPLAY),
        (RecordMode.ONCE, True, False, Plan.REPLAY),
        (RecordMode.ONCE, False, True, Plan.RECORD),
        (RecordMode.NEW_EPISODES, True, True, Plan.EPISODES),
        (RecordMode.NEW_EPISODES, False, True, Plan.EPISODES),
        (RecordMode.ALL, True, True, Plan.RECORD),
        (RecordMode.ALL, False, True, Plan.RECORD),
    ],
)
def test_what_each_mode_does(mode: RecordMode, exists: bool, records: bool, plan: Plan) -> None:
    """Whether a mode may need the upstream, and what the server does, per cassette state."""
    assert mode.records(exists) is records
    assert plan_for(mode, exists) is plan


@pytest.mark.parametrize(
    ("text", "gap", "delay", "shown"),
    [("fast", 2.0, 0.0, "fast"), ("recorded", 2.0, 2.0, "recorded"), ("4", 2.0, 0.5, "4")],
)
def test_pace(text: str, gap: float, delay: float, shown: str) -> None:
    """fast never waits, recorded waits the gap, a factor divides it."""
    pace = Pace.parse(text)
    assert (pace.delay(gap), str(pace)) == (delay, shown)


@pytest.mark.parametrize("text", ["slow", "0", "-2", "nan", "inf"])
def test_bad_pace(text: str) -> None:
    """Anything but fast, recorded or a positive finite factor is refused."""
    with pytest.raises(UsageError) as info:
        Pace.parse(text)
    assert str(info.value) == (
        f"invalid pace {text!r}; valid values: fast, recorded, or a positive speed-up factor "
        "such as 10"
    )
