"""Benchmark `rpctape replay`: how many frames per second a cassette is served at (--pace fast).

Run from the repository root with the project's venv::

    .venv/bin/python bench/bench_replay.py [--frames 10000] [--repeat 3]

Two synthetic cassettes, written to a temporary directory by the real recorder:

- stream: one request, then ``--frames`` ~300-byte notifications (a long streamed turn);
  the replay has to send, the client only reads;
- pairs: ``--frames`` / 2 request/response pairs, answered one at a time with string ids for
  an integer-id recording (every reply is matched and remapped);
- real: the same client session (initialize, then ``--frames`` / 2 - 1 ``model/list`` round
  trips) timed against the real app-server 0.169.0, and replayed from a cassette recorded from
  it through rpctape (``--no-real`` skips it).

The replay server runs as ``rpctape replay`` in its own process (started by this script and
stopped with SIGTERM); the client is this process. The median of ``--repeat`` runs is
reported, timed from the first request to the last frame received.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
from websockets.asyncio.client import connect

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from proxy.codex.appserver import AppServer  # noqa: E402
from proxy.codex.backend import FakeBackend  # noqa: E402
from proxy.codex.client import SessionClient  # noqa: E402
from proxy.core.cassette import CassetteWriter, load, new_header  # noqa: E402
from proxy.core.jsonrpc import Direction  # noqa: E402
from proxy.core.recorder import Recorder  # noqa: E402
from proxy.core.redact import Redactor  # noqa: E402
from proxy.wire.relay import recording_proxy  # noqa: E402


def _notification(n: int) -> str:
    params = {"threadId": "01a20a50-b799-79e0-8318-ab709eb17952", "delta": "x" * 200, "n": n}
    return orjson.dumps({"method": "item/agentMessage/delta", "params": params}).decode()


def _record(path: Path, frames: Iterator[tuple[Direction, str]]) -> int:
    writer = CassetteWriter(path, new_header("ws://bench"))
    recorder = Recorder(writer, Redactor())
    conn = recorder.new_connection()
    recorder.open(conn, path="/", headers=[], subprotocol=None, upstream="ws://bench")
    count = 0
    for direction, frame in frames:
        recorder.text(conn, direction, frame)
        count += 1
    recorder.close(conn, by="client", code=1000, reason="")
    writer.close()
    return count


def stream_frames(n: int) -> Iterator[tuple[Direction, str]]:
    yield Direction.C2S, '{"id":1,"method":"turn/start","params":{}}'
    for i in range(n):
        yield Direction.S2C, _notification(i)


def pair_frames(n: int) -> Iterator[tuple[Direction, str]]:
    for i in range(n // 2):
        yield Direction.C2S, f'{{"id":{i},"method":"thread/read","params":{{"n":{i}}}}}'
        yield Direction.S2C, f'{{"id":{i},"result":{{"n":{i},"text":"{"y" * 100}"}}}}'


async def start_replay(cassette: Path) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        str(REPO / ".venv" / "bin" / "rpctape"),
        "replay",
        str(cassette),
        "--listen",
        "ws://127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
    return proc, line.removeprefix("listening on ").strip()


async def stop(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(proc.communicate(), 20)


async def run_stream(url: str, n: int) -> float:
    async with connect(url, max_size=None, compression=None) as ws:
        start = time.perf_counter()
        await ws.send('{"id":"s","method":"turn/start","params":{}}')
        for _ in range(n):
            await ws.recv()
        return time.perf_counter() - start


async def run_pairs(url: str, n: int) -> float:
    async with connect(url, max_size=None, compression=None) as ws:
        start = time.perf_counter()
        for i in range(n // 2):
            await ws.send(f'{{"id":"r{i}","method":"thread/read","params":{{"n":{i}}}}}')
            reply = await ws.recv()
            assert str(reply).startswith(f'{{"id":"r{i}"'), reply
        return time.perf_counter() - start


async def run_model_list(url: str, n: int) -> float:
    """initialize, then ``n // 2 - 1`` model/list round trips one at a time; timed after
    initialize."""
    async with SessionClient(url) as client:
        await client.initialize()
        start = time.perf_counter()
        for _ in range(n // 2 - 1):
            await client.call("model/list", {})
        return time.perf_counter() - start


async def real_vs_replay(n: int, repeat: int, tmp: str) -> None:
    """The same model/list session against the real app-server and replayed from a cassette
    recorded from it."""
    cassette = Path(tmp, "real.jsonl")
    real: list[float] = []
    async with FakeBackend() as backend, AppServer(backend.url) as server:
        for _ in range(repeat):
            real.append(await run_model_list(server.url, n))
        async with recording_proxy(server.url, cassette) as url:
            await run_model_list(url, n)
    replayed: list[float] = []
    for _ in range(repeat):
        proc, url = await start_replay(cassette)
        try:
            replayed.append(await run_model_list(url, n))
        finally:
            await stop(proc)
    frames = len(load(cassette).frames())
    for name, times in (("app-server", real), ("replay", replayed)):
        took = statistics.median(times)
        print(
            f"{name:10} model/list session, {frames} frames in cassette: {took:.3f}s, "
            f"{(n - 2) / took:,.0f} frames/s"
        )
    print(f"replay is {statistics.median(real) / statistics.median(replayed):.1f}x faster")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-real", action="store_true", help="skip the real app-server")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rpctape-bench-") as tmp:
        cases = {
            "stream": (_record(Path(tmp, "stream.jsonl"), stream_frames(args.frames)), run_stream),
            "pairs": (_record(Path(tmp, "pairs.jsonl"), pair_frames(args.frames)), run_pairs),
        }
        print(f"python {sys.version.split()[0]}, {args.repeat} run(s) each, median")
        for name, (frames, run) in cases.items():
            times = []
            for _ in range(args.repeat):
                proc, url = await start_replay(Path(tmp, f"{name}.jsonl"))
                try:
                    times.append(await run(url, args.frames))
                finally:
                    await stop(proc)
            took = statistics.median(times)
            what = "notifications received" if name == "stream" else "frames (round trips x2)"
            print(
                f"{name:7} {frames:6} frames in cassette, {args.frames:6} {what}: "
                f"{took:.3f}s, {args.frames / took:,.0f} frames/s"
            )
        if not args.no_real:
            await real_vs_replay(args.frames, args.repeat, tmp)


if __name__ == "__main__":
    asyncio.run(main())
