"""Benchmark the recording relay against a direct connection and against mitmproxy.

Run from the repository root with the project's venv (mitmproxy comes from ``bench/.venv``,
made by ``bench/setup.sh``)::

    bash bench/setup.sh && .venv/bin/python bench/bench_relay.py --markdown

Four paths carry the same workloads, side by side in one run:

- ``direct``: client -> upstream;
- ``rpctape``: client -> ``rpctape record`` -> upstream (cassette in a temporary directory);
- ``mitmproxy``: client -> ``mitmdump --mode reverse:...`` -> upstream;
- ``floor``: client -> ``bench/forwarder.py`` -> upstream, a Python byte pipe that appends what it
  forwards to a file and parses nothing: the cost of one more Python process on the path, which
  no recording proxy in Python goes below (``--no-floor`` skips it);
- ``--also NAME=CMD``: more recording proxies, each run as ``CMD record ...`` (another checkout's
  rpctape, or this one on another event loop), to compare variants in the same run;
- ``--plain``: ``plain``, this checkout installed without extras (no hyperscan, no uvloop) in
  ``bench/.venv-plain`` (built or refreshed first by ``bash bench/setup.sh plain``), beside
  ``rpctape`` (the project's venv, with the ``fast`` extra).

The upstream (``bench/upstream.py``), each proxy and this client are separate processes, so no
two of them share an event loop. Workloads, each repeated ``--repeat`` times, median reported:

- stream: the upstream sends ``--messages`` ~300-byte notifications as fast as it can;
  messages/s and MB/s of payload, timed from the first notification to the final response;
- ping: ``--pings`` small requests one at a time; median and p99 round trip;
- proxy CPU: user+system time of the proxy process (``/proc/PID/stat``) per relayed frame.

For rpctape it also checks the durability rule from the outside: when the client has
received a frame, that frame's cassette line is already in the file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import re
import selectors
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.version import version as websockets_version

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
BENCH_VENV = BENCH / ".venv"
MITMDUMP = BENCH_VENV / "bin" / "mitmdump"

CLK_TCK = os.sysconf("SC_CLK_TCK")
WORKLOAD_TIMEOUT = 300.0
"""Seconds one workload run may take before the benchmark gives up on that path."""

TARGET_VS_DIRECT = 0.7
TARGET_VS_MITM = 15.0
TARGET_ADDED_RTT_US = 60.0
"""Issue 9's targets: throughput against direct and mitmproxy, added median round trip."""
TARGET_FAST = 0.6
TARGET_PLAIN = 0.55
"""Issue 18: throughput against direct with the ``fast`` extra and without (``--plain``)."""
PLAIN_VENV = BENCH / ".venv-plain"


# ---------------------------------------------------------------- processes


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # proc(5): fields after the parenthesised command; utime and stime are fields 14 and 15.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def read_line(proc: subprocess.Popen[bytes], name: str, timeout: float) -> str:
    """Read one line of ``proc``'s stdout, or fail if it exits or stays silent."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while b"\n" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not sel.select(remaining):
                raise TimeoutError(f"{name} printed no line within {timeout:g}s")
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError(f"{name} exited with {proc.wait()} before it was ready")
            buf += chunk
    return buf.split(b"\n", 1)[0].decode()


def read_rest(proc: subprocess.Popen[bytes]) -> str:
    """Everything left on ``proc``'s stdout (call after it has exited)."""
    assert proc.stdout is not None
    chunks = []
    while chunk := os.read(proc.stdout.fileno(), 65536):
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def listening_port(pid: int, timeout: float) -> int:
    """The TCP port process ``pid`` listens on, found in /proc (for mitmdump on port 0)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        inodes = set()
        with contextlib.suppress(FileNotFoundError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
        for table in ("tcp", "tcp6"):
            with contextlib.suppress(FileNotFoundError):
                for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                    cols = line.split()
                    # proc(5): local_address is "HEXIP:HEXPORT", st 0A is LISTEN.
                    if cols[3] == "0A" and cols[9] in inodes:
                        return int(cols[1].rsplit(":", 1)[1], 16)
        time.sleep(0.1)
    raise TimeoutError(f"process {pid} opened no listening socket within {timeout:g}s")


@dataclass
class Started:
    """A subprocess this benchmark started, and where its stderr goes."""

    name: str
    proc: subprocess.Popen[bytes]
    stderr_path: Path

    @property
    def pid(self) -> int:
        """The process id (what ``cpu_seconds`` reads)."""
        return self.proc.pid

    def stderr_tail(self, lines: int = 15) -> str:
        """The last lines the process wrote to stderr, for error messages."""
        with contextlib.suppress(OSError):
            return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


class Processes:
    """Starts subprocesses and stops every one of them, by pid, on :meth:`stop_all`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[Started] = []

    def start(self, name: str, argv: list[str], **kwargs: object) -> Started:
        """Start ``argv`` with stdout piped and stderr to a file in the work directory."""
        stderr_path = self.workdir / f"{name}.stderr"
        with stderr_path.open("wb") as stderr:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, **kwargs
            )  # type: ignore[call-overload]
        started = Started(name, proc, stderr_path)
        self.started.append(started)
        return started

    @staticmethod
    def stop(started: Started, timeout: float = 20.0) -> int:
        """SIGTERM, wait, SIGKILL if it lingers; return the exit code. Safe twice."""
        proc = started.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def stop_all(self) -> None:
        """Stop everything started, newest first (proxies before the upstream)."""
        for started in reversed(self.started):
            self.stop(started)
            if started.proc.stdout is not None:
                started.proc.stdout.close()


