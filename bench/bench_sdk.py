"""Benchmark one official-SDK test, live against the real codex and replayed by rpctape-codex.

Run from the repository root with the project's venv (after ``./dev setup``)::

    .venv/bin/python bench/bench_sdk.py [--repeat 10] [--also NAME=EXECUTABLE ...]

The test is what an SDK suite runs per test, timed inside this process from ``Codex(config)``
to leaving its ``with`` block: ``Codex()`` (spawns ``codex app-server`` and initializes),
``thread_start``, then ``thread.run(...)``: one turn whose answer the model streams in
deltas. Paths, alternating in each round, one warm-up round first:

- ``live``: the real codex 0.169.0 (``.tools/``) with ``CODEX_HOME`` pointing its model
  provider at rpctape's fake backend (:mod:`proxy.codex.backend`, in this process);
- ``replayed``: ``codex_bin=.venv/bin/rpctape-codex``, ``RPCTAPE_RECORD_MODE=none``, no
  codex and no backend reachable, replaying a cassette recorded at the start of the same run
  (``rpctape-codex`` in record mode ``once`` around the real codex);
- ``floor``: ``codex_bin`` a short Python script (orjson, no asyncio, no matching) that writes
  the recorded server messages after each line it reads: the least any Python stand-in does;
- ``--also NAME=EXECUTABLE``: another stand-in build as ``codex_bin``, replaying the same
  cassette (e.g. a script running ``python -m proxy.codex.standin`` from another checkout).

Reported: medians and ranges, and the median over rounds of replayed / live (issue 18's
target: at most 0.35x).
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

from openai_codex import ApprovalMode, Codex, CodexConfig

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from proxy.codex.appserver import (  # noqa: E402
    FAKE_API_KEY,
    FAKE_API_KEY_ENV,
    find_codex,
    write_codex_home,
)
from proxy.codex.backend import FakeBackend, Reply  # noqa: E402

TARGET = 0.35
"""Issue 18: the replayed test takes at most 0.35x the live one."""
ANSWER = (
    "Here is a streamed answer of a few sentences, long enough for the fake model to send it "
    "as several deltas, the way a real turn streams its text to the SDK."
)
STANDIN = Path(sys.executable).with_name("rpctape-codex")
FLOOR = """#!{python}
import sys, orjson
lines = open({cassette!r}, "rb").read().splitlines()[1:]
frames = [e for e in map(orjson.loads, lines) if e["kind"] == "text"]
out = sys.stdout.buffer
def segment(i, live):
    while i < len(frames) and frames[i]["dir"] == "s2c":
        msg = frames[i]["msg"]
        if frames[i].get("type") in ("response", "error"):
            msg = {{**msg, "id": live}}
        out.write(orjson.dumps(msg) + b"\\n")
        i += 1
    out.flush()
    return i
i = segment(0, None)
for line in sys.stdin.buffer:
    if line.strip():
        i = segment(i + 1, orjson.loads(line).get("id"))
"""


def one_test(config: CodexConfig, workdir: Path) -> float:
    """The SDK test; the seconds it took, checked to have the scripted answer."""
    t0 = time.perf_counter()
    with Codex(config) as codex:
        thread = codex.thread_start(approval_mode=ApprovalMode.deny_all, cwd=str(workdir))
        result = thread.run("Say something.")
    took = time.perf_counter() - t0
    if result.final_response != ANSWER:
        raise RuntimeError(f"unexpected answer: {result.final_response!r}")
    return took


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=10, help="rounds (after one warm-up)")
    parser.add_argument("--also", action="append", default=[], metavar="NAME=EXECUTABLE")
    return parser.parse_args(argv)


async def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: bytecode cached
    codex = find_codex()
    with tempfile.TemporaryDirectory(prefix="rpctape-bench-sdk-") as tmp_name:
        tmp = Path(tmp_name)
        home, work, cassette = tmp / "home", tmp / "work", tmp / "sdk.jsonl"
        work.mkdir()
        async with FakeBackend() as backend:
            write_codex_home(home, backend.url)
            env = {"CODEX_HOME": str(home), FAKE_API_KEY_ENV: FAKE_API_KEY}
            live = CodexConfig(codex_bin=str(codex), cwd=str(work), env=env)

            def standin(executable: Path, mode: str, real: Path) -> CodexConfig:
                return CodexConfig(
                    codex_bin=str(executable),
                    cwd=str(work),
                    env={
                        **env,
                        "RPCTAPE_CASSETTE": str(cassette),
                        "RPCTAPE_RECORD_MODE": mode,
                        "RPCTAPE_REAL_CODEX": str(real),
                        "RPCTAPE_REPORT": str(tmp / "sessions.jsonl"),
                    },
                )

            backend.script(Reply.text(ANSWER))
            await asyncio.to_thread(one_test, standin(STANDIN, "once", codex), work)
            print(f"# recorded {cassette} through rpctape-codex", file=sys.stderr)
            paths: dict[str, CodexConfig] = {
                "live": live,
                "replayed": standin(STANDIN, "none", tmp / "no-codex"),
            }
            floor = tmp / "floor-codex"
            floor.write_text(FLOOR.format(python=sys.executable, cassette=str(cassette)))
            floor.chmod(0o755)
            paths["floor"] = CodexConfig(codex_bin=str(floor), cwd=str(work), env=env)
            for spec in args.also:
                name, _, executable = spec.partition("=")
                paths[name] = standin(Path(executable), "none", tmp / "no-codex")
            seconds: dict[str, list[float]] = {name: [] for name in paths}
            for round_ in range(args.repeat + 1):
                order = list(paths) if round_ % 2 == 0 else list(reversed(paths))
                took: dict[str, float] = {}
                for name in order:
                    if name == "live":
                        backend.script(Reply.text(ANSWER))
                    took[name] = await asyncio.to_thread(one_test, paths[name], work)
                if round_:  # the first round warms up
                    for name, value in took.items():
                        seconds[name].append(value)
                shown = ", ".join(f"{n} {v * 1e3:.0f} ms" for n, v in took.items())
                print(f"# round {round_}{' (warm-up)' if not round_ else ''}: {shown}",
                      file=sys.stderr)  # fmt: skip
    print("| path | median ms | range ms | ratio to live (median of rounds) |")
    print("|---|---:|---:|---:|")
    for name, values in seconds.items():
        ratios = [a / b for a, b in zip(values, seconds["live"], strict=True)]
        print(f"| {name} | {statistics.median(values) * 1e3:.0f} | {min(values) * 1e3:.0f} - "
              f"{max(values) * 1e3:.0f} | {statistics.median(ratios):.2f}x |")  # fmt: skip
    print()
    for name in paths:
        if name in ("live", "floor"):
            continue
        ratios = [a / b for a, b in zip(seconds[name], seconds["live"], strict=True)]
        got = statistics.median(ratios)
        verdict = "meets" if got <= TARGET else "MISSES"
        print(f"- {name} / live: {got:.2f}x ({verdict} target <= {TARGET}x)")
    print(f"- {args.repeat} rounds; machine: {os.cpu_count()} CPUs, Python "
          f"{sys.version.split()[0]}")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
