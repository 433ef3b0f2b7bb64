"""Tests of proxy.codex.backend: the fake model backend, driven by plain HTTP and websocket
clients."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from proxy.codex.backend import (
    DEFAULT_REPLY,
    FakeBackend,
    Reply,
    ReplyKind,
    WsRequestKind,
    delta_pause,
    fake_id_token,
    id_token_claims,
    prewarm_events,
    response_events,
    serve_backend,
    split_text,
    websocket_request_kind,
)
from proxy.errors import UsageError
from tests.helpers import decode_jwt_payload

# Headers the client would add on its own; skipped so the logged headers are exactly known.
SKIP_HEADERS = frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"})

EXEC_ARGS = {"cmd": "touch x", "sandbox_permissions": "require_escalated", "justification": "why"}

CHATGPT_RESPONSES = "/backend-api/codex/responses"

ATTESTATION = '{"v":1,"s":0,"t":"v1.some-token"}'
"""An ``x-oai-attestation`` value as the app-server sends it (an envelope, not the token)."""

# The exact SSE body answering Reply.text("one two three four") as the first response.
ONE_TWO_THREE_FOUR_SSE = (
    "event: response.created\n"
    'data: {"type":"response.created","response":{"id":"resp-1"}}\n\n'
    "event: response.output_item.added\n"
    'data: {"type":"response.output_item.added","output_index":0,"item":'
    '{"type":"message","role":"assistant","id":"msg-1","content":[]}}\n\n'
    "event: response.output_text.delta\n"
    'data: {"type":"response.output_text.delta","item_id":"msg-1","output_index":0,'
    '"content_index":0,"delta":"one two "}\n\n'
    "event: response.output_text.delta\n"
    'data: {"type":"response.output_text.delta","item_id":"msg-1","output_index":0,'
    '"content_index":0,"delta":"three "}\n\n'
    "event: response.output_text.delta\n"
    'data: {"type":"response.output_text.delta","item_id":"msg-1","output_index":0,'
    '"content_index":0,"delta":"four"}\n\n'
    "event: response.output_item.done\n"
    'data: {"type":"response.output_item.done","output_index":0,"item":'
    '{"type":"message","role":"assistant","id":"msg-1","content":'
    '[{"type":"output_text","text":"one two three four"}]}}\n\n'
    "event: response.completed\n"
    'data: {"type":"response.completed","response":{"id":"resp-1","usage":'
    '{"input_tokens":10,"input_tokens_details":null,"output_tokens":4,'
    '"output_tokens_details":null,"total_tokens":14}}}\n\n'
)


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client that sends only the headers a test gives it (plus Host, Content-Length)."""
    async with aiohttp.ClientSession(skip_auto_headers=SKIP_HEADERS) as session:
        yield session


def parse_sse(text: str) -> list[tuple[str, Any]]:
    """Split an SSE body into (event type, parsed data) pairs, checking the framing."""
    assert text.endswith("\n\n")
    events = []
    for block in text[:-2].split("\n\n"):
        event_line, data_line = block.split("\n")
        assert event_line.startswith("event: ")
        assert data_line.startswith("data: ")
        events.append((event_line.removeprefix("event: "), orjson.loads(data_line[6:])))
    return events


