"""A stand-in app-server for the relay benchmark, run as its own process.

``python bench/upstream.py`` binds ``ws://127.0.0.1:0`` and prints ``listening on ws://HOST:PORT``.
It answers two requests:

- ``{"id":N,"method":"ping","params":{}}`` with ``{"id":N,"result":{}}``;
- ``{"id":N,"method":"bench/stream","params":{"count":C}}`` with ``C`` notifications shaped like
  the app-server's ``item/agentMessage/delta`` (about 300 bytes each), sent as fast as the
  connection takes them, then ``{"id":N,"result":{"sent":C}}``.

The notifications are built before the first one is sent, so the stream measures the path,
not this server's JSON encoding. It runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import orjson
from websockets.asyncio.server import ServerConnection, serve

NOTIFICATION_BYTES = 300
"""Target size of one notification frame."""

_WORDS = (
    "the relay forwards each frame verbatim after its cassette line is written, "
    "so a crash loses nothing that a client has already seen; "
)


def notifications(count: int) -> list[str]:
    """``count`` distinct ``item/agentMessage/delta`` notifications of about 300 ASCII bytes."""
    out: list[str] = []
    now = int(time.time() * 1000)
    thread = "0199a7c2-5b1e-7f43-9a61-2f0c8e4d1b7a"
    turn = "0199a7c2-6d02-7c11-b3e4-8a5f0c9d2e61"
    item = "msg_0199a7c26d027c11b3e48a5f0c9d2e61"
    for i in range(count):
        head = {
            "method": "item/agentMessage/delta",
            "params": {"threadId": thread, "turnId": turn, "itemId": item, "delta": ""},
            "emittedAtMs": now + i,
        }
        room = NOTIFICATION_BYTES - len(orjson.dumps(head))
        start = (i * 7) % len(_WORDS)
        delta = (_WORDS[start:] + _WORDS)[: max(room, 1)]
        head["params"]["delta"] = delta  # type: ignore[index]
        out.append(orjson.dumps(head).decode())
    return out


async def handle(ws: ServerConnection) -> None:
    """Answer ``ping`` and ``bench/stream`` requests until the client goes away."""
    async for data in ws:
        request = orjson.loads(data)
        method, rid = request.get("method"), request.get("id")
        if method == "ping":
            await ws.send(orjson.dumps({"id": rid, "result": {}}).decode())
        elif method == "bench/stream":
            count = int(request["params"]["count"])
            for frame in notifications(count):
                await ws.send(frame)
            await ws.send(orjson.dumps({"id": rid, "result": {"sent": count}}).decode())
        else:
            error = {"code": -32601, "message": f"unknown method {method!r}"}
            await ws.send(orjson.dumps({"id": rid, "error": error}).decode())


async def main() -> None:
    """Serve on a free loopback port until SIGTERM or SIGINT."""
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


if __name__ == "__main__":
    asyncio.run(main())
