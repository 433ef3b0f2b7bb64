"""Unit tests of proxy.core.replay_report: the bounded text report and the whole one as JSON."""

from __future__ import annotations

import orjson

from proxy.core.replay_report import (
    SHOWN,
    Candidate,
    ConnectionReport,
    Miss,
    ReplayReport,
    Unused,
)


def _unused(count: int, arrow: str, what: str, start: int = 1) -> tuple[Unused, ...]:
    return tuple(Unused(start + 2 * i, f"{arrow} {what}") for i in range(count))


def test_a_small_report_lists_everything() -> None:
    """Up to SHOWN entries of each list, nothing is counted instead of shown."""
    conn = ConnectionReport(
        1,
        1,
        client=(1, 1 + SHOWN),
        server=(1, 1 + SHOWN),
        unused_client=_unused(SHOWN, ">", "request config/read"),
        unused_server=_unused(SHOWN, "<", "response to config/read", 2),
    )
    lines = conn.render()
    assert len(lines) == 1 + 2 * SHOWN
    assert not any("more" in line for line in lines)


def test_long_lists_are_cut_with_counts() -> None:
    """100,000 unplayed messages render as SHOWN lines of each kind and a count of the rest."""
    conn = ConnectionReport(
        1,
        1,
        client=(1, 50_001),
        server=(1, 50_001),
        unused_client=_unused(50_000, ">", "request config/read"),
        unused_server=_unused(50_000, "<", "response to config/read", 2),
    )
    report = ReplayReport("big.jsonl", (conn,))
    text = report.render()
    assert text.splitlines() == [
        "rpctape replay report for big.jsonl: 1 live connection(s), 0 miss(es), 50000 "
        "recorded client message(s) not replayed, 50000 recorded server message(s) not sent",
        "live connection 1 = recorded connection 1: 1 of 50001 client message(s) matched, "
        "1 of 50001 server message(s) sent",
        *(f"  not replayed: seq {1 + 2 * i} > request config/read" for i in range(SHOWN)),
        "  ... and 49990 more recorded client message(s) not replayed",
        *(f"  not sent: seq {2 + 2 * i} < response to config/read" for i in range(SHOWN)),
        "  ... and 49990 more recorded server message(s) not sent",
    ]


def test_misses_are_cut_with_a_count() -> None:
    """More misses than SHOWN: the first SHOWN are explained, the rest counted."""
    misses = tuple(Miss(1, 1, n, f"request m{n}") for n in range(1, SHOWN + 4))
    lines = ConnectionReport(1, 1, misses=misses).render()
    assert sum(line.startswith("  miss: ") for line in lines) == SHOWN
    assert lines[-1] == "  ... and 3 more miss(es)"


def test_recorded_connections_never_replayed_are_cut_with_a_count() -> None:
    """Beyond SHOWN recorded connections never replayed, one line counts the rest and their
    client messages."""
    never = tuple(
        ConnectionReport(None, n, client=(0, 2), unused_client=_unused(2, ">", "request x"))
        for n in range(1, SHOWN + 6)
    )
    text = ReplayReport("c.jsonl", (ConnectionReport(1, 99), *never)).render()
    lines = text.splitlines()
    assert sum(line.startswith("recorded connection ") for line in lines) == SHOWN
    assert lines[-1] == (
        "... and 5 more recorded connection(s) never replayed (10 recorded client message(s))"
    )


def test_to_json_has_every_entry() -> None:
    """The JSON report lists what the text report counts, and orjson writes it."""
    miss = Miss(1, 1, 3, "request b", (Candidate(4, "request a", "method differs"),), "why")
    conn = ConnectionReport(
        1,
        1,
        client=(1, 50_001),
        server=(0, 3),
        unused_client=_unused(50_000, ">", "request config/read"),
        unused_server=_unused(3, "<", "response to config/read", 2),
        misses=(miss,),
        notes=("a note",),
    )
    never = ConnectionReport(None, 2, client=(0, 1), unused_client=_unused(1, ">", "request x"))
    report = ReplayReport("c.jsonl", (conn, never), notes=("recorded instead",))
    data = orjson.loads(orjson.dumps(report.to_json()))
    assert data["cassette"] == "c.jsonl" and data["clean"] is False
    assert data["summary"] == {
        "live_connections": 1,
        "recorded_live": 0,
        "misses": 1,
        "not_replayed": 50_001,
        "not_sent": 3,
    }
    assert data["notes"] == ["recorded instead"]
    first, second = data["connections"]
    assert len(first["not_replayed"]) == 50_000
    assert first["not_replayed"][-1] == {"seq": 99_999, "description": "> request config/read"}
    assert first["not_sent"][0] == {"seq": 2, "description": "< response to config/read"}
    assert (first["client"], first["server"]) == (
        {"matched": 1, "recorded": 50_001},
        {"sent": 0, "recorded": 3},
    )
    assert first["misses"] == [
        {
            "message": 3,
            "description": "request b",
            "note": "why",
            "candidates": [{"seq": 4, "description": "request a", "note": "method differs"}],
            "text": miss.render(),
        }
    ]
    assert (second["live"], second["recorded"], second["recorded_live"]) == (None, 2, False)
