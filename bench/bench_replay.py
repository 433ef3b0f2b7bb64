"""Benchmark `rpctape replay` (--pace fast) against a minimal websocket server, in one run.

Run from the repository root with the project's venv::

    .venv/bin/python bench/bench_replay.py [--frames 20000] [--repeat 5] [--markdown]

Two synthetic cassettes, written to a temporary directory by the real recorder:

- stream: one request, then ``--frames`` ~300-byte notifications (a long streamed turn);
  the replay has to send, the client only reads;
- pairs: ``--frames`` / 2 request/response pairs, answered one at a time with string ids for
  an integer-id recording (every reply is matched and remapped).

Each workload is also run, with the same client loop, against ``bench/minimal_server.py`` (its
own process, websockets' asyncio server): ``minimal`` sends the frames the replay sends,
pre-encoded; ``echo`` sends each request back; ``remap`` answers each request with the
recorded reply, its id replaced (the least work a replay has to do). The paths alternate
within each repeat so drift hits them alike (the pairs paths take turns every ``--chunk``
round trips over connections open side by side); medians and ranges (min-max) over
``--repeat`` runs are reported. Each replay run is a fresh ``rpctape replay`` (stopped with
SIGTERM): its startup (load and plan the cassette, until ``listening on``) is measured too.

- real: the same client session (initialize, then ``--frames`` / 2 - 1 ``model/list`` round
  trips) timed against the real app-server 0.169.0, and replayed from a cassette recorded from
  it through rpctape (``--no-real`` skips it).

``RPCTAPE_LOOP`` in the environment reaches the replay processes; ``--minimal-loop uvloop``
runs the minimal server on uvloop. ``--baseline-cmd CMD`` also replays with another build of
rpctape (e.g. the code before a change), alternating with this one: before and after in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import platform
import shlex
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from websockets.asyncio.client import connect
from websockets.version import version as websockets_version

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_relay import cpu_seconds  # noqa: E402
from bench.common import start  # noqa: E402
from proxy import recording_proxy  # noqa: E402
from proxy.codex.appserver import AppServer  # noqa: E402
from proxy.codex.backend import FakeBackend  # noqa: E402
from proxy.codex.client import SessionClient  # noqa: E402
from proxy.core.cassette import frame_of, load, new_header  # noqa: E402
from proxy.core.jsonrpc import Direction  # noqa: E402
from proxy.core.recorder import Recorder  # noqa: E402
from proxy.core.redact import Redactor  # noqa: E402
from proxy.wire.store import CassetteWriter  # noqa: E402

TARGET_STREAM = 100_000.0
"""Issue 9: replay streaming >= 100k frames/s."""
TARGET_RTT_RATIO = 1.15
"""Issue 9: a replayed round trip within 1.15x of a direct one to a minimal echo server."""
RUN_TIMEOUT = 120.0


# ---------------------------------------------------------------- cassettes


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


def server_frames(cassette: Path) -> list[str]:
    """The server frames of ``cassette`` exactly as a replay sends them."""
    return [frame_of(e).decode() for e in load(cassette).frames() if e["dir"] == "s2c"]


# ---------------------------------------------------------------- processes


async def stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM and wait (safe if it already exited)."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(proc.communicate(), 20)


def replay_command(args: argparse.Namespace, profile: Path | None) -> list[str]:
    """How to start ``rpctape``: installed, ``--rpctape-cmd``, or under cProfile."""
    if profile is not None:
        code = (
            "import cProfile, sys; from proxy.cli import main; sys.argv[0] = 'rpctape'; "
            f"cProfile.run('main()', {str(profile.resolve())!r})"
        )
        return [sys.executable, "-c", code]
    if args.rpctape_cmd:
        return shlex.split(args.rpctape_cmd)
    return [str(Path(sys.executable).parent / "rpctape")]


async def start_replay(
    command: list[str], cassette: Path
) -> tuple[asyncio.subprocess.Process, str, float]:
    """A fresh ``rpctape replay`` of ``cassette``; its URL and how long it took to listen."""
    t0 = time.perf_counter()
    proc, url = await start(*command, "replay", str(cassette), "--listen", "ws://127.0.0.1:0")
    return proc, url, time.perf_counter() - t0


# ---------------------------------------------------------------- workloads


@dataclass
class Run:
    """One timed run of one workload on one path."""

    seconds: float
    frames: int
    server_cpu: float
    client_cpu: float
    rtts_us: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Frames per second (received, or sent and received for the pairs)."""
        return self.frames / self.seconds

    @property
    def rtt(self) -> float:
        """Median round trip in microseconds (pairs)."""
        return statistics.median(self.rtts_us)

    @property
    def cpu_per_frame_us(self) -> float:
        """The server process's CPU per frame, in microseconds."""
        return self.server_cpu / self.frames * 1e6


