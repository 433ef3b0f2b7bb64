"""A fake OpenAI model backend, so a real codex app-server can run full turns offline.

The app-server is pointed at this server through its ``config.toml`` (see
:func:`proxy.codex.appserver.write_codex_home`). Two auth modes share one server and one script:

* API-key mode: ``POST /v1/responses``, answered with a Server-Sent Events stream;
* ChatGPT mode (the only mode in which the app-server asks its client for attestation):
  ``POST /backend-api/codex/responses`` (the same SSE stream), its websocket upgrade
  (Responses over a websocket, see below), ``GET /backend-api/codex/models``,
  ``GET /backend-api/wham/accounts/check`` and the token refresh ``POST /oauth/token``
  (the app-server's ``CODEX_REFRESH_TOKEN_URL_OVERRIDE``).

Every model request consumes the next scripted :class:`Reply`, or gets a default text reply
once the script is used up. Every other path is a harmless 404.

Responses over a websocket (``supports_websockets = true``; protocol of ``codex-api``
``responses_websocket``, run against codex 0.169.0): the client upgrades
``GET <base_url>/responses`` with the POST's headers (``Authorization``,
``chatgpt-account-id``, ``x-oai-attestation``...) plus ``openai-beta:
responses_websockets=2026-02-06``, offering permessage-deflate. It then sends one JSON text
frame per model request, ``{"type":"response.create", ...the POST body...}``, and reads text
frames until ``response.completed``; each event is one frame holding exactly the ``data:``
JSON of the SSE event (its ``type`` names it). The first request on a connection is a
prewarm, ``"generate": false``, answered with ``response.created`` and
``response.completed`` only (no scripted reply is used). The connection is kept for the
thread's later requests, which name the previous response in ``previous_response_id`` and
carry only the new input items. From the source only (0.169.0 was not seen sending or
needing them): ``{"type":"response.processed","response_id":...}`` gets no answer, and a
``{"type":"error","status":400,...}`` frame (sent here for anything else) fails the request.

The module has two halves:

* a pure core that turns a :class:`Reply` into the events to send (:func:`response_events`,
  :func:`split_text`), classifies websocket requests (:func:`websocket_request_kind`), makes
  the fake ChatGPT tokens (:func:`fake_id_token`) and turns a request into a log record
  (:func:`request_record`); no sockets, no event loop;
* a thin aiohttp shell, :class:`FakeBackend`, that owns the listening socket, the reply
  queue, the request log, and a route table mapping ``(method, path)`` to a handler.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import re
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import orjson
from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp_sse import sse_response

from ..errors import UsageError

__all__ = [
    "ACCOUNTS_CHECK_PATH",
    "ACCOUNT_ID",
    "API_KEY_RESPONSES_PATH",
    "CHATGPT_ACCESS_TOKEN",
    "CHATGPT_REFRESH_TOKEN",
    "CHATGPT_RESPONSES_PATH",
    "DEFAULT_REPLY",
    "MODELS_PATH",
    "REFRESH_TOKEN_PATH",
    "WEBSOCKET_MESSAGE",
    "FakeBackend",
    "Reply",
    "ReplyKind",
    "WsRequestKind",
    "accounts_check_body",
    "delta_pause",
    "fake_id_token",
    "id_token_claims",
    "prewarm_events",
    "request_record",
    "response_events",
    "serve_backend",
    "split_text",
    "token_refresh_body",
    "websocket_error_event",
    "websocket_request_kind",
]

DEFAULT_REPLY = "Hello from rpctape's fake backend."
"""Text the backend answers with when no scripted reply is queued."""

INPUT_TOKENS = 10
"""Input token count reported in every ``response.completed`` usage (fixed, for determinism)."""

REDACTED = "<redacted>"
"""Replaces the value of the ``Authorization`` header in the request log."""

API_KEY_RESPONSES_PATH = "/v1/responses"
"""The Responses endpoint in API-key mode (provider ``base_url`` ``<backend>/v1``)."""

CHATGPT_RESPONSES_PATH = "/backend-api/codex/responses"
"""The Responses endpoint in ChatGPT mode (``base_url`` ``<backend>/backend-api/codex``)."""

MODELS_PATH = "/backend-api/codex/models"
"""The model catalog codex fetches in ChatGPT mode (answered with an empty catalog)."""

ACCOUNTS_CHECK_PATH = "/backend-api/wham/accounts/check"
"""Account and workspace-routing discovery in ChatGPT mode."""

REFRESH_TOKEN_PATH = "/oauth/token"
"""Where the app-server refreshes its ChatGPT tokens (``CODEX_REFRESH_TOKEN_URL_OVERRIDE``)."""

WEBSOCKET_MESSAGE = "WS"
"""The ``method`` of a request-log record for one text frame received over a websocket."""

ACCOUNT_ID = "acct-1"
"""The fake ChatGPT account (``chatgpt-account-id`` header, ``auth.json``, id_token claims)."""
CHATGPT_USER_ID = "user-1"
CHATGPT_EMAIL = "user@example.com"
CHATGPT_PLAN = "pro"
"""The plan of the fake account (id_token claims and the accounts check)."""
CHATGPT_ACCESS_TOKEN = "access-x"
"""The access token the app-server sends as ``Authorization: Bearer`` in ChatGPT mode."""
CHATGPT_REFRESH_TOKEN = "refresh-x"

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


def response_events(reply: Reply, serial: int, deltas: int = 3) -> list[SseEvent]:
    """The SSE events that answer one Responses API request with ``reply``.

    A text reply is streamed in at most ``deltas`` ``response.output_text.delta`` events
    (cut at word starts, see :func:`split_text`).

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
            for chunk in split_text(reply.message, deltas)
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


