"""Benchmark how fast `rpctape replay` is ready to serve a big cassette, and its memory.

Run from the repository root with the project's venv::

    .venv/bin/python bench/bench_load.py [--frames 1000,20000,200000] [--repeat 3]
        [--baseline-cmd "env PYTHONPATH=/tmp/base .venv/bin/python -P -m proxy"] [--markdown]

Cassettes (written to a temporary directory by the real recorder, default redaction on):

- pairs: ``initialize``, then ``config/read`` request/response pairs up to ``--frames`` frames
  on one connection (the issue's 200k-frame cassette is 100k such pairs);
- mix: the text frames of the shipped cassettes (a streamed turn, two turns, an approval,
  model/list and config/read) repeated on one connection up to ``--frames`` frames.

For each cassette, each path (this build, and ``--baseline-cmd`` when given) starts
``rpctape replay CASSETTE --listen ws://127.0.0.1:0``, alternating, ``--repeat`` times:

- ready: seconds from spawn to its ``listening on`` line;
- serving: a client connects and makes the cassette's first request (answered from the
  recording); then the process's resident memory (``VmRSS`` of /proc/PID/status) and its peak
  (``VmHWM``) are read, and compared with the file's size;
- report: after SIGTERM, the seconds until it exits, and the lines and bytes of its report.

``--inprocess`` adds the split of the load in this process (this build only): the file's parse
(``cassette.load``) and the replay's preparation (``ReplaySession``), and ``--profile PREFIX``
writes a cProfile of both per size. Medians of the repeats; each target is checked against
the median.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import os
import shlex
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import connect

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from proxy.core.cassette import load, new_header  # noqa: E402
from proxy.core.jsonrpc import Direction  # noqa: E402
from proxy.core.planner import ReplayOptions  # noqa: E402
from proxy.core.recorder import Recorder  # noqa: E402
from proxy.core.redact import Redactor  # noqa: E402
from proxy.core.replay_session import ReplaySession  # noqa: E402
from proxy.wire.store import CassetteWriter  # noqa: E402

READY_TARGETS = {20_000: 0.2, 200_000: 2.0}
"""Issue 18: frames -> seconds until a replay is ready to serve."""
RSS_BASE_MB = 60.0
RSS_PER_FILE = 3.0
"""Issue 18: resident memory while serving under 60 MB + 3 x the cassette's size."""
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
"""The replays' environment: with their bytecode cached, as an installed rpctape has it."""
SHIPPED = ("turn-streamed", "two-turns", "command-approval", "initialize-model-list-config")


# ---------------------------------------------------------------- cassettes


def _config(i: int) -> str:
    config: dict[str, Any] = {
        "model": "mock-model",
        "model_provider": "mock",
        "approval_policy": "never",
        "sandbox_mode": "read-only",
        "model_reasoning_effort": None,
        "history": {"persistence": "save-all", "max_bytes": None},
        "mcp_servers": {},
        "chatgpt_base_url": "https://chatgpt.com/backend-api/",
        "project_doc_fallback_filenames": [],
        "include_apps_instructions": True,
        "background_terminal_max_timeout": 300000,
        "tools": None,
        "notice": None,
        "n": i,
    }
    return orjson.dumps({"id": i, "result": {"config": config, "origins": {}}}).decode()


