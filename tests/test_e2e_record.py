"""End to end: the real codex app-server behind the recording relay, driven by a client.

Every test runs once per codex release in ``.tools/`` (the ``codex_version`` fixture: the
pinned 0.169.0 and 0.171.0 after ``./dev setup``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from proxy import recording_proxy
from proxy.codex.appserver import AppServer
from proxy.codex.backend import FakeBackend, Reply
from proxy.codex.client import ClientOptions, SessionClient, scripted_session
from proxy.codex.schema import Report, Validator, check_cassette
from proxy.core.cassette import frame_of, load
from proxy.core.diff import EntryKind, diff_cassettes
from proxy.core.jsonrpc import Direction

SHIPPED = Path(__file__).resolve().parent.parent / "cassettes"

pytestmark = pytest.mark.e2e


def client_view(client: SessionClient, direction: Direction) -> list[bytes]:
    return [f.encode() if isinstance(f, str) else f for d, f in client.frames if d is direction]


async def test_full_turn_recorded_byte_for_byte(tmp_path: Path, codex_bin: Path) -> None:
    """A full turn through rpctape: the cassette holds exactly what the client sent and got."""
    cassette = tmp_path / "turn.jsonl"
    async with (
        FakeBackend() as backend,
        AppServer(backend.url, codex_bin) as server,
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


async def test_approval_request_recorded_with_its_answer(tmp_path: Path, codex_bin: Path) -> None:
    """A server-initiated approval request and the client's answer are paired in the cassette."""
    cassette = tmp_path / "approval.jsonl"
    arguments = {"cmd": "touch x", "sandbox_permissions": "require_escalated", "justification": "w"}
    async with (
        FakeBackend() as backend,
        AppServer(backend.url, codex_bin, approval_policy="on-request") as s,
    ):
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


async def test_recording_validates_and_matches_the_shipped_cassette(
    tmp_path: Path, codex_bin: Path, codex_version: str, codex_schema: Callable[[str], Path]
) -> None:
    """The turn-streamed session recorded now: valid under this codex's schema, and the same
    conversation as the shipped 0.169.0 cassette but for the version strings (docs/drift.md)."""
    cassette = tmp_path / "turn-streamed.jsonl"
    async with (
        FakeBackend() as backend,
        AppServer(backend.url, codex_bin) as server,
    ):
        backend.script(Reply.text("Hello from the recorded turn, streamed in deltas."))
        async with (
            recording_proxy(server.url, cassette) as url,
            SessionClient(url, ClientOptions(string_ids=True)) as client,
        ):
            await client.initialize()
            thread_id = await client.start_thread()
            await client.run_turn(thread_id, "Say hello.")
    report = Report()
    check_cassette(load(cassette), Validator(codex_schema(codex_version)), report, "new")
    assert (report.findings, report.counts["messages"]) == ([], 24)
    # userAgent names this machine's OS and terminal, serverName its host name.
    machine = ["/result/userAgent", "/params/serverName"]
    diff = diff_cassettes(load(SHIPPED / "turn-streamed.jsonl"), load(cassette), machine)
    changes = {
        (e.method, c.pointer, c.a, c.b)
        for e in diff.entries
        if e.kind is not EntryKind.MOVED
        for c in e.changes
    }
    assert all(e.kind in (EntryKind.CHANGED, EntryKind.MOVED) for e in diff.entries)
    expected = {
        ("thread/start", "/result/thread/cliVersion", "0.169.0", codex_version),
        ("thread/started", "/params/thread/cliVersion", "0.169.0", codex_version),
    }
    assert changes == (set() if codex_version == "0.169.0" else expected)
    (initialize,) = [e for e in load(cassette).frames() if e.get("response_to") == "initialize"]
    assert initialize["msg"]["result"]["userAgent"].startswith(f"rpctape-client/{codex_version} ")