async def run_stream(url: str, n: int, pid: int, last: str) -> Run:
    """Send the request, then read ``n`` notifications; timed from the request to the last."""
    async with connect(url, max_size=None, compression=None, ping_interval=None) as ws:
        cpu0, me0 = cpu_seconds(pid), cpu_seconds(os.getpid())
        start_t = time.perf_counter()
        await ws.send('{"id":"s","method":"turn/start","params":{}}')
        data: str | bytes = ""
        for _ in range(n):
            data = await ws.recv()
        took = time.perf_counter() - start_t
        cpu, me = cpu_seconds(pid) - cpu0, cpu_seconds(os.getpid()) - me0
        if data != last:
            raise RuntimeError(f"the last notification differs: {data!r:.80}")
        return Run(took, n, cpu, me)


async def run_pairs(url: str, n: int, pid: int, check: Callable[[int, str, str], bool]) -> Run:
    """``n // 2`` requests, one at a time; every reply checked, every round trip timed."""
    async with connect(url, max_size=None, compression=None, ping_interval=None) as ws:
        clock = time.perf_counter_ns
        rtts: list[float] = []
        cpu0, me0 = cpu_seconds(pid), cpu_seconds(os.getpid())
        start_t = time.perf_counter()
        for i in range(n // 2):
            request = f'{{"id":"r{i}","method":"thread/read","params":{{"n":{i}}}}}'
            t0 = clock()
            await ws.send(request)
            reply = await ws.recv()
            rtts.append((clock() - t0) / 1000)
            if not isinstance(reply, str) or not check(i, request, reply):
                raise RuntimeError(f"unexpected reply to request {i}: {reply!r:.120}")
        took = time.perf_counter() - start_t
        cpu, me = cpu_seconds(pid) - cpu0, cpu_seconds(os.getpid()) - me0
        return Run(took, 2 * (n // 2), cpu, me, rtts)


@dataclass
class PairsPath:
    """One path of the interleaved pairs workload: where, which process, how to check."""

    name: str
    url: str
    pid: int
    check: Callable[[int, str, str], bool]


async def run_pairs_interleaved(paths: list[PairsPath], n: int, chunk: int) -> dict[str, Run]:
    """``n // 2`` requests on each path, one at a time, the paths taking turns every
    ``chunk`` round trips over connections open side by side: a slow spell of the machine
    hits every path alike. Each path's time and server CPU are summed over its turns."""
    async with contextlib.AsyncExitStack() as stack:
        conns = [
            await stack.enter_async_context(
                connect(p.url, max_size=None, compression=None, ping_interval=None)
            )
            for p in paths
        ]
        clock = time.perf_counter_ns
        rtts: dict[str, list[float]] = {p.name: [] for p in paths}
        took = dict.fromkeys(rtts, 0.0)
        cpu = dict.fromkeys(rtts, 0.0)
        me = dict.fromkeys(rtts, 0.0)
        for first in range(0, n // 2, chunk):
            for path, ws in zip(paths, conns, strict=True):
                cpu0, me0, t_start = cpu_seconds(path.pid), cpu_seconds(os.getpid()), clock()
                for i in range(first, min(first + chunk, n // 2)):
                    request = f'{{"id":"r{i}","method":"thread/read","params":{{"n":{i}}}}}'
                    t0 = clock()
                    await ws.send(request)
                    reply = await ws.recv()
                    rtts[path.name].append((clock() - t0) / 1000)
                    if not isinstance(reply, str) or not path.check(i, request, reply):
                        raise RuntimeError(f"{path.name}: unexpected reply {i}: {reply!r:.120}")
                took[path.name] += (clock() - t_start) / 1e9
                cpu[path.name] += cpu_seconds(path.pid) - cpu0
                me[path.name] += cpu_seconds(os.getpid()) - me0
    return {name: Run(took[name], 2 * (n // 2), cpu[name], me[name], rtts[name]) for name in rtts}


def replied(i: int, request: str, reply: str) -> bool:
    """A replayed (or remapped) reply: the recorded reply with the live id."""
    return reply == f'{{"id":"r{i}","result":{{"n":{i},"text":"{"y" * 100}"}}}}'


def remapped(i: int, request: str, reply: str) -> bool:
    """The minimal server's remapped reply (always the first recorded reply, live id)."""
    return reply == f'{{"id":"r{i}","result":{{"n":0,"text":"{"y" * 100}"}}}}'


def echoed(i: int, request: str, reply: str) -> bool:
    """The echo server's reply: the request itself."""
    return reply == request


# ---------------------------------------------------------------- report


@dataclass
class Results:
    """Every run, by (workload, path); the replay's startup times by cassette."""

    runs: dict[tuple[str, str], list[Run]] = field(default_factory=dict)
    startup: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    def add(self, workload: str, path: str, run: Run) -> None:
        self.runs.setdefault((workload, path), []).append(run)

    def values(self, workload: str, path: str, metric: Callable[[Run], float]) -> list[float]:
        return [metric(r) for r in self.runs.get((workload, path), [])]

    def ratios(self, workload: str, a: str, b: str, metric: Callable[[Run], float]) -> list[float]:
        """``metric(a) / metric(b)`` per repeat (the two runs were adjacent)."""
        return [
            metric(x) / metric(y)
            for x, y in zip(
                self.runs.get((workload, a), []), self.runs.get((workload, b), []), strict=False
            )
        ]


def _stat(values: list[float], spec: str) -> tuple[str, str]:
    if not values:
        return "n/a", ""
    return format(statistics.median(values), spec), (
        f"{format(min(values), spec)} - {format(max(values), spec)}"
    )


def table(res: Results, frames: int) -> list[tuple[str, str, str]]:
    """Rows: what, median, range."""
    rows: list[tuple[str, str, str]] = []
    replays = [
        p for p in ("replay", "baseline") if ("stream", p) in res.runs or ("pairs", p) in res.runs
    ]
    streams, pairs = ("minimal", *replays), ("echo", "remap", *replays)

    def row(label: str, values: list[float], spec: str) -> None:
        rows.append((label, *_stat(values, spec)))

    metrics: list[tuple[str, tuple[str, ...], str, Callable[[Run], float], str]] = [
        ("stream", streams, f"frames/s ({frames:,} notifications)", lambda r: r.rate, ",.0f"),
        ("stream", streams, "server CPU per frame (us)", lambda r: r.cpu_per_frame_us, ".2f"),
        (
            "stream",
            streams,
            "client CPU per frame (us)",
            lambda r: r.client_cpu / r.frames * 1e6,
            ".2f",
        ),
        (
            "pairs",
            pairs,
            f"median round trip (us, {frames // 2:,} one at a time)",
            lambda r: r.rtt,
            ".1f",
        ),
        ("pairs", pairs, "frames/s", lambda r: r.rate, ",.0f"),
        (
            "pairs",
            pairs,
            "server CPU per round trip (us)",
            lambda r: r.server_cpu / (r.frames / 2) * 1e6,
            ".1f",
        ),
    ]
    for workload, paths, what, value, spec in metrics:
        for path in paths:
            row(f"{workload}, {path}: {what}", res.values(workload, path, value), spec)
    for (name, path), times in res.startup.items():
        row(f"{path} startup, {name} cassette (s, until listening)", times, ".3f")
    return rows


def target_lines(res: Results) -> list[str]:
    """Issue 9's two replay targets, met or not, with the ratios per repeat."""
    out: list[str] = []
    rates = res.values("stream", "replay", lambda r: r.rate)
    if rates:
        med = statistics.median(rates)
        verdict = "meets" if med >= TARGET_STREAM else "MISSES"
        ratio, spread = _stat(res.ratios("stream", "replay", "minimal", lambda r: r.rate), ".2f")
        out.append(
            f"replay stream: {med:,.0f} frames/s ({verdict} target >= {TARGET_STREAM:,.0f}); "
            f"{ratio}x the minimal server ({spread})"
        )
    for base in ("echo", "remap"):
        ratios = res.ratios("pairs", "replay", base, lambda r: r.rtt)
        if ratios:
            med = statistics.median(ratios)
            verdict = (
                ("meets" if med <= TARGET_RTT_RATIO else "MISSES")
                + f" target <= {TARGET_RTT_RATIO:g}"
                if base == "echo"
                else "no target: the floor of a replay"
            )
            _, spread = _stat(ratios, ".2f")
            out.append(f"replayed round trip / {base} round trip: {med:.2f}x ({spread}; {verdict})")
    return out


def machine() -> list[str]:
    """CPUs, versions, event loops."""
    uvloop_version = "not installed"
    with contextlib.suppress(ImportError):
        uvloop_version = importlib.import_module("uvloop").__version__
    return [
        f"machine: {os.cpu_count()} CPUs, {platform.system()} {platform.release()}; Python "
        f"{platform.python_version()}, websockets {websockets_version}, orjson "
        f"{orjson.__version__}, uvloop {uvloop_version}",
        f"RPCTAPE_LOOP={os.environ.get('RPCTAPE_LOOP', '(unset)')}",
    ]


# ---------------------------------------------------------------- the real app-server


async def run_model_list(url: str, n: int) -> float:
    """initialize, then ``n // 2 - 1`` model/list round trips one at a time; timed after
    initialize."""
    async with SessionClient(url) as client:
        await client.initialize()
        start_t = time.perf_counter()
        for _ in range(n // 2 - 1):
            await client.call("model/list", {})
        return time.perf_counter() - start_t


async def real_vs_replay(n: int, repeat: int, tmp: str, command: list[str]) -> None:
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
        proc, url, _ = await start_replay(command, cassette)
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


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--frames", type=int, default=20_000, help="notifications; pairs x2")
    p.add_argument("--repeat", type=int, default=5, help="runs per workload and path")
    p.add_argument(
        "--chunk", type=int, default=250, help="pairs: round trips per turn of each path"
    )
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.add_argument("--no-real", action="store_true", help="skip the real app-server")
    p.add_argument("--only", choices=("stream", "pairs"), help="run one workload only")
    p.add_argument(
        "--minimal-loop", choices=("asyncio", "uvloop"), default="asyncio",
        help="the minimal server's event loop",
    )  # fmt: skip
    p.add_argument("--rpctape-cmd", metavar="CMD", help="run this instead of the installed rpctape")
    p.add_argument(
        "--baseline-cmd",
        metavar="CMD",
        help="also replay with this rpctape (e.g. an older build), alternating: before and after",
    )
    p.add_argument(
        "--profile",
        type=Path,
        metavar="PREFIX",
        help="run the replays under cProfile; the last run of each workload is saved as "
        "PREFIX-stream.pstats and PREFIX-pairs.pstats (rates are then lower)",
    )
    return p.parse_args(argv)


async def measure(args: argparse.Namespace, tmp: Path, log: Callable[[str], None]) -> Results:
    """Alternate the paths of each workload ``--repeat`` times."""
    n = args.frames
    stream_cassette, pairs_cassette = tmp / "stream.jsonl", tmp / "pairs.jsonl"
    _record(stream_cassette, stream_frames(n))
    _record(pairs_cassette, pair_frames(n))
    frames_file = tmp / "stream.frames"
    sent = server_frames(stream_cassette)
    frames_file.write_text("\n".join(sent) + "\n")
    first_reply = server_frames(pairs_cassette)[0]
    res = Results()
    minimal, base = await start(
        sys.executable,
        str(REPO / "bench" / "minimal_server.py"),
        "--frames",
        str(frames_file),
        "--reply",
        first_reply,
        "--loop",
        args.minimal_loop,
    )
    try:
        # Warm the minimal server up (the replay is a fresh process every run).
        await run_pairs(f"{base}/echo", 200, minimal.pid, echoed)
        await run_pairs(f"{base}/remap", 200, minimal.pid, remapped)
        workloads = ("stream", "pairs") if args.only is None else (args.only,)
        for workload in workloads:
            cassette = stream_cassette if workload == "stream" else pairs_cassette
            for rep in range(args.repeat):
                profile = None
                if args.profile is not None:
                    profile = Path(f"{args.profile}-{workload}.pstats")
                replays = [("replay", replay_command(args, profile))]
                if args.baseline_cmd:
                    replays.append(("baseline", shlex.split(args.baseline_cmd)))
                if workload == "pairs":
                    await pairs_repeat(res, replays, cassette, base, minimal.pid, args, rep, log)
                    continue
                run = await asyncio.wait_for(
                    run_stream(f"{base}/stream", n, minimal.pid, sent[-1]), RUN_TIMEOUT
                )
                res.add(workload, "minimal", run)
                log(f"stream minimal #{rep + 1}: {_describe(run)}")
                for path, command in replays:
                    proc, url, took = await start_replay(command, cassette)
                    res.startup.setdefault((workload, path), []).append(took)
                    try:
                        run = await asyncio.wait_for(
                            run_stream(url, n, proc.pid, sent[-1]), RUN_TIMEOUT
                        )
                    finally:
                        await stop(proc)
                    res.add(workload, path, run)
                    log(f"stream {path:7} #{rep + 1}: {_describe(run)} (startup {took:.3f}s)")
    finally:
        await stop(minimal)
    return res


async def pairs_repeat(
    res: Results,
    replays: list[tuple[str, list[str]]],
    cassette: Path,
    base: str,
    minimal_pid: int,
    args: argparse.Namespace,
    rep: int,
    log: Callable[[str], None],
) -> None:
    """One repeat of the pairs workload: fresh replays, every path interleaved."""
    started: list[asyncio.subprocess.Process] = []
    try:
        paths = [
            PairsPath("echo", f"{base}/echo", minimal_pid, echoed),
            PairsPath("remap", f"{base}/remap", minimal_pid, remapped),
        ]
        for name, command in replays:
            proc, url, took = await start_replay(command, cassette)
            started.append(proc)
            res.startup.setdefault(("pairs", name), []).append(took)
            paths.append(PairsPath(name, url, proc.pid, replied))
        runs = await asyncio.wait_for(
            run_pairs_interleaved(paths, args.frames, args.chunk), RUN_TIMEOUT
        )
    finally:
        for proc in started:
            await stop(proc)
    for name, run in runs.items():
        res.add("pairs", name, run)
        log(f"pairs {name:8} #{rep + 1}: {_describe(run)}")


def _describe(run: Run) -> str:
    if run.rtts_us:
        return f"median round trip {run.rtt:.1f} us, {run.rate:,.0f} frames/s"
    return f"{run.rate:,.0f} frames/s, server CPU {run.cpu_per_frame_us:.2f} us/frame"


async def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    def log(line: str) -> None:
        print(f"# {line}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="rpctape-bench-") as tmp:
        res = await measure(args, Path(tmp), log)
        rows = table(res, args.frames)
        head = f"{args.repeat} run(s) per path, alternating; median and range (min - max)"
        if args.markdown:
            lines = [head, "", "| metric | median | range |", "|---|---:|---:|"]
            lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
            lines += [""] + [f"- {x}" for x in target_lines(res) + machine()]
        else:
            width = max(len(a) for a, _, _ in rows)
            lines = [head, ""]
            lines += [f"{a.ljust(width)}  {b:>10}  {c}" for a, b, c in rows]
            lines += ["", *target_lines(res), *machine()]
        print("\n".join(lines), flush=True)
        if not args.no_real:
            await real_vs_replay(args.frames, min(args.repeat, 3), tmp, replay_command(args, None))


if __name__ == "__main__":
    asyncio.run(main())
