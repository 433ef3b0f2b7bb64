"""Tests of proxy.codex.client and `rpctape client`: the built-in client, over websocket and
stdio."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from proxy.codex.appserver import (
    FAKE_API_KEY,
    FAKE_API_KEY_ENV,
    AppServer,
    find_codex,
    write_codex_home,
)
from proxy.codex.backend import DEFAULT_REPLY, FakeBackend, Reply
from proxy.codex.client import ClientOptions, SessionClient, agent_messages, prompt_session
from proxy.core.jsonrpc import Direction
from proxy.errors import UsageError
from tests.scripted_upstream import ScriptedUpstream


def test_agent_messages_picks_completed_agent_items() -> None:
    """Only completed agentMessage items count, in order."""
    notes = [
        {"method": "item/completed", "params": {"item": {"type": "agentMessage", "text": "a"}}},
        {"method": "item/completed", "params": {"item": {"type": "userMessage", "text": "u"}}},
        {"method": "item/agentMessage/delta", "params": {"delta": "x"}},
        {"method": "item/completed", "params": {"item": {"type": "agentMessage", "text": "b"}}},
    ]
    assert agent_messages(notes) == ["a", "b"]


def test_session_client_needs_exactly_one_target() -> None:
    """A URL or a command, not both, not neither."""
    with pytest.raises(UsageError):
        SessionClient(None)
    with pytest.raises(UsageError):
        SessionClient("ws://127.0.0.1:1", command=["codex"])


async def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`python -m proxy client ARGS` to completion (in a thread: the loop serves the servers)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "client", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 90)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.e2e
async def test_client_command_over_websocket() -> None:
    """`rpctape client URL --prompt P` runs a turn on the real app-server and prints the reply."""
    async with FakeBackend("Hi from the backend.") as backend, AppServer(backend.url) as server:
        code, out, err = await run_cli(server.url, "--prompt", "Say hi.")
    assert (code, out) == (0, "Hi from the backend.\n"), err


@pytest.mark.e2e
async def test_client_command_over_stdio(tmp_path: Path) -> None:
    """`rpctape client -- codex app-server` spawns the server and speaks JSON Lines to it."""
    async with FakeBackend() as backend:
        write_codex_home(tmp_path / "home", backend.url)
        env = {"CODEX_HOME": str(tmp_path / "home"), FAKE_API_KEY_ENV: FAKE_API_KEY}
        code, out, err = await run_cli(
            "--prompt", "One.", "--prompt", "Two.", "--", str(find_codex()), "app-server", env=env
        )
    assert (code, out) == (0, f"{DEFAULT_REPLY}\n{DEFAULT_REPLY}\n"), err


@pytest.mark.e2e
@pytest.mark.parametrize("decision", ["accept", "decline", "cancel"])
async def test_approvals_answered_as_asked(decision: str) -> None:
    """--approve's decision goes back to the server's approval request, byte for byte."""
    arguments = {"cmd": "touch x", "sandbox_permissions": "require_escalated", "justification": "w"}
    async with FakeBackend() as backend, AppServer(backend.url, approval_policy="on-request") as s:
        backend.script(Reply.function_call(name="exec_command", arguments=arguments))
        async with SessionClient(s.url, ClientOptions(approval_decision=decision)) as client:
            await prompt_session(client, ["Touch x."])
    (request,) = client.server_requests
    assert request["method"] == "item/commandExecution/requestApproval"
    answers = [
        orjson.loads(f) for d, f in client.frames if d is Direction.C2S and b'"result"' in (
            f.encode() if isinstance(f, str) else f)
    ]  # fmt: skip
    assert answers == [{"id": request["id"], "result": {"decision": decision}}]


async def test_client_command_unreachable_url() -> None:
    """No server at the URL: one line saying so and what to check, exit 2."""
    code, out, err = await run_cli("ws://127.0.0.1:9", "--prompt", "x")
    assert (code, out) == (2, "")
    assert err == (
        "rpctape: error: cannot reach ws://127.0.0.1:9: Connection refused. "
        "Is the app-server running and the URL right?\n"
    )


async def test_client_command_bad_arguments() -> None:
    """A bad --approve, a missing command, a non-URL: one line each, exit 2."""
    assert (await run_cli("ws://127.0.0.1:9", "--approve", "maybe"))[2] == (
        "rpctape: error: --approve 'maybe' is not one of accept, decline, cancel\n"
    )
    assert (await run_cli("--", "/nonexistent"))[2] == (
        "rpctape: error: client -- /nonexistent: no such executable; give a path to it or a "
        "command on PATH\n"
    )
    assert (await run_cli())[2] == (
        "rpctape: error: give a URL (ws://127.0.0.1:4223) or -- COMMAND (a stdio app-server)\n"
    )


async def test_answer_hook_answers_any_server_request(upstream: ScriptedUpstream) -> None:
    """ClientOptions.answer gives the answer to a server request (its id added); a request it
    returns None for falls back to the built-in answers (here: the -32601 error)."""

    def answer(request: dict[str, Any]) -> dict[str, Any] | None:
        if request["method"] == "item/tool/call":
            return {"result": {"success": True, "contentItems": []}}
        return None

    options = ClientOptions(answer=answer)
    async with SessionClient(upstream.url, options) as client:
        # The scripted upstream echoes frames: these come back as server requests.
        await client.send_raw('{"id":7,"method":"item/tool/call","params":{}}')
        await client.send_raw('{"id":8,"method":"item/tool/requestUserInput","params":{}}')
        for _ in range(500):
            if len(upstream.answers) == 2:
                break
            await asyncio.sleep(0.01)
    assert [a for _, a in upstream.answers] == [
        {"id": 7, "result": {"success": True, "contentItems": []}},
        {
            "id": 8,
            "error": {
                "code": -32601,
                "message": "rpctape client does not handle item/tool/requestUserInput",
            },
        },
    ]
