"""Three tests replaying cassettes on both fixtures, for the end-of-run reports: which
cassettes of the folder no test used, which recorded connections no test played
(--rpctape-unused), which cassettes were recorded with another codex than the pinned one
(rpctape_codex_version, --rpctape-stale).

Copied into a temporary project (its cassettes written by tests/test_pytest_plugin.py) and
run by tests/test_pytest_plugin.py; not collected here.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from websockets.sync.client import connect

from proxy.pytest_plugin import CodexStandin


def hello(url: str) -> str:
    with connect(url) as ws:
        ws.send("a")
        reply = ws.recv()
    assert isinstance(reply, str)
    return reply


@pytest.mark.rpctape(cassette="two.jsonl")
def test_two(rpctape_url: str) -> None:
    """The first of two recorded connections."""
    assert hello(rpctape_url) == "b"


@pytest.mark.rpctape(cassette="ws.jsonl")
def test_ws(rpctape_url: str) -> None:
    assert hello(rpctape_url) == "b"


@pytest.mark.rpctape(cassette="codex.jsonl", strict=True)
def test_codex(rpctape_codex: CodexStandin) -> None:
    """The stand-in replays; the plugin fails the test if it did not (strict)."""
    subprocess.run(
        rpctape_codex.argv, input="a\n", capture_output=True, text=True, timeout=30,
        env={**os.environ, **rpctape_codex.env}, check=False,
    )  # fmt: skip
