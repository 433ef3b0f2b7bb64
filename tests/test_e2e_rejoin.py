"""Many clients at once: the thread rejoin scenario recorded from the real app-server, then
replayed with no server and no backend (docs/replay.md, "Many clients and their order").

Client A starts a turn that streams 10 deltas 100 ms apart; after 3, client B connects and
resumes A's thread (tests/rejoin.py). Replay must pair each live client with its own
recording whatever order they connect in, and keep the recorded order across the two
connections: B's ``thread/resume`` answer waits for A's ``turn/start``, and the deltas of
both arrive interleaved as recorded, under ``pace="fast"`` and ``pace="recorded"``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy import ReplayServer
from proxy.core.cassette import load
from tests.rejoin import (
    DELTAS_BEFORE_B,
    Log,
    record_rejoin,
    recorded_deltas,
    rejoin,
    rejoin_at_once,
)

SHIPPED = Path(__file__).resolve().parent.parent / "cassettes" / "many-clients" / "rejoin.jsonl"
PACES = ("fast", "recorded")


def clean_head(cassette: Path) -> str:
    return (
        f"rpctape replay report for {cassette}: 2 live connection(s), 0 miss(es), "
        "0 recorded client message(s) not replayed, 0 recorded server message(s) not sent"
    )


def connection_lines(server: ReplayServer) -> list[str]:
    return [line for line in server.report.render().splitlines() if line.startswith("live ")]


async def replay_b_opens_first(cassette: Path, pace: str) -> None:
    """B's websocket opens before A's: each is still paired with its own recording."""
    log = Log()
    server = ReplayServer(cassette, pace=pace, strict=True)
    async with server as url:
        await rejoin(url, log, b_opens_first=True)
    assert server.report.render().splitlines()[0] == clean_head(cassette)
    assert connection_lines(server) == [
        "live connection 1 = recorded connection 2: 3 of 3 client message(s) matched, "
        "18 of 18 server message(s) sent",
        "live connection 2 = recorded connection 1: 4 of 4 client message(s) matched, "
        "28 of 28 server message(s) sent",
    ]
    assert log.deltas() == recorded_deltas(load(cassette))


async def replay_resume_at_once(cassette: Path, pace: str) -> None:
    """B resumes before A starts the turn: B's answer is held until A's turn/start arrived
    (and A's frames recorded before it were sent), then the deltas interleave as recorded."""
    log = Log()
    server = ReplayServer(cassette, pace=pace, strict=True)
    async with server as url:
        await rejoin_at_once(url, log)
    assert server.report.render().splitlines()[0] == clean_head(cassette)
    labels = log.labels()
    resumed = labels.index("B < thread/resume")
    assert labels.index("B > thread/resume") < labels.index("A > turn/start") < resumed
    assert labels.index(f"A < deltapart{DELTAS_BEFORE_B}") < resumed
    assert log.deltas() == recorded_deltas(load(cassette))


def test_the_shipped_rejoin_cassette_interleaves() -> None:
    """The shipped recording holds A's first deltas, then B's and A's alternately."""
    deltas = recorded_deltas(load(SHIPPED))
    assert deltas[:DELTAS_BEFORE_B] == [f"A part{n}" for n in range(1, DELTAS_BEFORE_B + 1)]
    assert [d for d in deltas if d.startswith("A")] == [f"A part{n}" for n in range(1, 11)]
    assert [d for d in deltas if d.startswith("B")] == [
        f"B part{n}" for n in range(DELTAS_BEFORE_B + 1, 11)
    ]


@pytest.mark.parametrize("pace", PACES)
async def test_shipped_b_opens_first(pace: str) -> None:
    """From the shipped cassette: B's websocket first, both matched, no miss."""
    await replay_b_opens_first(SHIPPED, pace)


@pytest.mark.parametrize("pace", PACES)
async def test_shipped_resume_at_once_is_held(pace: str) -> None:
    """From the shipped cassette: B's early resume is held, deltas in recorded order."""
    await replay_resume_at_once(SHIPPED, pace)


async def test_order_none_answers_the_early_resume_at_once() -> None:
    """order="none" (the old behaviour): B's resume is answered before A's turn/start."""
    log = Log()
    server = ReplayServer(SHIPPED, order="none")
    async with server as url:
        await rejoin_at_once(url, log)
    labels = log.labels()
    assert labels.index("B < thread/resume") < labels.index("A > turn/start")


@pytest.mark.e2e
async def test_rejoin_recorded_from_the_real_app_server_replays(
    tmp_path: Path, codex_bin: Path
) -> None:
    """Record the rejoin from the real app-server, then replay it every way without it."""
    cassette = tmp_path / "rejoin.jsonl"
    recorded = await record_rejoin(codex_bin, cassette)
    tape = load(cassette)
    assert tape.warnings == []
    assert recorded.deltas() == recorded_deltas(tape)
    assert [d for d in recorded_deltas(tape) if d.startswith("B")] == [
        f"B part{n}" for n in range(DELTAS_BEFORE_B + 1, 11)
    ]
    for pace in PACES:
        await replay_b_opens_first(cassette, pace)
        await replay_resume_at_once(cassette, pace)
