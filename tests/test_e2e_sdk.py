"""End to end: the official OpenAI Python SDK (`openai-codex`) drives the real codex app-server.

The SDK starts `CODEX_BIN app-server --listen stdio://` itself (`CodexConfig.codex_bin`); its
`CODEX_HOME` points the model provider at rpctape's fake backend, so turns run offline. These
tests pin down how the SDK talks to codex (what `rpctape-codex` must stand in for).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from openai_codex import (
    ApprovalMode,
    Codex,
    CodexConfig,
    CodexError,
    TransportClosedError,
)
from openai_codex.client import CodexClient

from proxy.codex.appserver import FAKE_API_KEY, FAKE_API_KEY_ENV, find_codex, write_codex_home
from proxy.codex.backend import API_KEY_RESPONSES_PATH, FakeBackend, Reply
from proxy.core.cassette import load
from proxy.pytest_plugin import standin_executable

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def sdk_processes(tracked_popen: list[subprocess.Popen[str]]) -> list[subprocess.Popen[str]]:
    """Every process the SDK starts, reaped and with its pipes closed at teardown (conftest)."""
    return tracked_popen


def sdk_config(home: Path, workdir: Path, codex_bin: Path | None = None) -> CodexConfig:
    """The SDK pointed at a codex binary, a CODEX_HOME for the fake backend, a working dir."""
    return CodexConfig(
        codex_bin=str(codex_bin or find_codex()),
        cwd=str(workdir),
        env={"CODEX_HOME": str(home), FAKE_API_KEY_ENV: FAKE_API_KEY},
    )


def two_turns(config: CodexConfig, workdir: Path) -> tuple[str | None, str | None, str]:
    """Initialize, start a thread, run two turns; the two final replies and the server's agent."""
    with Codex(config) as codex:
        thread = codex.thread_start(approval_mode=ApprovalMode.deny_all, cwd=str(workdir))
        first = thread.run("Say one.")
        second = thread.run("Say two.")
        return first.final_response, second.final_response, codex.metadata.userAgent or ""


def user_texts(body: dict[str, Any]) -> list[str]:
    """The user messages of a Responses API request body, oldest first."""
    return [
        part["text"]
        for item in body["input"]
        if item.get("type") == "message" and item.get("role") == "user"
        for part in item["content"]
        if part.get("type") == "input_text" and not part["text"].startswith("<")
    ]


async def test_official_sdk_two_turns_against_the_real_app_server(tmp_path: Path) -> None:
    """Two turns on one thread: the SDK gets each scripted reply, and the second model request
    carries the first exchange."""
    home, workdir = tmp_path / "home", tmp_path / "work"
    workdir.mkdir()
    async with FakeBackend() as backend:
        write_codex_home(home, backend.url)
        backend.script(Reply.text("First answer."), Reply.text("Second answer."))
        first, second, agent = await asyncio.to_thread(
            two_turns, sdk_config(home, workdir), workdir
        )
        posts = [r for r in backend.requests if r["path"] == API_KEY_RESPONSES_PATH]
    assert (first, second) == ("First answer.", "Second answer.")
    assert agent.startswith("codex_python_sdk/0.169.0 ")
    assert [user_texts(p["body"]) for p in posts] == [["Say one."], ["Say one.", "Say two."]]


RPCTAPE = (sys.executable, "-m", "proxy")


async def record_two_turns(tmp_path: Path) -> Path:
    """Record the SDK's two-turn session through `rpctape wrap`; the cassette's path."""
    home, recorded_in = tmp_path / "home", tmp_path / "recorded"
    cassette = tmp_path / "sdk.jsonl"
    recorded_in.mkdir()
    async with FakeBackend() as backend:
        write_codex_home(home, backend.url)
        backend.script(Reply.text("First answer."), Reply.text("Second answer."))
        recording = sdk_config(home, recorded_in)
        recording.launch_args_override = (
            *RPCTAPE, "wrap", "--cassette", str(cassette), "--",
            str(find_codex()), "app-server", "--listen", "stdio://",
        )  # fmt: skip
        replies = await asyncio.to_thread(two_turns, recording, recorded_in)
    assert replies[:2] == ("First answer.", "Second answer.")
    return cassette


