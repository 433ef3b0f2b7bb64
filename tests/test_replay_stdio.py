"""Functional tests of `rpctape replay --stdio` (proxy.wire.session.Session.serve_stdio) over real
pipes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
import pytest

from proxy import ReplayServer
from proxy.core.cassette import load
from tests.helpers import CASSETTES, REPO, C, S, Script, live_exchange, write_tape

LIMIT = 64 * 1024 * 1024
"""Line limit of the test's own reader of the replay's stdout."""


class StdioClient:
    """A client of `rpctape replay --stdio`: lines to its stdin, lines from its stdout.

    Everything read from stdout is kept in :attr:`lines`, so a test can assert that stdout
    carried nothing but the protocol; stderr is read all along (it holds logs and the report).
    """

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        self.proc = proc
        self.stdin = proc.stdin
        self.stdout = proc.stdout
        self.lines: list[bytes] = []
        self._stderr = asyncio.create_task(proc.stderr.read(), name="stdio-client:stderr")

    async def send(self, line: bytes, *, newline: bool = True) -> None:
        """Write one line (with ``\\n`` unless told otherwise)."""
        self.stdin.write(line + b"\n" if newline else line)
        await self.stdin.drain()

    async def recv(self, count: int) -> list[bytes]:
        """The next ``count`` stdout lines, without ``\\n``, each within 10 seconds."""
        got = []
        for _ in range(count):
            line = await asyncio.wait_for(self.stdout.readline(), 10)
            assert line.endswith(b"\n"), f"stdout ended: {line[:200]!r}"
            got.append(line[:-1])
        self.lines += got
        return got

    async def finish(self, *, close_stdin: bool = True) -> tuple[int, bytes, str]:
        """End stdin (unless already ended); return the exit code, the rest of stdout (which
        should be empty) and all of stderr."""
        if close_stdin:
            self.stdin.close()
        rest = await asyncio.wait_for(self.stdout.read(), 20)
        code = await asyncio.wait_for(self.proc.wait(), 20)
        return code, rest, (await self._stderr).decode()


@asynccontextmanager
async def stdio_replay(cassette: Path, *args: str) -> AsyncIterator[StdioClient]:
    """Start `rpctape replay --stdio CASSETTE ARGS` with piped stdin, stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        "replay",
        "--stdio",
        str(cassette),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=LIMIT,
    )
    client = StdioClient(proc)
    try:
        yield client
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        client._stderr.cancel()
        await asyncio.gather(client._stderr, return_exceptions=True)


def report_of(stderr: str) -> list[str]:
    """The report's lines: from its summary line to the end of stderr."""
    start = stderr.index("rpctape replay report for ")
    return stderr[start:].splitlines()


def summary(cassette: Path, misses: int = 0, client: int = 0, server: int = 0) -> str:
    return (
        f"rpctape replay report for {cassette}: 1 live connection(s), {misses} miss(es), "
        f"{client} recorded client message(s) not replayed, {server} recorded server "
        "message(s) not sent"
    )


STDIO_NOTE = (
    "transport: stdio (newline-delimited JSON on stdin/stdout; one connection, paired with "
    "the recording that fits it best)"
)


@pytest.mark.parametrize("cassette", CASSETTES, ids=[p.stem for p in CASSETTES])
async def test_real_cassette_replays_exactly_over_stdio(cassette: Path) -> None:
    """Each real cassette over stdio: other id types and a trace get exactly the recorded
    results (approval and attestation requests answered as recorded); stdout carries nothing
    else; end of stdin exits 0 with a clean report on stderr."""
    exchange = live_exchange(load(cassette), 1)
    async with stdio_replay(cassette, "--strict") as client:
        for expected, message in exchange:
            assert await client.recv(len(expected)) == expected
            if message is not None:
                await client.send(message)
        code, rest, err = await client.finish()
    assert (code, rest) == (0, b""), err
    assert client.lines == [frame for expected, _ in exchange for frame in expected]
    assert report_of(err)[:2] == [summary(cassette), STDIO_NOTE]