def prewarm_events(serial: int) -> list[SseEvent]:
    """The events answering a ``generate: false`` prewarm: an empty response, no usage.

    ``serial`` numbers the response like :func:`response_events` does (``resp-N``); the
    client names it as ``previous_response_id`` in its next request on the connection.
    """
    response_id = f"resp-{serial}"
    return [
        ("response.created", {"type": "response.created", "response": {"id": response_id}}),
        ("response.completed", {"type": "response.completed", "response": {"id": response_id}}),
    ]


class WsRequestKind(enum.Enum):
    """What one text frame from the client of a Responses websocket asks for."""

    CREATE = "create"
    """``response.create``: stream the next scripted reply."""
    PREWARM = "prewarm"
    """``response.create`` with ``"generate": false``: an empty response, no reply used."""
    PROCESSED = "processed"
    """``response.processed``: the client acknowledges a response; nothing is sent back."""
    INVALID = "invalid"
    """Not JSON, not an object, or an unknown ``type``: answered with an error event."""


def websocket_request_kind(message: Any) -> WsRequestKind:
    """Classify one parsed text frame (see :func:`parse_body`) sent to a Responses websocket."""
    if not isinstance(message, dict):
        return WsRequestKind.INVALID
    kind = message.get("type")
    if kind == "response.create":
        return WsRequestKind.PREWARM if message.get("generate") is False else WsRequestKind.CREATE
    if kind == "response.processed":
        return WsRequestKind.PROCESSED
    return WsRequestKind.INVALID


def websocket_error_event(message: str) -> dict[str, Any]:
    """The wrapped error frame codex maps to an HTTP 400 failure of the pending request."""
    return {
        "type": "error",
        "status": 400,
        "error": {"type": "invalid_request_error", "message": message},
    }


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def id_token_claims(
    account_id: str = ACCOUNT_ID,
    *,
    email: str = CHATGPT_EMAIL,
    plan_type: str = CHATGPT_PLAN,
    user_id: str = CHATGPT_USER_ID,
) -> dict[str, Any]:
    """The claims codex reads from a ChatGPT ``id_token`` (email, plan, user and account)."""
    return {
        "email": email,
        "https://api.openai.com/auth": {
            "chatgpt_plan_type": plan_type,
            "chatgpt_user_id": user_id,
            "chatgpt_account_id": account_id,
        },
    }


def fake_id_token(claims: Mapping[str, Any] | None = None) -> str:
    """An unsigned JWT (``alg: none``) carrying ``claims`` (default :func:`id_token_claims`).

    codex decodes the payload without checking the signature, which is the literal ``sig``.
    """
    header = _b64url(orjson.dumps({"alg": "none", "typ": "JWT"}))
    payload = _b64url(orjson.dumps(dict(claims if claims is not None else id_token_claims())))
    return f"{header}.{payload}.{_b64url(b'sig')}"


def token_refresh_body() -> dict[str, Any]:
    """The answer to a token refresh: fresh (here: the same) id, access and refresh tokens."""
    return {
        "id_token": fake_id_token(),
        "access_token": CHATGPT_ACCESS_TOKEN,
        "refresh_token": CHATGPT_REFRESH_TOKEN,
    }


def accounts_check_body(account_id: str = ACCOUNT_ID) -> dict[str, Any]:
    """The answer to ``GET /backend-api/wham/accounts/check``: one personal account.

    ``NO_CONSTRAINT`` leaves the workspace routing alone (requests keep going to the
    configured ``chatgpt_base_url``).
    """
    return {
        "accounts": [
            {
                "id": account_id,
                "plan_type": CHATGPT_PLAN,
                "structure": "personal",
                "workspace_backend_origin": "NO_CONSTRAINT",
                "account_routing_override": "NO_CONSTRAINT",
            }
        ],
        "account_ordering": [account_id],
        "default_account_id": account_id,
    }


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


DELTA_EVENT = "response.output_text.delta"