def rpctape_argv() -> list[str]:
    """How to run ``rpctape``: the console script beside this interpreter.

    ``python -m proxy.cli`` does not work (the module has no ``__main__`` block), so the
    benchmark runs the installed entry point, which is also what users run.
    """
    script = Path(sys.executable).parent / "rpctape"
    if script.exists():
        return [str(script)]
    found = shutil.which("rpctape")
    if found is None:
        raise SystemExit("rpctape is not installed; run with the project's .venv/bin/python")
    return [found]


# ---------------------------------------------------------------- workloads


@dataclass
class StreamRun:
    """One run of the stream workload on one path."""

    messages: int
    payload_bytes: int
    seconds: float
    proxy_cpu: float | None
    upstream_cpu: float
    client_cpu: float

    @property
    def rate(self) -> float:
        """Notifications per second."""
        return self.messages / self.seconds

    @property
    def mbps(self) -> float:
        """Payload megabytes (10**6) per second."""
        return self.payload_bytes / self.seconds / 1e6


@dataclass
class PingRun:
    """One run of the ping workload on one path."""

    rtts_us: list[float]
    proxy_cpu: float | None

    @property
    def median(self) -> float:
        """Median round trip in microseconds."""
        return statistics.median(self.rtts_us)

    @property
    def p99(self) -> float:
        """99th percentile round trip in microseconds."""
        return statistics.quantiles(self.rtts_us, n=100, method="inclusive")[98]


@dataclass
class PathResult:
    """Everything measured on one path."""

    name: str
    proxy_pid: int | None
    stream_count: int
    ping_count: int
    streams: list[StreamRun] = field(default_factory=list)
    pings: list[PingRun] = field(default_factory=list)
    error: str | None = None

    def cpu_per_stream_frame_us(self) -> float | None:
        """Median proxy CPU per relayed stream frame (notifications + request + response)."""
        values = [
            r.proxy_cpu / (r.messages + 2) * 1e6 for r in self.streams if r.proxy_cpu is not None
        ]
        return statistics.median(values) if values else None

    def cpu_per_message_us(self, which: str) -> float | None:
        """Median CPU of the upstream or the client per streamed notification."""
        values = [getattr(r, f"{which}_cpu") / r.messages * 1e6 for r in self.streams]
        return statistics.median(values) if values else None

    def cpu_per_ping_frame_us(self) -> float | None:
        """Median proxy CPU per relayed ping frame (two frames per round trip)."""
        values = [
            r.proxy_cpu / (2 * len(r.rtts_us)) * 1e6 for r in self.pings if r.proxy_cpu is not None
        ]
        return statistics.median(values) if values else None


def _cpu(pid: int | None) -> float | None:
    return None if pid is None else cpu_seconds(pid)


async def _open(url: str) -> ClientConnection:
    # The app-server negotiates no compression; neither do the proxies' legs.
    return await connect(url, compression=None, max_size=None, ping_interval=None)


