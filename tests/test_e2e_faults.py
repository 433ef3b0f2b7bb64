"""End to end: a fault while recording the real codex app-server (the pinned release), in
process (the library) and as an `rpctape record` process."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from proxy import recording_proxy
from proxy.codex.appserver import AppServer, find_codex
from proxy.codex.backend import FakeBackend
from proxy.codex.client import ClientOptions, SessionClient
from proxy.core.cassette import frame_of, load
from proxy.core.faults import FaultSet
from proxy.core.jsonrpc import Direction

pytestmark = pytest.mark.e2e


async def test_delay_fault_while_recording_the_real_app_server(tmp_path: Path) -> None:
    """thread/start:delay=300ms on a live record: the client waits at least that long for
    the answer (loop clock), the turn completes, and the cassette names the fault on the
    answer it held; every frame the client got is in the cassette byte for byte."""
    cassette = tmp_path / "delayed.jsonl"
    fault_set = FaultSet.parse(["thread/start:delay=300ms"])
    loop = asyncio.get_running_loop()
    async with (
        FakeBackend() as backend,
        AppServer(backend.url, find_codex()) as server,
        recording_proxy(server.url, cassette, rules=fault_set.rules) as url,
        SessionClient(url, ClientOptions(string_ids=True)) as client,
    ):
        await client.initialize()
        start = loop.time()
        thread_id = await client.start_thread()
        waited = loop.time() - start
        turn = await client.run_turn(thread_id, "Say hello.")
    assert waited >= 0.3
    assert turn["params"]["turn"]["status"] == "completed"
    assert fault_set.summary() == [{"fault": "thread/start:delay=300ms", "fired": 1}]
    events = load(cassette).frames()
    (held,) = [e for e in events if e.get("rules")]
    assert (held["response_to"], held["delay_ms"], held["rules"]) == (
        "thread/start", 300, [{"rule": "fault thread/start:delay=300ms", "action": "delay"}]
    )  # fmt: skip
    got = [f.encode() if isinstance(f, str) else f for d, f in client.frames if d is Direction.S2C]
    assert got == [frame_of(e) for e in events if e["dir"] == "s2c"]


async def test_delay_fault_on_a_record_process_against_the_real_app_server(
    tmp_path: Path,
) -> None:
    """`rpctape record --fault thread/start:delay=300ms --fault nope:drop` as a process in
    front of the real app-server: the client waits at least 300 ms for the thread/start answer
    (loop clock), the turn completes, the cassette names the fault on the answer it held; on
    SIGINT the summary goes to stdout and the unfired fault's line to stderr."""
    cassette = tmp_path / "delayed.jsonl"
    loop = asyncio.get_running_loop()
    async with FakeBackend() as backend, AppServer(backend.url, find_codex()) as server:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy", "record", "--upstream", server.url,
            "--listen", "ws://127.0.0.1:0", "--cassette", str(cassette),
            "--fault", "thread/start:delay=300ms", "--fault", "nope:drop",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
            assert line.startswith("listening on ws://127.0.0.1:"), line
            url = line.removeprefix("listening on ").strip()
            async with SessionClient(url, ClientOptions(string_ids=True)) as client:
                await client.initialize()
                start = loop.time()
                thread_id = await client.start_thread()
                waited = loop.time() - start
                turn = await client.run_turn(thread_id, "Say hello.")
            proc.send_signal(signal.SIGINT)
            out, err = await asyncio.wait_for(proc.communicate(), 20)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert waited >= 0.3
    assert turn["params"]["turn"]["status"] == "completed"
    assert proc.returncode == 0, err
    events = load(cassette).frames()
    sent = sum(1 for e in events if e["dir"] == "c2s")
    assert out.decode() == (
        f"recorded 1 connection(s), {sent} frame(s) client>server, {len(events) - sent} "
        f"frame(s) server>client to {cassette}\n"
    )
    assert err.decode() == "rpctape: fault nope:drop never fired\n"
    (held,) = [e for e in events if e.get("rules")]
    assert (held["response_to"], held["delay_ms"], held["rules"]) == (
        "thread/start", 300, [{"rule": "fault thread/start:delay=300ms", "action": "delay"}]
    )  # fmt: skip
    got = [f.encode() if isinstance(f, str) else f for d, f in client.frames if d is Direction.S2C]
    assert got == [frame_of(e) for e in events if e["dir"] == "s2c"]
