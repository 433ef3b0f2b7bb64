"""Tests of proxy.backend: the fake Responses API backend, driven by a plain HTTP client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from proxy.backend import (
    DEFAULT_REPLY,
    FakeBackend,
    Reply,
    ReplyKind,
    response_events,
    serve_backend,
    split_text,
)

# Headers the client would add on its own; skipped so the logged headers are exactly known.
SKIP_HEADERS = frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"})

EXEC_ARGS = {"cmd": "touch x", "sandbox_permissions": "require_escalated", "justification": "why"}


@pytest.fixture
async def backend() -> AsyncIterator[FakeBackend]:
    """A started FakeBackend with the default reply, closed at teardown."""
    async with FakeBackend() as started:
        yield started


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


async def post_responses(client: aiohttp.ClientSession, backend: FakeBackend) -> str:
    """POST /v1/responses like the app-server does and return the SSE body."""
    async with client.post(
        f"{backend.url}/v1/responses", json={"model": "mock-model", "stream": True}
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        return await response.text()


async def test_text_reply_exact_sse_stream(
    backend: FakeBackend, client: aiohttp.ClientSession
) -> None:
    """A text reply streams created, item added, three deltas, item done, completed."""
    backend.script(Reply.text("one two three four"))
    body = await post_responses(client, backend)
    assert body == (
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
    attestation = '{"v":1,"s":0,"t":"v1.some-token"}'
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
    async with client.get(f"{backend.url}/backend-api/codex/models") as response:
        assert (response.status, await response.text()) == (
            404,
            "not found: GET /backend-api/codex/models\n",
        )
    async with client.get(f"{backend.url}/v1/responses") as response:
        assert (response.status, await response.text()) == (404, "not found: GET /v1/responses\n")
    assert [(r["method"], r["path"]) for r in backend.requests] == [
        ("GET", "/backend-api/codex/models"),
        ("GET", "/v1/responses"),
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