def delta_pause(events: list[SseEvent], index: int, delta_delay: float) -> float:
    """Seconds to wait before sending ``events[index]``: ``delta_delay`` before every text
    delta but the first, so that a turn streams slowly (``--delta-delay``)."""
    if delta_delay <= 0 or events[index][0] != DELTA_EVENT:
        return 0.0
    return delta_delay if any(e[0] == DELTA_EVENT for e in events[:index]) else 0.0


async def write_sse(
    request: web.Request, events: list[SseEvent], delta_delay: float = 0.0
) -> web.StreamResponse:
    """Stream ``events`` as ``event: <type>\\ndata: <json>\\n\\n`` and end the response,
    waiting ``delta_delay`` seconds between text deltas.

    Shared by the POST endpoints of both modes.
    """
    async with sse_response(request, sep="\n", allow_all_methods=True) as response:
        for index, (event_type, payload) in enumerate(events):
            pause = delta_pause(events, index, delta_delay)
            if pause:
                await asyncio.sleep(pause)
            await response.send(orjson.dumps(payload).decode(), event=event_type)
    return response


class FakeBackend:
    """A fake model backend on ``host:port`` (``127.0.0.1`` and a free port by default).

    Serves API-key mode and ChatGPT mode at once (see the module docstring). Use it as
    ``async with FakeBackend() as backend:``, or call :meth:`start` then :meth:`close`.
    Queue replies with :meth:`script` before the app-server asks for them; read what the
    app-server sent in :attr:`requests` (and, if ``log_path`` is given, in that file, one
    JSON line per record, appended).
    """

    def __init__(
        self,
        reply: str = DEFAULT_REPLY,
        log_path: Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        deltas: int = 3,
        delta_delay: float = 0.0,
    ) -> None:
        if deltas < 1 or not delta_delay >= 0:
            raise UsageError(
                f"the fake backend needs deltas >= 1 and delta_delay >= 0 seconds, not "
                f"{deltas} and {delta_delay}"
            )
        self.deltas = deltas
        """At most how many text deltas a reply is streamed in."""
        self.delta_delay = delta_delay
        """Seconds between two text deltas (0: all at once)."""
        self.default_reply = Reply.text(reply)
        self.log_path = log_path
        self.host = host
        self.port = port
        self.requests: list[dict[str, Any]] = []
        """Every request received, oldest first, as :func:`request_record` dicts.

        A websocket upgrade is logged like any request (a ``GET`` with its headers); each
        frame then received on it is logged with ``method`` :data:`WEBSOCKET_MESSAGE`, the
        upgrade's path, no query or headers, and the parsed frame as ``body``.
        """
        self._queue: deque[Reply] = deque()
        self._responses_served = 0
        self._refusals = 0
        self._started_at = 0.0
        self._log_file: IO[bytes] | None = None
        self._runner: web.AppRunner | None = None
        self._websockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
        # The route table: (method, path) -> handler. Unknown routes get 404.
        self._routes: dict[tuple[str, str], Handler] = {
            ("POST", API_KEY_RESPONSES_PATH): self._handle_responses,
            ("GET", API_KEY_RESPONSES_PATH): self._handle_responses_websocket,
            ("POST", CHATGPT_RESPONSES_PATH): self._handle_responses,
            ("GET", CHATGPT_RESPONSES_PATH): self._handle_responses_websocket,
            ("GET", MODELS_PATH): self._handle_models,
            ("GET", ACCOUNTS_CHECK_PATH): self._handle_accounts_check,
            ("POST", REFRESH_TOKEN_PATH): self._handle_token_refresh,
        }

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT``; valid once started."""
        if self._runner is None:
            raise RuntimeError("FakeBackend is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def refresh_token_url(self) -> str:
        """The token refresh endpoint, for ``CODEX_REFRESH_TOKEN_URL_OVERRIDE``."""
        return self.url + REFRESH_TOKEN_PATH

    def refuse(self, count: int = 1) -> None:
        """Answer the next ``count`` model POSTs with HTTP 401 (no reply is used): in ChatGPT
        mode with tokens the client supplied (``account/login/start`` of type
        ``chatgptAuthTokens``), codex then asks the client for fresh ones
        (``account/chatgptAuthTokens/refresh``) and retries."""
        self._refusals += count

    def script(self, *replies: Reply) -> None:
        """Queue ``replies``; each model request (POST or websocket) consumes the oldest one."""
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
        """Stop serving (closing open websockets first) and close the log file; safe twice."""
        runner, self._runner = self._runner, None
        log_file, self._log_file = self._log_file, None
        try:
            for ws in list(self._websockets):
                with contextlib.suppress(Exception):
                    await ws.close(code=WSCloseCode.GOING_AWAY, message=b"backend closing")
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

    def _log(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: Any,
    ) -> None:
        """Append one record to :attr:`requests` and to the log file."""
        record = request_record(
            time.monotonic() - self._started_at, method, path, query, headers, body
        )
        self.requests.append(record)
        if self._log_file is not None:
            # A small append per request; fine on the event loop.
            self._log_file.write(orjson.dumps(record) + b"\n")
            self._log_file.flush()

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        """Log the request, then hand it to its route's handler (404 if there is none)."""
        body = parse_body(await request.read())
        self._log(request.method, request.path, request.query, request.headers, body)
        handler = self._routes.get((request.method, request.path))
        if handler is None:
            return _not_found(request)
        return await handler(request, body)

    def _next_serial(self) -> int:
        """Number the next response (``resp-N``), counting POSTs and websocket responses."""
        self._responses_served += 1
        return self._responses_served

    def _next_reply(self) -> Reply:
        return self._queue.popleft() if self._queue else self.default_reply

    async def _handle_responses(self, request: web.Request, body: Any) -> web.StreamResponse:
        """Answer a Responses API request with the next scripted reply as an SSE stream
        (or with 401, see :meth:`refuse`)."""
        if self._refusals:
            self._refusals -= 1
            return web.json_response(
                {"error": {"message": "token expired", "code": "token_expired"}}, status=401
            )
        reply = self._next_reply()
        events = response_events(reply, self._next_serial(), self.deltas)
        return await write_sse(request, events, self.delta_delay)

    async def _handle_responses_websocket(
        self, request: web.Request, body: Any
    ) -> web.StreamResponse:
        """Serve Responses over a websocket: one event per text frame (module docstring).

        A plain GET of the same path (no upgrade) is a 404 like any unknown route.
        """
        ws = web.WebSocketResponse(max_msg_size=0)
        if not ws.can_prepare(request).ok:
            return _not_found(request)
        await ws.prepare(request)
        self._websockets.add(ws)
        async for frame in ws:
            if frame.type is WSMsgType.TEXT:
                message = parse_body(frame.data.encode())
            elif frame.type is WSMsgType.BINARY:
                message = parse_body(frame.data)
            else:
                break  # ERROR; CLOSE frames end the iteration themselves
            self._log(WEBSOCKET_MESSAGE, request.path, {}, {}, message)
            answer = self._websocket_answer(message, binary=frame.type is WSMsgType.BINARY)
            events = [(str(payload.get("type")), payload) for payload in answer]
            for index, (_, payload) in enumerate(events):
                pause = delta_pause(events, index, self.delta_delay)
                if pause:
                    await asyncio.sleep(pause)
                await ws.send_str(orjson.dumps(payload).decode())
        return ws

    def _websocket_answer(self, message: Any, *, binary: bool = False) -> list[dict[str, Any]]:
        """The frames answering one client frame on a Responses websocket."""
        kind = WsRequestKind.INVALID if binary else websocket_request_kind(message)
        if kind is WsRequestKind.CREATE:
            events = response_events(self._next_reply(), self._next_serial(), self.deltas)
        elif kind is WsRequestKind.PREWARM:
            events = prewarm_events(self._next_serial())
        elif kind is WsRequestKind.PROCESSED:
            events = []
        else:
            return [
                websocket_error_event(
                    "rpctape's fake backend expects a JSON text frame "
                    "of type response.create or response.processed"
                )
            ]
        return [payload for _, payload in events]

    async def _handle_models(self, request: web.Request, body: Any) -> web.StreamResponse:
        """An empty model catalog: codex keeps its bundled model list."""
        return _json_response({"models": []})

    async def _handle_accounts_check(self, request: web.Request, body: Any) -> web.StreamResponse:
        """The fake account, with no workspace routing constraint."""
        return _json_response(accounts_check_body())

    async def _handle_token_refresh(self, request: web.Request, body: Any) -> web.StreamResponse:
        """Answer a refresh-token grant with the fake tokens."""
        return _json_response(token_refresh_body())


def _json_response(body: Any) -> web.Response:
    """A 200 ``application/json`` response with ``body`` serialized compactly."""
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def _not_found(request: web.Request) -> web.Response:
    return web.Response(status=404, text=f"not found: {request.method} {request.path}\n")


async def serve_backend(
    host: str,
    port: int,
    reply: str,
    log_path: Path | None,
    *,
    deltas: int = 3,
    delta_delay: float = 0.0,
) -> None:
    """Run a :class:`FakeBackend` for the command line until cancelled.

    Prints exactly one line, ``listening on http://HOST:PORT``, once it accepts connections,
    then serves until the task is cancelled, and closes cleanly.
    """
    async with FakeBackend(
        reply, log_path, host=host, port=port, deltas=deltas, delta_delay=delta_delay
    ) as backend:
        print(f"listening on {backend.url}", flush=True)
        await asyncio.Event().wait()
