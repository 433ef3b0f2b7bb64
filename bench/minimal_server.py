"""The direct baselines of the replay benchmark: a minimal websocket server, its own process.

``python bench/minimal_server.py --frames FILE`` binds ``ws://127.0.0.1:0`` and prints
``listening on ws://HOST:PORT``. What it does depends on the path of the connection:

- ``/stream``: after the client's first message, sends every line of ``FILE`` (the frames a
  replay of the stream cassette sends, pre-encoded) as a text frame, as fast as the connection
  takes them: the same stream as ``rpctape replay``, without rpctape;
- ``/echo``: sends every message back unchanged (the round trip of a minimal echo server);
- ``/remap``: answers each request with ``--reply``, its ``id`` replaced by the request's
  (found with one orjson read, spliced into the pre-encoded reply): the least a replay of the
  pairs cassette has to do, as a floor for the replayed round trip.

``--loop uvloop`` runs it on uvloop (if installed). It runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import signal
import sys
from pathlib import Path

import orjson
from websockets.asyncio.server import ServerConnection, serve


def main() -> None:
    """Serve on a free loopback port until SIGTERM or SIGINT."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--frames", type=Path, required=True, help="frames of /stream, one a line")
    p.add_argument(
        "--reply",
        default='{"id":0,"result":{}}',
        help="the reply /remap sends, its id replaced by the request's",
    )
    p.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = p.parse_args()
    frames = args.frames.read_text().splitlines()
    before, after = _cut_around_id(args.reply)

    async def handle(ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else "/"
        if path == "/stream":
            await ws.recv()
            for frame in frames:
                await ws.send(frame)
            await ws.wait_closed()
        elif path == "/echo":
            async for data in ws:
                await ws.send(data)
        elif path == "/remap":
            async for data in ws:
                rid = orjson.dumps(orjson.loads(data)["id"]).decode()
                await ws.send(before + rid + after)
        else:
            await ws.close(4404, f"unknown path {path}")

    async def serve_forever() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with serve(
            handle, "127.0.0.1", 0, compression=None, max_size=None, ping_interval=None
        ) as server:
            host, port = server.sockets[0].getsockname()[:2]
            sys.stdout.write(f"listening on ws://{host}:{port}\n")
            sys.stdout.flush()
            await stop.wait()

    if args.loop == "uvloop":
        importlib.import_module("uvloop").run(serve_forever())
    else:
        asyncio.run(serve_forever())


def _cut_around_id(reply: str) -> tuple[str, str]:
    """``reply`` as the text before and after its top-level ``id`` value (orjson's writing)."""
    msg = orjson.loads(reply)
    marker = "\x00id\x00"
    marked = orjson.dumps({**msg, "id": marker}).decode()
    before, _, after = marked.partition(orjson.dumps(marker).decode())
    return before, after


if __name__ == "__main__":
    main()