async def test_bad_lines_are_misses_and_the_last_line_needs_no_newline(tmp_path: Path) -> None:
    """A non-JSON line and an empty line are logged misses without reply, an unmatched request
    gets error -32099 with its id, and a last line without newline is still replayed."""
    script: Script = [
        (C, '{"id":1,"method":"a"}'),
        (S, '{"id":1,"result":{"ok":true}}'),
        (C, "junk"),
        (S, b"\x01\x02"),
        (C, '{"method":"last"}'),
        (S, '{"method":"bye","params":{}}'),
    ]
    cassette = write_tape(tmp_path / "t.jsonl", script)
    async with stdio_replay(cassette, "--strict") as client:
        await client.send(b"not json")
        await client.send(b"")
        await client.send(b'{"id":"x","method":"nope"}')
        (reply,) = await client.recv(1)
        await client.send(b'{"id":"q","method":"a"}')
        assert await client.recv(1) == [b'{"id":"q","result":{"ok":true}}']
        await client.send(b"junk")
        assert await client.recv(1) == [b"\x01\x02"]  # a binary frame goes out as a line too
        await client.send(b'{"method":"last"}', newline=False)
        client.stdin.close()
        assert await client.recv(1) == [b'{"method":"bye","params":{}}']
        code, rest, err = await client.finish(close_stdin=False)
    error = orjson.loads(reply)
    assert (error["id"], error["error"]["code"]) == ("x", -32099)
    assert error["error"]["message"].startswith(
        "rpctape: no recorded match for request nope "
        "(live connection 1, recorded connection 1, client message 3)\n"
    )
    assert (code, rest) == (1, b""), err  # --strict: three misses
    report = report_of(err)
    assert report[:4] == [
        summary(cassette, misses=3),
        STDIO_NOTE,
        "stdio: the client's last line (17 bytes) had no newline; it was taken as a message",
        "live connection 1 = recorded connection 1: 3 of 3 client message(s) matched, "
        "3 of 3 server message(s) sent",
    ]
    misses = [line for line in report if line.startswith("  miss: ")]
    assert misses == [
        "  miss: rpctape: no recorded match for text frame 'not json' "
        "(live connection 1, recorded connection 1, client message 1)",
        "  miss: rpctape: no recorded match for text frame '' "
        "(live connection 1, recorded connection 1, client message 2)",
        "  miss: rpctape: no recorded match for request nope "
        "(live connection 1, recorded connection 1, client message 3)",
    ]
    log = err[: err.index("rpctape replay report for ")]
    assert log.count("WARNING rpctape.replay: rpctape: no recorded match for") == 3


async def test_ten_mib_lines_both_ways(tmp_path: Path) -> None:
    """A 10 MiB request line matches, and its 10 MiB result comes back as one line."""
    blob = "x" * (10 * 1024 * 1024)
    request = orjson.dumps({"id": 1, "method": "big", "params": {"blob": blob}}).decode()
    result = orjson.dumps({"id": 1, "result": {"echo": blob}}).decode()
    cassette = write_tape(tmp_path / "big.jsonl", [(C, request), (S, result)])
    async with stdio_replay(cassette, "--strict") as client:
        await client.send(orjson.dumps({"id": "big-1", "method": "big", "params": {"blob": blob}}))
        (line,) = await client.recv(1)
        code, rest, err = await client.finish()
    assert line == orjson.dumps({"id": "big-1", "result": {"echo": blob}})
    assert (code, rest) == (0, b""), err[-2000:]