def replaying(cassette: Path, workdir: Path, version: str) -> CodexConfig:
    """The SDK, claiming ``version``, served by `rpctape replay --stdio` (no codex, no backend)."""
    workdir.mkdir()
    return CodexConfig(
        launch_args_override=(*RPCTAPE, "replay", "--stdio", str(cassette)),
        cwd=str(workdir),
        env={"CODEX_HOME": str(workdir / "no-codex-home")},
        client_version=version,
    )


async def test_sdk_session_replays_after_a_version_bump_in_another_directory(
    tmp_path: Path,
) -> None:
    """Recorded through `rpctape wrap`, the two turns replay three times to an SDK claiming
    another version and working in another directory: the codex matching default ignores both."""
    cassette = await record_two_turns(tmp_path)
    for run in range(3):
        workdir = tmp_path / f"replay-{run}"
        config = replaying(cassette, workdir, f"9.{run}.0")
        assert two_turns(config, workdir)[:2] == ("First answer.", "Second answer.")


async def test_a_failed_turn_completed_reaches_the_sdk_as_its_message(tmp_path: Path) -> None:
    """A `turn/completed` whose turn failed makes `Thread.run` raise RuntimeError with exactly
    the turn's error message: a way to tell an SDK user why a replay stopped mid-turn."""
    cassette = await record_two_turns(tmp_path)
    lines = [orjson.loads(line) for line in cassette.read_bytes().splitlines()]
    completed = next(e for e in lines if e.get("method") == "turn/completed")
    turn = completed["msg"]["params"]["turn"]
    turn["status"] = "failed"
    turn["error"] = {"message": "rpctape: your answer to seq 12 differs: /result/decision"}
    completed.pop("raw", None)
    cassette.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in lines))
    workdir = tmp_path / "replay"
    with pytest.raises(RuntimeError) as caught:
        two_turns(replaying(cassette, workdir, "0.163.0"), workdir)
    assert type(caught.value) is RuntimeError
    assert str(caught.value) == "rpctape: your answer to seq 12 differs: /result/decision"


def _failing_codex(path: Path, explain: str) -> Path:
    """A codex stand-in that reads `initialize`, runs the shell line ``explain`` and exits 3."""
    path.write_text(f"#!/bin/sh\nread line\n{explain}\nexit 3\n")
    path.chmod(0o755)
    return path


def test_exit_with_a_message_on_stderr_reaches_the_sdk(tmp_path: Path) -> None:
    """A codex that writes to stderr and exits: the SDK raises TransportClosedError ending with the
    stderr tail; the exit code is not looked at. (The tail is read by a thread racing the stdout
    reader: without the pause after writing, about 1 run in 8 loses it.)"""
    codex_bin = _failing_codex(
        tmp_path / "codex",
        'echo "stand-in: no recorded match for request initialize" >&2; sleep 0.5',
    )
    with pytest.raises(TransportClosedError) as caught:
        Codex(sdk_config(tmp_path, tmp_path, codex_bin))
    assert str(caught.value) == (
        "Codex process closed stdout. stderr_tail=stand-in: no recorded match for request "
        "initialize"
    )


def test_a_line_that_is_not_json_on_stdout_reaches_the_sdk(tmp_path: Path) -> None:
    """A codex that writes a plain text line on stdout and exits: the SDK raises CodexError
    quoting the line, with no race."""
    codex_bin = _failing_codex(
        tmp_path / "codex", 'echo "stand-in: no recorded match for request initialize"'
    )
    with pytest.raises(CodexError) as caught:
        Codex(sdk_config(tmp_path, tmp_path, codex_bin))
    assert type(caught.value) is CodexError
    assert str(caught.value) == (
        "Invalid JSON-RPC line: 'stand-in: no recorded match for request initialize\\n'"
    )


# --- through rpctape-codex, the stand-in for the codex executable ------------------------------


def through_standin(
    tmp_path: Path, cassette: Path, workdir: Path, home: Path, real: Path, version: str
) -> CodexConfig:
    """The SDK with rpctape-codex as its codex binary (record or replay as the mode says)."""
    workdir.mkdir(exist_ok=True)
    return CodexConfig(
        codex_bin=str(standin_executable(tmp_path)),
        cwd=str(workdir),
        env={
            "CODEX_HOME": str(home),
            FAKE_API_KEY_ENV: FAKE_API_KEY,
            "RPCTAPE_CASSETTE": str(cassette),
            "RPCTAPE_REAL_CODEX": str(real),
            "RPCTAPE_REPORT": str(tmp_path / "sessions.jsonl"),
        },
        client_version=version,
    )