async def post_responses(
    client: aiohttp.ClientSession, backend: FakeBackend, path: str = "/v1/responses"
) -> str:
    """POST a Responses request to ``path`` like the app-server does; return the SSE body."""
    async with client.post(
        f"{backend.url}{path}", json={"model": "mock-model", "stream": True}
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        return await response.text()


@pytest.mark.parametrize("path", ["/v1/responses", CHATGPT_RESPONSES])
async def test_text_reply_exact_sse_stream(
    backend: FakeBackend, client: aiohttp.ClientSession, path: str
) -> None:
    """A text reply streams created, item added, three deltas, item done, completed (both modes)."""
    backend.script(Reply.text("one two three four"))
    assert await post_responses(client, backend, path) == ONE_TWO_THREE_FOUR_SSE


async def test_function_call_reply_events(
    backend: FakeBackend, client: aiohttp.ClientSession
) -> None:
    """A function_call reply streams the call item with its arguments as a JSON string."""
    backend.script(Reply.function_call(name="exec_command", arguments=EXEC_ARGS, call_id="c-9"))
    arguments = '{"cmd":"touch x","sandbox_permissions":"require_escalated","justification":"why"}'
    call = {
        "type": "function_call",
        "id": "fc-1",
        "call_id": "c-9",
        "name": "exec_command",
        "arguments": arguments,
    }
    assert parse_sse(await post_responses(client, backend)) == [
        ("response.created", {"type": "response.created", "response": {"id": "resp-1"}}),
        (
            "response.output_item.added",
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {**call, "arguments": ""},
            },
        ),
        (
            "response.output_item.done",
            {"type": "response.output_item.done", "output_index": 0, "item": call},
        ),
        (
            "response.completed",
            {
                "type": "response.completed",
                "response": {
                    "id": "resp-1",
                    "usage": {
                        "input_tokens": 10,
                        "input_tokens_details": None,
                        "output_tokens": 20,
                        "output_tokens_details": None,
                        "total_tokens": 30,
                    },
                },
            },
        ),
    ]


async def test_script_queue_order_then_default(
    backend: FakeBackend, client: aiohttp.ClientSession
) -> None:
    """Scripted replies are served oldest first, one per POST, then the default reply."""
    backend.script(Reply.text("first"), Reply.function_call(name="f", arguments="{}"))
    backend.script(Reply.text("third"))
    done = []
    for _ in range(5):
        events = parse_sse(await post_responses(client, backend))
        done.append(events[-2][1]["item"])
    assert done == [
        {
            "type": "message",
            "role": "assistant",
            "id": "msg-1",
            "content": [{"type": "output_text", "text": "first"}],
        },
        {
            "type": "function_call",
            "id": "fc-2",
            "call_id": "call-1",
            "name": "f",
            "arguments": "{}",
        },
        {
            "type": "message",
            "role": "assistant",
            "id": "msg-3",
            "content": [{"type": "output_text", "text": "third"}],
        },
        {
            "type": "message",
            "role": "assistant",
            "id": "msg-4",
            "content": [{"type": "output_text", "text": DEFAULT_REPLY}],
        },
        {
            "type": "message",
            "role": "assistant",
            "id": "msg-5",
            "content": [{"type": "output_text", "text": DEFAULT_REPLY}],
        },
    ]


async def test_custom_default_reply(client: aiohttp.ClientSession) -> None:
    """The reply given to the constructor is what an empty script answers with."""
    async with FakeBackend(reply="custom words") as backend:
        events = parse_sse(await post_responses(client, backend))
    assert [payload["delta"] for kind, payload in events if kind.endswith("delta")] == [
        "custom ",
        "words",
    ]


