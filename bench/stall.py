"""Offer a lot of data to rpctape while the reader on the other side has stalled: memory stays
bounded and the source is held back, on every transport.

Run from the repository root with the project's venv::

    .venv/bin/python bench/stall.py                    # 1 GiB offered per case
    .venv/bin/python bench/stall.py --mib 64 --json    # what tests/test_legs.py runs

Each case starts rpctape as its own process, makes one side stop reading, and has the other
side write ``--mib`` MiB in frames (lines for stdio) of ``--frame-kib`` KiB as fast as rpctape
takes them. When the source has made no progress for ``--quiet`` seconds it is *blocked*;
the case then reads rpctape's peak resident memory (``VmHWM`` in ``/proc/PID/status``, no
psutil needed) and stops everything. Cases (transport, direction):

- ``websocket``: ``rpctape record`` between a websocket client and a websocket upstream;
- ``unix``: the same over unix sockets (``--listen unix://`` and ``--upstream unix://``);
- ``child``: ``rpctape record -- COMMAND``: a websocket client and a child over JSON Lines;
- ``wrap``: ``rpctape wrap -- COMMAND``: this process's pipes and a child over JSON Lines.

``c2s``: the client writes and the server (upstream or child) never reads; ``s2c``: the
server writes and the client never reads. A stalled websocket peer stops reading after one
queued message (``max_queue=1``); a stalled child or stdio client never reads its pipe.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect, unix_connect
from websockets.asyncio.server import ServerConnection, serve, unix_serve
from websockets.exceptions import ConnectionClosed

TRANSPORTS = ("websocket", "unix", "child", "wrap")
DIRECTIONS = ("c2s", "s2c")
MiB = 1024 * 1024

# A child that never reads its stdin (c2s), or writes N lines of SIZE bytes to its stdout,
# writing the byte count handed over so far into the file PROGRESS after each line (s2c).
CHILD = r"""
import os, sys, time
mode, count, size, progress = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if mode == "c2s":
    time.sleep(3600)
line = b'{"method":"n","params":"' + b"x" * (size - 27) + b'"}\n'
out = os.fdopen(1, "wb", buffering=0)
done = 0
for _ in range(count):
    view = memoryview(line)
    while view:
        view = view[out.write(view):]
    done += len(line)
    with open(progress + ".tmp", "w") as f:
        f.write(str(done))
    os.replace(progress + ".tmp", progress)
time.sleep(3600)
"""


@dataclass
class Case:
    """One measured case."""

    transport: str
    direction: str
    offered: int
    accepted: int
    """Bytes the source managed to hand over before it was held back."""
    blocked: bool
    """The source stopped making progress before it had written everything."""
    baseline_rss: int
    """rpctape's resident memory (bytes) once it was ready, before the flood."""
    peak_rss: int
    """rpctape's peak resident memory (``VmHWM``, bytes) during the case."""
    seconds: float
    exit_seconds: float
    """How long rpctape took to exit after SIGTERM, the reader still stalled."""


