"""Every corpus cassette (cassettes/corpus/VERSION/) replayed by rpctape to its recorded client,
over a websocket (`rpctape replay`) and over stdio (`rpctape-codex`): every recorded server frame
arrives, byte for byte, responses carrying the driver's ids (tests/corpus_driver.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.corpus_driver import CORPUS, CORPUS_CASSETTES, Played, Transport, play


def _name(path: Path) -> str:
    return str(path.relative_to(CORPUS).with_suffix(""))


def test_the_corpus_holds_both_versions() -> None:
    """The corpus was recorded with 0.171.0 and 0.169.0, the same scenarios but the one that
    only 0.171.0 has."""
    by_version = {
        version: {p.stem for p in CORPUS_CASSETTES if p.parent.name == version}
        for version in ("0.169.0", "0.171.0")
    }
    assert len(by_version["0.171.0"]) >= 30
    assert by_version["0.169.0"] == by_version["0.171.0"]


@pytest.mark.parametrize("transport", list(Transport), ids=lambda t: t.value)
@pytest.mark.parametrize("cassette", CORPUS_CASSETTES, ids=_name)
async def test_corpus_cassette_replays_to_its_recorded_client(
    cassette: Path, transport: Transport
) -> None:
    """The recorded client gets every recorded server frame, in order, and the replay is clean
    (--strict: every recorded client message matched, no miss)."""
    played: Played = await play(cassette, transport)
    assert played.received == played.expected
    assert played.exit_code == 0, played.stderr[-2000:]
