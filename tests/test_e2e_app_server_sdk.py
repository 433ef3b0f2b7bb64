"""End to end: codex-app-server-sdk (the other Python SDK) drives the real codex app-server
through rpctape, over a websocket and over stdio.

The SDK needs Python >= 3.12 and the project venv is 3.11, so every SDK session runs in a child
process: tests/app_server_sdk_driver.py under ``.venv-sdk/bin/python`` (``./dev setup`` builds
it from requirements/sdk.lock), which prints the SDK's reply or exception and every message
that crossed its ``Transport``. rpctape runs from ``.venv-sdk`` too (``rpctape record``,
``rpctape replay``, ``rpctape-codex``): one environment holding both, as a user's suite has it.
The app-server is the real codex 0.169.0 talking to the fake model backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio

from proxy.codex.appserver import (
    FAKE_API_KEY,
    FAKE_API_KEY_ENV,
    AppServer,
    find_codex,
    write_codex_home,
)
from proxy.codex.backend import FakeBackend, Reply
from proxy.core.cassette import Event, frame_of, load

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

ROOT = Path(__file__).resolve().parent.parent
SDK_BIN = ROOT / ".venv-sdk" / "bin"
DRIVER = ROOT / "tests" / "app_server_sdk_driver.py"
DRIVE_TIMEOUT = 60.0
"""Seconds a driver run may take before the test calls it a hang (a turn takes about 1 s)."""
RPCTAPE_TIMEOUT = 20.0

PROMPT = "Say hello."
REPLY = "Hello from the app-server SDK's turn."
TOKEN = "zqSdkBearerTok3n0a1b2c3"
SDK_METHODS = ["initialize", "initialized", "thread/start", "thread/resume", "turn/start"]
"""What the SDK sends for ``start_thread()`` then ``ThreadHandle.chat_once(...)``: the handle
resumes the thread it has just started (codex answers -32600 "no rollout found for thread id",
which the SDK ignores unless ``strict=True``)."""
TURN_METHODS = [
    "thread/status/changed", "turn/started", "item/started", "item/completed", "item/started",
    "item/agentMessage/delta", "item/agentMessage/delta", "item/agentMessage/delta",
    "item/completed", "thread/tokenUsage/updated", "account/rateLimits/updated",
    "thread/status/changed", "turn/completed",
]  # fmt: skip
"""The notifications of the turn, in the order the SDK receives them."""


@pytest.fixture(autouse=True)
def _sdk_venv() -> None:
    """The tests need .venv-sdk: they skip without it on a developer machine, fail in CI."""
    if not (SDK_BIN / "python").exists():
        message = "no .venv-sdk (run ./dev setup; it needs pyenv's Python 3.12)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the codex-app-server-sdk tests: {message}")
        pytest.skip(message)


# --- the SDK and rpctape as child processes ----------------------------------------------------


async def drive(*args: str, env: Mapping[str, str] | None = None, cwd: Path = ROOT) -> Any:
    """Run the SDK driver (``ws URL ...`` or ``stdio ...``) and return what it printed."""
    proc = await asyncio.create_subprocess_exec(
        str(SDK_BIN / "python"), str(DRIVER), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), DRIVE_TIMEOUT)
    except TimeoutError:
        pytest.fail(f"the SDK did not finish within {DRIVE_TIMEOUT:g} s: {args}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever the SDK left behind
        await proc.wait()
    assert proc.returncode == 0, err.decode()
    return json.loads(out)


@dataclass
class Rpctape:
    """A ``rpctape record|replay ... --listen ws://127.0.0.1:0`` child, stopped with Ctrl-C."""

    proc: asyncio.subprocess.Process
    url: str = ""

    async def stop(self) -> tuple[int, str]:
        """SIGINT, then its exit code and everything it printed (stdout, then stderr)."""
        self.proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(self.proc.communicate(), RPCTAPE_TIMEOUT)
        assert self.proc.returncode is not None
        return self.proc.returncode, (out + err).decode()


