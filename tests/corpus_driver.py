"""Play the recorded client of a cassette against a replaying rpctape, over a websocket
(``rpctape replay CASSETTE --listen ws://127.0.0.1:0``) or over stdio (``rpctape-codex
app-server`` with ``RPCTAPE_CASSETTE`` and ``RPCTAPE_RECORD_MODE=none``), each a subprocess
run from the virtualenv's ``bin`` folder.

The driver sends each recorded client frame once every server frame recorded before it has
arrived, its requests with ids of the other type (integers for recorded strings and the
reverse, see :func:`tests.helpers.live_exchange`), and collects every server frame. The test
compares them with the recording: each frame byte for byte, except that a response to a
client request carries the driver's id. Every process it starts is stopped before
:func:`play` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from proxy.core.cassette import load
from tests.helpers import REPO, Exchange, live_exchange

CORPUS = REPO / "cassettes" / "corpus"
CORPUS_CASSETTES = sorted(p for p in CORPUS.glob("*/*.jsonl") if not p.name.startswith("."))
"""Every corpus cassette, ``cassettes/corpus/VERSION/NAME.jsonl`` (not the temporary
``.NAME.xxxx.verify.jsonl`` files a verify leaves beside them)."""

BIN = Path(sys.executable).parent
"""The virtualenv's ``bin`` folder: ``rpctape`` and ``rpctape-codex`` are there."""

WAIT = 20.0
"""Longest wait, in seconds, for the server frames a client frame waits for (a bound, not a
measurement: the replay sends them at once)."""


class Transport(enum.Enum):
    """How the driver reaches the replay."""

    WEBSOCKET = "websocket"
    STDIO = "stdio"


@dataclass
class Played:
    """What a replay sent, beside what the recording says it should have."""

    expected: list[bytes]
    received: list[bytes] = field(default_factory=list)
    exit_code: int | None = None
    stderr: str = ""


def expected_frames(exchange: Exchange) -> list[bytes]:
    """Every server frame of ``exchange``, in recorded order (responses with the driver's ids)."""
    return [frame for before, _ in exchange for frame in before]


class _Peer:
    """One client connection: send a frame, receive the next one (``None`` at the end)."""

    async def send(self, frame: bytes) -> None:
        raise NotImplementedError

    async def recv(self) -> bytes | None:
        raise NotImplementedError


class _WebSocketPeer(_Peer):
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, frame: bytes) -> None:
        await self.ws.send(frame.decode())

    async def recv(self) -> bytes | None:
        try:
            message = await self.ws.recv()
        except ConnectionClosed:
            return None
        return message.encode() if isinstance(message, str) else message


class _StdioPeer(_Peer):
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def send(self, frame: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(frame + b"\n")
        await self.process.stdin.drain()

    async def recv(self) -> bytes | None:
        assert self.process.stdout is not None
        line = await self.process.stdout.readline()
        return line.removesuffix(b"\n") if line else None


async def _converse(peer: _Peer, exchange: Exchange, played: Played) -> None:
    """Send each client frame once the frames before it arrived; then wait for the rest."""
    arrived = asyncio.Condition()

    async def read() -> None:
        while (frame := await peer.recv()) is not None:
            async with arrived:
                played.received.append(frame)
                arrived.notify_all()
        async with arrived:
            arrived.notify_all()

    reader = asyncio.create_task(read(), name="corpus driver reader")
    try:
        due = 0
        for before, message in exchange:
            due += len(before)

            def ready(due: int = due) -> bool:
                return len(played.received) >= due or reader.done()

            async with arrived:
                await asyncio.wait_for(arrived.wait_for(ready), WAIT)
            if len(played.received) < due:
                return  # the replay ended early: the comparison says what is missing
            if message is not None:
                await peer.send(message)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


@contextlib.asynccontextmanager
async def _process(
    *argv: str, env: dict[str, str] | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A subprocess with piped stdin, stdout and stderr, killed if still running on exit."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
        cwd=REPO,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _finish(process: asyncio.subprocess.Process, played: Played) -> None:
    """Wait for the process to exit; keep its exit code and stderr."""
    assert process.stderr is not None
    stderr = await asyncio.wait_for(process.stderr.read(), WAIT)
    played.exit_code = await asyncio.wait_for(process.wait(), WAIT)
    played.stderr = stderr.decode(errors="replace")


async def play(cassette: Path, transport: Transport) -> Played:
    """Replay ``cassette`` with rpctape over ``transport`` (``--strict``) and play its recorded
    client against it."""
    exchange = live_exchange(load(cassette), 1)
    played = Played(expected_frames(exchange))
    if transport is Transport.WEBSOCKET:
        argv = (str(BIN / "rpctape"), "replay", str(cassette), "--listen", "ws://127.0.0.1:0")
        async with _process(*argv, "--strict") as process:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), WAIT)
            url = line.decode().removeprefix("listening on ").strip()
            async with connect(url, max_size=None, compression=None) as ws:
                await _converse(_WebSocketPeer(ws), exchange, played)
            process.send_signal(signal.SIGINT)
            await _finish(process, played)
    else:
        env = {
            "RPCTAPE_CASSETTE": str(cassette),
            "RPCTAPE_RECORD_MODE": "none",
            "RPCTAPE_ARGS": "--strict",
        }
        async with _process(str(BIN / "rpctape-codex"), "app-server", env=env) as process:
            await _converse(_StdioPeer(process), exchange, played)
            assert process.stdin is not None
            process.stdin.close()
            await _finish(process, played)
    return played