def sessions(tmp_path: Path) -> list[tuple[str, int, bool]]:
    """Plan, exit code and cleanliness of every rpctape-codex session so far."""
    lines = (tmp_path / "sessions.jsonl").read_bytes().splitlines()
    return [(s["plan"], s["exit"], s["clean"]) for s in map(orjson.loads, lines)]


async def test_sdk_records_through_rpctape_codex_then_replays_offline(tmp_path: Path) -> None:
    """`codex_bin=rpctape-codex`: the first run (mode once, no cassette) records the two turns
    through the real codex; three more runs replay them with no codex (a nonexistent
    RPCTAPE_REAL_CODEX) and no model backend, each with another client version and cwd."""
    home, cassette = tmp_path / "home", tmp_path / "cassettes" / "two.jsonl"
    async with FakeBackend() as backend:
        write_codex_home(home, backend.url)
        backend.script(Reply.text("First answer."), Reply.text("Second answer."))
        config = through_standin(
            tmp_path, cassette, tmp_path / "rec", home, find_codex(), "0.163.0"
        )
        recorded = await asyncio.to_thread(two_turns, config, tmp_path / "rec")
    assert recorded[:2] == ("First answer.", "Second answer.")
    assert sessions(tmp_path) == [("record", 0, True)]
    methods = [e.get("method") for e in load(cassette).frames() if e["dir"] == "c2s"]
    assert (methods[0], methods.count("turn/start")) == ("initialize", 2)
    for run in range(3):
        workdir = tmp_path / f"replay-{run}"
        config = through_standin(
            tmp_path, cassette, workdir, tmp_path / "no-home", tmp_path / "no-codex", f"9.{run}.0"
        )
        assert two_turns(config, workdir) == recorded
    assert sessions(tmp_path) == [("record", 0, True)] + [("replay", 0, True)] * 3


APPROVAL_ARGUMENTS = {
    "cmd": "touch x",
    "sandbox_permissions": "require_escalated",
    "justification": "why",
}


def approval_turn(
    config: CodexConfig, workdir: Path, decision: str
) -> tuple[list[str], str, str | None]:
    """One turn whose command asks for approval, answered ``decision``: the methods of the
    server requests the handler saw, the turn's final status and its error message."""
    seen: list[str] = []

    def handler(method: str, params: dict[str, Any] | None) -> dict[str, Any]:
        seen.append(method)
        return {"decision": decision}

    client = CodexClient(config, approval_handler=handler)
    try:
        client.start()
        client.initialize()
        thread = client.thread_start({"approvalPolicy": "on-request", "cwd": str(workdir)})
        turn = client.turn_start(thread.thread.id, "Touch x.")
        completed = client.wait_for_turn_completed(turn.turn.id).turn
    finally:
        client.close()
    status = str(getattr(completed.status, "value", completed.status))
    return seen, status, completed.error.message if completed.error else None


async def test_a_declined_approval_that_was_accepted_fails_fast_with_the_reason(
    tmp_path: Path,
) -> None:
    """Recorded accepting a command approval; replayed declining it: the turn ends at once as
    failed, its error message rpctape's explanation (the recording's `turn/completed`, failed),
    instead of a turn that never ends; then the session closes and rpctape-codex exits 3."""
    home, cassette = tmp_path / "home", tmp_path / "approval.jsonl"
    async with FakeBackend() as backend:
        write_codex_home(home, backend.url, approval_policy="on-request")
        backend.script(
            Reply.function_call(name="exec_command", arguments=APPROVAL_ARGUMENTS),
            Reply.text("Done: x is touched."),
        )
        config = through_standin(tmp_path, cassette, tmp_path / "rec", home, find_codex(), "1")
        recorded = await asyncio.to_thread(approval_turn, config, tmp_path / "rec", "accept")
    approval = ["item/commandExecution/requestApproval"]
    assert recorded == (approval, "completed", None)
    config = through_standin(
        tmp_path, cassette, tmp_path / "replay", home, tmp_path / "no-codex", "1"
    )
    assert approval_turn(config, tmp_path / "replay", "accept") == recorded  # the happy path
    assert approval_turn(config, tmp_path / "replay", "decline") == (
        approval,
        "failed",
        "rpctape: response to item/commandExecution/requestApproval: /result/decision: got "
        '"decline", recorded "accept" (rpctape replay: the recording ends here)',
    )
    assert sessions(tmp_path) == [("record", 0, True), ("replay", 0, True), ("replay", 3, False)]
