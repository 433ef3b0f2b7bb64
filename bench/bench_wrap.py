"""Benchmark `rpctape wrap`: added latency per message against spawning the app-server directly.

Run from the repository root with the project's venv::

    .venv/bin/python bench/bench_wrap.py [--requests 2000] [--repeat 3]

For each path (``direct``: the client spawns ``codex app-server``; ``wrap``: the client spawns
``rpctape wrap --cassette ... -- codex app-server``) the client sends ``initialize``, then
small requests one at a time over stdio and times each round trip. The request is
``config/read`` (answered by the real server from its config, no model involved). The same
is done against a minimal Python echo child to show rpctape's own share without codex.
Medians of ``--repeat`` runs; the cassette is checked to hold every frame.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from proxy.codex.appserver import (  # noqa: E402
    FAKE_API_KEY,
    FAKE_API_KEY_ENV,
    find_codex,
    write_codex_home,
)
from proxy.core.cassette import load  # noqa: E402

ECHO = "import sys\nfor line in sys.stdin:\n    sys.stdout.write(line); sys.stdout.flush()\n"

RELAY = """
import asyncio, os, sys
async def main():
    loop = asyncio.get_running_loop()
    child = await asyncio.create_subprocess_exec(*sys.argv[1:], stdin=-1, stdout=-1, limit=1 << 26)
    out, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(1, "wb", 0))
    class Lines(asyncio.Protocol):
        def __init__(self, write):
            self.write, self.pending = write, []
        def data_received(self, data):
            if b"\\n" not in data:
                self.pending.append(data)
                return
            head, _, tail = data.rpartition(b"\\n")
            self.write(b"".join((*self.pending, head, b"\\n")))
            self.pending = [tail] if tail else []
        def connection_lost(self, exc):
            child.stdin.close()
    await loop.connect_read_pipe(lambda: Lines(child.stdin.write), os.fdopen(0, "rb", 0))
    while line := await child.stdout.readline():
        out.write(line)
    await child.wait()
asyncio.run(main())
"""
"""A store-and-forward line relay with no work: each whole line is forwarded as it
completes, both ways, through asyncio pipes (the floor for any relay that must see a line
whole before forwarding it, as a recorder must)."""


async def session(command: list[str], env: dict[str, str], requests: int) -> list[float]:
    """Round-trip times (seconds) of ``requests`` small requests, one at a time."""
    proc = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=env,
        limit=1 << 24,
    )
    assert proc.stdin is not None and proc.stdout is not None

    async def call(n: int, method: str, params: object) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(orjson.dumps({"id": n, "method": method, "params": params}) + b"\n")
        await proc.stdin.drain()
        while True:
            line = await proc.stdout.readline()
            if not line:
                raise RuntimeError("the server closed its output")
            if orjson.loads(line).get("id") == n:
                return

    times: list[float] = []
    try:
        await call(0, "initialize", {"clientInfo": {"name": "bench", "version": "1"}})
        for n in range(1, requests + 1):
            start = time.perf_counter()
            await call(n, "config/read", {})
            times.append(time.perf_counter() - start)
    finally:
        proc.stdin.close()
        await proc.wait()
    return times


async def big_line(command: list[str], env: dict[str, str], size: int) -> float:
    """Seconds from writing one JSON line of ``size`` bytes to reading its echo back."""
    line = b'{"method":"big","params":{"text":"' + b"x" * (size - 39) + b'"}}\n'
    proc = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=env,
        limit=size + (1 << 20),
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(b'{"method":"warm-up"}\n')  # both paths started and ready
        await proc.stdin.drain()
        assert await proc.stdout.readline() == b'{"method":"warm-up"}\n'
        start = time.perf_counter()
        proc.stdin.write(line)
        await proc.stdin.drain()
        echoed = await proc.stdout.readline()
        elapsed = time.perf_counter() - start
        assert echoed == line, (len(echoed), len(line))
    finally:
        proc.stdin.close()
        await proc.wait()
    return elapsed


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--big", type=int, default=10 << 20, help="bytes of the big line")
    args = parser.parse_args()
    rpctape = str(Path(sys.executable).parent / "rpctape")
    with tempfile.TemporaryDirectory(prefix="rpctape-bench-wrap-") as tmp:
        write_codex_home(Path(tmp, "home"), "http://127.0.0.1:9")
        env = {**os.environ, "CODEX_HOME": str(Path(tmp, "home")), FAKE_API_KEY_ENV: FAKE_API_KEY}
        codex = [str(find_codex()), "app-server"]
        echo = [sys.executable, "-c", ECHO]
        print(f"{args.requests} round trips per run, {args.repeat} run(s), medians (us)")
        print(f"{'child':12} {'path':7} {'median':>8} {'p99':>8} {'added median':>13}")
        for name, child in (("codex", codex), ("python echo", echo)):
            results: dict[str, tuple[float, float]] = {}
            for path in ("direct", "wrap"):
                medians, p99s = [], []
                for run in range(args.repeat):
                    cassette = Path(tmp, f"{name}-{run}.jsonl".replace(" ", "-"))
                    command = (
                        child
                        if path == "direct"
                        else [rpctape, "wrap", "--cassette", str(cassette), "--", *child]
                    )
                    times = await session(command, env, args.requests)
                    medians.append(statistics.median(times))
                    p99s.append(pct(times, 0.99))
                    if path == "wrap":
                        frames = len(load(cassette).frames())
                        assert frames >= 2 * (args.requests + 1), frames
                results[path] = (statistics.median(medians), statistics.median(p99s))
            for path, (median, p99) in results.items():
                added = median - results["direct"][0]
                extra = f"{added * 1e6:13.0f}" if path == "wrap" else ""
                print(f"{name:12} {path:7} {median * 1e6:8.0f} {p99 * 1e6:8.0f} {extra}")
        mib = args.big >> 20
        print(f"one {mib} MiB line through the python echo child, median of {args.repeat}")
        big: dict[str, float] = {}
        commands = {
            "direct": echo,
            "relay": [sys.executable, "-c", RELAY, *echo],  # no recording: the floor
            "wrap": [rpctape, "wrap", "--cassette", str(Path(tmp, "big.jsonl")), "--", *echo],
        }
        runs: dict[str, list[float]] = {path: [] for path in commands}
        for _ in range(args.repeat):  # alternating, so drift hits every path alike
            for path, command in commands.items():
                runs[path].append(await big_line(command, env, args.big))
                Path(tmp, "big.jsonl").unlink(missing_ok=True)
        for path, times in runs.items():
            big[path] = statistics.median(times)
            spread = f"{min(times) * 1e3:.1f}-{max(times) * 1e3:.1f}"
            print(f"{'big line':12} {path:7} {big[path] * 1e3:8.1f} ms  (range {spread})")
        print(f"wrap / direct for the big line: {big['wrap'] / big['direct']:.2f}x")
        print(f"wrap / minimal relay (no recording): {big['wrap'] / big['relay']:.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
