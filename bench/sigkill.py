"""Kill ``rpctape record`` with SIGKILL mid-stream, many times: count the frames a client
received that the cassette does not hold (the durability rule says: none).

Run from the repository root with the project's venv::

    .venv/bin/python bench/sigkill.py            # --runs 20

Each run starts ``bench/upstream.py`` and ``rpctape record`` (own processes), asks for a
stream of 200,000 notifications, kills rpctape after a random number of them (1,000 to
50,000) has arrived, reads what is still in flight until the connection drops, then loads
the cassette: the frames received must be the cassette's first server frames, byte for byte.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import start  # noqa: E402
from proxy.core.cassette import frame_of, load  # noqa: E402


async def one_run(kill_after: int, tmp: Path) -> tuple[int, int, int]:
    """(frames received, frames recorded, received but not recorded)."""
    cassette = tmp / f"k{kill_after}.jsonl"
    upstream, up_url = await start(sys.executable, str(ROOT / "bench" / "upstream.py"))
    try:
        rpctape, url = await start(
            sys.executable, "-m", "proxy", "record", "--cassette", str(cassette),
            "--listen", "ws://127.0.0.1:0", "--upstream", up_url,
        )  # fmt: skip
        received: list[bytes] = []
        async with connect(url, max_size=None) as ws:
            await ws.send('{"id":1,"method":"bench/stream","params":{"count":200000}}')
            while len(received) < kill_after:
                received.append(str(await ws.recv()).encode())
            rpctape.send_signal(signal.SIGKILL)
            await rpctape.wait()
            try:
                while True:
                    received.append(str(await asyncio.wait_for(ws.recv(), 10)).encode())
            except ConnectionClosed:
                pass
    finally:
        upstream.send_signal(signal.SIGTERM)
        await upstream.wait()
    recorded = [frame_of(e) for e in load(cassette).frames(1) if e["dir"] == "s2c"]
    lost = sum(1 for i, frame in enumerate(received) if i >= len(recorded) or recorded[i] != frame)
    return len(received), len(recorded), lost


async def main_async(runs: int, seed: int) -> list[tuple[int, int, int]]:
    rng = random.Random(seed)
    tmp = Path(tempfile.mkdtemp(prefix="rpctape-sigkill-"))
    try:
        return [await one_run(rng.randint(1000, 50000), tmp) for _ in range(runs)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=8)
    args = parser.parse_args()
    results = asyncio.run(main_async(args.runs, args.seed))
    received = sum(r for r, _, _ in results)
    recorded = sum(r for _, r, _ in results)
    lost = sum(lost for _, _, lost in results)
    print(
        f"{args.runs} runs killed with SIGKILL mid-stream: {received:,} frames received by the "
        f"client, {recorded:,} recorded (whole lines), received but not recorded: {lost}"
    )
    sys.exit(0 if lost == 0 else 1)


if __name__ == "__main__":
    main()
