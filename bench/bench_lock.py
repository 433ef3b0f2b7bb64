"""What taking turns on a cassette costs (proxy.wire.store.CassetteLock, docs/cassette-format.md,
"Parallel sessions"): the replay path's one ``stat`` of the lock file, an uncontended take and
release (a recording's cost), the delay between a holder letting go and a waiting session
getting the lock (the polling), and stamping the codex version into a finished recording's
header (a rewrite of the file) for the largest shipped cassette.

Run from the repository root with the project's venv::

    .venv/bin/python bench/bench_lock.py

Best of several runs per cell (a micro-benchmark: the minimum is the cost, the rest noise);
the hand-over delay is the median of its runs (it depends on when the holder lets go).
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.codex.dialect import CODEX
from proxy.wire.store import CassetteLock, cassette_files, stamp_version


def best(run: Callable[[], object], number: int, repeat: int = 5) -> float:
    """Seconds per call, best of ``repeat`` runs of ``number`` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            run()
        times.append((time.perf_counter() - start) / number)
    return min(times)


def hand_over(folder: Path, hold: float) -> float:
    """Seconds between a holder letting go and a waiting thread holding the lock."""
    cassette = folder / "c.jsonl"
    holder = CassetteLock(cassette)
    assert holder.try_acquire()
    released: list[float] = []
    got: list[float] = []

    def wait() -> None:
        waiting = CassetteLock(cassette)
        waiting.acquire(timeout=10)
        got.append(time.perf_counter())
        waiting.release()

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(hold)
    released.append(time.perf_counter())
    holder.release()
    waiter.join()
    return got[0] - released[0]


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="rpctape-bench-lock-"))
    try:
        cassette = folder / "c.jsonl"
        lock = CassetteLock(cassette)
        present = best(lambda: lock.present, 20000)

        def take_and_release() -> None:
            lock.try_acquire()
            lock.release()

        take = best(take_and_release, 2000)
        delays = sorted(hand_over(folder, hold) for hold in (0.05, 0.13, 0.21, 0.37, 0.5) * 4)
        shipped = cassette_files([Path("cassettes")])
        largest = max(shipped, key=lambda p: p.stat().st_size)
        copy = folder / "stamp.jsonl"

        def stamp() -> None:
            shutil.copyfile(largest, copy)
            stamp_version(copy, CODEX, "9.9.9")

        def copy_only() -> None:
            shutil.copyfile(largest, copy)

        stamping = best(stamp, 20) - best(copy_only, 20)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"replay path: is the lock file there (one stat)   {present * 1e6:8.2f} us")
    print(f"recording: take and release an uncontended lock   {take * 1e6:8.2f} us")
    print(f"hand-over to a waiting session: median {statistics.median(delays) * 1e3:.1f} ms, "
          f"max {delays[-1] * 1e3:.1f} ms")  # fmt: skip
    size = largest.stat().st_size
    print(f"stamping the header of {largest.name} ({size / 1024:.0f} KiB)  "
          f"{stamping * 1e3:8.2f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
