"""Tests of proxy.appserver: config writing, finding codex, and running the real app-server."""

from __future__ import annotations

import asyncio
import contextlib
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from proxy.appserver import (
    LOCAL_CODEX,
    PINNED_CODEX_VERSION,
    AppServer,
    codex_config,
    find_codex,
    live_group_members,
    write_codex_home,
)
from proxy.backend import DEFAULT_REPLY, FakeBackend, Reply
from proxy.errors import AppServerError

EXEC_ARGS = {"cmd": "touch x", "sandbox_permissions": "require_escalated", "justification": "why"}


@pytest.fixture
async def backend() -> AsyncIterator[FakeBackend]:
    """A started FakeBackend with the default reply, closed at teardown."""
    async with FakeBackend() as started:
        yield started


def process_group_alive(pgid: int) -> bool:
    """Whether any process of the group ``pgid`` is still running (zombies do not count)."""
    return bool(live_group_members(pgid))


class Session:
    """A minimal JSON-RPC client over one websocket, recording every message it receives."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.received: list[dict[str, Any]] = []
        self._next_id = 1

    async def send(self, message: dict[str, Any]) -> None:
        """Send one message as a text frame."""
        await self.ws.send(orjson.dumps(message).decode())

    async def recv(self) -> dict[str, Any]:
        """Receive and record the next message (10 s at most)."""
        message: dict[str, Any] = orjson.loads(await asyncio.wait_for(self.ws.recv(), 10))
        self.received.append(message)
        return message

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Send a request and return its result, recording whatever arrives meanwhile."""
        request_id = self._next_id
        self._next_id += 1
        await self.send({"id": request_id, "method": method, "params": params})
        while True:
            message = await self.recv()
            if message.get("id") == request_id and "method" not in message:
                assert "error" not in message, message
                result: dict[str, Any] = message["result"]
                return result

    async def start_thread(self) -> str:
        """initialize, initialized, thread/start; return the thread id."""
        result = await self.request("initialize", {"clientInfo": {"name": "t", "version": "0"}})
        assert result["userAgent"].startswith(f"t/{PINNED_CODEX_VERSION} ")
        await self.send({"method": "initialized"})
        thread = await self.request("thread/start", {})
        thread_id: str = thread["thread"]["id"]
        return thread_id

    async def run_turn(self, thread_id: str, text: str, decision: str = "accept") -> None:
        """turn/start with ``text``; answer approvals with ``decision``; stop at turn/completed."""
        await self.request(
            "turn/start", {"threadId": thread_id, "input": [{"type": "text", "text": text}]}
        )
        while True:
            message = await self.recv()
            method = message.get("method")
            if method == "item/commandExecution/requestApproval":
                await self.send({"id": message["id"], "result": {"decision": decision}})
            elif method == "turn/completed":
                return

    def notifications(self, method: str) -> list[dict[str, Any]]:
        """Params of every received notification named ``method``, in order."""
        return [m["params"] for m in self.received if m.get("method") == method and "id" not in m]


@contextlib.asynccontextmanager
async def session(server: AppServer) -> AsyncIterator[Session]:
    """A websocket Session to ``server`` (no Origin header: the server refuses any)."""
    async with connect(server.url) as ws:
        yield Session(ws)


# --- no app-server needed ---------------------------------------------------------------


def test_write_codex_home_config(tmp_path: Path) -> None:
    """config.toml points a mock provider at <backend>/v1 in API-key mode."""
    write_codex_home(tmp_path / "home", "http://127.0.0.1:9/", approval_policy="on-request")
    config = tomllib.loads((tmp_path / "home" / "config.toml").read_text(encoding="utf-8"))
    assert config == {
        "model": "mock-model",
        "approval_policy": "on-request",
        "sandbox_mode": "read-only",
        "model_provider": "mock",
        "analytics": {"enabled": False},
        "model_providers": {
            "mock": {
                "name": "mock",
                "base_url": "http://127.0.0.1:9/v1",
                "wire_api": "responses",
                "env_key": "FAKE_OPENAI_KEY",
                "request_max_retries": 0,
                "stream_max_retries": 0,
                "supports_websockets": False,
            }
        },
    }


