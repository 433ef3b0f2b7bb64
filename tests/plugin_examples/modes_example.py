"""rpctape's pytest plugin in record modes all (from the command line) and new_episodes.

The upstream is an echo server given with -o rpctape_upstream=ws://...; run by
tests/test_pytest_plugin.py.
"""

from __future__ import annotations

import pytest
from websockets.sync.client import connect

ECHO = '{"id":1,"method":"echo","params":{"n":1}}'


@pytest.mark.rpctape(cassette="echo.jsonl", record_mode="none", strict=True)
def test_echo(rpctape_url: str) -> None:
    """Recorded by --rpctape-record-mode=all, replayed afterwards."""
    with connect(rpctape_url) as ws:
        ws.send(ECHO)
        assert ws.recv() == ECHO


@pytest.mark.rpctape(cassette="episodes.jsonl", record_mode="new_episodes")
def test_episodes(rpctape_url: str) -> None:
    """The first connection is in the cassette; the second is recorded live."""
    replies = []
    for word in ("first", "second"):
        with connect(rpctape_url) as ws:
            ws.send(word)
            replies.append(ws.recv())
    assert replies == ["recorded first", "second"]
