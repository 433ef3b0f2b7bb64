"""Tests of `rpctape wrap`: stdout carries only the child's output, everything is recorded,
exit codes and signals pass through, and no child outlives it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import orjson
import pytest

from proxy.core.cassette import frame_of, load
from proxy.wire.session import exit_status
from tests.faults import failing_rpctape

ECHO = r"""
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: (print('{"got":"TERM"}', flush=True), sys.exit(15)))
print('{"pid":%d}' % os.getpid(), flush=True)
for line in sys.stdin:
    if line.strip() == "exit7":
        sys.exit(7)
    if line.strip() == "sleep":
        time.sleep(60)
    sys.stdout.write(line); sys.stdout.flush()
"""


async def start_wrap(cassette: Path, *extra: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "wrap", "--cassette", str(cassette), *extra,
        "--", sys.executable, "-c", ECHO,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, limit=32 * 1024 * 1024,
    )  # fmt: skip


async def first_line(proc: asyncio.subprocess.Process) -> bytes:
    assert proc.stdout is not None
    return await asyncio.wait_for(proc.stdout.readline(), 20)


def test_exit_status() -> None:
    """A signal death becomes 128 + N, as in a shell."""
    assert (exit_status(0), exit_status(7), exit_status(-15)) == (0, 7, 143)


async def test_relays_and_records_bad_input_faithfully(tmp_path: Path) -> None:
    """JSON, non-JSON, empty and very long lines pass through and are recorded exactly;
    stdout holds only the child's output; the exit code is the child's."""
    cassette = tmp_path / "w.jsonl"
    proc = await start_wrap(cassette)
    assert proc.stdin is not None and proc.stdout is not None
    hello = await first_line(proc)
    long_line = b'{"method":"big","params":{"s":"' + b"x" * (10 * 1024 * 1024) + b'"}}'
    lines = [b'{"id":1,"method":"initialize","params":{}}', b"not json", b"", long_line]
    for line in lines:
        proc.stdin.write(line + b"\n")
    await proc.stdin.drain()
    echoed = [await asyncio.wait_for(proc.stdout.readuntil(b"\n"), 20) for _ in lines]
    proc.stdin.write(b'{"last":true}')  # no newline, then end of input
    proc.stdin.close()
    rest, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    assert echoed == [line + b"\n" for line in lines]
    assert rest == b'{"last":true}\n'
    tape = load(cassette)
    c2s = [frame_of(e) for e in tape.frames() if e["dir"] == "c2s"]
    s2c = [frame_of(e) for e in tape.frames() if e["dir"] == "s2c"]
    assert c2s == [*lines, b'{"last":true}']
    assert s2c == [hello.rstrip(b"\n"), *lines, b'{"last":true}']
    assert tape.header["transport"] == "stdio"
    opened = tape.events[0]
    assert (opened["kind"], opened["transport"], opened["client_transport"]) == (
        "open",
        "stdio",
        "stdio",
    )
    errors = [e["message"] for e in tape.events if e["kind"] == "error"]
    assert errors == [
        "the client's last line (13 bytes) had no newline; it was taken as a message"
    ]
    closes = [(e["by"], e["leg"], e.get("exit_code")) for e in tape.events if e["kind"] == "close"]
    assert closes == [("client", "client", None), ("proxy", "server", 0)]


async def test_exit_code_propagates(tmp_path: Path) -> None:
    """The child's exit code is wrap's, and the cassette says so."""
    cassette = tmp_path / "w.jsonl"
    proc = await start_wrap(cassette)
    assert proc.stdin is not None
    await first_line(proc)
    proc.stdin.write(b"exit7\n")
    await proc.stdin.drain()
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 7, err.decode()
    (close,) = [e for e in load(cassette).events if e["kind"] == "close"]
    assert (close["by"], close["exit_code"], close["reason"]) == (
        "server",
        7,
        "app-server exited with code 7",
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signals_are_forwarded(tmp_path: Path, sig: signal.Signals) -> None:
    """A signal to wrap reaches the child; wrap exits with the child's status."""
    proc = await start_wrap(tmp_path / "w.jsonl")
    await first_line(proc)
    proc.send_signal(sig)
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    if sig is signal.SIGTERM:
        assert out == b'{"got":"TERM"}\n'
        assert proc.returncode == 15, err.decode()
    else:  # the child dies of SIGINT (KeyboardInterrupt): 128 + 2, as a shell reports it
        assert proc.returncode == 130, err.decode()
        assert b"KeyboardInterrupt" in err


async def test_killed_wrap_leaves_no_child(tmp_path: Path) -> None:
    """SIGKILL on wrap: the child is stopped too (parent-death signal), nothing is left."""
    proc = await start_wrap(tmp_path / "w.jsonl")
    assert proc.stdin is not None
    hello = await first_line(proc)
    child_pid = int(hello.decode().split(":")[1].rstrip("}\n"))
    proc.stdin.write(b"sleep\n")
    await proc.stdin.drain()
    proc.kill()
    await proc.wait()
    for _ in range(200):
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            break
        await asyncio.sleep(0.05)
    else:
        os.kill(child_pid, signal.SIGKILL)
        pytest.fail(f"child {child_pid} outlived the killed wrap")
    assert load(tmp_path / "w.jsonl").frames()[0]["dir"] == "s2c"


async def test_missing_command(tmp_path: Path) -> None:
    """A command that does not exist: one clear line, exit 2, and no cassette left behind."""
    cassette = tmp_path / "w.jsonl"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "wrap", "--cassette", str(cassette), "--",
        str(tmp_path / "no-such-codex"), "app-server",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert (proc.returncode, out) == (2, b"")
    assert err == (
        f"rpctape: error: wrap -- {tmp_path / 'no-such-codex'}: no such executable; give a "
        "path to it or a command on PATH\n"
    ).encode()
    assert not cassette.exists()


async def test_cassette_write_failure_stops_the_child(tmp_path: Path) -> None:
    """The cassette fails on the 4th write (header, open, the child's hello, then our line):
    the line is not passed on, the child is stopped, stderr has one error line, exit 74."""
    cassette = tmp_path / "w.jsonl"
    proc = await asyncio.create_subprocess_exec(
        *failing_rpctape("wrap", "--cassette", str(cassette), "--", sys.executable, "-c", ECHO),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "RPCTAPE_FAIL_AFTER": "3"},
    )  # fmt: skip
    assert proc.stdin is not None
    hello = await first_line(proc)
    pid = orjson.loads(hello)["pid"]
    proc.stdin.write(b'{"id":1,"method":"never recorded"}\n')
    await proc.stdin.drain()
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 74
    assert out == b""  # neither the line's echo nor the child's goodbye: none was recorded
    assert err.decode().splitlines() == [
        f"rpctape: error: cannot write cassette {cassette}: No space left on device (errno 28); "
        "frames from now on cannot be recorded"
    ]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    tape = load(cassette)
    assert [frame_of(e) for e in tape.frames()] == [hello.rstrip(b"\n")]


async def test_stdin_from_dev_null(tmp_path: Path) -> None:
    """stdin and stdout on /dev/null (devices the event loop cannot watch): no traceback,
    the child sees end of input, wrap exits with its status."""
    with open(os.devnull, "rb") as null_in, open(os.devnull, "wb") as null_out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy", "wrap", "--cassette", str(tmp_path / "w.jsonl"),
            "--", sys.executable, "-c", "import sys; sys.stdin.read(); print('{}')",
            stdin=null_in, stdout=null_out, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert (proc.returncode, err) == (0, b"")
    assert [frame_of(e) for e in load(tmp_path / "w.jsonl").frames()] == [b"{}"]