def test_codex_config_extra_merges_nested_tables() -> None:
    """extra overrides single keys inside nested tables and adds new ones."""
    config = codex_config(
        "http://h",
        extra={"model_providers": {"mock": {"supports_websockets": True}}, "new": 1},
    )
    assert config["model_providers"]["mock"]["supports_websockets"] is True
    assert config["model_providers"]["mock"]["base_url"] == "http://h/v1"
    assert config["new"] == 1


def test_find_codex_bad_explicit_path(tmp_path: Path) -> None:
    """A missing explicit codex path raises AppServerError telling to run `make setup`."""
    missing = tmp_path / "no-codex"
    with pytest.raises(AppServerError, match="make setup") as caught:
        find_codex(missing)
    assert str(missing) in str(caught.value)
    assert isinstance(caught.value, RuntimeError)


def test_find_codex_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$RPCTAPE_CODEX is used when no explicit path is given; explicit wins over it."""
    fake = tmp_path / "codex"
    fake.write_text("#!/bin/sh\n")
    monkeypatch.setenv("RPCTAPE_CODEX", str(fake))
    assert find_codex() == fake
    monkeypatch.setenv("RPCTAPE_CODEX", str(tmp_path / "gone"))
    with pytest.raises(AppServerError, match=r"\$RPCTAPE_CODEX"):
        find_codex()
    assert find_codex(fake) == fake


def test_find_codex_default_is_project_local(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without explicit path or env var, the project-local .tools install is the only choice."""
    monkeypatch.delenv("RPCTAPE_CODEX", raising=False)
    assert LOCAL_CODEX.parts[-4:] == (".tools", "node_modules", ".bin", "codex")
    if LOCAL_CODEX.is_file():
        assert find_codex() == LOCAL_CODEX
    else:
        with pytest.raises(AppServerError, match="make setup"):
            find_codex()


def test_appserver_bad_codex_path_raises(tmp_path: Path) -> None:
    """AppServer with a nonexistent codex fails at once with the helpful message."""
    with pytest.raises(AppServerError, match="make setup"):
        AppServer("http://127.0.0.1:9", codex=tmp_path / "missing")


async def test_exit_before_ready_reports_log_tail(tmp_path: Path) -> None:
    """A codex that exits at once gives AppServerError with its exit code and output."""
    fake = tmp_path / "codex"
    fake.write_text("#!/bin/sh\necho 'boom: bad config' >&2\nexit 3\n")
    fake.chmod(0o755)
    server = AppServer("http://127.0.0.1:9", codex=fake, ready_timeout=10)
    with pytest.raises(AppServerError, match="exited with code 3") as caught:
        await server.start()
    assert "boom: bad config" in str(caught.value)
    await server.close()


async def test_never_ready_times_out_and_kills(tmp_path: Path) -> None:
    """A codex that never listens times out with AppServerError and is killed."""
    fake = tmp_path / "codex"
    pid_file = tmp_path / "pid"
    fake.write_text(f"#!/bin/sh\necho $$ > {pid_file}\necho starting\nexec sleep 60\n")
    fake.chmod(0o755)
    server = AppServer("http://127.0.0.1:9", codex=fake, ready_timeout=0.5, grace=0.5)
    with pytest.raises(AppServerError, match=r"not ready after 0.5s(.|\n)*starting"):
        await server.start()
    pid = int(pid_file.read_text())
    assert not process_group_alive(pid)


# --- the real app-server ----------------------------------------------------------------