async def test_request_log_in_memory_and_file(
    tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    """Each request is logged in memory and as a JSON line; only Authorization is redacted."""
    log_path = tmp_path / "backend.jsonl"
    attestation = ATTESTATION
    async with FakeBackend(log_path=log_path) as backend:
        async with client.post(
            f"{backend.url}/v1/responses?a=1&b=two",
            data=b'{"model":"mock-model"}',
            headers={"Authorization": "Bearer secret", "x-oai-attestation": attestation},
        ) as response:
            await response.read()
        async with client.get(f"{backend.url}/v1/models", data=b"plain text") as response:
            await response.read()
        async with client.get(f"{backend.url}/healthz") as response:
            await response.read()
        records = backend.requests
    host = f"127.0.0.1:{backend.port}"
    assert [record.pop("t") >= 0 for record in records] == [True, True, True]
    assert records == [
        {
            "method": "POST",
            "path": "/v1/responses",
            "query": {"a": "1", "b": "two"},
            "headers": {
                "Host": host,
                "Authorization": "<redacted>",
                "x-oai-attestation": attestation,
                "Content-Length": "22",
            },
            "body": {"model": "mock-model"},
        },
        {
            "method": "GET",
            "path": "/v1/models",
            "query": {},
            "headers": {"Host": host, "Content-Length": "10"},
            "body": "plain text",
        },
        {"method": "GET", "path": "/healthz", "query": {}, "headers": {"Host": host}, "body": None},
    ]
    lines = [orjson.loads(line) for line in log_path.read_bytes().splitlines()]
    assert [line.pop("t") >= 0 for line in lines] == [True, True, True]
    assert lines == records


async def test_log_file_is_appended(tmp_path: Path, client: aiohttp.ClientSession) -> None:
    """A second backend on the same log path appends instead of truncating."""
    log_path = tmp_path / "backend.jsonl"
    log_path.write_bytes(b'{"earlier":true}\n')
    async with FakeBackend(log_path=log_path) as backend, client.get(f"{backend.url}/x") as reply:
        await reply.read()
    first, second = log_path.read_bytes().splitlines()
    assert first == b'{"earlier":true}'
    assert orjson.loads(second)["path"] == "/x"


async def test_unknown_path_is_404(backend: FakeBackend, client: aiohttp.ClientSession) -> None:
    """Unknown paths and wrong methods get 404 with a short text body and use no reply."""
    backend.script(Reply.text("kept"))
    async with client.get(f"{backend.url}/backend-api/ps/plugins/installed") as response:
        assert (response.status, await response.text()) == (
            404,
            "not found: GET /backend-api/ps/plugins/installed\n",
        )
    # A plain GET of a Responses path (no websocket upgrade) is not found either.
    async with client.get(f"{backend.url}/v1/responses") as response:
        assert (response.status, await response.text()) == (404, "not found: GET /v1/responses\n")
    async with client.get(f"{backend.url}{CHATGPT_RESPONSES}") as response:
        assert response.status == 404
    async with client.post(f"{backend.url}/backend-api/codex/models") as response:
        assert response.status == 404
    assert [(r["method"], r["path"]) for r in backend.requests] == [
        ("GET", "/backend-api/ps/plugins/installed"),
        ("GET", "/v1/responses"),
        ("GET", CHATGPT_RESPONSES),
        ("POST", "/backend-api/codex/models"),
    ]
    events = parse_sse(await post_responses(client, backend))
    assert events[-2][1]["item"]["content"] == [{"type": "output_text", "text": "kept"}]


async def test_close_twice() -> None:
    """close() twice is harmless and the port no longer accepts connections."""
    backend = FakeBackend()
    await backend.start()
    url = backend.url
    await backend.close()
    await backend.close()
    with pytest.raises(RuntimeError, match="not started"):
        _ = backend.url
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"{url}/v1/responses")


