"""Many clients at once through ``rpctape record``, against the same clients connected
directly, in one run; every frame must arrive and be recorded byte for byte.

Run from the repository root with the project's venv::

    .venv/bin/python bench/many_connections.py                       # 200 x 1,000
    .venv/bin/python bench/many_connections.py --connections 20 --frames 100 --json

The upstream is ``bench/upstream.py`` (its own process), answering each
``{"id":N,"method":"ping","params":{}}`` with ``{"id":N,"result":{}}``. ``--connections``
clients (this process) each send ``--frames`` requests (pipelined, then read every answer).
``direct`` connects to the upstream; ``rpctape`` goes through ``rpctape record`` (its own
process, cassette in a temporary folder). Reported: requests per second over all clients
(from the first connect to the last answer), and for rpctape the cassette check: each
connection's recorded frames, rebuilt with ``frame_of``, equal what its client sent and
received, in order.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import start  # noqa: E402
from proxy.core.cassette import frame_of, load  # noqa: E402


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), 30)


async def client(url: str, n: int, frames: int) -> tuple[list[str], list[str]]:
    sent = [f'{{"id":{i},"method":"ping","params":{{"c":{n}}}}}' for i in range(frames)]
    async with connect(url, max_size=None, compression=None) as ws:
        for frame in sent:
            await ws.send(frame)
        got = [str(await ws.recv()) for _ in sent]
    return sent, got


Exchange = tuple[list[str], list[str]]
"""What one client sent, and what it received."""


async def run(url: str, connections: int, frames: int) -> tuple[float, list[Exchange]]:
    began = time.perf_counter()
    results = await asyncio.gather(*(client(url, n, frames) for n in range(connections)))
    return time.perf_counter() - began, list(results)


def answered(results: list[Exchange], frames: int) -> bool:
    return all(got == [f'{{"id":{i},"result":{{}}}}' for i in range(frames)] for _, got in results)


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="rpctape-many-"))
    upstream, up_url = await start(sys.executable, str(ROOT / "bench" / "upstream.py"))
    report: dict[str, object] = {"connections": args.connections, "frames": args.frames}
    try:
        took, results = await run(up_url, args.connections, args.frames)
        report["direct_seconds"] = took
        report["direct_all_answered"] = answered(results, args.frames)
        cassette = tmp / "many.jsonl"
        rpctape, url = await start(
            sys.executable, "-m", "proxy", "record", "--cassette", str(cassette),
            "--listen", "ws://127.0.0.1:0", "--upstream", up_url,
        )  # fmt: skip
        try:
            took, results = await run(url, args.connections, args.frames)
        finally:
            await stop(rpctape)
        report["rpctape_seconds"] = took
        report["rpctape_all_answered"] = answered(results, args.frames)
        tape = load(cassette)
        recorded = {}
        for conn in tape.connections():
            events = tape.frames(conn)
            c2s = [frame_of(e).decode() for e in events if e["dir"] == "c2s"]
            s2c = [frame_of(e).decode() for e in events if e["dir"] == "s2c"]
            recorded[c2s[0] if c2s else ""] = (c2s, s2c)
        exact = sum(recorded.get(sent[0]) == (sent, got) for sent, got in results)
        report["connections_recorded_exactly"] = exact
        report["frames_recorded"] = sum(len(e) for pair in recorded.values() for e in pair)
    finally:
        await stop(upstream)
        shutil.rmtree(tmp, ignore_errors=True)
    total = args.connections * args.frames
    report["direct_requests_per_s"] = total / float(report["direct_seconds"])  # type: ignore[arg-type]
    report["rpctape_requests_per_s"] = total / float(report["rpctape_seconds"])  # type: ignore[arg-type]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--frames", type=int, default=1000, help="requests per connection")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    report = asyncio.run(main_async(args))
    ok = (
        report["direct_all_answered"]
        and report["rpctape_all_answered"]
        and report["connections_recorded_exactly"] == args.connections
        and report["frames_recorded"] == 2 * args.connections * args.frames
    )
    if args.json:
        print(json.dumps(report))
    else:
        ratio = float(report["rpctape_requests_per_s"]) / float(report["direct_requests_per_s"])  # type: ignore[arg-type]
        print(
            f"{args.connections} connections x {args.frames} requests: direct "
            f"{report['direct_requests_per_s']:,.0f} req/s, rpctape "
            f"{report['rpctape_requests_per_s']:,.0f} req/s ({ratio:.2f}x); all answered: "
            f"{report['rpctape_all_answered']}; connections recorded byte-exact: "
            f"{report['connections_recorded_exactly']}/{args.connections}; frames recorded: "
            f"{report['frames_recorded']:,}"
        )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
