"""End to end over every transport, against the real codex app-server 0.169.0: a full turn
through (1) ws client -> rpctape -> unix:// app-server, (2) ws client -> rpctape -> spawned
app-server over stdio, (3) a stdio client spawning `rpctape wrap -- codex app-server`.
Each cassette is checked frame by frame against what the client saw."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import orjson
import pytest

from proxy import recording_proxy
from proxy.codex.appserver import (
    FAKE_API_KEY,
    FAKE_API_KEY_ENV,
    AppServer,
    find_codex,
    write_codex_home,
)
from proxy.codex.backend import FakeBackend
from proxy.codex.client import SessionClient, scripted_session
from proxy.core.cassette import Cassette, frame_of, load
from proxy.core.jsonrpc import Direction

pytestmark = pytest.mark.e2e


def assert_same_frames(tape: Cassette, sent: list[bytes], received: list[bytes]) -> None:
    (conn,) = tape.connections()
    frames = tape.frames(conn)
    assert [frame_of(e) for e in frames if e["dir"] == "c2s"] == sent
    assert [frame_of(e) for e in frames if e["dir"] == "s2c"] == received
    methods = [e.get("method") for e in frames]
    assert "turn/completed" in methods and "item/agentMessage/delta" in methods


def client_frames(client: SessionClient, direction: Direction) -> list[bytes]:
    return [f.encode() if isinstance(f, str) else f for d, f in client.frames if d is direction]


async def test_websocket_client_to_unix_socket_app_server(tmp_path: Path) -> None:
    """ws client -> rpctape -> app-server listening on unix://PATH."""
    cassette = tmp_path / "unix.jsonl"
    async with FakeBackend() as backend, AppServer(backend.url, unix_socket=True) as server:
        upstream = server.url
        assert upstream == f"unix://{server.socket_path}"
        async with recording_proxy(upstream, cassette) as url:
            client = await scripted_session(url, ["Over a unix socket."])
    tape = load(cassette)
    assert (tape.header["transport"], tape.header["upstream"]) == ("unix", upstream)
    assert tape.events[0]["transport"] == "unix"
    assert_same_frames(
        tape, client_frames(client, Direction.C2S), client_frames(client, Direction.S2C)
    )


async def test_websocket_client_to_spawned_stdio_app_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ws client -> rpctape -> `codex app-server` started for the connection, over stdio."""
    cassette = tmp_path / "stdio.jsonl"
    async with FakeBackend() as backend:
        write_codex_home(tmp_path / "home", backend.url)
        monkeypatch.setenv("CODEX_HOME", str(tmp_path / "home"))
        monkeypatch.setenv(FAKE_API_KEY_ENV, FAKE_API_KEY)
        command = (str(find_codex()), "app-server")
        async with recording_proxy(None, cassette, command=command) as url:
            client = await scripted_session(url, ["Over stdio."])
    tape = load(cassette)
    assert (tape.header["transport"], tape.header["upstream"]) == (
        "stdio",
        f"stdio:{command[0]} app-server",
    )
    assert_same_frames(
        tape, client_frames(client, Direction.C2S), client_frames(client, Direction.S2C)
    )
    closes = [e for e in tape.events if e["kind"] == "close"]
    assert closes[0]["by"] == "client"
    assert closes[-1]["leg"] == "server" and closes[-1]["exit_code"] == 0


async def test_stdio_client_spawning_rpctape_wrap(tmp_path: Path) -> None:
    """A stdio client that spawns `rpctape wrap -- codex app-server` as its app-server."""
    cassette = tmp_path / "wrap.jsonl"
    async with FakeBackend() as backend:
        write_codex_home(tmp_path / "home", backend.url)
        env = {"CODEX_HOME": str(tmp_path / "home"), FAKE_API_KEY_ENV: FAKE_API_KEY}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy", "wrap", "--cassette", str(cassette), "--",
            str(find_codex()), "app-server",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env={**os.environ, **env}, limit=1 << 24,
        )  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None
        sent: list[bytes] = []
        received: list[bytes] = []

        async def send(msg: object) -> None:
            line = orjson.dumps(msg)
            sent.append(line)
            assert proc.stdin is not None
            proc.stdin.write(line + b"\n")
            await proc.stdin.drain()

        async def until(predicate: object) -> dict[str, object]:
            assert proc.stdout is not None and callable(predicate)
            while True:
                line = (await asyncio.wait_for(proc.stdout.readline(), 30)).rstrip(b"\n")
                received.append(line)
                msg = orjson.loads(line)
                if predicate(msg):
                    return dict(msg)

        try:
            info = {"clientInfo": {"name": "stdio-test", "version": "1"}}
            await send({"id": "a", "method": "initialize", "params": info})
            await until(lambda m: m.get("id") == "a")
            await send({"method": "initialized"})
            await send({"id": "b", "method": "thread/start", "params": {}})
            started = await until(lambda m: m.get("id") == "b")
            thread_id = started["result"]["thread"]["id"]  # type: ignore[index]
            turn = {"threadId": thread_id, "input": [{"type": "text", "text": "Via wrap."}]}
            await send({"id": "c", "method": "turn/start", "params": turn})
            await until(lambda m: m.get("method") == "turn/completed")
            proc.stdin.close()
            rest = await asyncio.wait_for(proc.stdout.read(), 30)
            received += [line for line in rest.split(b"\n") if line]
            assert await asyncio.wait_for(proc.wait(), 30) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    tape = load(cassette)
    assert tape.header["transport"] == "stdio"
    assert_same_frames(tape, sent, received)