async def test_serve_backend_prints_url_and_stops_on_cancel(
    capsys: pytest.CaptureFixture[str], client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """serve_backend prints one 'listening on' line, serves, and closes when cancelled."""
    task = asyncio.create_task(
        serve_backend("127.0.0.1", 0, "cli reply", tmp_path / "log.jsonl"), name="serve"
    )
    output = ""
    for _ in range(200):
        output += capsys.readouterr().out
        if output:
            break
        await asyncio.sleep(0.01)
    assert output.startswith("listening on http://127.0.0.1:")
    assert output.count("\n") == 1
    url = output.removeprefix("listening on ").strip()
    async with client.post(f"{url}/v1/responses", json={}) as response:
        events = parse_sse(await response.text())
    assert events[-2][1]["item"]["content"] == [{"type": "output_text", "text": "cli reply"}]
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    with pytest.raises(aiohttp.ClientConnectionError):
        await client.get(f"{url}/v1/responses")
    assert len((tmp_path / "log.jsonl").read_bytes().splitlines()) == 1


# --- ChatGPT mode -------------------------------------------------------------------------


async def test_chatgpt_models_and_accounts_check(
    backend: FakeBackend, client: aiohttp.ClientSession
) -> None:
    """The model catalog is empty; the accounts check names the fake account, unconstrained."""
    async with client.get(
        f"{backend.url}/backend-api/codex/models?client_version=0.169.0"
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        assert await response.text() == '{"models":[]}'
    async with client.get(f"{backend.url}/backend-api/wham/accounts/check") as response:
        assert response.status == 200
        assert await response.json() == {
            "accounts": [
                {
                    "id": "acct-1",
                    "plan_type": "pro",
                    "structure": "personal",
                    "workspace_backend_origin": "NO_CONSTRAINT",
                    "account_routing_override": "NO_CONSTRAINT",
                }
            ],
            "account_ordering": ["acct-1"],
            "default_account_id": "acct-1",
        }
    assert [(r["method"], r["path"], r["query"]) for r in backend.requests] == [
        ("GET", "/backend-api/codex/models", {"client_version": "0.169.0"}),
        ("GET", "/backend-api/wham/accounts/check", {}),
    ]


async def test_token_refresh_endpoint(backend: FakeBackend, client: aiohttp.ClientSession) -> None:
    """POST /oauth/token answers fresh tokens; the grant is logged, Authorization redacted."""
    grant = {
        "client_id": "app_test",
        "grant_type": "refresh_token",
        "refresh_token": "refresh-x",
    }
    assert backend.refresh_token_url == f"{backend.url}/oauth/token"
    async with client.post(
        backend.refresh_token_url, json=grant, headers={"Authorization": "Bearer old"}
    ) as response:
        assert response.status == 200
        tokens = await response.json()
    assert tokens == {
        "id_token": tokens["id_token"],
        "access_token": "access-x",
        "refresh_token": "refresh-x",
    }
    assert decode_jwt_payload(tokens["id_token"]) == {
        "email": "user@example.com",
        "https://api.openai.com/auth": {
            "chatgpt_plan_type": "pro",
            "chatgpt_user_id": "user-1",
            "chatgpt_account_id": "acct-1",
        },
    }
    (record,) = backend.requests
    assert (record["method"], record["path"], record["body"]) == ("POST", "/oauth/token", grant)
    assert record["headers"]["Authorization"] == "<redacted>"


async def test_chatgpt_post_logs_attestation_verbatim(
    backend: FakeBackend, client: aiohttp.ClientSession
) -> None:
    """The scoped POST is logged with x-oai-attestation verbatim and Authorization redacted."""
    headers = {
        "Authorization": "Bearer access-x",
        "chatgpt-account-id": "acct-1",
        "x-oai-attestation": ATTESTATION,
    }
    async with client.post(
        f"{backend.url}{CHATGPT_RESPONSES}", data=b'{"model":"mock-model"}', headers=headers
    ) as response:
        events = parse_sse(await response.text())
    assert events[-1][1]["response"]["id"] == "resp-1"
    (record,) = backend.requests
    assert record["body"] == {"model": "mock-model"}
    assert record["headers"] == {
        "Host": f"127.0.0.1:{backend.port}",
        "Authorization": "<redacted>",
        "chatgpt-account-id": "acct-1",
        "x-oai-attestation": ATTESTATION,
        "Content-Length": "22",
    }


async def test_responses_websocket_prewarm_then_replies(
    backend: FakeBackend, client: aiohttp.ClientSession
) -> None:
    """Over the websocket: prewarm gets an empty response, then each create a scripted reply."""
    backend.script(Reply.text("one two three four"))
    prewarm = {"type": "response.create", "model": "mock-model", "input": [], "generate": False}
    create = {"type": "response.create", "model": "mock-model", "previous_response_id": "resp-1"}
    async with client.ws_connect(
        f"{backend.url}{CHATGPT_RESPONSES}",
        headers={"Authorization": "Bearer access-x", "x-oai-attestation": ATTESTATION},
    ) as ws:
        await ws.send_str(orjson.dumps(prewarm).decode())
        assert [await ws.receive_str() for _ in range(2)] == [
            '{"type":"response.created","response":{"id":"resp-1"}}',
            '{"type":"response.completed","response":{"id":"resp-1"}}',
        ]
        await ws.send_str(orjson.dumps(create).decode())
        # One frame per event: exactly the data: line of the SSE stream, for resp-2.
        expected = [
            line.removeprefix("data: ").replace("-1", "-2")
            for line in ONE_TWO_THREE_FOUR_SSE.splitlines()
            if line.startswith("data: ")
        ]
        assert [await ws.receive_str() for _ in range(7)] == expected
        # response.processed gets no answer: the next frame answers the following request.
        await ws.send_str('{"type":"response.processed","response_id":"resp-2"}')
        await ws.send_str(orjson.dumps(create).decode())
        frames = [orjson.loads(await ws.receive_str()) for _ in range(7)]
        assert frames[0] == {"type": "response.created", "response": {"id": "resp-3"}}
        assert frames[-2]["item"]["content"][0]["text"] == DEFAULT_REPLY
    upgrade, *messages = backend.requests
    assert (upgrade["method"], upgrade["path"], upgrade["body"]) == ("GET", CHATGPT_RESPONSES, None)
    assert upgrade["headers"]["Upgrade"] == "websocket"
    assert upgrade["headers"]["x-oai-attestation"] == ATTESTATION
    assert upgrade["headers"]["Authorization"] == "<redacted>"
    assert [(m["method"], m["path"], m["query"], m["headers"]) for m in messages] == [
        ("WS", CHATGPT_RESPONSES, {}, {})
    ] * 4
    assert [m["body"] for m in messages] == [
        prewarm,
        create,
        {"type": "response.processed", "response_id": "resp-2"},
        create,
    ]


async def test_responses_websocket_bad_frames_get_error_event(
    backend: FakeBackend, client: aiohttp.ClientSession
) -> None:
    """Non-JSON, unknown types and binary frames get a 400 error event and use no reply."""
    backend.script(Reply.text("kept"))
    error = {
        "type": "error",
        "status": 400,
        "error": {
            "type": "invalid_request_error",
            "message": "rpctape's fake backend expects a JSON text frame of type "
            "response.create or response.processed",
        },
    }
    async with client.ws_connect(f"{backend.url}/v1/responses") as ws:
        for frame in ("not json", '{"type":"response.cancel"}', "[1]"):
            await ws.send_str(frame)
            assert orjson.loads(await ws.receive_str()) == error
        await ws.send_bytes(b'{"type":"response.create"}')
        assert orjson.loads(await ws.receive_str()) == error
    assert [m["body"] for m in backend.requests[1:]] == [
        "not json",
        {"type": "response.cancel"},
        [1],
        {"type": "response.create"},
    ]
    events = parse_sse(await post_responses(client, backend))
    assert events[0][1]["response"]["id"] == "resp-1"
    assert events[-2][1]["item"]["content"][0]["text"] == "kept"


async def test_close_with_open_websocket(client: aiohttp.ClientSession) -> None:
    """close() ends an open Responses websocket at once (1001) instead of waiting for it."""
    backend = FakeBackend()
    await backend.start()
    async with client.ws_connect(f"{backend.url}{CHATGPT_RESPONSES}") as ws:
        started = time.monotonic()
        await backend.close()
        assert time.monotonic() - started < 2
        message = await ws.receive()
        assert (message.type, message.data) == (aiohttp.WSMsgType.CLOSE, 1001)


def test_websocket_request_kind() -> None:
    """Frames are classified by type; generate false (only) makes a create a prewarm."""
    assert websocket_request_kind({"type": "response.create"}) is WsRequestKind.CREATE
    create_true = {"type": "response.create", "generate": True}
    assert websocket_request_kind(create_true) is WsRequestKind.CREATE
    prewarm = {"type": "response.create", "generate": False}
    assert websocket_request_kind(prewarm) is WsRequestKind.PREWARM
    processed = {"type": "response.processed", "response_id": "r"}
    assert websocket_request_kind(processed) is WsRequestKind.PROCESSED
    invalid_frames: list[Any] = [{"type": "other"}, {}, [], "text", None]
    for invalid in invalid_frames:
        assert websocket_request_kind(invalid) is WsRequestKind.INVALID


def test_prewarm_events_and_id_token() -> None:
    """A prewarm is created + completed without usage; the id_token carries the claims."""
    assert prewarm_events(4) == [
        ("response.created", {"type": "response.created", "response": {"id": "resp-4"}}),
        ("response.completed", {"type": "response.completed", "response": {"id": "resp-4"}}),
    ]
    assert decode_jwt_payload(fake_id_token()) == id_token_claims()
    claims = id_token_claims("acct-9", email="a@b.c", plan_type="plus", user_id="u-9")
    assert decode_jwt_payload(fake_id_token(claims)) == {
        "email": "a@b.c",
        "https://api.openai.com/auth": {
            "chatgpt_plan_type": "plus",
            "chatgpt_user_id": "u-9",
            "chatgpt_account_id": "acct-9",
        },
    }


def test_split_text_joins_back() -> None:
    """split_text cuts at word starts into at most three chunks that join to the input."""
    assert split_text("Hello from rpctape's fake backend.") == [
        "Hello from ",
        "rpctape's fake ",
        "backend.",
    ]
    assert split_text("one") == ["one"]
    assert split_text("") == []
    assert split_text("  a  b\n") == ["  a  ", "b\n"]
    text = "a b c d e f g"
    assert "".join(split_text(text, parts=5)) == text
    assert len(split_text(text, parts=5)) == 5


def test_reply_is_immutable_and_serializes_arguments() -> None:
    """Reply is frozen; function_call turns a mapping into a compact JSON string."""
    reply = Reply.function_call(name="exec_command", arguments={"cmd": "ls"})
    assert reply == Reply(
        kind=ReplyKind.FUNCTION_CALL,
        name="exec_command",
        arguments='{"cmd":"ls"}',
        call_id="call-1",
    )
    with pytest.raises(AttributeError):
        reply.name = "other"  # type: ignore[misc]
    assert Reply.text("hi") == Reply(kind=ReplyKind.TEXT, message="hi")


def test_response_events_empty_text_has_no_delta() -> None:
    """An empty text reply has no delta event and still one output token."""
    events = response_events(Reply.text(""), serial=7)
    assert [kind for kind, _ in events] == [
        "response.created",
        "response.output_item.added",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[-1][1]["response"]["usage"]["output_tokens"] == 1
    assert events[0][1] == {"type": "response.created", "response": {"id": "resp-7"}}


def test_response_events_stream_as_many_deltas_as_asked() -> None:
    """deltas=N cuts a text reply into at most N deltas, joining back to the text."""
    text = " ".join(f"part{n}" for n in range(1, 11))
    events = response_events(Reply.text(text), serial=1, deltas=10)
    chunks = [p["delta"] for name, p in events if name == "response.output_text.delta"]
    assert chunks == [f"part{n} " for n in range(1, 10)] + ["part10"]


def test_delta_pause_only_between_deltas() -> None:
    """delta_delay waits before every text delta but the first, never before other events."""
    events = response_events(Reply.text("a b c"), serial=1, deltas=3)
    names = [name for name, _ in events]
    assert names[2:5] == ["response.output_text.delta"] * 3
    assert [delta_pause(events, i, 0.1) for i in range(len(events))] == [
        0.0, 0.0, 0.0, 0.1, 0.1, 0.0, 0.0,
    ]  # fmt: skip
    assert [delta_pause(events, i, 0.0) for i in range(len(events))] == [0.0] * len(events)


def test_fake_backend_refuses_no_deltas_or_a_negative_delay() -> None:
    """deltas < 1 or delta_delay < 0 is a usage error naming both."""
    with pytest.raises(UsageError) as info:
        FakeBackend(deltas=0)
    assert str(info.value) == (
        "the fake backend needs deltas >= 1 and delta_delay >= 0 seconds, not 0 and 0.0"
    )
    with pytest.raises(UsageError):
        FakeBackend(delta_delay=-1)


async def test_refused_requests_get_401_then_the_script_goes_on(
    backend: FakeBackend, client: aiohttp.ClientSession
) -> None:
    """refuse(1): the next model POST gets 401 with a JSON error and uses no reply; the one
    after gets the first scripted reply (resp-1)."""
    backend.script(Reply.text("one two three four"))
    backend.refuse(1)
    async with client.post(f"{backend.url}/v1/responses", json={"model": "m"}) as response:
        assert response.status == 401
        assert await response.json() == {
            "error": {"message": "token expired", "code": "token_expired"}
        }
    assert await post_responses(client, backend) == ONE_TWO_THREE_FOUR_SSE