@pytest.mark.e2e
async def test_text_turn_streams_backend_reply(backend: FakeBackend) -> None:
    """A full turn: deltas stream the backend's reply and the agent message equals it."""
    async with AppServer(backend.url) as server, session(server) as client:
        thread_id = await client.start_thread()
        await client.run_turn(thread_id, "hi")
    deltas = [p["delta"] for p in client.notifications("item/agentMessage/delta")]
    assert deltas == ["Hello from ", "rpctape's fake ", "backend."]
    completed = [p["item"] for p in client.notifications("item/completed")]
    assert [item["type"] for item in completed] == ["userMessage", "agentMessage"]
    assert completed[1]["text"] == DEFAULT_REPLY
    assert completed[0]["content"] == [{"type": "text", "text": "hi", "text_elements": []}]
    (turn,) = [p["turn"] for p in client.notifications("turn/completed")]
    assert turn["status"] == "completed"
    methods = [m["method"] for m in client.received if "method" in m]
    turn_methods = methods[methods.index("turn/started") :]
    assert [m for m in turn_methods if m.startswith(("turn/", "item/"))] == [
        "turn/started",
        "item/started",
        "item/completed",
        "item/started",
        "item/agentMessage/delta",
        "item/agentMessage/delta",
        "item/agentMessage/delta",
        "item/completed",
        "turn/completed",
    ]
    assert [(r["method"], r["path"]) for r in backend.requests] == [("POST", "/v1/responses")]
    headers = backend.requests[0]["headers"]
    assert headers["Authorization"] == "<redacted>"
    assert headers["Accept"] == "text/event-stream"
    assert backend.requests[0]["body"]["model"] == "mock-model"


@pytest.mark.e2e
async def test_approval_flow_runs_command(backend: FakeBackend) -> None:
    """A scripted exec_command asks for approval; 'accept' runs it and the turn completes."""
    backend.script(Reply.function_call(name="exec_command", arguments=EXEC_ARGS))
    async with (
        AppServer(backend.url, approval_policy="on-request") as server,
        session(server) as client,
    ):
        thread_id = await client.start_thread()
        await client.run_turn(thread_id, "make a file")
        assert (server.workdir / "x").is_file()
        workdir = str(server.workdir)
    (approval,) = [m for m in client.received if m.get("method", "").endswith("requestApproval")]
    assert approval["method"] == "item/commandExecution/requestApproval"
    assert isinstance(approval["id"], int)
    params = approval["params"]
    assert params["itemId"] == "call-1"
    assert params["command"] == "/bin/bash -lc 'touch x'"
    assert params["cwd"] == workdir
    assert params["reason"] == "why"
    assert params["threadId"] == thread_id
    (resolved,) = client.notifications("serverRequest/resolved")
    assert resolved == {"threadId": thread_id, "requestId": approval["id"]}
    command = [p["item"] for p in client.notifications("item/completed")][1]
    assert (command["type"], command["status"], command["exitCode"]) == (
        "commandExecution",
        "completed",
        0,
    )
    assert client.notifications("turn/completed")[0]["turn"]["items"][-1]["text"] == DEFAULT_REPLY
    # The second POST carries the tool output back; the default text reply ends the turn.
    assert [r["path"] for r in backend.requests] == ["/v1/responses", "/v1/responses"]
    last_input = backend.requests[1]["body"]["input"]
    assert [item["type"] for item in last_input[-2:]] == ["function_call", "function_call_output"]
    assert last_input[-1]["call_id"] == "call-1"


@pytest.mark.e2e
async def test_process_and_home_gone_after_exit(backend: FakeBackend) -> None:
    """After the context exits the process group is gone and the temporary home removed."""
    async with AppServer(backend.url) as server:
        pid, home, log_path = server.pid, server.codex_home, server.log_path
        assert process_group_alive(pid)
        assert (home / "config.toml").is_file()
        assert "listening on: ws://127.0.0.1:" in log_path.read_text(encoding="utf-8")
    assert not process_group_alive(pid)
    assert not home.exists()
    await server.close()  # a second close is harmless


@pytest.mark.e2e
async def test_cancelled_task_leaves_no_process(backend: FakeBackend) -> None:
    """Cancelling a task inside the context still stops the server."""
    pids: list[int] = []
    entered = asyncio.Event()

    async def hold() -> None:
        async with AppServer(backend.url) as server:
            pids.append(server.pid)
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(hold(), name="hold-appserver")
    await asyncio.wait_for(entered.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not process_group_alive(pids[0])
