"""A small scripted websocket upstream for functional tests of the relay (not an app-server).

It echoes every frame back, except control commands sent as text:
``!drop`` (cut TCP without a close frame, as the app-server does), ``!close CODE REASON``,
``!burst N [SIZE]`` (send N numbered notifications, padded with SIZE bytes), ``!attest``
(send a server request ``attestation/generate`` with the next server id, as the app-server
does). JSON-RPC responses
from the client (answers to such requests) are kept in ``answers`` with their arrival time
and not echoed; ``config/read`` requests are answered with a result.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from types import TracebackType
from typing import Any

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed


class ScriptedUpstream:
    """Echo server on 127.0.0.1:0 that remembers what it saw."""

    def __init__(self, subprotocols: list[str] | None = None) -> None:
        self.received: list[list[str | bytes]] = []
        self.headers: list[Headers] = []
        self.paths: list[str] = []
        self.closes: list[tuple[int | None, str]] = []
        self.subprotocols = subprotocols
        self._server: Server | None = None
        self.url = ""
        self.closed = asyncio.Event()
        self.answers: list[tuple[float, Any]] = []
        self.asked: list[float] = []
        self._server_ids = itertools.count()

    async def __aenter__(self) -> ScriptedUpstream:
        self._server = await serve(
            self._handle,
            "127.0.0.1",
            0,
            max_size=None,
            compression=None,
            subprotocols=self.subprotocols,  # type: ignore[arg-type]
        )
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.headers.append(ws.request.headers)
        self.paths.append(ws.request.path)
        frames: list[str | bytes] = []
        self.received.append(frames)
        try:
            async for frame in ws:
                frames.append(frame)
                msg = _request_or_answer(frame)
                if msg is not None:
                    if "method" not in msg:
                        self.answers.append((time.monotonic(), msg))
                        continue
                    if msg["method"] == "config/read":  # answered like the app-server would
                        await ws.send(
                            orjson.dumps({"id": msg["id"], "result": {"config": {}}}).decode()
                        )
                        continue
                if isinstance(frame, str) and frame.startswith("!"):
                    command, _, arg = frame[1:].partition(" ")
                    if command == "drop":
                        assert ws.transport is not None
                        ws.transport.abort()
                        return
                    if command == "close":
                        code, _, reason = arg.partition(" ")
                        await ws.close(int(code), reason)
                        return
                    if command == "attest":
                        n = next(self._server_ids)
                        self.asked.append(time.monotonic())
                        await ws.send(f'{{"id":{n},"method":"attestation/generate","params":{{}}}}')
                        continue
                    if command == "burst":
                        count, _, size = arg.partition(" ")
                        pad = f',"pad":"{"x" * int(size)}"' if size else ""
                        for i in range(int(count)):
                            await ws.send(f'{{"method":"n","params":{{"i":{i}{pad}}}}}')
                        continue
                await ws.send(frame)
        except ConnectionClosed:
            pass
        finally:
            rcvd = ws.protocol.close_rcvd
            self.closes.append((rcvd.code, rcvd.reason) if rcvd else (None, ""))
            self.closed.set()


def _request_or_answer(frame: str | bytes) -> dict[str, Any] | None:
    """A text frame that is a JSON object with an ``id`` first, or ``None`` (echoed as it is):
    anything else, including JSON orjson refuses (a lone surrogate escape), is just echoed."""
    if not isinstance(frame, str) or not frame.startswith('{"id"'):
        return None
    try:
        msg = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return None
    return msg if isinstance(msg, dict) else None
