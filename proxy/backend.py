"""A fake OpenAI Responses API backend, so a real codex app-server can run full turns offline.

The app-server is pointed at this server through its ``config.toml`` (see
:func:`proxy.appserver.write_codex_home`); it then POSTs ``/v1/responses`` and expects a
Server-Sent Events stream back. The backend answers each POST with the next scripted
:class:`Reply`, or with a default text reply once the script is used up.

The module has two halves:

* a pure core that turns a :class:`Reply` into the list of SSE events to send
  (:func:`response_events`, :func:`split_text`) and an HTTP request into a log record
  (:func:`request_record`); no sockets, no event loop;
* a thin aiohttp shell, :class:`FakeBackend`, that owns the listening socket, the reply
  queue, the request log, and a route table mapping ``(method, path)`` to a handler.

Only API-key mode (``POST /v1/responses``) is served today. ChatGPT mode will add rows to the
route table (``/backend-api/codex/responses`` answers with the same SSE writer) without
touching the rest.
"""

from __future__ import annotations

import asyncio
import enum
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import orjson
from aiohttp import web
from aiohttp_sse import sse_response

__all__ = [
    "DEFAULT_REPLY",
    "FakeBackend",
    "Reply",
    "ReplyKind",
    "request_record",
    "response_events",
    "serve_backend",
    "split_text",
]

DEFAULT_REPLY = "Hello from rpctape's fake backend."
"""Text the backend answers with when no scripted reply is queued."""

INPUT_TOKENS = 10
"""Input token count reported in every ``response.completed`` usage (fixed, for determinism)."""

REDACTED = "<redacted>"
"""Replaces the value of the ``Authorization`` header in the request log."""

SseEvent = tuple[str, dict[str, Any]]
"""One SSE event: its type (the ``event:`` field) and its JSON payload (the ``data:`` field)."""

Handler = Callable[[web.Request, Any], Awaitable[web.StreamResponse]]
"""A route handler: receives the request and its already-parsed body (see :func:`parse_body`)."""


class ReplyKind(enum.Enum):
    """What a scripted reply makes the model do."""

    TEXT = "text"
    FUNCTION_CALL = "function_call"


@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted model reply, consumed by one ``POST /v1/responses``.

    Build it with :meth:`text` or :meth:`function_call`; do not call the constructor directly.
    """

    kind: ReplyKind
    message: str = ""
    """The assistant's text (``TEXT`` replies)."""
    name: str = ""
    """The tool name (``FUNCTION_CALL`` replies), e.g. ``exec_command``."""
    arguments: str = ""
    """The tool arguments as a JSON string, exactly as the Responses API sends them."""
    call_id: str = ""
    """The call id the app-server echoes back with the tool output."""

    @classmethod
    def text(cls, message: str) -> Reply:
        """An assistant message with ``message`` as its text, streamed in a few deltas."""
        return cls(kind=ReplyKind.TEXT, message=message)

    @classmethod
    def function_call(
        cls,
        *,
        name: str,
        arguments: Mapping[str, Any] | str,
        call_id: str = "call-1",
    ) -> Reply:
        """A tool call; ``arguments`` is a mapping (serialized here) or a ready JSON string.

        ``Reply.function_call(name="exec_command", arguments={"cmd": "touch x",
        "sandbox_permissions": "require_escalated", "justification": "why"})`` makes an
        app-server running with ``approval_policy="on-request"`` ask the client for approval.
        """
        if not isinstance(arguments, str):
            arguments = orjson.dumps(dict(arguments)).decode()
        return cls(kind=ReplyKind.FUNCTION_CALL, name=name, arguments=arguments, call_id=call_id)


# --- pure core ----------------------------------------------------------------------------


def split_text(text: str, parts: int = 3) -> list[str]:
    """Split ``text`` at word starts into at most ``parts`` chunks that join back to ``text``.

    Empty text gives no chunks.
    """
    if not text:
        return []
    words = re.split(r"(?<=\s)(?=\S)", text)
    if len(words) > 1 and words[0].isspace():
        words[:2] = [words[0] + words[1]]  # leading whitespace belongs to the first word
    parts = max(1, min(parts, len(words)))
    size, extra = divmod(len(words), parts)
    chunks: list[str] = []
    start = 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        chunks.append("".join(words[start:end]))
        start = end
    return chunks


def _usage(output_tokens: int) -> dict[str, Any]:
    """The ``usage`` object of ``response.completed``."""
    return {
        "input_tokens": INPUT_TOKENS,
        "input_tokens_details": None,
        "output_tokens": output_tokens,
        "output_tokens_details": None,
        "total_tokens": INPUT_TOKENS + output_tokens,
    }


