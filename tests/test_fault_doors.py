"""Faults at every door, as processes and projects a user runs: `rpctape replay` over a
websocket and over stdio, `rpctape record`, `rpctape wrap`, `rpctape-codex` (RPCTAPE_ARGS and
RPCTAPE_REPORT), the pytest fixtures (the marker's ``faults=``) and the library keyword.

Each door: the faults act on what the client gets, a fault that never fired is reported (and
fails ``--strict`` / ``strict=True``), a bad spec is refused at start with the wrong part and
the grammar. (The grammar itself and each kind through the bridge: tests/test_faults.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from proxy import ReplayServer, replay_server
from proxy.cli import app
from proxy.core.cassette import load
from proxy.core.faults import GRAMMAR, Fault, FaultError, FaultKind
from proxy.core.replay_report import ReplayMismatch
from tests.helpers import REPO, C, S, live_exchange, rpctape_listening, write_tape
from tests.projects import INI, run_pytest, summary

TURN = REPO / "cassettes" / "turn-streamed.jsonl"
BIN = Path(sys.executable).parent
"""The virtualenv's ``bin`` folder: ``rpctape`` and ``rpctape-codex``."""
WAIT = 5.0
"""Longest wait for one frame or one process step (a failure bound, not a measurement)."""
OVERLOAD = b'{"error":{"code":-32001,"message":"Server overloaded; retry later."},"id":'
PING = b'{"id":1,"method":"ping"}'
PONG = b'{"id":1,"result":"pong"}'


def ping_tape(path: Path) -> Path:
    """One request and its answer: a session a client can finish cleanly in one line."""
    return write_tape(path, [(C, PING.decode()), (S, PONG.decode())])


# --- rpctape replay, a process listening on a websocket -----------------------------------------


def replay_process(
    cassette: Path, *args: str
) -> contextlib.AbstractAsyncContextManager[tuple[asyncio.subprocess.Process, str]]:
    """`rpctape replay CASSETTE --listen ws://127.0.0.1:0 ARGS`, with the URL it prints;
    killed if still running on exit."""
    return rpctape_listening("replay", str(cassette), "--listen", "ws://127.0.0.1:0", *args)


async def stopped(proc: asyncio.subprocess.Process) -> tuple[int, str, str]:
    """SIGINT, then the exit status, the rest of stdout and stderr."""
    proc.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def receive(ws: ClientConnection) -> bytes:
    """The next frame as bytes, within :data:`WAIT` seconds."""
    frame = await asyncio.wait_for(ws.recv(), WAIT)
    return frame.encode() if isinstance(frame, str) else frame


def report_head(live: int, not_replayed: int, not_sent: int) -> str:
    return (
        f"rpctape replay report for {TURN}: {live} live connection(s), 0 miss(es), "
        f"{not_replayed} recorded client message(s) not replayed, {not_sent} recorded server "
        "message(s) not sent"
    )


async def test_replay_process_error_fault_over_a_websocket() -> None:
    """`rpctape replay --fault thread/start:error`: the client's thread/start gets codex's
    overload error with its own id instead of the recorded answer; the process exits 0 with
    no unfired-fault line; the cassette's bytes are unchanged."""
    before = TURN.read_bytes()
    exchange = live_exchange(load(TURN), 1)
    at = next(i for i, (_, m) in enumerate(exchange) if m and b'"thread/start"' in m)
    message = exchange[at][1]
    assert message is not None
    live_id = orjson.dumps(orjson.loads(message)["id"])
    recorded = exchange[at + 1][0]
    answered = [*recorded[:-1], OVERLOAD + live_id + b"}"]  # the answer is the last frame
    assert b'"result":{"thread"' in recorded[-1]
    async with replay_process(TURN, "--fault", "thread/start:error") as (proc, url):
        async with connect(url) as ws:
            for expected, sent in exchange[: at + 1]:
                assert [await receive(ws) for _ in expected] == expected
                assert sent is not None
                await ws.send(sent.decode())
            assert [await receive(ws) for _ in answered] == answered
        code, out, err = await stopped(proc)
    assert code == 0, err
    assert out.splitlines()[0] == report_head(1, 1, 16)
    assert "never fired" not in out + err
    assert TURN.read_bytes() == before