class Durability:
    """Checks that every frame a client received already has its line in the cassette."""

    def __init__(self, cassette: Path) -> None:
        self.cassette = cassette
        self.frames_expected = 0
        self.failures: list[str] = []

    def offset(self) -> int:
        """The cassette's current size: where the next run's lines begin."""
        return self.cassette.stat().st_size

    def check(self, since: int, frames: int, what: str) -> None:
        """Count ``text`` lines written after ``since``; all ``frames`` must be there."""
        self.frames_expected += frames
        with self.cassette.open("rb") as f:
            f.seek(since)
            data = f.read()
        lines = data.split(b"\n")[:-1]  # only complete lines count
        found = sum(1 for line in lines if orjson.loads(line).get("kind") == "text")
        if found != frames:
            self.failures.append(f"{what}: client saw {frames} frames, cassette had {found}")


async def stream_once(
    url: str, count: int, pid: int | None, durability: Durability | None, upstream_pid: int
) -> StreamRun:
    """Ask for ``count`` notifications and time them from the first to the final response."""
    ws = await _open(url)
    try:
        since = durability.offset() if durability else 0
        cpu0, up0, me0 = _cpu(pid), cpu_seconds(upstream_pid), cpu_seconds(os.getpid())
        request = {"id": 1, "method": "bench/stream", "params": {"count": count}}
        await ws.send(orjson.dumps(request).decode())  # a text frame, as the app-server wants
        first = await ws.recv()
        t0 = time.perf_counter()
        received, payload = 1, len(first)
        while True:
            data = await ws.recv()
            if isinstance(data, str) and data.startswith('{"id":'):
                break
            received += 1
            payload += len(data)
        t1, cpu1 = time.perf_counter(), _cpu(pid)
        up1, me1 = cpu_seconds(upstream_pid), cpu_seconds(os.getpid())
        if received != count:
            raise RuntimeError(f"asked for {count} notifications, received {received}")
        if durability:
            durability.check(since, count + 2, f"stream of {count}")
    finally:
        await ws.close()
    cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    # ``count`` frames arrived after t0: count - 1 notifications and the response.
    return StreamRun(count, payload, t1 - t0, cpu, up1 - up0, me1 - me0)


async def ping_once(
    url: str, count: int, pid: int | None, durability: Durability | None
) -> PingRun:
    """Send ``count`` pings one at a time; return each round trip in microseconds."""
    ws = await _open(url)
    try:
        since = durability.offset() if durability else 0
        rtts: list[float] = []
        clock = time.perf_counter_ns
        cpu0 = _cpu(pid)
        for i in range(count):
            request = f'{{"id":{i},"method":"ping","params":{{}}}}'
            t0 = clock()
            await ws.send(request)
            reply = await ws.recv()
            rtts.append((clock() - t0) / 1000)
            if reply != f'{{"id":{i},"result":{{}}}}':
                raise RuntimeError(f"unexpected reply to ping {i}: {reply!r}")
        cpu1 = _cpu(pid)
        if durability:
            durability.check(since, 2 * count, f"{count} pings")
    finally:
        await ws.close()
    cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    return PingRun(rtts, cpu)


@dataclass
class Target:
    """One path to measure: where clients connect and which process is the proxy."""

    result: PathResult
    url: str
    upstream_pid: int
    durability: Durability | None = None


async def run_all(targets: list[Target], repeat: int, log: Callable[[str], None]) -> None:
    """Warm up each path, then interleave the repeats so drift hits every path alike."""
    for t in targets:
        r = t.result
        try:
            async with asyncio.timeout(WORKLOAD_TIMEOUT):
                await stream_once(
                    t.url, min(2000, r.stream_count), r.proxy_pid, t.durability, t.upstream_pid
                )
                await ping_once(t.url, min(200, r.ping_count), r.proxy_pid, t.durability)
        except Exception as exc:
            r.error = f"warm-up failed: {type(exc).__name__}: {exc}"
            log(f"{r.name}: {r.error}")
    live = [t for t in targets if t.result.error is None]
    for workload in ("stream", "ping"):
        for rep in range(repeat):
            for t in live:
                r = t.result
                if r.error is not None:
                    continue
                try:
                    async with asyncio.timeout(WORKLOAD_TIMEOUT):
                        if workload == "stream":
                            s = await stream_once(
                                t.url, r.stream_count, r.proxy_pid, t.durability, t.upstream_pid
                            )
                            r.streams.append(s)
                            log(
                                f"{r.name:9} stream #{rep + 1}: {s.messages} msgs "
                                f"{s.rate:,.0f} msg/s {s.mbps:.1f} MB/s"
                            )
                        else:
                            p = await ping_once(t.url, r.ping_count, r.proxy_pid, t.durability)
                            r.pings.append(p)
                            log(
                                f"{r.name:9} ping   #{rep + 1}: median {p.median:.0f} us "
                                f"p99 {p.p99:.0f} us"
                            )
                except Exception as exc:
                    r.error = f"{workload} run {rep + 1} failed: {type(exc).__name__}: {exc}"
                    log(f"{r.name}: {r.error}")


