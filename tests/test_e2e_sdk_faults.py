"""End to end: faults reach the official Python SDK (`openai-codex`) as a real outage would.

The SDK's client (`CodexClient`) starts `rpctape-codex` as its codex binary, which replays the
shipped cassettes/turn-streamed.jsonl (recorded with rpctape's own client: the SDK's
`initialize` differs in clientInfo, which the `codex` match preset ignores, and in
`capabilities`, which `--ignore /params/capabilities` leaves out) with faults from
RPCTAPE_ARGS, or from the marker's ``faults=`` in a generated test project. No codex and no
model backend run. "Within a second" is measured and only bounded by :data:`BOUND`.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
from openai_codex import CodexConfig, CodexRpcError, TransportClosedError
from openai_codex.client import CodexClient

from proxy.pytest_plugin import standin_executable
from tests.helpers import REPO
from tests.projects import INI, run_pytest, summary

pytestmark = pytest.mark.e2e

TURN = REPO / "cassettes" / "turn-streamed.jsonl"
TEXT = "Hello from the recorded turn, streamed in deltas."
"""The agent message the cassette's turn completes with."""
DELTAS = ["Hello from the ", "recorded turn, streamed ", "in deltas."]
BOUND = 5.0
"""The failure bound of what should take under a second (a hang fails, a slow machine not)."""

T = TypeVar("T")


@pytest.fixture(autouse=True)
def sdk_processes(tracked_popen: list[subprocess.Popen[str]]) -> list[subprocess.Popen[str]]:
    """Every process the SDK starts, reaped and with its pipes closed at teardown (conftest)."""
    return tracked_popen


def sdk_client(tmp_path: Path, fault: str) -> CodexClient:
    """The SDK's client with rpctape-codex replaying turn-streamed under ``fault``."""
    workdir = tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    return CodexClient(
        CodexConfig(
            codex_bin=str(standin_executable(tmp_path)),
            cwd=str(workdir),
            env={
                "RPCTAPE_CASSETTE": str(TURN),
                "RPCTAPE_RECORD_MODE": "none",
                "RPCTAPE_ARGS": f"--ignore /params/capabilities --fault {fault}",
                "RPCTAPE_REPORT": str(tmp_path / "sessions.jsonl"),
                "CODEX_HOME": str(tmp_path / "no-codex-home"),
            },
        )
    )


def session(tmp_path: Path) -> dict[str, Any]:
    """The one rpctape-codex session's RPCTAPE_REPORT line."""
    [line] = (tmp_path / "sessions.jsonl").read_bytes().splitlines()
    body: dict[str, Any] = orjson.loads(line)
    return body


async def timed(call: Callable[[], T]) -> tuple[T, float]:
    """Run a blocking SDK call in a thread; its result and how long it took (at most BOUND)."""

    def run() -> tuple[T, float]:
        start = time.monotonic()
        result = call()
        return result, time.monotonic() - start

    return await asyncio.wait_for(asyncio.to_thread(run), BOUND)


def raised(call: Callable[[], object]) -> Callable[[], BaseException]:
    """``call`` as a call that returns the exception it raised (and fails if it raised none)."""

    def run() -> BaseException:
        try:
            call()
        except Exception as exc:
            return exc
        raise AssertionError("no exception")

    return run


async def test_thread_start_error_reaches_the_sdk_as_codex_overload(tmp_path: Path) -> None:
    """`thread/start:error`: `thread_start` raises `CodexRpcError` (not `ServerBusyError`:
    no `data`) with -32001 and codex's message, well within the bound; the cassette's bytes
    are unchanged; the report says the fault fired once."""
    before = TURN.read_bytes()
    client = sdk_client(tmp_path, "thread/start:error")
    try:
        client.start()
        await timed(client.initialize)
        error, took = await timed(raised(lambda: client.thread_start({})))
    finally:
        client.close()
    assert type(error) is CodexRpcError
    assert (error.code, error.message, error.data) == (
        -32001, "Server overloaded; retry later.", None
    )  # fmt: skip
    assert str(error) == "JSON-RPC error -32001: Server overloaded; retry later."
    assert took < BOUND
    print(f"thread/start:error raised after {took:.3f} s")
    assert session(tmp_path)["faults"] == [{"fault": "thread/start:error", "fired": 1}]
    assert TURN.read_bytes() == before