async def test_replay_process_disconnect_fault_over_a_websocket() -> None:
    """`rpctape replay --fault initialize:disconnect`: the client is closed with 1011 and the
    fault's reason instead of getting the initialize answer."""
    before = TURN.read_bytes()
    (expected, message), *_ = live_exchange(load(TURN), 1)
    assert expected == [] and message is not None
    async with replay_process(TURN, "--fault", "initialize:disconnect") as (proc, url):
        async with connect(url) as ws:
            await ws.send(message.decode())
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), WAIT)
        code, out, err = await stopped(proc)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
        1011, "rpctape fault initialize:disconnect"
    )  # fmt: skip
    assert code == 0, err
    assert out.splitlines()[0] == report_head(1, 3, 19)
    assert "never fired" not in out + err
    assert TURN.read_bytes() == before


async def test_replay_process_delay_fault_over_a_websocket() -> None:
    """`rpctape replay --fault item/agentMessage/delta#2:delay=1s`: every frame arrives
    exactly as recorded, and the turn (turn/start sent to turn/completed received) takes at
    least a second."""
    before = TURN.read_bytes()
    exchange = live_exchange(load(TURN), 1)
    loop = asyncio.get_running_loop()
    received: list[bytes] = []
    started = 0.0
    async with replay_process(TURN, "--fault", "item/agentMessage/delta#2:delay=1s") as (
        proc,
        url,
    ):
        async with connect(url) as ws:
            for expected, message in exchange:
                received += [await receive(ws) for _ in expected]
                if message is not None:
                    if b'"turn/start"' in message:
                        started = loop.time()
                    await ws.send(message.decode())
            turn = loop.time() - started
        code, out, err = await stopped(proc)
    assert received == [frame for expected, _ in exchange for frame in expected]
    assert b'"turn/completed"' in received[-1]
    assert turn >= 1.0
    assert code == 0, err
    assert out.splitlines()[0] == report_head(1, 0, 0)
    assert TURN.read_bytes() == before


# --- faults that never fired ---------------------------------------------------------------------


@pytest.mark.parametrize("strict", [False, True], ids=["plain", "strict"])
async def test_replay_process_reports_an_unfired_fault(strict: bool) -> None:
    """A whole clean session with `--fault nope:drop`: stderr says it never fired (one line),
    the report on stdout says it too; `--strict` makes that exit 1."""
    exchange = live_exchange(load(TURN), 1)
    args = ("--fault", "nope:drop", *(("--strict",) if strict else ()))
    async with replay_process(TURN, *args) as (proc, url):
        async with connect(url) as ws:
            for expected, message in exchange:
                assert [await receive(ws) for _ in expected] == expected
                if message is not None:
                    await ws.send(message.decode())
        code, out, err = await stopped(proc)
    assert (code, err) == (1 if strict else 0, "rpctape: fault nope:drop never fired\n")
    assert out.splitlines()[:2] == [report_head(1, 0, 0), "rpctape: fault nope:drop never fired"]


