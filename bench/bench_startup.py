"""Benchmark how soon a replay answers after it is spawned, against the real codex app-server.

Run from the repository root with the project's venv (after ``./dev setup``)::

    .venv/bin/python bench/bench_startup.py [--repeat 15] [--markdown]
        [--also NAME=KIND:CMD ...]

What an SDK test suite pays per test: spawn the server, send ``initialize`` on its stdin,
wait for the answer on its stdout. Paths, each a fresh process per run:

- ``codex``: the real ``codex app-server`` 0.169.0 (``.tools/``, an empty ``CODEX_HOME``);
- ``rpctape-codex``: ``.venv/bin/rpctape-codex app-server`` replaying ``--cassette`` (the
  shipped ``cassettes/initialize-model-list-config.jsonl``), ``RPCTAPE_RECORD_MODE=none``;
- ``replay --stdio``: ``.venv/bin/rpctape replay --stdio CASSETTE``;
- ``replay --listen``: ``.venv/bin/rpctape replay CASSETTE --listen ws://127.0.0.1:0``, timed
  to its ``listening on`` line (it serves a websocket; no ``initialize`` is sent);
- floors, in Python: ``python -S`` that reads the request line and writes the recorded
  answer (``python``: the interpreter alone), and the same after ``import asyncio, orjson``
  (``python+asyncio``: what any asyncio stand-in loads before its own code);
- ``--also NAME=KIND:CMD``: another build, KIND ``standin`` (CMD is run as ``CMD app-server``
  with the stand-in's environment), ``stdio`` (``CMD replay --stdio CASSETTE``) or ``listen``.

The paths alternate within each round, ``--repeat`` rounds after one warm-up round (bytecode
caches written: the Python paths run without ``PYTHONDONTWRITEBYTECODE``, as an installed
rpctape does). Reported: medians and ranges of the seconds from spawn to the answer, and the
median over rounds of each path's ratio to ``codex`` in the same round (issue 18's target:
at most 0.5x for ``rpctape-codex``, ``replay --stdio`` and ``replay --listen``).
"""

from __future__ import annotations

import argparse
import os
import selectors
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
CODEX = ROOT / ".tools" / "codex-0.169.0" / "node_modules" / ".bin" / "codex"
CASSETTE = ROOT / "cassettes" / "initialize-model-list-config.jsonl"
TARGET = 0.5
"""Issue 18: spawn to ``initialize`` answered within 0.5x the real app-server's time."""
TIMEOUT = 30.0

FLOOR = """\
import sys
{imports}
line = sys.stdin.buffer.readline()
sys.stdout.buffer.write({answer!r})
sys.stdout.buffer.flush()
sys.stdin.buffer.read()
"""


@dataclass
class Path_:
    """One way to start a server: its command, environment, and what ends the wait."""

    name: str
    argv: list[str]
    env: dict[str, str]
    listen: bool = False
    """Wait for ``listening on`` instead of sending ``initialize``."""
    seconds: list[float] = field(default_factory=list)


def first_request(cassette: Path) -> tuple[bytes, bytes]:
    """The cassette's ``initialize`` request line and its recorded answer line."""
    events = [orjson.loads(line) for line in cassette.read_bytes().splitlines()[1:]]
    frames = [e for e in events if e.get("kind") == "text"]
    request = next(e for e in frames if e.get("method") == "initialize" and e["dir"] == "c2s")
    answer = next(e for e in frames if e.get("response_to") == "initialize")
    return orjson.dumps(request["msg"]) + b"\n", orjson.dumps(answer["msg"]) + b"\n"


