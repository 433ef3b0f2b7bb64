"""``rpctape demo``: record a real app-server session end to end, offline.

Starts the fake model backend and the real ``codex app-server``, puts the recording relay in
front, drives a scripted session through it with the built-in client, then prints the
cassette's timeline. Every process it starts is stopped before it returns.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..core.cassette import load
from ..core.timeline import render, summary
from .appserver import AppServer
from .backend import FakeBackend
from .client import scripted_session
from .library import recording_proxy

DEMO_PROMPT = "Say hello to rpctape."


async def run_demo(
    cassette: Path, codex: Path | None, say: Callable[[str], None], width: int = 160
) -> None:
    """Run the demo session and print what was recorded."""
    say("rpctape demo: fake model backend + real codex app-server + recorder")
    async with FakeBackend() as backend, AppServer(backend.url, codex=codex) as server:
        say(f"  app-server {server.url} (pid {server.pid}), backend {backend.url}")
        async with recording_proxy(
            server.url, cassette, overwrite=True, meta={"made_by": "rpctape demo"}
        ) as url:
            say(f"  recorder   {url} -> {cassette}")
            client = await scripted_session(url, [DEMO_PROMPT])
    tape = load(cassette)
    for line in render(tape.events, width):
        say(line)
    say(f"client saw {len(client.frames)} frame(s); cassette holds {summary(tape)}")
    say(f"cassette: {cassette}  (view it again with: rpctape show {cassette})")