# ---------------------------------------------------------------- report


@dataclass
class CassetteReport:
    """What rpctape wrote, checked after it exited."""

    path: Path
    size: int
    lines: int
    text_events: int
    frames_expected: int
    summary: str
    exit_code: int
    live_failures: list[str]

    @property
    def complete(self) -> bool:
        """Every frame relayed has its line, and rpctape exited cleanly."""
        return (
            self.text_events == self.frames_expected
            and not self.live_failures
            and self.exit_code == 0
        )


def check_cassette(
    path: Path, durability: Durability, summary: str, exit_code: int
) -> CassetteReport:
    """Count the cassette's lines and text events after rpctape has closed it."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    text = sum(1 for line in lines[1:] if orjson.loads(line).get("kind") == "text")
    return CassetteReport(
        path,
        len(data),
        len(lines),
        text,
        durability.frames_expected,
        summary,
        exit_code,
        durability.failures,
    )


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def rows(results: list[PathResult]) -> list[tuple[str, list[str]]]:
    """The table: one metric per row, one path per column."""

    def col(fn: Callable[[PathResult], float | None], spec: str) -> list[str]:
        return [_fmt(fn(r), spec) if not (r.error and not r.streams) else "failed" for r in results]

    return [
        ("stream: notifications per run", [f"{r.stream_count:,}" for r in results]),
        ("stream: messages/s", col(lambda r: _median([s.rate for s in r.streams]), ",.0f")),
        ("stream: MB/s (payload)", col(lambda r: _median([s.mbps for s in r.streams]), ".2f")),
        ("ping: round trips per run", [f"{r.ping_count:,}" for r in results]),
        (
            "ping: median round trip (us)",
            col(lambda r: _median([p.median for p in r.pings]), ".0f"),
        ),
        ("ping: p99 round trip (us)", col(lambda r: _median([p.p99 for p in r.pings]), ".0f")),
        ("proxy CPU per stream frame (us)", col(PathResult.cpu_per_stream_frame_us, ".1f")),
        ("proxy CPU per ping frame (us)", col(PathResult.cpu_per_ping_frame_us, ".1f")),
        (
            "upstream CPU per notification (us)",
            col(lambda r: r.cpu_per_message_us("upstream"), ".1f"),
        ),
        ("client CPU per notification (us)", col(lambda r: r.cpu_per_message_us("client"), ".1f")),
    ]


def render_text(results: list[PathResult]) -> list[str]:
    """A plain-text table."""
    table = rows(results)
    head = ["", *(r.name for r in results)]
    width0 = max(len(label) for label, _ in table)
    widths = [max(len(head[i + 1]), *(len(v[i]) for _, v in table)) for i in range(len(results))]
    out = [
        "  ".join(
            [head[0].ljust(width0), *(h.rjust(w) for h, w in zip(head[1:], widths, strict=True))]
        )
    ]
    out.append("  ".join(["-" * width0, *("-" * w for w in widths)]))
    for label, values in table:
        out.append(
            "  ".join(
                [label.ljust(width0), *(v.rjust(w) for v, w in zip(values, widths, strict=True))]
            )
        )
    return out


def render_markdown(results: list[PathResult]) -> list[str]:
    """A Markdown table for docs/benchmarks.md."""
    out = [
        "| metric | " + " | ".join(r.name for r in results) + " |",
        "|---|" + "---:|" * len(results),
    ]
    for label, values in rows(results):
        out.append(f"| {label} | " + " | ".join(values) + " |")
    return out


def ratio_lines(results: dict[str, PathResult]) -> list[str]:
    """The throughput ratios the project targets, with pass or miss."""

    def rate(name: str) -> float | None:
        r = results.get(name)
        return _median([s.rate for s in r.streams]) if r and r.streams else None

    def rtt(name: str) -> float | None:
        r = results.get(name)
        return _median([p.median for p in r.pings]) if r and r.pings else None

    out = []
    ours, direct, mitm = rate("rpctape"), rate("direct"), rate("mitmproxy")
    for label, other, target in (
        ("direct", direct, TARGET_VS_DIRECT),
        ("mitmproxy", mitm, TARGET_VS_MITM),
    ):
        if ours is None or other is None:
            out.append(f"rpctape / {label} throughput: n/a (target >= {target:g})")
            continue
        ratio = ours / other
        verdict = "meets" if ratio >= target else "MISSES"
        out.append(f"rpctape / {label} throughput: {ratio:.2f} ({verdict} target >= {target:g})")
    direct_rtt = rtt("direct")
    ours_rtt = rtt("rpctape")
    if ours_rtt is not None and direct_rtt is not None:
        added = ours_rtt - direct_rtt
        verdict = "meets" if added <= TARGET_ADDED_RTT_US else "MISSES"
        out.append(
            f"rpctape adds {added:.0f} us to the median round trip "
            f"({verdict} target <= {TARGET_ADDED_RTT_US:g} us)"
        )
    for name, target, install in (
        ("rpctape", TARGET_FAST, "fast"),
        ("plain", TARGET_PLAIN, "plain"),
    ):
        path_rate = rate(name)
        if path_rate is not None and direct is not None:
            ratio = path_rate / direct
            verdict = "meets" if ratio >= target else "MISSES"
            # The same run of each path, one after the other: the ratio inside each repeat
            # is the one a slow spell of a shared machine moves least.
            runs = zip(results[name].streams, results["direct"].streams, strict=False)
            per_run = [a.rate / b.rate for a, b in runs]
            out.append(
                f"{name} ({install} install) / direct throughput: {ratio:.2f} ({verdict} issue 18 "
                f"target >= {target:g}); per repeat "
                + ", ".join(f"{r:.2f}" for r in per_run)
                + f" (median {_median(per_run):.2f})"
            )
    for name in results:
        if name in ("direct", "rpctape", "mitmproxy"):
            continue
        what = (
            "floor (bench/forwarder.py: a Python byte pipe that appends what it forwards, "
            "no parsing)"
            if name == "floor"
            else name
        )
        other_rate, other_rtt = rate(name), rtt(name)
        if other_rate is not None and direct is not None:
            out.append(f"{name} / direct throughput: {other_rate / direct:.2f}")
        if other_rtt is not None and direct_rtt is not None:
            out.append(f"{what} adds {other_rtt - direct_rtt:.0f} us to the median round trip")
    return out


def cassette_lines(report: CassetteReport | None) -> list[str]:
    """One paragraph about the cassette rpctape wrote."""
    if report is None:
        return ["rpctape cassette: not checked (rpctape did not run)"]
    verdict = "every relayed frame is in it" if report.complete else "INCOMPLETE"
    out = [
        f"rpctape cassette: {report.size / 1e6:.1f} MB, {report.lines:,} lines, "
        f"{report.text_events:,} text events for {report.frames_expected:,} relayed frames "
        f"({verdict}); each run's frames were already in the file when the client had them; "
        f"rpctape exit code {report.exit_code}",
        f"rpctape summary: {report.summary.strip()}",
    ]
    out += [f"durability failure: {f}" for f in report.live_failures]
    return out


def machine() -> list[str]:
    """nproc, CPU model, versions."""
    model = "unknown"
    with contextlib.suppress(OSError):
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        if found:
            model = found.group(1)
    mitm = "not installed"
    if MITMDUMP.exists():
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [str(MITMDUMP), "--version"], capture_output=True, text=True, timeout=60
            ).stdout
            found = re.search(r"Mitmproxy:\s*(\S+)", out)
            mitm = found.group(1) if found else out.strip()
    rpctape = subprocess.run(
        [*rpctape_argv(), "version"], capture_output=True, text=True, timeout=60
    ).stdout.strip()
    return [
        f"machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {model}, "
        f"{platform.system()} {platform.release()}",
        f"versions: Python {platform.python_version()}, {rpctape}, websockets "
        f"{websockets_version}, orjson {orjson.__version__}, mitmproxy {mitm}",
    ]


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--messages", type=int, default=50_000, help="notifications per stream run")
    p.add_argument(
        "--mitm-messages", type=int, default=10_000, help="notifications per mitmproxy run"
    )
    p.add_argument("--pings", type=int, default=2_000, help="round trips per ping run")
    p.add_argument("--mitm-pings", type=int, default=2_000, help="round trips per mitmproxy run")
    p.add_argument("--repeat", type=int, default=3, help="runs per workload and path (median)")
    p.add_argument("--no-mitm", action="store_true", help="skip mitmproxy")
    p.add_argument(
        "--no-floor", action="store_true", help="skip the byte-pipe floor (bench/forwarder.py)"
    )
    p.add_argument(
        "--also",
        metavar="NAME=CMD",
        action="append",
        default=[],
        help="one more recording proxy path: CMD is run with rpctape record's arguments\n"
        "(e.g. another checkout's rpctape, or the same with another event loop); repeatable",
    )
    p.add_argument(
        "--plain",
        action="store_true",
        help="also this checkout installed without extras (bench/.venv-plain, refreshed first)",
    )
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.add_argument(
        "--rpctape-cmd",
        metavar="CMD",
        help="run this instead of the installed rpctape, e.g. to compare a patched build",
    )
    p.add_argument(
        "--profile",
        type=Path,
        metavar="PSTATS",
        help="run rpctape under cProfile and save its stats here (CPU numbers then inflated)",
    )
    return p.parse_args(argv)


@contextlib.contextmanager
def processes() -> Iterator[tuple[Processes, Path]]:
    """A work directory and a process table; every process is stopped on the way out."""
    with tempfile.TemporaryDirectory(prefix="rpctape-bench-") as tmp:
        procs = Processes(Path(tmp))
        try:
            yield procs, Path(tmp)
        finally:
            procs.stop_all()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table, the ratios and the cassette check."""
    args = parse_args(argv)

    def log(line: str) -> None:
        print(f"# {line}", file=sys.stderr, flush=True)

    if args.plain:
        log("bench/.venv-plain: bash bench/setup.sh plain")
        subprocess.run(["bash", str(BENCH / "setup.sh"), "plain"], check=True, stdout=sys.stderr)
        args.also.insert(0, f"plain={PLAIN_VENV / 'bin' / 'rpctape'}")

    results: list[PathResult] = []
    cassette_report: CassetteReport | None = None
    with processes() as (procs, tmp):
        upstream = procs.start("upstream", [sys.executable, str(BENCH / "upstream.py")])
        upstream_url = read_line(upstream.proc, "upstream", 30).removeprefix("listening on ")
        log(f"upstream {upstream_url} (pid {upstream.pid})")
        port = upstream_url.rsplit(":", 1)[1]
        targets = [
            Target(
                PathResult("direct", None, args.messages, args.pings),
                upstream_url,
                upstream.pid,
            )
        ]

        cassette = tmp / "bench.jsonl"
        if args.profile:
            code = (
                "import cProfile, sys; from proxy.cli import main; sys.argv[0] = 'rpctape'; "
                f"cProfile.run('main()', {str(args.profile.resolve())!r})"
            )
            command = [sys.executable, "-c", code]
        elif args.rpctape_cmd:
            command = shlex.split(args.rpctape_cmd)
        else:
            command = rpctape_argv()
        rpctape = procs.start(
            "rpctape",
            [
                *command,
                "record",
                "--upstream",
                upstream_url,
                "--listen",
                "ws://127.0.0.1:0",
                "--cassette",
                str(cassette),
            ],
            cwd=str(ROOT),
        )
        try:
            rpctape_url = read_line(rpctape.proc, "rpctape", 30).removeprefix("listening on ")
        except (TimeoutError, RuntimeError) as exc:
            raise SystemExit(f"rpctape did not start: {exc}\n{rpctape.stderr_tail()}") from None
        log(f"rpctape {rpctape_url} (pid {rpctape.pid})")
        durability = Durability(cassette)
        targets.append(
            Target(
                PathResult("rpctape", rpctape.pid, args.messages, args.pings),
                rpctape_url,
                upstream.pid,
                durability,
            )
        )

        for spec in args.also:
            name, _, cmd = spec.partition("=")
            if not name or not cmd:
                raise SystemExit(f"--also {spec!r}: expected NAME=CMD")
            also_cassette = tmp / f"{name}.jsonl"
            also = procs.start(
                name,
                [*shlex.split(cmd), "record", "--upstream", upstream_url, "--listen",
                 "ws://127.0.0.1:0", "--cassette", str(also_cassette)],
                cwd=str(ROOT),
            )  # fmt: skip
            also_url = read_line(also.proc, name, 30).removeprefix("listening on ")
            log(f"{name} {also_url} (pid {also.pid})")
            targets.append(
                Target(
                    PathResult(name, also.pid, args.messages, args.pings),
                    also_url,
                    upstream.pid,
                    Durability(also_cassette),
                )
            )

        if args.no_floor:
            log("floor: skipped (--no-floor)")
        else:
            floor = procs.start(
                "floor",
                [
                    sys.executable,
                    str(BENCH / "forwarder.py"),
                    "--upstream",
                    upstream_url,
                    "--file",
                    str(tmp / "floor.bytes"),
                ],
            )
            floor_url = read_line(floor.proc, "floor", 30).removeprefix("listening on ")
            log(f"floor {floor_url} (pid {floor.pid})")
            targets.append(
                Target(
                    PathResult("floor", floor.pid, args.messages, args.pings),
                    floor_url,
                    upstream.pid,
                )
            )

        mitm: Started | None = None
        if args.no_mitm:
            log("mitmproxy: skipped (--no-mitm)")
        elif not MITMDUMP.exists():
            log(f"mitmproxy: not installed at {MITMDUMP}; run bash bench/setup.sh (skipped)")
        else:
            mitm = procs.start(
                "mitmdump",
                [
                    str(MITMDUMP),
                    "-q",
                    "--mode",
                    f"reverse:http://127.0.0.1:{port}@127.0.0.1:0",
                    "--set",
                    f"confdir={tmp / 'mitmproxy'}",
                ],
            )
            try:
                mitm_port = listening_port(mitm.pid, 60)
            except TimeoutError as exc:
                log(f"mitmproxy: did not start ({exc}); skipped\n{mitm.stderr_tail()}")
                Processes.stop(mitm)
            else:
                log(f"mitmproxy ws://127.0.0.1:{mitm_port} (pid {mitm.pid})")
                targets.append(
                    Target(
                        PathResult("mitmproxy", mitm.pid, args.mitm_messages, args.mitm_pings),
                        f"ws://127.0.0.1:{mitm_port}",
                        upstream.pid,
                    )
                )

        asyncio.run(run_all(targets, args.repeat, log))
        results = [t.result for t in targets]

        exit_code = Processes.stop(rpctape)
        summary = read_rest(rpctape.proc)
        cassette_report = check_cassette(cassette, durability, summary, exit_code)
        if exit_code != 0:
            log(f"rpctape exited with {exit_code}:\n{rpctape.stderr_tail()}")

    lines = render_markdown(results) if args.markdown else render_text(results)
    lines += [""]
    lines += [f"- {x}" if args.markdown else x for x in ratio_lines({r.name: r for r in results})]
    lines += [f"- {x}" if args.markdown else x for x in cassette_lines(cassette_report)]
    lost = [
        f"{t.result.name}: {failure}"
        for t in targets
        if t.result.name != "rpctape" and t.durability is not None
        for failure in t.durability.failures
    ]
    lines += [f"- durability failure: {x}" if args.markdown else x for x in lost]
    lines += [f"- {x}" if args.markdown else x for x in machine()]
    lines += [
        f"- {r.name}: {r.error}" if args.markdown else f"{r.name}: {r.error}"
        for r in results
        if r.error
    ]
    if not any(r.name == "mitmproxy" for r in results):
        lines.append("mitmproxy: not measured (see above); the other paths ran")
    print("\n".join(lines))
    failed = (
        any(r.error for r in results)
        or not (cassette_report and cassette_report.complete)
        or bool(lost)
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
