"""rpctape's pytest plugin in record mode once against the real app-server.

The first run records cassettes/once.jsonl through the upstream command of pytest.ini; later
runs replay it without any upstream. Run by tests/test_pytest_plugin.py.
"""

from __future__ import annotations

import pytest

from proxy.codex.backend import DEFAULT_REPLY
from proxy.codex.client import SessionClient


@pytest.mark.rpctape(cassette="once.jsonl", record_mode="once", strict=True)
async def test_one_turn(rpctape_url: str) -> None:
    """A full turn answers with the fake backend's text."""
    async with SessionClient(rpctape_url) as client:
        await client.initialize()
        thread_id = await client.start_thread()
        done = await client.run_turn(thread_id, "Say hello.")
    texts = [
        n["params"]["item"].get("text")
        for n in client.notifications
        if n["method"] == "item/completed"
    ]
    assert done["params"]["turn"]["status"] == "completed"
    assert texts[-1] == DEFAULT_REPLY
