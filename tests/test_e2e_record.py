"""End to end: the real codex app-server behind the recording relay, driven by a client."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.appserver import AppServer
from proxy.backend import FakeBackend, Reply
from proxy.cassette import frame_of, load
from proxy.client import ClientOptions, SessionClient, scripted_session
from proxy.jsonrpc import Direction
from proxy.relay import recording_proxy

pytestmark = pytest.mark.e2e


def client_view(client: SessionClient, direction: Direction) -> list[bytes]:
    return [f.encode() if isinstance(f, str) else f for d, f in client.frames if d is direction]


async def test_full_turn_recorded_byte_for_byte(tmp_path: Path) -> None:
    """A full turn through rpctape: the cassette holds exactly what the client sent and got."""
    cassette = tmp_path / "turn.jsonl"
    async with (
        FakeBackend() as backend,
        AppServer(backend.url) as server,
        recording_proxy(server.url, cassette) as url,
    ):
        client = await scripted_session(url, ["Say hello."], ClientOptions(string_ids=True))
    tape = load(cassette)
    assert tape.warnings == []
    (conn,) = tape.connections()
    recorded = tape.frames(conn)
    for direction in Direction:
        assert [frame_of(e) for e in recorded if e["dir"] == direction.value] == client_view(
            client, direction
        )
    assert len(recorded) == len(client.frames)
    methods = [e.get("method") or e.get("response_to") for e in recorded]
    assert methods[:4] == ["initialize", "initialize", "initialized", "model/list"]
    assert methods[-1] == "turn/completed"
    assert "item/agentMessage/delta" in methods
    assert not any("redacted" in e for e in recorded)
    kinds = [e["kind"] for e in tape.events]
    assert kinds[0] == "open" and kinds[-1] == "close"
    assert tape.events[-1]["by"] == "client"


async def test_approval_request_recorded_with_its_answer(tmp_path: Path) -> None:
    """A server-initiated approval request and the client's answer are paired in the cassette."""
    cassette = tmp_path / "approval.jsonl"
    arguments = {"cmd": "touch x", "sandbox_permissions": "require_escalated", "justification": "w"}
    async with FakeBackend() as backend, AppServer(backend.url, approval_policy="on-request") as s:
        backend.script(Reply.function_call(name="exec_command", arguments=arguments))
        async with recording_proxy(s.url, cassette) as url:
            client = await scripted_session(url, ["Touch x."])
    assert [r["method"] for r in client.server_requests] == [
        "item/commandExecution/requestApproval"
    ]
    frames = load(cassette).frames()
    (request,) = [e for e in frames if e.get("method") == "item/commandExecution/requestApproval"]
    (answer,) = [
        e for e in frames if e.get("response_to") == "item/commandExecution/requestApproval"
    ]
    assert (request["dir"], request["type"]) == ("s2c", "request")
    assert (answer["dir"], answer["type"]) == ("c2s", "response")
    assert answer["msg"] == {"id": request["msg"]["id"], "result": {"decision": "accept"}}
    assert any(e.get("method") == "serverRequest/resolved" for e in frames)
