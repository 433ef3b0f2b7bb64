"""Fuzz the cassette contract with far more examples than the test suite uses.

Run from the repository root with the project's venv:

    .venv/bin/python bench/fuzz_cassette.py                      # 10,000 of each, seed 8
    .venv/bin/python bench/fuzz_cassette.py --frames 2000 --cassettes 500 --seed 1

Four runs, each with the strategies of the property tests (tests/frames.py):

1. text frames (every hostile category) and binary frames, both directions, with and without
   redaction: recorder -> cassette line -> reader -> ``frame_of``, compared byte for byte;
2. frames with a planted secret: the secret must not be in the line;
3. mutated real cassettes: ``load`` must succeed or raise ``CassetteError``, and ``show``'s
   timeline and the replay planner must take what it accepts;
4. the redaction pre-check and the recorder on a 16 MiB frame without secrets (timed).

Prints one table; the exit status is 1 if any frame was not rebuilt, any secret survived or
anything crashed.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from proxy.core.cassette import frame_of, parse_lines
from proxy.core.jsonrpc import Direction
from proxy.core.recorder import Recorder
from proxy.core.redact import Redactor
from proxy.errors import CassetteError
from tests.frames import (
    BINARY_FRAMES,
    TEXT_FRAMES,
    holds_no_secret,
    mutated,
    planted,
    use_everything,
    written,
)

HEADER = b'{"rpctape":1}\n'


def budget(examples: int) -> settings:
    """Hypothesis settings for one run: no shrinking, no database."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )


def recorder(redact: bool) -> Recorder:
    ticks = itertools.count()
    return Recorder(None, Redactor.build(enabled=redact), clock=lambda: next(ticks) * 0.5)


def fuzz_frames(examples: int, run_seed: int, stats: Counter[str], failures: list[str]) -> None:
    @seed(run_seed)
    @budget(examples)
    @given(
        frame=st.one_of(TEXT_FRAMES.map(str.encode), BINARY_FRAMES.map(bytearray)),
        direction=st.sampled_from(Direction),
        redact=st.booleans(),
    )
    def run(frame: bytes | bytearray, direction: Direction, redact: bool) -> None:
        is_text = isinstance(frame, bytes)
        data = bytes(frame)
        if redact and is_text and not holds_no_secret(data.decode()):
            redact = False
        stats["frames (text)" if is_text else "frames (binary)"] += 1
        try:
            rec = recorder(redact)
            conn = rec.new_connection()
            if is_text:
                _, line = rec.text_line(conn, direction, data, *rec.inspect(conn, direction, data))
            else:
                _, line = rec.binary_line(conn, direction, data)
            (event,) = parse_lines(HEADER + line).events
            if frame_of(event) == data and "redacted" not in event:
                stats["rebuilt byte-exact"] += 1
            else:
                stats["not rebuilt"] += 1
                failures.append(f"not rebuilt: {data[:80]!r}")
        except Exception:
            stats["crashes"] += 1
            failures.append(f"crash on {data[:80]!r}:\n{traceback.format_exc()}")

    run()


def fuzz_secrets(examples: int, run_seed: int, stats: Counter[str], failures: list[str]) -> None:
    @seed(run_seed)
    @budget(examples)
    @given(
        case=planted(),
        style=st.sampled_from(["compact", "pretty", "surrogate", "deep"]),
        cut=st.booleans(),
    )
    def run(case: tuple[Any, str, str], style: str, cut: bool) -> None:
        msg, secret, unit = case
        text = written(msg, style)
        if cut:
            text = text[: text.index(unit) + len(unit) + 2]
        stats["frames with a planted secret"] += 1
        try:
            rec = recorder(True)
            conn = rec.new_connection()
            raw = text.encode()
            _, line = rec.text_line(
                conn, Direction.C2S, raw, *rec.inspect(conn, Direction.C2S, raw)
            )
            parse_lines(HEADER + line)
            if secret.encode() in line or unit.encode() in line:
                stats["secrets that survived"] += 1
                failures.append(f"secret survived: {text[:120]!r}")
        except Exception:
            stats["crashes"] += 1
            failures.append(f"crash on {text[:80]!r}:\n{traceback.format_exc()}")

    run()


def fuzz_cassettes(examples: int, run_seed: int, stats: Counter[str], failures: list[str]) -> None:
    @seed(run_seed)
    @budget(examples)
    @given(data=mutated())
    def run(data: bytes) -> None:
        stats["mutated cassettes"] += 1
        try:
            tape = parse_lines(data, source="fuzz.jsonl")
        except CassetteError as exc:
            stats["refused with one CassetteError line"] += 1
            if "\n" in str(exc):
                failures.append(f"multi-line error: {exc}")
            return
        except Exception:
            stats["crashes"] += 1
            failures.append(f"load crashed:\n{traceback.format_exc()}")
            return
        stats["loaded (show + replay planner run)"] += 1
        try:
            use_everything(tape)
        except Exception:
            stats["crashes"] += 1
            failures.append(f"show/replay crashed:\n{traceback.format_exc()}")

    run()


def time_big_frame() -> list[tuple[str, str]]:
    chunk = b'{"type":"agentMessage","text":"hello world, tokens used: 12","tokenUsage":{}},'
    frame = b'{"method":"item/completed","params":{"items":['
    frame += chunk * (16 * 1024 * 1024 // len(chunk)) + b"{}]}}"
    redactor = Redactor()
    rec = recorder(True)
    conn = rec.new_connection()

    def record() -> None:
        rec.text_line(conn, Direction.C2S, frame, *rec.inspect(conn, Direction.C2S, frame))

    runs: list[tuple[str, Callable[[], object]]] = [
        ("pre-check, 16 MiB frame without secrets", lambda: redactor.might_redact(frame)),
        ("parse + pre-check + line, same frame", record),
    ]
    rows = []
    for name, run in runs:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        rows.append((name, f"{min(times):.3f} s (best of 3)"))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--secrets", type=int, default=2_000)
    parser.add_argument("--cassettes", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=8)
    args = parser.parse_args()
    stats: Counter[str] = Counter()
    failures: list[str] = []
    started = time.perf_counter()
    fuzz_frames(args.frames, args.seed, stats, failures)
    fuzz_secrets(args.secrets, args.seed, stats, failures)
    fuzz_cassettes(args.cassettes, args.seed, stats, failures)
    order = ["frames (text)", "frames (binary)", "rebuilt byte-exact", "not rebuilt",
             "frames with a planted secret", "secrets that survived", "mutated cassettes",
             "loaded (show + replay planner run)", "refused with one CassetteError line",
             "crashes"]  # fmt: skip
    rows = [(name, str(stats[name])) for name in order]
    rows += time_big_frame()
    rows.append(("wall time", f"{time.perf_counter() - started:.0f} s"))
    width = max(len(name) for name, _ in rows)
    for name, value in dict(rows).items():
        print(f"{name:<{width}}  {value}")
    for failure in failures[:10]:
        print(failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
