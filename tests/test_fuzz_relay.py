"""Fuzz the real relay with a bounded corpus: every hostile frame category of issue 8 plus
Hypothesis-random frames, both directions, over a websocket, a unix socket, a child (JSON
Lines) and `rpctape wrap` (stdio). Each frame arrives unchanged and the cassette rebuilds
it byte for byte; nothing logs a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect, unix_connect
from websockets.asyncio.server import ServerConnection, serve

from proxy import recording_proxy
from proxy.core.address import ListenAddress
from proxy.core.cassette import frame_of, load
from tests.helpers import is_utf8

Frame = str | bytes

CORPUS: list[Frame] = [
    json.dumps({"id": 1, "method": "x", "params": {"a": [1, 2], "b": "c"}}, indent=1),
    '{"id":2,"method":"x","params":"\\ud800"}',  # a lone surrogate escape
    '{"s":"\\udfff\\ud800\\u00e9\\u0000\\n"}',
    "[" * 255 + "]" * 255,
    '{"a":' * 300 + "1" + "}" * 300,
    '{"id":3,"n":1180591620717411303424}',
    '{"n":1e400,"m":-0,"o":1.0}',
    '{"a":1,"a":2}',
    '\ufeff{"id":4,"method":"x"}',
    "not json at all",
    '{"truncated":',
    "",
    "garbage \\u12 and \\uZZZZ",
    '{"id":"a\\"b\\u00e9","method":"é ☃ 𝄞"}',
    b"\x00\xff\xfe",
    b"",
    bytes(range(256)),
]
"""The categories of issue 8: pretty-printed JSON with newlines, lone surrogates, nesting at
and past the parser's limit, big numbers, duplicate keys, a BOM, garbage, empty, ``\\u``
escapes, binary."""

FRAMES = st.lists(st.one_of(st.text(max_size=200), st.binary(max_size=200)), max_size=12)
LINES = st.lists(st.text(max_size=200).filter(lambda s: "\n" not in s), max_size=12)

ECHO_LINES = (
    "import sys\n"
    "for line in sys.stdin.buffer:\n"
    "    sys.stdout.buffer.write(line); sys.stdout.buffer.flush()\n"
)

FUZZ = settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def as_line(frame: Frame) -> bytes:
    """How a frame travels over JSON Lines (no raw newline inside a line)."""
    data = frame.encode() if isinstance(frame, str) else frame
    return data.replace(b"\n", b" ")


def wire(frame: Frame) -> bytes:
    return frame.encode() if isinstance(frame, str) else frame


def check_cassette(path: Path, sent: list[bytes]) -> None:
    """The cassette loads, and rebuilds what was sent each way, byte for byte, in order."""
    tape = load(path)
    c2s = [frame_of(e) for e in tape.frames() if e["dir"] == "c2s"]
    s2c = [frame_of(e) for e in tape.frames() if e["dir"] == "s2c"]
    assert c2s == sent
    assert s2c == sent


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    assert [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= 40] == []


@contextlib.asynccontextmanager
async def echo_upstream(received: list[Frame]) -> AsyncIterator[str]:
    """A websocket upstream that echoes every frame verbatim (and looks at none)."""

    async def echo(ws: ServerConnection) -> None:
        async for frame in ws:
            received.append(frame)
            await ws.send(frame)

    async with serve(echo, "127.0.0.1", 0, max_size=None, compression=None) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def over_websocket(frames: list[Frame], cassette: Path, unix: Path | None) -> None:
    received: list[Frame] = []
    async with echo_upstream(received) as upstream:
        listen = ListenAddress.parse(f"unix://{unix}" if unix is not None else "ws://127.0.0.1:0")
        async with recording_proxy(upstream, cassette, overwrite=True, listen=listen) as url:
            opened = (
                unix_connect(str(unix), max_size=None)
                if unix is not None
                else connect(url, max_size=None)
            )
            async with opened as ws:
                for frame in frames:
                    await ws.send(frame)
                echoed = [await ws.recv() for _ in frames]
    assert received == frames  # the upstream received exactly these, and echoed them
    assert echoed == frames
    check_cassette(cassette, [wire(f) for f in frames])


async def through_child(lines: list[bytes], cassette: Path) -> None:
    """record -- COMMAND: websocket client, an echoing child over JSON Lines."""
    command = (sys.executable, "-c", ECHO_LINES)
    async with (
        recording_proxy(None, cassette, overwrite=True, command=command) as url,
        connect(url, max_size=None) as ws,
    ):
        for line in lines:
            await ws.send(line.decode() if is_utf8(line) else line)
        echoed = [await ws.recv() for _ in lines]
    assert [wire(e) for e in echoed] == lines
    check_cassette(cassette, lines)


async def through_wrap(lines: list[bytes], cassette: Path) -> None:
    """rpctape wrap: our stdio to an echoing child."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "wrap", "--cassette", str(cassette), "--overwrite",
        "--", sys.executable, "-c", ECHO_LINES,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(b"".join(x + b"\n" for x in lines)), 30)
    assert proc.returncode == 0, err.decode()
    assert out == b"".join(x + b"\n" for x in lines)
    assert err == b""  # no traceback, no warning
    check_cassette(cassette, lines)



@pytest.mark.parametrize("transport", ["websocket", "unix"])
async def test_corpus_over_websockets(
    transport: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every corpus frame, both ways, over TCP and a unix socket."""
    caplog.set_level(logging.INFO)
    unix = tmp_path / "r.sock" if transport == "unix" else None
    await over_websocket(CORPUS, tmp_path / "c.jsonl", unix)
    no_tracebacks(caplog)


@pytest.mark.parametrize("transport", ["websocket", "unix"])
@FUZZ
@given(frames=FRAMES)
def test_random_frames_over_websockets(
    tmp_path: Path, transport: str, frames: list[Frame]
) -> None:
    """Hypothesis-random text and binary frames, both ways, over TCP and a unix socket."""
    unix = tmp_path / "r.sock" if transport == "unix" else None
    asyncio.run(over_websocket(frames, tmp_path / "c.jsonl", unix))


async def test_corpus_through_a_child(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Every corpus frame as a line (newlines inside turned to spaces), both ways."""
    caplog.set_level(logging.INFO)
    await through_child([as_line(f) for f in CORPUS], tmp_path / "c.jsonl")
    no_tracebacks(caplog)


@settings(FUZZ, max_examples=4)
@given(lines=LINES)
def test_random_lines_through_a_child(tmp_path: Path, lines: list[str]) -> None:
    """Hypothesis-random lines through record -- COMMAND."""
    asyncio.run(through_child([x.encode("utf-8", "surrogatepass") for x in lines],
                              tmp_path / "c.jsonl"))  # fmt: skip


async def test_corpus_through_wrap(tmp_path: Path) -> None:
    """Every corpus frame as a line through `rpctape wrap`, both ways."""
    await through_wrap([as_line(f) for f in CORPUS], tmp_path / "w.jsonl")


@settings(FUZZ, max_examples=3)
@given(lines=st.lists(st.binary(max_size=200).map(lambda b: b.replace(b"\n", b"")), max_size=8))
def test_random_lines_through_wrap(tmp_path: Path, lines: list[bytes]) -> None:
    """Hypothesis-random byte lines (UTF-8 or not) through `rpctape wrap` (a subprocess each)."""
    asyncio.run(through_wrap(lines, tmp_path / "w.jsonl"))