@contextlib.asynccontextmanager
async def rpctape(*args: str) -> AsyncIterator[Rpctape]:
    """``.venv-sdk/bin/rpctape ARGS --listen ws://127.0.0.1:0``, killed if still running."""
    proc = await asyncio.create_subprocess_exec(
        str(SDK_BIN / "rpctape"), *args, "--listen", "ws://127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), RPCTAPE_TIMEOUT)
        assert line.startswith(b"listening on ws://127.0.0.1:"), line
        yield Rpctape(proc, line.decode().split()[-1])
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()


# --- what to compare ---------------------------------------------------------------------------


def methods(messages: list[dict[str, Any]]) -> list[str]:
    """Each message's method; a response as ``<id`` or ``<id error CODE``."""
    named = []
    for message in messages:
        if "method" in message:
            named.append(message["method"])
        elif "error" in message:
            named.append(f"<{message['id']} error {message['error']['code']}")
        else:
            named.append(f"<{message['id']}")
    return named


UNORDERED = ("configWarning", "remoteControl/status/changed")
"""Notes codex sends once a connection is initialized, from a task of its own (so not in a fixed
place): ``configWarning`` only where bubblewrap is missing, ``remoteControl/status/changed``."""


def received_as_expected(outcome: Any) -> None:
    """The SDK sent its five messages and received the app-server's answers and the turn."""
    assert methods(outcome["sent"]) == SDK_METHODS
    received = methods(outcome["received"])
    assert [name for name in received if name not in UNORDERED] == [
        "<1", "<2", "thread/started", "<3 error -32600", "warning", "<4", *TURN_METHODS,
    ]  # fmt: skip
    assert received.count("remoteControl/status/changed") == 1
    delta = "item/agentMessage/delta"
    deltas = [m["params"]["delta"] for m in outcome["received"] if m.get("method") == delta]
    assert "".join(deltas) == REPLY


def holds_the_session(frames: list[Event], outcome: Any) -> None:
    """The cassette's frames are exactly what the SDK sent and received, in order."""
    sent = [orjson.loads(frame_of(e)) for e in frames if e["dir"] == "c2s"]
    received = [orjson.loads(frame_of(e)) for e in frames if e["dir"] == "s2c"]
    assert sent == outcome["sent"]
    assert received == outcome["received"]


# --- over a websocket: rpctape record, then rpctape replay ------------------------------------


@dataclass
class Recording:
    cassette: Path
    outcome: Any
    """What the SDK saw while recording (the driver's output)."""
    exit: int
    output: str
    """rpctape record's exit code and output."""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ws_recording(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    """One SDK turn recorded through ``rpctape record`` in front of a real ``codex app-server
    --listen ws://``; the SDK sends a bearer token. Backend and app-server are stopped after."""
    cassette = tmp_path_factory.mktemp("ws") / "sdk-ws.jsonl"
    async with FakeBackend() as backend, AppServer(backend.url) as server:
        backend.script(Reply.text(REPLY))
        async with rpctape("record", "--upstream", server.url, "--cassette", str(cassette)) as rec:
            outcome = await drive("ws", rec.url, "--prompt", PROMPT, "--token", TOKEN)
            code, output = await rec.stop()
    return Recording(cassette, outcome, code, output)


async def test_sdk_records_a_turn_over_websocket(ws_recording: Recording) -> None:
    """connect_websocket to `rpctape record`: the SDK gets the backend's reply, the cassette
    holds every frame the SDK sent and received, and neither its token nor the API key."""
    outcome, cassette = ws_recording.outcome, ws_recording.cassette
    assert (outcome.get("reply"), outcome.get("error")) == (REPLY, None)
    received_as_expected(outcome)
    tape = load(cassette)
    assert (tape.warnings, tape.connections()) == ([], [1])
    holds_the_session(tape.frames(), outcome)
    kinds = [e["kind"] for e in tape.events]
    assert kinds == ["open"] + ["text"] * (len(kinds) - 2) + ["close"]
    assert tape.events[-1]["by"] == "client"
    assert tape.events[0]["headers"]["User-Agent"] == "Python/3.12 websockets/16.1.1"
    assert tape.events[0]["headers"]["Authorization"].startswith("<redacted:")
    text = cassette.read_text()
    assert TOKEN not in text
    assert FAKE_API_KEY not in text
    assert ws_recording.exit == 0
    assert ws_recording.output == (
        f"recorded 1 connection(s), {len(outcome['sent'])} frame(s) client>server, "
        f"{len(outcome['received'])} frame(s) server>client to {cassette}\n"
    )


async def test_sdk_replays_the_websocket_recording_offline_twice(
    ws_recording: Recording,
) -> None:
    """`rpctape replay --strict` with no app-server and no backend, twice: the SDK sends and
    receives exactly what it did while recording (ids included), and each replay is clean."""
    for _ in range(2):
        async with rpctape("replay", str(ws_recording.cassette), "--strict") as replay:
            outcome = await drive("ws", replay.url, "--prompt", PROMPT)
            code, output = await replay.stop()
        assert outcome == ws_recording.outcome
        assert code == 0, output
        assert "1 live connection(s), 0 miss(es)" in output
        sent, received = len(outcome["sent"]), len(outcome["received"])
        assert (
            f"{sent} of {sent} client message(s) matched, "
            f"{received} of {received} server message(s) sent"
        ) in output


async def test_a_different_prompt_fails_the_turn_at_once_with_the_reason(
    ws_recording: Recording,
) -> None:
    """Replayed with another prompt: turn/start gets rpctape's -32099 error at once (not a wait
    for a turn that never comes), which the SDK raises as CodexProtocolError, word for word."""
    (recorded,) = [
        e for e in load(ws_recording.cassette).frames() if e.get("method") == "turn/start"
    ]
    async with rpctape("replay", str(ws_recording.cassette), "--strict") as replay:
        outcome = await drive("ws", replay.url, "--prompt", "Say goodbye.")
        code, output = await replay.stop()
    miss = (
        "rpctape: no recorded match for request turn/start (live connection 1, recorded "
        "connection 1, client message 5)\nclosest recorded client messages:\n"
        f"- seq {recorded['seq']} request turn/start, next in order: /params/input/0/text: "
        'got "Say goodbye.", recorded "Say hello."'
    )
    candidate = {
        "seq": recorded["seq"],
        "description": "request turn/start, next in order",
        "note": '/params/input/0/text: got "Say goodbye.", recorded "Say hello."',
    }
    assert outcome["error"] == {
        "type": "CodexProtocolError",
        "message": f"turn/start failed: {miss}",
        "code": -32099,
        "data": {"rpctape": "no-match", "candidates": [candidate]},
        "cause": None,
    }
    assert "reply" not in outcome
    assert methods(outcome["sent"]) == SDK_METHODS
    assert outcome["received"][-1] == {
        "id": 4, "error": {"code": -32099, "message": miss, "data": outcome["error"]["data"]},
    }  # fmt: skip
    assert code == 1  # --strict: the report is not clean
    assert "1 recorded client message(s) not replayed" in output


# --- over stdio: rpctape-codex as the codex command -------------------------------------------


def standin_env(tmp_path: Path, **more: str) -> dict[str, str]:
    """The SDK's codex command is rpctape-codex (`CODEX_APP_SERVER_CMD`, the whole command)."""
    return {
        "CODEX_APP_SERVER_CMD": f"{SDK_BIN / 'rpctape-codex'} app-server",
        "RPCTAPE_CASSETTE": str(tmp_path / "sdk-stdio.jsonl"),
        "RPCTAPE_REPORT": str(tmp_path / "sessions.jsonl"),
        **more,
    }


def sessions(tmp_path: Path) -> list[tuple[str, int, bool]]:
    """Plan, exit code and cleanliness of every rpctape-codex session so far."""
    lines = (tmp_path / "sessions.jsonl").read_bytes().splitlines()
    return [(s["plan"], s["exit"], s["clean"]) for s in map(orjson.loads, lines)]


async def test_sdk_records_over_stdio_through_rpctape_codex_then_replays_offline(
    tmp_path: Path,
) -> None:
    """connect_stdio with rpctape-codex as the codex command: the first run records through the
    real codex, two more replay with no codex and no backend and see exactly the same messages;
    a different prompt then gets the same -32099 CodexProtocolError as over the websocket."""
    work = tmp_path / "work"
    work.mkdir()
    async with FakeBackend() as backend:
        home = tmp_path / "home"
        write_codex_home(home, backend.url)
        backend.script(Reply.text(REPLY))
        recording = standin_env(
            tmp_path,
            CODEX_HOME=str(home),
            RPCTAPE_REAL_CODEX=str(find_codex()),
            **{FAKE_API_KEY_ENV: FAKE_API_KEY},
        )
        recorded = await drive("stdio", "--prompt", PROMPT, env=recording, cwd=work)
    assert (recorded.get("reply"), recorded.get("error")) == (REPLY, None)
    received_as_expected(recorded)
    tape = load(tmp_path / "sdk-stdio.jsonl")
    assert tape.warnings == []
    holds_the_session(tape.frames(), recorded)
    assert FAKE_API_KEY not in (tmp_path / "sdk-stdio.jsonl").read_text()

    offline = standin_env(
        tmp_path, RPCTAPE_RECORD_MODE="none", RPCTAPE_REAL_CODEX=str(tmp_path / "no-codex")
    )
    for _ in range(2):
        assert await drive("stdio", "--prompt", PROMPT, env=offline, cwd=work) == recorded
    missed = await drive("stdio", "--prompt", "Say goodbye.", env=offline, cwd=work)
    assert missed["error"]["type"] == "CodexProtocolError"
    assert missed["error"]["message"].startswith(
        "turn/start failed: rpctape: no recorded match for request turn/start "
    )
    assert missed["error"]["message"].endswith('got "Say goodbye.", recorded "Say hello."')
    assert sessions(tmp_path) == [
        ("record", 0, True), ("replay", 0, True), ("replay", 0, True), ("replay", 0, False)
    ]  # fmt: skip


async def test_the_bare_standin_as_codex_app_server_cmd_serves_nothing(tmp_path: Path) -> None:
    """`CODEX_APP_SERVER_CMD` replaces the SDK's whole command (`codex app-server`): set to
    `rpctape-codex` alone it is not an app-server invocation and goes to the real codex (here
    none, so rpctape-codex exits 2 with one line on stderr, which the SDK discards); the SDK
    only sees its pipe close. Hence README's "CODEX_APP_SERVER_CMD='rpctape-codex app-server'"."""
    env = standin_env(tmp_path, RPCTAPE_REAL_CODEX=str(tmp_path / "no-codex"))
    env["CODEX_APP_SERVER_CMD"] = str(SDK_BIN / "rpctape-codex")
    outcome = await drive("stdio", "--prompt", PROMPT, env=env, cwd=tmp_path)
    assert outcome["error"] == {
        "type": "CodexTransportError",
        "message": "receiver loop failed: stdio transport closed",
        "code": None,
        "data": None,
        "cause": None,
    }
    assert (methods(outcome["sent"]), outcome["received"]) == (["initialize"], [])


async def test_a_failed_turn_completed_reaches_the_sdk_as_its_message(
    ws_recording: Recording, tmp_path: Path
) -> None:
    """A replayed `turn/completed` whose turn failed makes chat_once raise CodexProtocolError with
    exactly the turn's error message (and the turn as its data), as the official SDK does: the
    one channel both SDKs show a user when a replay must stop mid-turn."""
    reason = "rpctape: your answer to seq 12 differs: /result/decision"
    lines = [orjson.loads(line) for line in ws_recording.cassette.read_bytes().splitlines()]
    completed = next(e for e in lines if e.get("method") == "turn/completed")
    turn = completed["msg"]["params"]["turn"]
    turn |= {"status": "failed", "error": {"message": reason}}
    completed.pop("raw", None)
    cassette = tmp_path / "failed-turn.jsonl"
    cassette.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in lines))
    async with rpctape("replay", str(cassette)) as replay:
        outcome = await drive("ws", replay.url, "--prompt", PROMPT)
        await replay.stop()
    assert outcome["error"] == {
        "type": "CodexProtocolError",
        "message": reason,
        "code": None,
        "data": turn,
        "cause": None,
    }