@pytest.mark.parametrize(("flags", "code"), [(("--strict",), 1), ((), 0)])
async def test_strict_exit_code_with_an_unused_message(
    tmp_path: Path, flags: tuple[str, ...], code: int
) -> None:
    """End of stdin before the last recorded request: exit 1 with --strict, 0 without."""
    script: Script = [
        (C, '{"id":1,"method":"a"}'),
        (S, '{"id":1,"result":{}}'),
        (C, '{"id":2,"method":"b"}'),
        (S, '{"id":2,"result":{}}'),
    ]
    cassette = write_tape(tmp_path / "t.jsonl", script)
    async with stdio_replay(cassette, *flags) as client:
        await client.send(b'{"id":1,"method":"a"}')
        assert await client.recv(1) == [b'{"id":1,"result":{}}']
        got = await client.finish()
    assert got[:2] == (code, b""), got[2]
    assert report_of(got[2]) == [
        summary(cassette, client=1, server=1),
        STDIO_NOTE,
        "live connection 1 = recorded connection 1: 1 of 2 client message(s) matched, "
        "1 of 2 server message(s) sent",
        "  not replayed: seq 4 > request b",
        "  not sent: seq 5 < response to b",
    ]


async def test_on_miss_close_ends_stdout_and_exits(tmp_path: Path) -> None:
    """--on-miss close: an unmatched request gets the miss as its JSON-RPC error (stdio has
    no close reason: a client that hides stderr still shows why), then stdout and the
    process end, stdin still open; the exit code 3 says the replay ended the session."""
    cassette = write_tape(tmp_path / "t.jsonl", [(C, '{"id":1,"method":"a"}')])
    async with stdio_replay(cassette, "--on-miss", "close") as client:
        await client.send(b'{"id":7,"method":"b"}')
        code, rest, err = await client.finish(close_stdin=False)
    assert code == 3, err
    (line,) = rest.splitlines()
    reply = orjson.loads(line)
    assert (reply["id"], reply["error"]["code"]) == (7, -32099)
    assert reply["error"]["message"] == (
        "rpctape: no recorded match for request b (live connection 1, recorded connection 1, "
        "client message 1)\nclosest recorded client messages:\n"
        '- seq 2 request a, next in order: method differs: got "b", recorded "a"'
    )
    assert report_of(err)[0] == summary(cassette, misses=1, client=1)


async def test_a_recorded_server_close_ends_the_session(tmp_path: Path) -> None:
    """A recording whose server closed: once replayed, stdout ends and the process exits."""
    script: Script = [(C, '{"method":"go"}'), (S, '{"method":"done"}')]
    cassette = write_tape(tmp_path / "t.jsonl", script, server_closes=True)
    async with stdio_replay(cassette, "--strict") as client:
        await client.send(b'{"method":"go"}')
        assert await client.recv(1) == [b'{"method":"done"}']
        code, rest, err = await client.finish(close_stdin=False)
    assert (code, rest) == (0, b""), err


@pytest.mark.parametrize(("flags", "code"), [(("--strict",), 1), ((), 0)])
async def test_sigterm_stops_with_the_report(flags: tuple[str, ...], code: int) -> None:
    """SIGTERM while the client is connected: the report on stderr, the --strict exit code."""
    cassette = REPO / "cassettes" / "turn-streamed.jsonl"
    ((expected, message), *_) = live_exchange(load(cassette), 1)
    async with stdio_replay(cassette, *flags) as client:
        assert expected == [] and message is not None
        await client.send(message)
        await client.recv(1)
        client.proc.send_signal(signal.SIGTERM)
        got = await client.finish(close_stdin=False)
    assert got[:2] == (code, b""), got[2]
    assert report_of(got[2])[1] == STDIO_NOTE


