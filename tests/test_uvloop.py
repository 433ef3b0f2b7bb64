"""rpctape as a library inside an application that runs uvloop: record (over TCP and with a
child process on stdio) and replay work the same as on asyncio's own loop.

uvloop's transports do not derive from asyncio's transport classes, so code that checked
``isinstance(transport, asyncio.Transport)`` failed there; these tests hold that it does not.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import uvloop
from websockets.asyncio.client import connect

from proxy import recording_proxy, replay_server
from proxy.core.cassette import frame_of, load
from tests.scripted_upstream import ScriptedUpstream

T = TypeVar("T")

ECHO_LINES = "import sys\nfor line in sys.stdin:\n    sys.stdout.write(line); sys.stdout.flush()\n"
FRAMES = ['{"id":1,"method":"initialize","params":{}}', '{"method":"initialized"}']


def on_uvloop(main: Callable[[], Awaitable[T]]) -> T:
    """Run ``main()`` on a fresh uvloop loop, and check that it was uvloop."""

    async def checked() -> T:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        return await main()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(checked())


async def _exchange(url: str) -> list[str]:
    """Send each frame and wait for its echo (so the recorded order is fixed)."""
    echoed = []
    async with connect(url) as ws:
        for frame in FRAMES:
            await ws.send(frame)
            echoed.append(str(await ws.recv()))
    return echoed


def test_record_over_websocket_on_uvloop(tmp_path: Path) -> None:
    cassette = tmp_path / "c.jsonl"

    async def main() -> list[str]:
        async with ScriptedUpstream() as upstream, recording_proxy(upstream.url, cassette) as url:
            return await _exchange(url)

    assert on_uvloop(main) == FRAMES
    frames = [(e["dir"], frame_of(e)) for e in load(cassette).frames(1)]
    assert frames == [(d, f.encode()) for f in FRAMES for d in ("c2s", "s2c")]


def test_record_a_child_on_stdio_then_replay_on_uvloop(tmp_path: Path) -> None:
    cassette = tmp_path / "c.jsonl"
    command = (sys.executable, "-c", ECHO_LINES)

    async def record() -> list[str]:
        async with recording_proxy(None, cassette, command=command) as url:
            return await _exchange(url)

    async def replay() -> list[str]:
        async with replay_server(cassette) as url:
            return await _exchange(url)

    assert on_uvloop(record) == FRAMES
    closes = [e for e in load(cassette).events if e["kind"] == "close"]
    assert [(e["leg"], e.get("exit_code")) for e in closes] == [("client", None), ("server", 0)]
    assert on_uvloop(replay) == FRAMES