# --- approvals ---------------------------------------------------------------------------------

APPROVAL_ARGUMENTS = {
    "cmd": "touch x",
    "sandbox_permissions": "require_escalated",
    "justification": "why",
}
APPROVAL_REPLY = "Done: x is touched."


async def test_an_approval_answered_differently_on_replay_fails_the_turn_with_the_reason(
    tmp_path: Path,
) -> None:
    """set_approval_handler accepts a command approval while recording over stdio; replayed
    (stdio, then the same cassette over a websocket) the same answer gets the same turn. A
    declining handler ends the turn at once as failed, with rpctape's reason as the error the
    SDK raises: this SDK shows nothing of a closed connection (it discards rpctape-codex's
    stderr and a close frame's reason), so the replay fails the turn in flight first."""
    work = tmp_path / "work"
    work.mkdir()
    touch = ("--prompt", "Touch x.")
    async with FakeBackend() as backend:
        home = tmp_path / "home"
        write_codex_home(home, backend.url, approval_policy="on-request")
        backend.script(
            Reply.function_call(name="exec_command", arguments=APPROVAL_ARGUMENTS),
            Reply.text(APPROVAL_REPLY),
        )
        env = standin_env(
            tmp_path,
            CODEX_HOME=str(home),
            RPCTAPE_REAL_CODEX=str(find_codex()),
            **{FAKE_API_KEY_ENV: FAKE_API_KEY},
        )
        recorded = await drive("stdio", *touch, "--approve", "accept", env=env, cwd=work)
    assert (recorded.get("reply"), recorded["approvals"]) == (
        APPROVAL_REPLY,
        ["CommandApprovalRequest"],
    )
    (request,) = [
        m
        for m in recorded["received"]
        if m.get("method") == "item/commandExecution/requestApproval"
    ]
    assert recorded["sent"][-1] == {
        "jsonrpc": "2.0",
        "id": request["id"],
        "result": {"decision": "accept"},
    }

    offline = standin_env(
        tmp_path, RPCTAPE_RECORD_MODE="none", RPCTAPE_REAL_CODEX=str(tmp_path / "no-codex")
    )
    replayed = await drive("stdio", *touch, "--approve", "accept", env=offline, cwd=work)
    assert replayed == recorded
    declined = await drive("stdio", *touch, "--approve", "decline", env=offline, cwd=work)
    reason = (
        "rpctape: response to item/commandExecution/requestApproval: /result/decision: got "
        '"decline", recorded "accept" (rpctape replay: the recording ends here)'
    )
    failed_turn = declined["error"]["data"]
    assert declined["error"] == {
        "type": "CodexProtocolError",
        "message": reason,
        "code": None,
        "data": failed_turn,
        "cause": None,
    }
    assert (failed_turn["status"], failed_turn["error"], failed_turn["items"]) == (
        "failed",
        {"message": reason},
        [],
    )
    assert declined["sent"][-1]["result"] == {"decision": "decline"}
    assert sessions(tmp_path) == [("record", 0, True), ("replay", 0, True), ("replay", 3, False)]

    async with rpctape("replay", str(tmp_path / "sdk-stdio.jsonl")) as replay:
        over_ws = await drive("ws", replay.url, *touch, "--approve", "decline")
        _, output = await replay.stop()
    assert over_ws["error"] == declined["error"]
    assert over_ws["received"] == declined["received"]
    assert '/result/decision: got "decline", recorded "accept"' in output  # and the report