async def run_stdio(argv: list[str], stdin: bytes, env: dict[str, str]) -> tuple[int, bytes, str]:
    """Run a stdio door with ``stdin`` (then end of input); exit status, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, **env}, cwd=REPO,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out, err.decode()


def stdio_report(cassette: Path, unfired: str | None, sent: int = 1) -> str:
    """The report a one-connection stdio replay of :func:`ping_tape` prints."""
    lines = [
        f"rpctape replay report for {cassette}: 1 live connection(s), 0 miss(es), "
        f"{1 - sent} recorded client message(s) not replayed, {1 - sent} recorded server "
        "message(s) not sent",
        "transport: stdio (newline-delimited JSON on stdin/stdout; one connection, paired with "
        "the recording that fits it best)",
        *([] if unfired is None else [f"rpctape: fault {unfired} never fired"]),
        f"live connection 1 = recorded connection 1: {sent} of 1 client message(s) matched, "
        f"{sent} of 1 server message(s) sent",
    ]
    return "\n".join(lines)


@pytest.mark.parametrize("strict", [False, True], ids=["plain", "strict"])
async def test_replay_stdio_reports_an_unfired_fault(tmp_path: Path, strict: bool) -> None:
    """`rpctape replay --stdio --fault nope:drop --fault ping:delay=1ms`: the answer comes
    (delayed), the report on stderr names the unfired fault, then its own line; `--strict`
    exits 1."""
    cassette = ping_tape(tmp_path / "ping.jsonl")
    argv = [str(BIN / "rpctape"), "replay", "--stdio", str(cassette), "--fault", "nope:drop",
            "--fault", "ping:delay=1ms", *(["--strict"] if strict else [])]  # fmt: skip
    code, out, err = await run_stdio(argv, PING + b"\n", {})
    assert (code, out) == (1 if strict else 0, PONG + b"\n")
    assert err == stdio_report(cassette, "nope:drop") + "\nrpctape: fault nope:drop never fired\n"


def sessions(report: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in report.read_bytes().splitlines()]


@pytest.mark.parametrize("strict", [False, True], ids=["plain", "strict"])
async def test_standin_reports_an_unfired_fault(tmp_path: Path, strict: bool) -> None:
    """`rpctape-codex` with RPCTAPE_ARGS `--fault nope:drop --fault ping:delay=1ms`: stderr
    says the unfired one never fired; RPCTAPE_REPORT's `faults` counts both; the session is
    not clean; `--strict` exits 1 with the report after the line."""
    cassette = ping_tape(tmp_path / "ping.jsonl")
    report = tmp_path / "sessions.jsonl"
    env = {
        "RPCTAPE_CASSETTE": str(cassette),
        "RPCTAPE_RECORD_MODE": "none",
        "RPCTAPE_ARGS": "--fault nope:drop --fault ping:delay=1ms" + (" --strict" * strict),
        "RPCTAPE_REPORT": str(report),
    }
    argv = [str(BIN / "rpctape-codex"), "app-server", "--listen", "stdio://"]
    code, out, err = await run_stdio(argv, PING + b"\n", env)
    assert (code, out) == (1 if strict else 0, PONG + b"\n")
    line = "rpctape: fault nope:drop never fired\n"
    assert err == (line + stdio_report(cassette, "nope:drop") + "\n" if strict else line)
    (session,) = sessions(report)
    assert session == {
        "plan": "replay", "cassette": str(cassette), "exit": 1 if strict else 0, "clean": False,
        "closed": None, "explanation": "", "report": stdio_report(cassette, "nope:drop"),
        "faults": [{"fault": "nope:drop", "fired": 0}, {"fault": "ping:delay=1ms", "fired": 1}],
        "kept": False, "played": [1], "stale": "",
    }  # fmt: skip


async def test_library_reports_an_unfired_fault_and_strict_fails_on_it() -> None:
    """`replay_server(..., faults=[...])`: the report's `unfired` and `notes` name the fault
    that never fired; with `strict=True` leaving the block raises ReplayMismatch."""
    exchange = live_exchange(load(TURN), 1)
    for strict in (False, True):
        faults = ["nope:drop", Fault("turn/start", FaultKind.DROP, nth=2)]
        server = replay_server(TURN, faults=faults, strict=strict)
        with contextlib.ExitStack() as raises:
            if strict:
                caught = raises.enter_context(pytest.raises(ReplayMismatch))
            async with server as url, connect(url) as ws:
                for expected, message in exchange:
                    assert [await receive(ws) for _ in expected] == expected
                    if message is not None:
                        await ws.send(message.decode())
        report = server.report
        assert report.unfired == ("nope:drop", "turn/start#2:drop")
        assert report.notes == (
            "rpctape: fault nope:drop never fired",
            "rpctape: fault turn/start#2:drop never fired",
        )
        assert not report.clean and not report.misses and not report.unused_client
        if strict:
            assert str(caught.value) == report.render()
    assert server.faults.summary() == [
        {"fault": "nope:drop", "fired": 0}, {"fault": "turn/start#2:drop", "fired": 0}
    ]  # fmt: skip


# --- a disconnect over stdio -----------------------------------------------------------------


async def test_disconnect_over_stdio_exits_4_at_both_stdio_doors(tmp_path: Path) -> None:
    """`ping:disconnect` on `rpctape replay --stdio` and on `rpctape-codex`: stdout ends with
    nothing written and the process exits 4; RPCTAPE_REPORT says the fault fired once."""
    cassette = ping_tape(tmp_path / "ping.jsonl")
    argv = [str(BIN / "rpctape"), "replay", "--stdio", str(cassette), "--fault", "ping:disconnect"]
    code, out, err = await run_stdio(argv, PING + b"\n", {})
    assert (code, out) == (4, b""), err
    assert err == stdio_report(cassette, None) + "\n"  # the replay sent it; the fault took it
    report = tmp_path / "sessions.jsonl"
    env = {
        "RPCTAPE_CASSETTE": str(cassette),
        "RPCTAPE_RECORD_MODE": "none",
        "RPCTAPE_ARGS": "--fault ping:disconnect",
        "RPCTAPE_REPORT": str(report),
    }
    argv = [str(BIN / "rpctape-codex"), "app-server"]
    code, out, err = await run_stdio(argv, PING + b"\n", env)
    assert (code, out, err) == (4, b"", "")
    (session,) = sessions(report)
    assert (session["exit"], session["closed"], session["faults"]) == (
        4, None, [{"fault": "ping:disconnect", "fired": 1}]
    )  # fmt: skip


async def test_a_delayed_answer_still_reaches_a_stdio_client_that_ended_its_input(
    tmp_path: Path,
) -> None:
    """`ping:delay=300ms` with the whole input given at once (`< requests.jsonl`): the answer
    is still written, 300 ms later, before stdout ends, at both stdio doors. (It was dropped
    with the client's input: the bridge dropped held frames when either leg closed.)"""
    cassette = ping_tape(tmp_path / "ping.jsonl")
    replay = [str(BIN / "rpctape"), "replay", "--stdio", str(cassette), "--fault",
              "ping:delay=300ms"]  # fmt: skip
    report = stdio_report(cassette, None) + "\n"
    assert await run_stdio(replay, PING + b"\n", {}) == (0, PONG + b"\n", report)
    env = {
        "RPCTAPE_CASSETTE": str(cassette),
        "RPCTAPE_RECORD_MODE": "none",
        "RPCTAPE_ARGS": "--fault ping:delay=300ms",
    }
    standin = [str(BIN / "rpctape-codex"), "app-server"]
    assert await run_stdio(standin, PING + b"\n", env) == (0, PONG + b"\n", "")


async def test_a_delayed_frame_still_reaches_a_wrap_client_that_ended_its_input(
    tmp_path: Path,
) -> None:
    """`rpctape wrap --fault x:delay=300ms -- cat` with the input given at once: the child's
    echo is written 300 ms later, before stdout ends, and recorded as forwarded with its
    delay. (It was neither written nor noted: the session closed the client first.)"""
    cassette = tmp_path / "w.jsonl"
    argv = [str(BIN / "rpctape"), "wrap", "--cassette", str(cassette), "--fault",
            "x:delay=300ms", "--", "cat"]  # fmt: skip
    note = b'{"method":"x"}'
    assert await run_stdio(argv, note + b"\n", {}) == (0, note + b"\n", "")
    (echo,) = [e for e in load(cassette).frames() if e["dir"] == "s2c"]
    assert (echo["delay_ms"], echo.get("forwarded")) == (300, None)
    assert [e for e in load(cassette).events if e["kind"] == "error"] == []


# --- a bad spec, at every door -----------------------------------------------------------------

BAD = [
    ("thread/start:eror", "unknown fault 'eror'; valid: error, error=CODE, error=CODE:MESSAGE, "
     "delay=DURATION, drop, disconnect, disconnect=CODE, garbage, stall"),
    ("x#0:drop", "#0: N counts occurrences from 1 to 1000000000"),
    ("a:delay=5m", "duration '5m': write 250ms, 2s or 1.5s"),
    ("a:disconnect=1005", "close code 1005 cannot be sent; use 1000-1003, 1007-1014 or 3000-4999"),
]  # fmt: skip
"""Bad specs and the wrong part each message must name."""


@pytest.mark.parametrize(
    "command",
    [
        ["replay", str(TURN)],
        ["replay", "--stdio", str(TURN)],
        ["record", "--cassette", "never.jsonl", "--upstream", "ws://127.0.0.1:9"],
        ["wrap", "--cassette", "never.jsonl"],
    ],
    ids=["replay", "replay-stdio", "record", "wrap"],
)
@pytest.mark.parametrize(("spec", "problem"), BAD, ids=[s for s, _ in BAD])
def test_cli_refuses_a_bad_spec_with_the_wrong_part_and_the_grammar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str], spec: str, problem: str
) -> None:
    """Every rpctape command that takes --fault: exit 2, the spec and its wrong part on the
    first line, then the grammar; nothing on stdout, no cassette made."""
    monkeypatch.chdir(tmp_path)
    tail = ["--", "cat"] if command[0] == "wrap" else []
    result = CliRunner().invoke(app, [*command, "--fault", "a:drop", "--fault", spec, *tail])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == f"rpctape: error: --fault {spec!r}: {problem}\n{GRAMMAR}\n"
    assert list(tmp_path.iterdir()) == []