def proc_memory(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` of ``pid`` in bytes, from ``/proc/PID/status``."""
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0]) * 1024
    return values


def frame(size: int) -> bytes:
    """A JSON notification of ``size`` bytes (without newline)."""
    return b'{"method":"n","params":"' + b"x" * (size - 27) + b'"}'


class Progress:
    """Bytes a source has handed over, and when it last moved."""

    def __init__(self) -> None:
        self.bytes = 0
        self.moved = time.monotonic()

    def add(self, n: int) -> None:
        self.bytes += n
        self.moved = time.monotonic()


async def watch(progress: Progress, total: int, quiet: float, timeout: float) -> bool:
    """Until the source is blocked (``True``) or wrote everything / timed out (``False``)."""
    start = time.monotonic()
    while True:
        await asyncio.sleep(0.05)
        now = time.monotonic()
        if progress.bytes >= total or now - start > timeout:
            return False
        if progress.bytes and now - progress.moved >= quiet:
            return True


async def rpctape(*args: str, stderr: Path, stdin: int | None = None
                  ) -> asyncio.subprocess.Process:  # fmt: skip
    """``python -m proxy ARGS``; its stderr (and its child's) goes to the file ``stderr``."""
    with stderr.open("ab") as err:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy", *args,
            stdin=stdin, stdout=asyncio.subprocess.PIPE, stderr=err,
        )  # fmt: skip


async def listening(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
    if not line.startswith("listening on "):
        raise RuntimeError(f"rpctape did not start: {line!r}")
    return line.split()[-1]


async def stop(proc: asyncio.subprocess.Process) -> float:
    """SIGTERM; the seconds rpctape took to exit (killed after 10 s)."""
    start = time.monotonic()
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        # Not proc.wait(): that also waits for the stdout pipe we stopped reading.
        while proc.returncode is None and time.monotonic() - start < 10:
            await asyncio.sleep(0.01)
        if proc.returncode is None:
            proc.kill()
    took = time.monotonic() - start
    if proc.stdout is not None:
        await proc.stdout.read()  # what the stalled reader left, until end of file
    await proc.wait()
    return took


async def read_progress(path: Path, progress: Progress) -> None:
    """Follow the byte count a child writes into ``path``."""
    while True:
        await asyncio.sleep(0.02)
        with contextlib.suppress(FileNotFoundError, ValueError):
            done = int(path.read_text())
            if done > progress.bytes:
                progress.add(done - progress.bytes)


async def wrap_ready(cassette: Path) -> None:
    """Until ``wrap`` has written its ``open`` event (the child runs, stdio is attached)."""
    for _ in range(600):
        with contextlib.suppress(FileNotFoundError):
            if cassette.read_bytes().count(b"\n") >= 2:
                return
        await asyncio.sleep(0.05)
    raise RuntimeError("rpctape wrap did not start")


async def send_frames(ws: ClientConnection | ServerConnection, total: int, size: int,
                      progress: Progress) -> None:  # fmt: skip
    data = frame(size).decode()
    while progress.bytes < total:
        await ws.send(data)
        progress.add(size)


@contextlib.asynccontextmanager
async def upstream(
    path: str | None, handler: Callable[[ServerConnection], Awaitable[None]]
) -> AsyncIterator[str]:
    """A websocket upstream on 127.0.0.1:0 or a unix socket; yields what rpctape needs."""
    kwargs: dict[str, Any] = {"max_size": None, "max_queue": 1, "compression": None}
    if path is not None:
        async with unix_serve(handler, path, **kwargs):
            yield f"unix://{path}"
    else:
        async with serve(handler, "127.0.0.1", 0, **kwargs) as server:
            yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def run_case(transport: str, direction: str, args: argparse.Namespace, tmp: Path) -> Case:
    total, size = args.mib * MiB, args.frame_kib * 1024
    progress = Progress()
    cassette = tmp / f"{transport}-{direction}.jsonl"
    started = time.monotonic()
    tasks: list[asyncio.Task[Any]] = []
    count = total // size + 1
    progress_file = tmp / f"{transport}-{direction}.progress"
    errors = tmp / f"{transport}-{direction}.stderr"
    child = [sys.executable, "-c", CHILD, direction, str(count), str(size), str(progress_file)]
    if transport == "wrap":
        proc = await rpctape("wrap", "--cassette", str(cassette), "--", *child,
                             stdin=asyncio.subprocess.PIPE, stderr=errors)  # fmt: skip
        assert proc.stdin is not None
        await wrap_ready(cassette)
        baseline = proc_memory(proc.pid)["VmRSS"]
        if direction == "c2s":
            stdin = proc.stdin

            async def feed() -> None:
                line = frame(size) + b"\n"
                while progress.bytes < total:
                    stdin.write(line)
                    await stdin.drain()
                    progress.add(len(line))

            tasks.append(asyncio.create_task(feed()))
        else:  # never read proc.stdout
            tasks.append(asyncio.create_task(read_progress(progress_file, progress)))
        try:
            blocked = await watch(progress, total, args.quiet, args.timeout)
            peak = proc_memory(proc.pid)["VmHWM"]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            exit_seconds = await stop(proc)
        return Case(transport, direction, total, progress.bytes, blocked, baseline, peak,
                    time.monotonic() - started, exit_seconds)  # fmt: skip

    stalled = asyncio.Event()

    async def server_side(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            if direction == "s2c":
                await send_frames(ws, total, size, progress)
            await stalled.wait()  # never reads: one queued message, then TCP backpressure

    unix = transport == "unix"
    up_path = str(tmp / "up.sock") if unix else None
    async with contextlib.AsyncExitStack() as stack:
        if transport == "child":
            proc = await rpctape("record", "--cassette", str(cassette),
                                 "--listen", "ws://127.0.0.1:0", "--", *child,
                                 stderr=errors)  # fmt: skip
        else:
            target = await stack.enter_async_context(upstream(up_path, server_side))
            listen = f"unix://{tmp / 'rpctape.sock'}" if unix else "ws://127.0.0.1:0"
            proc = await rpctape("record", "--cassette", str(cassette), "--listen", listen,
                                 "--upstream", target, stderr=errors)  # fmt: skip
        url = await listening(proc)
        baseline = proc_memory(proc.pid)["VmRSS"]
        try:
            options: dict[str, Any] = {"max_size": None, "max_queue": 1, "compression": None}
            if unix:
                ws = await stack.enter_async_context(
                    unix_connect(url.removeprefix("unix://"), **options)
                )
            else:
                ws = await stack.enter_async_context(connect(url, **options))
            if direction == "c2s":
                tasks.append(asyncio.create_task(send_frames(ws, total, size, progress)))
            elif transport == "child":
                tasks.append(asyncio.create_task(read_progress(progress_file, progress)))
            # s2c over websocket/unix: the upstream handler sends; the client never reads.
            blocked = await watch(progress, total, args.quiet, args.timeout)
            peak = proc_memory(proc.pid)["VmHWM"]
        finally:
            stalled.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            exit_seconds = await stop(proc)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2)
    return Case(transport, direction, total, progress.bytes, blocked, baseline, peak,
                time.monotonic() - started, exit_seconds)  # fmt: skip


def render(cases: list[Case]) -> str:
    rows = [
        "| transport | direction | offered | accepted before blocked | blocked | rpctape RSS "
        "ready | rpctape peak RSS (VmHWM) | exit after SIGTERM |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        rows.append(
            f"| {c.transport} | {c.direction} | {c.offered / MiB:,.0f} MiB | "
            f"{c.accepted / MiB:,.1f} MiB | {'yes' if c.blocked else 'NO'} | "
            f"{c.baseline_rss / MiB:,.1f} MiB | {c.peak_rss / MiB:,.1f} MiB | "
            f"{c.exit_seconds:.1f} s |"
        )
    return "\n".join(rows)


async def main_async(args: argparse.Namespace) -> list[Case]:
    cases = []
    tmp = Path(tempfile.mkdtemp(prefix="rpctape-stall-"))
    pairs = [tuple(c.split(":")) for c in args.case] or [
        (t, d) for t in args.transports for d in args.directions
    ]
    try:
        for transport, direction in pairs:
            case = await run_case(transport, direction, args, tmp)
            if not args.json:
                print(f"{transport} {direction}: {case}", file=sys.stderr)
            cases.append(case)
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=1024, help="MiB offered per case")
    parser.add_argument("--frame-kib", type=int, default=256, help="frame (line) size, KiB")
    parser.add_argument("--quiet", type=float, default=2.0,
                        help="seconds without progress that mean the source is blocked")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up on a case")
    parser.add_argument("--transports", nargs="+", choices=TRANSPORTS, default=list(TRANSPORTS))
    parser.add_argument("--directions", nargs="+", choices=DIRECTIONS, default=list(DIRECTIONS))
    parser.add_argument("--json", action="store_true", help="one JSON list on stdout")
    parser.add_argument("--keep", action="store_true", help="keep the cassettes and logs")
    parser.add_argument("--case", action="append", default=[],
                        choices=[f"{t}:{d}" for t in TRANSPORTS for d in DIRECTIONS],
                        help="only this TRANSPORT:DIRECTION (repeatable)")
    args = parser.parse_args()  # fmt: skip
    os.chdir(Path(__file__).resolve().parent.parent)  # `python -m proxy` from the repo
    cases = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps([asdict(c) for c in cases]))
    else:
        print(render(cases))
    sys.exit(0 if all(c.blocked for c in cases) else 1)


if __name__ == "__main__":
    main()