def response_events(reply: Reply, serial: int) -> list[SseEvent]:
    """The SSE events that answer one Responses API request with ``reply``.

    ``serial`` numbers the response (1 for the first POST) and makes the ids deterministic:
    ``resp-N`` for the response, ``msg-N`` for a message item, ``fc-N`` for a function call.
    Output tokens are counted as one per four characters of output, at least one.
    """
    response_id = f"resp-{serial}"
    events: list[SseEvent] = [
        ("response.created", {"type": "response.created", "response": {"id": response_id}})
    ]
    item: dict[str, Any]
    if reply.kind is ReplyKind.TEXT:
        item_id = f"msg-{serial}"
        item = {"type": "message", "role": "assistant", "id": item_id, "content": []}
        events.append(_item_event("response.output_item.added", item))
        events.extend(
            (
                "response.output_text.delta",
                {
                    "type": "response.output_text.delta",
                    "item_id": item_id,
                    "output_index": 0,
                    "content_index": 0,
                    "delta": chunk,
                },
            )
            for chunk in split_text(reply.message)
        )
        item = {**item, "content": [{"type": "output_text", "text": reply.message}]}
        output_chars = len(reply.message)
    else:
        item = {
            "type": "function_call",
            "id": f"fc-{serial}",
            "call_id": reply.call_id,
            "name": reply.name,
            "arguments": reply.arguments,
        }
        events.append(_item_event("response.output_item.added", {**item, "arguments": ""}))
        output_chars = len(reply.arguments)
    events.append(_item_event("response.output_item.done", item))
    events.append(
        (
            "response.completed",
            {
                "type": "response.completed",
                "response": {"id": response_id, "usage": _usage(max(1, output_chars // 4))},
            },
        )
    )
    return events


def _item_event(event_type: str, item: dict[str, Any]) -> SseEvent:
    """An ``output_item`` event for the first (only) output item."""
    return (event_type, {"type": event_type, "output_index": 0, "item": item})


def parse_body(raw: bytes) -> Any:
    """A request body for the log: parsed JSON, else text (bad bytes replaced), else None."""
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", errors="replace")


def request_record(
    t: float,
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    body: Any,
) -> dict[str, Any]:
    """One request-log record; the ``Authorization`` header's value becomes ``<redacted>``.

    Every other header is kept verbatim, with the name's case as sent.
    """
    return {
        "t": round(t, 6),
        "method": method,
        "path": path,
        "query": {str(name): str(value) for name, value in query.items()},
        "headers": {
            # str(): aiohttp's header names are a str subclass that orjson refuses as keys.
            str(name): REDACTED if name.lower() == "authorization" else str(value)
            for name, value in headers.items()
        },
        "body": body,
    }


# --- I/O shell ----------------------------------------------------------------------------


async def write_sse(request: web.Request, events: list[SseEvent]) -> web.StreamResponse:
    """Stream ``events`` as ``event: <type>\\ndata: <json>\\n\\n`` and end the response.

    Shared by every streaming endpoint (API-key mode today, ChatGPT mode later).
    """
    async with sse_response(request, sep="\n", allow_all_methods=True) as response:
        for event_type, payload in events:
            await response.send(orjson.dumps(payload).decode(), event=event_type)
    return response


class FakeBackend:
    """A fake Responses API server on ``host:port`` (``127.0.0.1`` and a free port by default).

    Use it as ``async with FakeBackend() as backend:``, or call :meth:`start` then
    :meth:`close`. Queue replies with :meth:`script` before the app-server asks for them; read
    what the app-server sent in :attr:`requests` (and, if ``log_path`` is given, in that file,
    one JSON line per request, appended).
    """

    def __init__(
        self,
        reply: str = DEFAULT_REPLY,
        log_path: Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.default_reply = Reply.text(reply)
        self.log_path = log_path
        self.host = host
        self.port = port
        self.requests: list[dict[str, Any]] = []
        """Every request received, oldest first, as :func:`request_record` dicts."""
        self._queue: deque[Reply] = deque()
        self._responses_served = 0
        self._started_at = 0.0
        self._log_file: IO[bytes] | None = None
        self._runner: web.AppRunner | None = None
        # The route table: (method, path) -> handler. Unknown routes get 404.
        self._routes: dict[tuple[str, str], Handler] = {
            ("POST", "/v1/responses"): self._handle_responses,
        }

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT``; valid once started."""
        if self._runner is None:
            raise RuntimeError("FakeBackend is not started")
        return f"http://{self.host}:{self.port}"

    def script(self, *replies: Reply) -> None:
        """Queue ``replies``; each ``POST /v1/responses`` consumes the oldest one."""
        self._queue.extend(replies)

    async def start(self) -> None:
        """Bind and start serving; call once, then :meth:`close`."""
        if self._runner is not None:
            raise RuntimeError("FakeBackend is already started")
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._runner = runner
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
            if self.log_path is not None:
                self._log_file = self.log_path.open("ab")
        except BaseException:
            await self.close()
            raise
        self.port = int(runner.addresses[0][1])
        self._started_at = time.monotonic()

    async def close(self) -> None:
        """Stop serving and close the log file; safe to call twice."""
        runner, self._runner = self._runner, None
        log_file, self._log_file = self._log_file, None
        try:
            if runner is not None:
                await runner.cleanup()
        finally:
            if log_file is not None:
                log_file.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        """Log the request, then hand it to its route's handler (404 if there is none)."""
        body = parse_body(await request.read())
        record = request_record(
            time.monotonic() - self._started_at,
            request.method,
            request.path,
            request.query,
            request.headers,
            body,
        )
        self.requests.append(record)
        if self._log_file is not None:
            # A small append per request; fine on the event loop.
            self._log_file.write(orjson.dumps(record) + b"\n")
            self._log_file.flush()
        handler = self._routes.get((request.method, request.path))
        if handler is None:
            return web.Response(status=404, text=f"not found: {request.method} {request.path}\n")
        return await handler(request, body)

    async def _handle_responses(self, request: web.Request, body: Any) -> web.StreamResponse:
        """Answer a Responses API request with the next scripted reply as an SSE stream."""
        reply = self._queue.popleft() if self._queue else self.default_reply
        self._responses_served += 1
        return await write_sse(request, response_events(reply, self._responses_served))


async def serve_backend(host: str, port: int, reply: str, log_path: Path | None) -> None:
    """Run a :class:`FakeBackend` for the command line until cancelled.

    Prints exactly one line, ``listening on http://HOST:PORT``, once it accepts connections,
    then serves until the task is cancelled, and closes cleanly.
    """
    async with FakeBackend(reply, log_path, host=host, port=port) as backend:
        print(f"listening on {backend.url}", flush=True)
        await asyncio.Event().wait()
