"""rpctape's pytest plugin used as a user would: replay real cassettes (sync and async tests).

Copied into a temporary project and run by tests/test_pytest_plugin.py; not collected here.
"""

from __future__ import annotations

import json

import pytest
from websockets.sync.client import connect

from proxy.codex.client import ClientOptions, SessionClient


def initialize(request_id: object, name: str = "rpctape-client") -> str:
    params = {"clientInfo": {"name": name, "version": "0.1.0"}}
    return json.dumps({"id": request_id, "method": "initialize", "params": params})


@pytest.mark.rpctape(cassette="initialize-model-list-config.jsonl", strict=True, match_on="exact")
async def test_async_client(rpctape_url: str) -> None:
    """An async client with string ids gets the recorded model list."""
    async with SessionClient(rpctape_url, ClientOptions(string_ids=True)) as client:
        await client.initialize()
        models = await client.call("model/list", {})
        await client.call("config/read", {})
    assert models["data"][0]["id"] == "gpt-6.1-sol"


@pytest.mark.rpctape(cassette="initialize-model-list-config.jsonl")
def test_sync_client(rpctape_url: str) -> None:
    """A sync client; not strict, so stopping after initialize is fine."""
    with connect(rpctape_url) as ws:
        ws.send(initialize("a"))
        reply = json.loads(ws.recv())
    assert (reply["id"], reply["result"]["platformOs"]) == ("a", "linux")


@pytest.mark.rpctape(cassette="initialize-model-list-config.jsonl", strict=True, match_on="exact")
def test_strict_miss(rpctape_url: str) -> None:
    """The code under test gets the error reply; the plugin fails the test (strict)."""
    with connect(rpctape_url) as ws:
        ws.send(initialize(1, name="intruder"))
        reply = json.loads(ws.recv())
    assert reply["error"]["code"] == -32099


@pytest.mark.rpctape(cassette="../outside.jsonl")
def test_escape(rpctape_url: str) -> None:
    """Never runs: the cassette name leaves the cassette folder."""


@pytest.mark.rpctape(cassette="missing.jsonl")
def test_missing(rpctape_url: str) -> None:
    """Never runs: record mode none and no cassette."""


@pytest.mark.rpctape(cassete="initialize-model-list-config.jsonl")
def test_typo_in_marker(rpctape_url: str) -> None:
    """Never runs: the marker has an unknown option."""