async def test_initialize_disconnect_reaches_the_sdk_as_its_transport_error(
    tmp_path: Path,
) -> None:
    """`initialize:disconnect`: `initialize` raises `TransportClosedError` (stdout ended,
    nothing on stderr) well within the bound; rpctape-codex exits 4; the cassette is
    unchanged."""
    before = TURN.read_bytes()
    client = sdk_client(tmp_path, "initialize:disconnect")
    try:
        client.start()
        error, took = await timed(raised(client.initialize))
    finally:
        client.close()
    assert type(error) is TransportClosedError
    assert str(error) == "Codex process closed stdout. stderr_tail="
    assert took < BOUND
    print(f"initialize:disconnect raised after {took:.3f} s")
    report = session(tmp_path)
    assert (report["exit"], report["closed"], report["faults"]) == (
        4, None, [{"fault": "initialize:disconnect", "fired": 1}]
    )  # fmt: skip
    assert TURN.read_bytes() == before


def streamed_turn(client: CodexClient) -> tuple[list[tuple[float, str]], str, str, float]:
    """Start a thread and a turn; the deltas (with when they came), the turn's status, its
    agent message and how long the turn took (turn/start sent to turn/completed read)."""
    thread = client.thread_start({})
    start = time.monotonic()
    turn = client.turn_start(thread.thread.id, "Say hello.")
    deltas: list[tuple[float, str]] = []
    while True:
        note = client.next_turn_notification(turn.turn.id)
        if note.method == "item/agentMessage/delta":
            deltas.append((time.monotonic(), getattr(note.payload, "delta", "")))
        if note.method == "turn/completed":
            done = getattr(note.payload, "turn", None)
            assert done is not None
            texts = [getattr(item.root, "text", None) for item in done.items]
            status = str(getattr(done.status, "value", done.status))
            return deltas, status, "".join(t for t in texts if t), time.monotonic() - start


async def test_a_slow_delta_makes_the_turn_a_second_longer_and_it_still_completes(
    tmp_path: Path,
) -> None:
    """`item/agentMessage/delta#2:delay=1s`: the turn takes at least a second (a replay with
    no fault takes milliseconds) and completes with the recorded text, every delta in order;
    the cassette is unchanged."""
    before = TURN.read_bytes()
    client = sdk_client(tmp_path, "item/agentMessage/delta#2:delay=1s")
    try:
        client.start()
        client.initialize()
        (deltas, status, text, took), _ = await asyncio.wait_for(
            timed(lambda: streamed_turn(client)), BOUND + 1
        )
    finally:
        client.close()
    assert [delta for _, delta in deltas] == DELTAS
    assert (status, text) == ("completed", TEXT)
    assert took >= 1.0
    print(f"the delayed turn took {took:.3f} s")
    assert session(tmp_path)["faults"] == [
        {"fault": "item/agentMessage/delta#2:delay=1s", "fired": 1}
    ]
    assert TURN.read_bytes() == before


MARKED = '''
import pytest
from openai_codex import CodexConfig, CodexRpcError
from openai_codex.client import CodexClient


@pytest.mark.rpctape(cassette="turn-streamed.jsonl", record_mode="none",
                     ignore=["/params/capabilities"], faults=["thread/start:error"])
def test_overloaded_thread_start(rpctape_codex):
    client = CodexClient(CodexConfig(codex_bin=str(rpctape_codex.path), env=rpctape_codex.env))
    client.start()
    proc = client._proc
    try:
        client.initialize()
        with pytest.raises(CodexRpcError) as caught:
            client.thread_start({})
    finally:
        client.close()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            pipe.close()
    assert (caught.value.code, caught.value.message, caught.value.data) == (
        -32001, "Server overloaded; retry later.", None
    )
    [session] = rpctape_codex.sessions()
    assert session["faults"] == [{"fault": "thread/start:error", "fired": 1}]
'''


async def test_the_marker_faults_reach_the_sdk_through_the_rpctape_codex_fixture(
    tmp_path: Path,
) -> None:
    """A generated project: `@pytest.mark.rpctape(faults=["thread/start:error"])` with the
    `rpctape_codex` fixture; the SDK raises the overload error and the test passes; the
    cassette is unchanged."""
    (tmp_path / "pytest.ini").write_text(INI)
    (tmp_path / "test_sdk.py").write_text(MARKED)
    (tmp_path / "cassettes").mkdir()
    cassette = tmp_path / "cassettes" / "turn-streamed.jsonl"
    cassette.write_bytes(TURN.read_bytes())
    code, out = await run_pytest(tmp_path)
    assert (code, summary(out)) == (0, "1 passed"), out
    assert cassette.read_bytes() == TURN.read_bytes()
