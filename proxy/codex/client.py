"""A small built-in app-server client: drives scripted sessions for the demo, tests and checks.

It keeps every frame it sent and received, exactly, in order (:attr:`SessionClient.frames`),
so a test can compare what a client saw with what a cassette holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ..core.jsonrpc import Direction, MessageType, parse
from ..errors import RpctapeError, UsageError
from ..version import __version__

log = logging.getLogger("rpctape.client")

APPROVAL_METHODS = frozenset(
    {"item/commandExecution/requestApproval", "item/fileChange/requestApproval"}
)
LEGACY_APPROVAL_METHODS = frozenset({"execCommandApproval", "applyPatchApproval"})


LEGACY_DECISIONS = {"accept": "approved", "decline": "denied", "cancel": "abort"}
"""``--approve`` value -> the decision of the legacy approval requests."""
DECISIONS = tuple(LEGACY_DECISIONS)
STDIO_LINE_LIMIT = 1 << 26
"""Longest line read from a stdio app-server (64 MiB)."""


class RpcError(RpctapeError):
    """The peer answered a request with a JSON-RPC error."""

    def __init__(self, method: str, error: Any) -> None:
        super().__init__(f"{method} failed: {error}")
        self.error = error


@dataclass(frozen=True)
class ClientOptions:
    """How the built-in client behaves."""

    request_attestation: bool = False
    """Advertise ``capabilities.requestAttestation`` in ``initialize``."""
    attestation_token: str | None = None
    """Answer ``attestation/generate`` with this token (else with a JSON-RPC error)."""
    attestation_reply: dict[str, Any] | None = None
    """Members of the answer to ``attestation/generate`` (``{"error": {...}}``, a result
    without a token, ...); overrides ``attestation_token``."""
    answer_attestation: bool = True
    """False: never answer ``attestation/generate`` (the server times out)."""
    approval_decision: str = "accept"
    string_ids: bool = False
    """Use string request ids (``"req-1"``) instead of integers."""
    client_name: str = "rpctape-client"
    timeout: float = 60.0
    """Longest wait for one response or notification."""
    answer: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None
    """Called first with every server request; a dict it returns (``{"result": ...}`` or
    ``{"error": ...}``) is the answer, with the request's id added. ``None`` falls back to
    the answers above (approvals, attestation, else an error)."""


class ChannelClosed(Exception):
    """The peer ended the conversation (websocket closed, or end of the child's output)."""


class Channel(Protocol):
    """How frames travel: a websocket, or a child's stdin/stdout (JSON Lines)."""

    async def send(self, frame: str | bytes) -> None: ...

    async def recv(self) -> str | bytes:
        """The next frame; raises :class:`ChannelClosed` at the end."""
        ...

    async def close(self) -> None: ...


class WebSocketChannel:
    """A websocket client connection."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    @classmethod
    async def connect(cls, url: str) -> WebSocketChannel:
        return cls(await connect(url, max_size=None, compression=None, ping_interval=None))

    async def send(self, frame: str | bytes) -> None:
        await self.ws.send(frame)

    async def recv(self) -> str | bytes:
        try:
            return await self.ws.recv()
        except ConnectionClosed:
            raise ChannelClosed from None

    async def close(self) -> None:
        await self.ws.close()


class StdioChannel:
    """A spawned app-server spoken to over its stdin/stdout, one JSON message per line."""

    def __init__(self, process: asyncio.subprocess.Process, grace: float = 5.0) -> None:
        self.process = process
        self.grace = grace

    @classmethod
    async def spawn(cls, command: Sequence[str]) -> StdioChannel:
        """Start ``command``; its stderr goes to ours."""
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=STDIO_LINE_LIMIT,
        )
        return cls(process)

    async def send(self, frame: str | bytes) -> None:
        assert self.process.stdin is not None
        data = frame.encode() if isinstance(frame, str) else frame
        try:
            self.process.stdin.write(data + b"\n")
            await self.process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            raise ChannelClosed from None

    async def recv(self) -> str | bytes:
        assert self.process.stdout is not None
        line = await self.process.stdout.readline()
        if not line:
            raise ChannelClosed
        return line.removesuffix(b"\n").decode(errors="replace")

    async def close(self) -> None:
        """End its input, then wait for it to exit (terminate, then kill, if it lingers)."""
        if self.process.stdin is not None and not self.process.stdin.is_closing():
            self.process.stdin.close()
        for stop in (None, self.process.terminate, self.process.kill):
            if self.process.returncode is not None:
                return
            if stop is not None:
                with contextlib.suppress(ProcessLookupError):
                    stop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.process.wait(), self.grace)


class SessionClient:
    """One connection speaking the app-server protocol, over a websocket or stdio.

    Use as ``async with SessionClient(url, options) as client:`` (or ``command=[...]`` to
    spawn a stdio app-server). A reader task answers server requests (approvals,
    attestation) and routes responses; notifications are queued for :meth:`wait_for`.
    """

    def __init__(
        self,
        url: str | None,
        options: ClientOptions | None = None,
        *,
        command: Sequence[str] = (),
    ) -> None:
        if (url is None) == (not command):
            raise UsageError("give SessionClient a url or a command, not both or neither")
        self.url = url or f"stdio:{' '.join(command)}"
        self.command = tuple(command)
        self.options = options or ClientOptions()
        self.frames: list[tuple[Direction, str | bytes]] = []
        """Every frame sent (c2s) and received (s2c), exactly, in order."""
        self.notifications: list[dict[str, Any]] = []
        self.server_requests: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._waiting: dict[Any, asyncio.Future[Any]] = {}
        self._notified = asyncio.Condition()
        self._ws: Channel | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SessionClient:
        if self.command:
            self._ws = await StdioChannel.spawn(self.command)
        else:
            self._ws = await WebSocketChannel.connect(self.url)
        self._reader = asyncio.create_task(self._read(), name=f"client-reader {self.url}")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection and stop the reader; safe twice."""
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None

    async def send_raw(self, frame: str | bytes) -> None:
        """Send one frame as is (text for ``str``, binary for ``bytes``)."""
        assert self._ws is not None, "use SessionClient as an async context manager"
        self.frames.append((Direction.C2S, frame))
        await self._ws.send(frame)

    async def call(self, method: str, params: Any = None) -> Any:
        """Send a request and return its result; raise :class:`RpcError` on an error reply."""
        n = next(self._ids)
        request_id: Any = f"req-{n}" if self.options.string_ids else n
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        message: dict[str, Any] = {"id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        await self.send_raw(orjson.dumps(message).decode())
        reply = await asyncio.wait_for(future, self.options.timeout)
        if "error" in reply:
            raise RpcError(method, reply["error"])
        return reply["result"]

    async def notify(self, method: str, params: Any = None) -> None:
        """Send a notification."""
        message: dict[str, Any] = {"method": method}
        if params is not None:
            message["params"] = params
        await self.send_raw(orjson.dumps(message).decode())

    async def wait_for(self, method: str, start: int = 0) -> dict[str, Any]:
        """The first notification named ``method`` at index ``start`` or later; waits for it."""

        def find() -> dict[str, Any] | None:
            return next((n for n in self.notifications[start:] if n.get("method") == method), None)

        async with self._notified:
            await asyncio.wait_for(
                self._notified.wait_for(lambda: find() is not None), self.options.timeout
            )
        found = find()
        assert found is not None
        return found

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            while True:
                frame = await self._ws.recv()
                self.frames.append((Direction.S2C, frame))
                if isinstance(frame, str):
                    await self._dispatch(frame)
        except ChannelClosed:
            pass
        finally:
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(RpctapeError(f"connection to {self.url} closed"))
            async with self._notified:
                self._notified.notify_all()

    async def _dispatch(self, frame: str) -> None:
        parsed = parse(frame)
        msg = parsed.msg
        if parsed.type in (MessageType.RESPONSE, MessageType.ERROR):
            future = self._waiting.pop(parsed.id, None)
            if future is not None and not future.done():
                future.set_result(msg)
        elif parsed.type is MessageType.NOTIFICATION:
            async with self._notified:
                self.notifications.append(msg)
                self._notified.notify_all()
        elif parsed.type is MessageType.REQUEST:
            self.server_requests.append(msg)
            await self._answer(msg)

    async def _answer(self, request: dict[str, Any]) -> None:
        method, request_id = request["method"], request["id"]
        reply: dict[str, Any]
        custom = self.options.answer(request) if self.options.answer is not None else None
        if custom is not None:
            reply = {"id": request_id, **custom}
        elif method == "attestation/generate" and not self.options.answer_attestation:
            return
        elif method == "attestation/generate" and self.options.attestation_reply is not None:
            reply = {"id": request_id, **self.options.attestation_reply}
        elif method == "attestation/generate" and self.options.attestation_token is not None:
            reply = {"id": request_id, "result": {"token": self.options.attestation_token}}
        elif method in APPROVAL_METHODS:
            reply = {"id": request_id, "result": {"decision": self.options.approval_decision}}
        elif method in LEGACY_APPROVAL_METHODS:
            decision = LEGACY_DECISIONS.get(self.options.approval_decision, "denied")
            reply = {"id": request_id, "result": {"decision": decision}}
        else:
            error = {"code": -32601, "message": f"rpctape client does not handle {method}"}
            reply = {"id": request_id, "error": error}
        await self.send_raw(orjson.dumps(reply).decode())

    def named(self, method: str) -> list[Any]:
        """The params of every notification named ``method`` received so far, in order."""
        return [m.get("params") for m in self.notifications if m.get("method") == method]

    async def initialize(self) -> Any:
        """``initialize`` then ``initialized``; returns the initialize result."""
        capabilities: dict[str, Any] = {}
        if self.options.request_attestation:
            capabilities["requestAttestation"] = True
        params: dict[str, Any] = {
            "clientInfo": {"name": self.options.client_name, "version": __version__}
        }
        if capabilities:
            params["capabilities"] = capabilities
        result = await self.call("initialize", params)
        await self.notify("initialized")
        return result

    async def start_thread(self) -> str:
        """``thread/start``; returns the new thread's id."""
        result = await self.call("thread/start", {})
        thread_id: str = result["thread"]["id"]
        return thread_id

    async def run_turn(self, thread_id: str, text: str) -> dict[str, Any]:
        """``turn/start`` with one text input; returns the ``turn/completed`` notification."""
        mark = len(self.notifications)
        await self.call(
            "turn/start",
            {"threadId": thread_id, "input": [{"type": "text", "text": text}]},
        )
        return await self.wait_for("turn/completed", mark)


async def scripted_session(
    url: str,
    prompts: Sequence[str] = ("Say hello.",),
    options: ClientOptions | None = None,
) -> SessionClient:
    """The demo's session: initialize, model/list, thread/start, one turn per prompt.

    Returns the (closed) client, whose :attr:`SessionClient.frames` hold the transcript.
    """
    async with SessionClient(url, options) as client:
        await client.initialize()
        await client.call("model/list", {})
        thread_id = await client.start_thread()
        for prompt in prompts:
            await client.run_turn(thread_id, prompt)
    return client


def agent_messages(notifications: Sequence[dict[str, Any]]) -> list[str]:
    """The text of every completed ``agentMessage`` item, in order."""
    texts: list[str] = []
    for note in notifications:
        item = (
            (note.get("params") or {}).get("item")
            if note.get("method") == "item/completed"
            else None
        )
        if isinstance(item, dict) and item.get("type") == "agentMessage":
            texts.append(str(item.get("text", "")))
    return texts


async def prompt_session(client: SessionClient, prompts: Sequence[str]) -> list[str]:
    """``rpctape client``: initialize, thread/start, one turn per prompt; the agent's replies.

    Each reply is the text of the agent messages completed during that turn, joined by
    blank lines. ``client`` must be entered (``async with``).
    """
    await client.initialize()
    thread_id = await client.start_thread()
    replies = []
    for prompt in prompts:
        mark = len(client.notifications)
        await client.run_turn(thread_id, prompt)
        replies.append("\n\n".join(agent_messages(client.notifications[mark:])))
    return replies
