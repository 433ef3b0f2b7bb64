"""The same opening-handshake cases against `rpctape record` and `rpctape replay`: one
listener serves both, so Origin, the token, health checks, the frame limit, the handshake
timeout, duplicate headers and the request-size limit must behave the same in each."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from proxy import ReplayServer, recording_proxy
from proxy.core.cassette import new_header
from proxy.core.jsonrpc import Direction
from proxy.core.recorder import Recorder
from proxy.wire.store import CassetteWriter
from tests.scripted_upstream import ScriptedUpstream

Serve = Callable[..., AbstractAsyncContextManager[str]]

RECORDED_CONNECTIONS = 8
"""Connections in the replayed cassette: each client of a replay test uses one."""


@pytest.fixture
async def upstream() -> AsyncIterator[ScriptedUpstream]:
    async with ScriptedUpstream() as server:
        yield server


PING = '{"id":1,"method":"ping"}'


def recorded_cassette(path: Path) -> Path:
    """A cassette of connections where the server echoed :data:`PING` back, as the scripted
    upstream does, so a client sees the same through record and replay."""
    writer = CassetteWriter(path, new_header("ws://127.0.0.1:1"))
    recorder = Recorder(writer)
    for _ in range(RECORDED_CONNECTIONS):
        conn = recorder.new_connection()
        recorder.open(conn, path="/", headers=(), subprotocol=None, upstream="ws://127.0.0.1:1/")
        for direction in (Direction.C2S, Direction.S2C):
            recorder.record_frames(conn, direction, [(True, PING.encode())])
        recorder.close(conn, by="client", code=1000, reason="")
    writer.close()
    return path


@pytest.fixture(params=["record", "replay"])
def serve(request: pytest.FixtureRequest, upstream: ScriptedUpstream, tmp_path: Path) -> Serve:
    """Factory: ``async with serve(**policy) as url`` runs record (relaying to a scripted
    upstream) or replay (of :func:`recorded_cassette`) with that handshake policy."""
    mode: str = request.param
    tape = recorded_cassette(tmp_path / "replayed.jsonl") if mode == "replay" else None

    @contextlib.asynccontextmanager
    async def make(**policy: Any) -> AsyncIterator[str]:
        if tape is None:
            async with recording_proxy(
                upstream.url, tmp_path / "rec.jsonl", overwrite=True, **policy
            ) as url:
                yield url
        else:
            async with ReplayServer(tape, **policy) as url:
                yield url

    return make


async def raw_request(url: str, request: bytes) -> bytes:
    """Send ``request`` on a plain TCP connection; everything the server answers until it
    closes (a hang guard of 10 s, not a timing). A connection the server drops with a reset
    (an abort while the request was still unread) answered nothing: ``b""``."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(request)
        return await asyncio.wait_for(reader.read(), 10)
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


def upgrade(*headers: str, path: str = "/") -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        *headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_origin_refused_with_403(serve: Serve) -> None:
    """Any Origin gets 403 with the reason, as the app-server does: replay too."""
    async with serve() as url:
        with pytest.raises(InvalidStatus) as info:
            async with connect(url, origin="http://evil.example"):  # type: ignore[arg-type]
                pass
    assert info.value.response.status_code == 403
    assert info.value.response.body.decode() == (
        "rpctape: websocket upgrade with Origin 'http://evil.example' refused, as the "
        "app-server refuses any Origin; pass --allow-origin ORIGIN to accept it\n"
    )


async def test_allowed_origin_is_accepted(serve: Serve) -> None:
    """An Origin in allow_origins passes, and the connection works."""
    async with (
        serve(allow_origins=["http://localhost"]) as url,
        connect(url, origin="http://localhost") as ws,  # type: ignore[arg-type]
    ):
        await ws.send(PING)
        assert await ws.recv() == PING


async def test_token(serve: Serve, tmp_path: Path) -> None:
    """With a token: no header or a wrong one gets 401; the right one passes."""
    (tmp_path / "token").write_text("s3cret\n")
    async with serve(token_file=tmp_path / "token") as url:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            with pytest.raises(InvalidStatus) as info:
                async with connect(url, additional_headers=headers):
                    pass
            assert info.value.response.status_code == 401
            assert info.value.response.body == (
                b"rpctape: missing or wrong 'Authorization: Bearer <token>'\n"
            )
        async with connect(url, additional_headers={"Authorization": "Bearer s3cret"}) as ws:
            await ws.send(PING)
            assert await ws.recv() == PING


async def test_health_checks(serve: Serve) -> None:
    """GET /readyz and /healthz: 200 with an empty body."""
    async with serve() as url, aiohttp.ClientSession() as http:
        for path in ("/readyz", "/healthz"):
            async with http.get(url.replace("ws://", "http://") + path) as response:
                assert (response.status, await response.read()) == (200, b"")


async def test_oversize_frame_closes_with_1009(serve: Serve) -> None:
    """A message over max_size closes the connection with 1009."""
    async with serve(max_size=1024) as url, connect(url) as ws:
        await ws.send("x" * 2000)
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (
        1009, "frame with 2000 bytes exceeds limit of 1024 bytes"
    )  # fmt: skip


async def test_handshake_timeout_drops_a_half_sent_upgrade(serve: Serve) -> None:
    """An upgrade request that never ends is dropped once the handshake timeout passes:
    the connection is closed without an answer."""
    async with serve(handshake_timeout=0.2) as url:
        answer = await raw_request(url, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgr")
    assert answer == b""


async def test_300_half_open_upgrades_do_not_pile_up(serve: Serve) -> None:
    """300 half-sent upgrades are all dropped after the timeout; a client then connects."""
    async with serve(handshake_timeout=0.2) as url:
        answers = await asyncio.gather(
            *(raw_request(url, b"GET / HTTP/1.1\r\n") for _ in range(300))
        )
        async with connect(url) as ws:
            await ws.send(PING)
            assert await ws.recv() == PING
    assert answers == [b""] * 300


@pytest.mark.parametrize("header", ["Authorization", "Origin"])
async def test_duplicate_header_gets_400(serve: Serve, header: str) -> None:
    """Two Authorization or two Origin headers: 400 with the reason, not a hang."""
    async with serve() as url:
        answer = await raw_request(url, upgrade(f"{header}: a", f"{header}: b"))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert body == f"rpctape: the upgrade request has more than one {header} header\n".encode()


async def test_oversized_header_line_gets_431(serve: Serve) -> None:
    """A 9000-byte header line: 431 from websockets' request-size limit."""
    async with serve() as url:
        answer = await raw_request(url, upgrade("X-Big: " + "a" * 9000))
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")


async def test_replay_command_line_takes_token_file_and_handshake_timeout(
    tmp_path: Path,
) -> None:
    """`rpctape replay --token-file F --handshake-timeout 0.2`: a half-sent upgrade is dropped,
    a client without the token gets 401, one with it is served."""
    tape = recorded_cassette(tmp_path / "replayed.jsonl")
    (tmp_path / "token").write_text("s3cret\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "replay", str(tape), "--listen", "ws://127.0.0.1:0",
        "--token-file", str(tmp_path / "token"), "--handshake-timeout", "0.2",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        url = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().split()[-1]
        assert await raw_request(url, b"GET / HTTP/1.1\r\n") == b""
        with pytest.raises(InvalidStatus) as info:
            async with connect(url):
                pass
        assert info.value.response.status_code == 401
        async with connect(url, additional_headers={"Authorization": "Bearer s3cret"}) as ws:
            await ws.send(PING)
            assert await ws.recv() == PING
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.communicate(), 20)