async def test_standin_refuses_a_bad_spec_in_rpctape_args(tmp_path: Path) -> None:
    """RPCTAPE_ARGS with a bad --fault: `rpctape-codex` exits 2 with the spec, its wrong part
    and the grammar on stderr, and answers the client's first request with the first line."""
    for spec, problem in BAD:
        env = {"RPCTAPE_CASSETTE": str(TURN), "RPCTAPE_ARGS": f"--fault '{spec}'"}
        argv = [str(BIN / "rpctape-codex"), "app-server"]
        code, out, err = await run_stdio(argv, b'{"id":"i","method":"initialize"}\n', env)
        first = f"rpctape-codex: error: --fault {spec!r}: {problem}"
        assert (code, err) == (2, f"{first}\n{GRAMMAR}\n")
        assert orjson.loads(out) == {"id": "i", "error": {"code": -32098, "message": first}}
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("spec", "problem"), BAD, ids=[s for s, _ in BAD])
def test_library_refuses_a_bad_spec_keyword(spec: str, problem: str) -> None:
    """`replay_server(path, faults=[...])` and `ReplayServer(...)` raise FaultError (a
    UsageError and a ValueError) naming the spec and the wrong part, then the grammar."""
    for door in (replay_server, ReplayServer):
        with pytest.raises(FaultError) as caught:
            door(TURN, faults=["a:drop", spec])
        assert caught.value.problem == f"--fault {spec!r}: {problem}"
        assert str(caught.value) == f"{caught.value.problem}\n{GRAMMAR}"
        assert isinstance(caught.value, ValueError)


