"""Micro-benchmark of the per-frame work on the recording path: the redaction pre-check
(``Redactor.might_redact``, with hyperscan where installed and with the standard library's
passes), ``jsonrpc.parse``, and all of a frame's recording (``Recorder.record_frames``: parse,
pairing, pre-check, the cassette line; no file) with each pre-check (what a plain install and
one with the ``fast`` extra do per frame), on a small notification and on 10 MiB frames of
several shapes.

Run from the repository root with the project's venv::

    .venv/bin/python bench/bench_precheck.py [--size 10485760]

Best of several runs per cell (a micro-benchmark: the minimum is the cost, the rest noise).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.core import redact
from proxy.core.jsonrpc import Direction, parse
from proxy.core.recorder import Recorder
from proxy.core.redact import Redactor


def best(fn: Callable[[], object], runs: int, inner: int) -> float:
    """Seconds per call, best of ``runs`` batches of ``inner`` calls."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - start) / inner)
    return min(times)


def frames(size: int) -> dict[str, bytes]:
    """The frame shapes: a small streamed notification and big frames."""
    small = orjson.dumps(
        {
            "method": "item/agentMessage/delta",
            "params": {
                "threadId": "0199a213-81c0-7800-8aa1-bbab2a035a53",
                "turnId": "0199a213-81c0-7800-8aa1-bbab2a035a54",
                "itemId": "msg_0199a213-81c0-7800-8aa1-bbab2a035a55",
                "delta": "Hello there, this is a streamed piece of text for the user, "
                "with a few more words to make it the size of a usual delta frame.",
            },
        }
    )
    big_x = b'{"method":"big","params":{"text":"' + b"x" * (size - 39) + b'"}}'
    record = {"id": 0, "name": "item", "value": "abc def ghi", "flag": True}
    count = size // (len(orjson.dumps(record)) + 8)  # ids and names grow
    records = [{**record, "id": i, "name": f"item{i}"} for i in range(count)]
    many = orjson.dumps({"method": "many", "params": {"items": records}})
    snake = many.replace(b'"name"', b'"item_name"')
    prose = (b"The quick brown fox jumps over the lazy dog; " * (size // 45))[: size - 40]
    text = b'{"method":"big","params":{"text":"' + prose + b'"}}'
    return {
        "small notification": small,
        "10 MiB of x": big_x,
        "10 MiB prose": text,
        "10 MiB small records": many,
        "10 MiB snake_case keys": snake,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size", type=int, default=10 << 20, help="bytes of a big frame")
    args = parser.parse_args()
    engines = {"stdlib": Redactor(fast=False)}
    if redact.HYPERSCAN:
        engines["hyperscan"] = Redactor()
    print(f"{'frame':24} {'bytes':>9} " + " ".join(f"{n + ' check':>16}" for n in engines)
          + f" {'parse':>10} " + " ".join(f"{n + ' record':>16}" for n in engines))  # fmt: skip
    recorders = []
    for redactor in engines.values():  # a whole frame's recording with each pre-check
        recorder = Recorder(None, redactor)
        conn = recorder.new_connection()
        recorder.open(conn, path="/", headers=(), subprotocol=None, upstream="")
        recorders.append((recorder, conn))
    for name, raw in frames(args.size).items():
        small = len(raw) < 1 << 16
        runs, inner, unit, scale = (7, 20000, "us", 1e6) if small else (5, 1, "ms", 1e3)
        cells = []
        for redactor in engines.values():
            redactor.might_redact(raw)  # compile, warm up
            check = functools.partial(redactor.might_redact, raw)
            cells.append(f"{best(check, runs, inner) * scale:13.2f} {unit}")
        took = best(functools.partial(parse, raw), runs, inner) * scale
        records = []
        for recorder, conn in recorders:
            record = functools.partial(recorder.record_frames, conn, Direction.S2C, [(True, raw)])
            records.append(f"{best(record, runs, inner) * scale:13.2f} {unit}")
        print(f"{name:24} {len(raw):9} " + " ".join(cells) + f" {took:7.2f} {unit} "
              + " ".join(records))  # fmt: skip


if __name__ == "__main__":
    main()