async def test_files_instead_of_pipes(tmp_path: Path) -> None:
    """`< requests.jsonl > replies.jsonl` works (files cannot be watched by the event loop)."""
    cassette = REPO / "cassettes" / "two-turns.jsonl"
    exchange = live_exchange(load(cassette), 1)
    requests = tmp_path / "requests.jsonl"
    requests.write_bytes(b"".join(m + b"\n" for _, m in exchange if m is not None))
    replies = tmp_path / "replies.jsonl"
    with requests.open("rb") as stdin, replies.open("wb") as stdout:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "proxy",
            "replay",
            "--stdio",
            str(cassette),
            "--strict",
            stdin=stdin,
            stdout=stdout,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    assert replies.read_bytes().splitlines() == [f for expected, _ in exchange for f in expected]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--record-mode", "all"], "record mode 'all' needs an upstream to record "),
        (
            ["--listen", "ws://127.0.0.1:0"],
            "--listen does not apply to rpctape replay --stdio: it serves one client on stdin "
            "and stdout; nothing listens",
        ),
        (["--record-mode", "twice"], "invalid record mode 'twice'; valid values: none, once, "),
    ],
    ids=["record-mode", "listen", "typo"],
)
async def test_refused_options_exit_2(args: list[str], message: str) -> None:
    """Record modes and --listen are refused with --stdio: exit 2, nothing on stdout."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        "replay",
        "--stdio",
        str(REPO / "cassettes" / "turn-streamed.jsonl"),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert (proc.returncode, out) == (2, b"")
    assert err.decode().startswith(f"rpctape: error: {message}")


# --- in process ---------------------------------------------------------------------------


async def read_to_end(fd: int) -> bytes:
    """Everything written to the pipe ``fd`` reads from, until its write end is closed."""

    def read() -> bytes:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)

    return await asyncio.to_thread(read)


async def test_serve_stdio_in_process_overlong_line(tmp_path: Path) -> None:
    """serve_stdio on a pair of pipes: a line over max_size stops the replay with a note; the
    output pipe then ends, and the descriptors are left blocking as they were."""
    script: Script = [(C, '{"method":"a"}'), (S, '{"method":"ok"}'), (C, '{"method":"b"}')]
    cassette = write_tape(tmp_path / "t.jsonl", script)
    c2s_r, c2s_w = os.pipe()
    s2c_r, s2c_w = os.pipe()
    try:
        os.write(c2s_w, b'{"method":"a"}\n' + b"y" * 100 + b'\n{"method":"b"}\n')
        server = ReplayServer(cassette, max_size=64)
        report, out = await asyncio.gather(server.serve_stdio(c2s_r, s2c_w), read_to_end(s2c_r))
        assert out == b'{"method":"ok"}\n'
        assert report.render().splitlines()[:4] == [
            summary(cassette, client=1),
            STDIO_NOTE,
            "stdio: a line from the client exceeded 64 bytes: reading stopped",
            "live connection 1 = recorded connection 1: 1 of 2 client message(s) matched, "
            "1 of 1 server message(s) sent",
        ]
        assert os.get_blocking(c2s_r) and os.get_blocking(s2c_w)
    finally:
        for fd in (c2s_r, c2s_w, s2c_r, s2c_w):
            os.close(fd)


async def test_close_stops_serve_stdio(tmp_path: Path) -> None:
    """close() from another task (shutdown) ends serve_stdio while the client is silent: the
    replay is serving (it answered the first request), then close() ends it and the output."""
    cassette = write_tape(
        tmp_path / "t.jsonl",
        [(C, '{"id":1,"method":"a"}'), (S, '{"id":1,"result":{}}'), (C, '{"method":"b"}')],
    )
    c2s_r, c2s_w = os.pipe()
    s2c_r, s2c_w = os.pipe()
    try:
        server = ReplayServer(cassette)
        serving = asyncio.create_task(server.serve_stdio(c2s_r, s2c_w), name="test:serve")
        os.write(c2s_w, b'{"id":7,"method":"a"}\n')
        first = await asyncio.wait_for(asyncio.to_thread(os.read, s2c_r, 1 << 16), 10)
        assert first == b'{"id":7,"result":{}}\n'
        assert not serving.done()  # answered, and still serving the silent client
        reading = asyncio.create_task(read_to_end(s2c_r), name="test:read")
        await server.close()
        report = await asyncio.wait_for(serving, 5)
        assert await asyncio.wait_for(reading, 5) == b""
        assert [u.description for u in report.unused_client] == ["> notification b"]
        await server.close()  # twice is fine
    finally:
        for fd in (c2s_r, c2s_w, s2c_r, s2c_w):
            os.close(fd)