# --- the pytest fixtures: the marker's faults= -------------------------------------------------

PROJECT_TESTS = '''
import os
import subprocess

import pytest
from websockets.sync.client import connect

PING, PONG = '{"id":1,"method":"ping"}', '{"id":1,"result":"pong"}'


def ping(url):
    with connect(url) as ws:
        ws.send(PING)
        assert ws.recv(timeout=5) == PONG


def ping_codex(standin):
    done = subprocess.run([str(standin.path), "app-server"], input=PING.encode() + b"\\n",
                          capture_output=True, env={**os.environ, **standin.env}, timeout=30)
    assert done.stdout == PONG.encode() + b"\\n"


@pytest.mark.rpctape(cassette="ping.jsonl", faults=["nope:drop", "ping:delay=1ms"])
def test_unfired(rpctape_url):
    ping(rpctape_url)


@pytest.mark.rpctape(cassette="ping.jsonl", faults=["nope:drop"], strict=True)
def test_unfired_strict(rpctape_url):
    ping(rpctape_url)


@pytest.mark.rpctape(cassette="ping.jsonl", faults=["nope:drop"], strict=True)
def test_unfired_strict_codex(rpctape_codex):
    ping_codex(rpctape_codex)


@pytest.mark.rpctape(cassette="ping.jsonl", faults=["thread/start:eror"])
def test_bad_spec(rpctape_url):
    pass


@pytest.mark.rpctape(cassette="ping.jsonl", faults=["x#0:drop"])
def test_bad_spec_codex(rpctape_codex):
    pass
'''


async def test_marker_faults_unfired_report_strict_and_bad_specs(tmp_path: Path) -> None:
    """A generated project: the `rpctape` fixture's report section names the unfired fault
    (-rP shows it for a passing test); `strict=True` fails the test on it, through the
    `rpctape` and the `rpctape_codex` fixtures; a bad spec errors the test at setup with the
    wrong part and the grammar, for both fixtures."""
    (tmp_path / "pytest.ini").write_text(INI)
    (tmp_path / "test_faults.py").write_text(PROJECT_TESTS)
    (tmp_path / "cassettes").mkdir()
    cassette = ping_tape(tmp_path / "cassettes" / "ping.jsonl")
    code, out = await run_pytest(tmp_path, "-rP")
    assert (code, summary(out)) == (1, "2 failed, 1 passed, 2 errors"), out
    report = stdio_report(cassette, "nope:drop")
    websocket_report = "\n".join(
        line for line in report.splitlines() if not line.startswith("transport:")
    )
    assert re.search(rf"-+ Captured rpctape call -+\n{re.escape(websocket_report)}\n", out), out
    for test, failed in (("test_unfired_strict", websocket_report), ("_codex", report)):
        failure = rf"{test} _+\nrpctape strict replay failed\n{re.escape(failed)}\n"
        assert re.search(failure, out), out
    for spec, problem in BAD[:2]:
        assert f"rpctape: @pytest.mark.rpctape: --fault {spec!r}: {problem}\n{GRAMMAR}" in out