def pair_frames(n: int) -> Iterator[tuple[Direction, str]]:
    """``initialize``, then ``config/read`` pairs: ``n`` frames in all."""
    yield Direction.C2S, '{"id":0,"method":"initialize","params":{"clientInfo":{"name":"b"}}}'
    yield Direction.S2C, '{"id":0,"result":{"userAgent":"bench/0.169.0"}}'
    for i in range(1, n // 2):
        yield Direction.C2S, f'{{"id":{i},"method":"config/read","params":{{}}}}'
        yield Direction.S2C, _config(i)


def mix_frames(n: int) -> Iterator[tuple[Direction, str]]:
    """The text frames of the shipped cassettes, repeated: ``n`` frames in all."""
    frames: list[tuple[Direction, str]] = []
    for name in SHIPPED:
        for event in load(REPO / "cassettes" / f"{name}.jsonl").frames():
            if event["kind"] == "text" and event.get("origin") != "rpctape":
                text = event["raw"] if "raw" in event else orjson.dumps(event["msg"]).decode()
                frames.append((Direction(event["dir"]), text))
    for i in range(n):
        yield frames[i % len(frames)]


def write_cassette(path: Path, frames: Iterator[tuple[Direction, str]]) -> str:
    """Record ``frames`` on one connection; the first client frame (the request to make)."""
    writer = CassetteWriter(path, new_header("ws://bench"))
    recorder = Recorder(writer, Redactor())
    conn = recorder.new_connection()
    recorder.open(conn, path="/", headers=[], subprotocol=None, upstream="ws://bench")
    first = ""
    for direction, frame in frames:
        first = first or (frame if direction is Direction.C2S else "")
        recorder.text(conn, direction, frame)
    recorder.close(conn, by="client", code=1000, reason="")
    writer.close()
    return first


# ---------------------------------------------------------------- one run


def status_kb(pid: int, field: str) -> int:
    """A ``kB`` field of /proc/PID/status (``VmRSS``, ``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


@dataclass
class Run:
    """One replay process: ready time, memory while serving, the report at the end."""

    ready: float
    rss_mb: float
    peak_mb: float
    exit_s: float
    report_lines: int
    report_bytes: int


async def one_run(command: list[str], cassette: Path, first: str) -> Run:
    """Start a replay, make its first request, read its memory, stop it, read its report."""
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *command, "replay", str(cassette), "--listen", "ws://127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO, env=ENV,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 120)).decode()
        ready = time.perf_counter() - t0
        if not line.startswith("listening on "):
            raise RuntimeError(f"{command} did not start: {line!r}")
        async with connect(line.split()[-1], max_size=None, compression=None) as ws:
            await ws.send(first)
            await asyncio.wait_for(ws.recv(), 30)
            rss, peak = status_kb(proc.pid, "VmRSS"), status_kb(proc.pid, "VmHWM")
        t1 = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        exit_s = time.perf_counter() - t1
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    report = out + err
    return Run(ready, rss / 1024, peak / 1024, exit_s, report.count(b"\n"), len(report))


# ---------------------------------------------------------------- in process


def inprocess(cassette: Path, profile: Path | None) -> tuple[float, float]:
    """Seconds to load ``cassette`` and to prepare its replay, in this process."""
    gc.collect()
    profiler = cProfile.Profile() if profile is not None else None
    if profiler is not None:
        profiler.enable()
    t0 = time.perf_counter()
    tape = load(cassette)
    t1 = time.perf_counter()
    session = ReplaySession(tape, ReplayOptions.build(), str(cassette))
    t2 = time.perf_counter()
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)  # type: ignore[arg-type]
    del session, tape
    return t1 - t0, t2 - t1


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--frames", default="1000,20000,200000", help="sizes, comma-separated")
    parser.add_argument("--shapes", default="pairs,mix", help="pairs, mix or both")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rpctape-cmd", default="", help="this build (default .venv/bin/rpctape)")
    parser.add_argument("--baseline-cmd", default="", help="another build, alternating")
    parser.add_argument("--inprocess", action="store_true", help="the load's split, in process")
    parser.add_argument("--profile", type=Path, default=None, help="cProfile prefix (in process)")
    parser.add_argument("--markdown", action="store_true")
    return parser.parse_args(argv)


def _cell(values: list[float], spec: str) -> str:
    return f"{statistics.median(values):{spec}} ({min(values):{spec}}-{max(values):{spec}})"


async def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    this = shlex.split(args.rpctape_cmd) or [str(Path(sys.executable).parent / "rpctape")]
    paths = {"this": this}
    if args.baseline_cmd:
        paths["baseline"] = shlex.split(args.baseline_cmd)
    sizes = [int(s) for s in args.frames.split(",")]
    shapes = {"pairs": pair_frames, "mix": mix_frames}
    rows: list[tuple[str, str, str, str, str, str, str, str]] = []
    verdicts: list[str] = []
    with tempfile.TemporaryDirectory(prefix="rpctape-bench-load-") as tmp:
        for shape in args.shapes.split(","):
            for size in sizes:
                cassette = Path(tmp) / f"{shape}-{size}.jsonl"
                first = write_cassette(cassette, shapes[shape](size))
                mb = cassette.stat().st_size / 1e6
                print(f"# {shape} {size} frames: {mb:.1f} MB", file=sys.stderr)
                if args.inprocess or args.profile:
                    prof = None
                    if args.profile:
                        prof = Path(f"{args.profile}-{shape}-{size}.prof")
                    parse_s, build_s = inprocess(cassette, prof)
                    print(f"#   in process: load {parse_s:.3f} s, ReplaySession {build_s:.3f} s",
                          file=sys.stderr)  # fmt: skip
                runs: dict[str, list[Run]] = {name: [] for name in paths}
                for _ in range(args.repeat):
                    for name, command in paths.items():
                        run = await one_run(command, cassette, first)
                        runs[name].append(run)
                        print(f"#   {name}: ready {run.ready:.3f} s, RSS {run.rss_mb:.0f} MB "
                              f"(peak {run.peak_mb:.0f}), exit {run.exit_s:.2f} s, report "
                              f"{run.report_lines} lines", file=sys.stderr)  # fmt: skip
                for name, got in runs.items():
                    ready = [r.ready for r in got]
                    rss = [r.rss_mb for r in got]
                    rows.append((
                        f"{shape} {size:,}", name, f"{mb:.1f}", _cell(ready, ".3f"),
                        _cell(rss, ".0f"), f"{statistics.median(r.peak_mb for r in got):.0f}",
                        f"{statistics.median(rss) / mb:.1f}x" if mb >= 1 else "",
                        f"{statistics.median(r.report_lines for r in got):.0f} lines, "
                        f"{statistics.median(r.report_bytes for r in got) / 1e3:.0f} kB, "
                        f"exit {statistics.median(r.exit_s for r in got):.2f} s",
                    ))  # fmt: skip
                    budget = RSS_BASE_MB + RSS_PER_FILE * mb
                    target = READY_TARGETS.get(size)
                    ok = statistics.median(rss) <= budget
                    line = (f"- {shape} {size:,} frames, {name}: resident "
                            f"{statistics.median(rss):.0f} MB (target < {budget:.0f}: "
                            f"{'met' if ok else 'MISSED'})")  # fmt: skip
                    if target is not None:
                        met = statistics.median(ready) < target
                        line += (f"; ready {statistics.median(ready):.3f} s (target < "
                                 f"{target} s: {'met' if met else 'MISSED'})")  # fmt: skip
                    verdicts.append(line)
                if "baseline" in runs:
                    ratios = [
                        a.ready / b.ready
                        for a, b in zip(runs["this"], runs["baseline"], strict=True)
                    ]
                    verdicts.append(
                        f"- {shape} {size:,} frames: ready this / baseline "
                        f"{statistics.median(ratios):.2f}x (per repeat: "
                        + ", ".join(f"{r:.2f}" for r in ratios)
                        + ")"
                    )
                cassette.unlink()
    head = ("cassette", "path", "MB", "ready s (min-max)", "RSS MB serving", "peak MB",
            "RSS/file", "report at exit")  # fmt: skip
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
        for row in [head, *rows]:
            print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    print()
    print("\n".join(verdicts))
    print(f"- machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")


if __name__ == "__main__":
    asyncio.run(main())
