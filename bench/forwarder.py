"""The floor of any recording proxy written in Python: a byte pipe that also appends what it
forwards to a file, with no websocket framing, no JSON and no redaction.

``python bench/forwarder.py --upstream ws://HOST:PORT --file PATH`` binds ``127.0.0.1:0``,
prints ``listening on ws://127.0.0.1:PORT`` and pipes every client connection to the upstream
(the websocket upgrade included, untouched). Each chunk one read brings is appended to PATH
with one ``write(2)`` before it is forwarded, the order rpctape keeps, so the difference
between this path and rpctape in bench_relay.py is rpctape's own work per frame: websockets'
framing, the exactness parse, redaction and the cassette line. Runs on asyncio's loop, as
rpctape does, until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from typing import cast
from urllib.parse import urlsplit


class Pipe(asyncio.Protocol):
    """One side of a piped connection: what it reads is written to the file, then forwarded."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.transport: asyncio.Transport | None = None
        self.peer: Pipe | None = None
        self.early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's too

    def data_received(self, data: bytes) -> None:
        os.write(self.fd, data)
        peer = self.peer
        if peer is None or peer.transport is None:
            self.early.append(data)
        else:
            peer.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="ws://HOST:PORT of the upstream")
    parser.add_argument("--file", required=True, help="where every forwarded byte is appended")
    args = parser.parse_args()
    upstream = urlsplit(args.upstream)
    fd = os.open(args.file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    loop = asyncio.get_running_loop()
    joining: set[asyncio.Task[None]] = set()

    def accepted() -> Pipe:
        client = Pipe(fd)
        task = loop.create_task(join(client))
        joining.add(task)
        task.add_done_callback(joining.discard)
        return client

    async def join(client: Pipe) -> None:
        _, server = await loop.create_connection(lambda: Pipe(fd), upstream.hostname, upstream.port)
        server.peer, client.peer = client, server
        assert server.transport is not None
        for data in client.early:
            server.transport.write(data)
        client.early.clear()

    listener = await loop.create_server(accepted, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    print(f"listening on ws://127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    listener.close()
    os.close(fd)


if __name__ == "__main__":
    asyncio.run(main())