def run_once(path: Path_, request: bytes) -> float:
    """Spawn, send ``request`` (or wait for ``listening on``), time until the answer."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        path.argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=path.env,
        cwd=ROOT,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        if not path.listen:
            proc.stdin.write(request)
            proc.stdin.flush()
        buffer = b""
        selector = selectors.DefaultSelector()
        selector.register(proc.stdout, selectors.EVENT_READ)
        deadline = t0 + TIMEOUT
        while True:
            if not selector.select(max(0.0, deadline - time.perf_counter())):
                raise TimeoutError(f"{path.name}: no answer in {TIMEOUT} s")
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError(f"{path.name}: ended without answering: {buffer[-200:]!r}")
            buffer += chunk
            if path.listen and b"listening on " in buffer and buffer.endswith(b"\n"):
                break
            if not path.listen and any(
                line.startswith(b'{"id":1,') for line in buffer.split(b"\n")[:-1]
            ):
                break
        took = time.perf_counter() - t0
        selector.close()
    finally:
        proc.stdin.close()  # the end of a stdio session
        if path.listen:
            proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    return took


def build_paths(args: argparse.Namespace, home: str, answer: bytes) -> list[Path_]:
    """The paths of this run."""
    plain = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    standin_env = {
        **plain,
        "RPCTAPE_CASSETTE": str(args.cassette),
        "RPCTAPE_RECORD_MODE": "none",
        "CODEX_HOME": home,
    }
    cassette = str(args.cassette)
    paths = []
    if not args.no_codex:
        paths.append(Path_("codex", [str(CODEX), "app-server"], {**plain, "CODEX_HOME": home}))
    paths += [
        Path_("rpctape-codex", [str(VENV_BIN / "rpctape-codex"), "app-server"], standin_env),
        Path_("replay --stdio", [str(VENV_BIN / "rpctape"), "replay", "--stdio", cassette], plain),
        Path_(
            "replay --listen",
            [str(VENV_BIN / "rpctape"), "replay", cassette, "--listen", "ws://127.0.0.1:0"],
            plain,
            listen=True,
        ),
    ]
    for spec in args.also:
        name, _, rest = spec.partition("=")
        kind, _, cmd = rest.partition(":")
        argv = shlex.split(cmd)
        if kind == "standin":
            paths.append(Path_(name, [*argv, "app-server"], standin_env))
        elif kind == "stdio":
            paths.append(Path_(name, [*argv, "replay", "--stdio", cassette], plain))
        elif kind == "listen":
            argv += ["replay", cassette, "--listen", "ws://127.0.0.1:0"]
            paths.append(Path_(name, argv, plain, listen=True))
        else:
            raise SystemExit(f"--also {spec!r}: expected NAME=standin|stdio|listen:CMD")
    for name, imports in (("python", ""), ("python+asyncio", "import asyncio, orjson")):
        code = FLOOR.format(imports=imports, answer=answer)
        flags = ["-S"] if not imports else []  # -S: not even site (the bare interpreter)
        paths.append(Path_(name, [sys.executable, *flags, "-c", code], plain))
    return paths


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=15, help="rounds (after one warm-up)")
    parser.add_argument("--cassette", type=Path, default=CASSETTE)
    parser.add_argument("--no-codex", action="store_true", help="skip the real app-server")
    parser.add_argument("--also", action="append", default=[], metavar="NAME=KIND:CMD")
    parser.add_argument("--markdown", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.no_codex and not CODEX.exists():
        raise SystemExit(f"no codex at {CODEX}: run ./dev setup (or pass --no-codex)")
    request, answer = first_request(args.cassette)
    with tempfile.TemporaryDirectory(prefix="rpctape-bench-startup-") as home:
        paths = build_paths(args, home, answer)
        for path in paths:  # warm-up: bytecode caches, the page cache
            run_once(path, request)
        for round_ in range(args.repeat):
            for path in paths if round_ % 2 == 0 else reversed(paths):
                path.seconds.append(run_once(path, request))
            took = ", ".join(f"{p.name} {p.seconds[-1] * 1e3:.0f} ms" for p in paths)
            print(f"# round {round_ + 1}: {took}", file=sys.stderr)
    base = next((p for p in paths if p.name == "codex"), None)
    head = ["path", "median ms", "range ms", "ratio to codex (median of rounds)"]
    rows = []
    for p in paths:
        ratio = ""
        if base is not None:
            ratios = [a / b for a, b in zip(p.seconds, base.seconds, strict=True)]
            ratio = f"{statistics.median(ratios):.2f}x"
        rows.append([
            p.name, f"{statistics.median(p.seconds) * 1e3:.0f}",
            f"{min(p.seconds) * 1e3:.0f} - {max(p.seconds) * 1e3:.0f}", ratio,
        ])  # fmt: skip
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|---|" + "---:|" * (len(head) - 1))
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        for row in [head, *rows]:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    print()
    if base is not None:
        for p in paths:
            if p.name in ("rpctape-codex", "replay --stdio", "replay --listen"):
                ratios = [a / b for a, b in zip(p.seconds, base.seconds, strict=True)]
                got = statistics.median(ratios)
                verdict = "meets" if got <= TARGET else "MISSES"
                print(f"- {p.name} / codex: {got:.2f}x ({verdict} target <= {TARGET}x)")
    print(f"- {args.repeat} rounds, cassette {args.cassette.name}; machine: {os.cpu_count()} "
          f"CPUs, Python {sys.version.split()[0]}")  # fmt: skip


if __name__ == "__main__":
    main()
