"""Functional tests of proxy.recording_proxy (the library door on the session layer) with real
sockets against a scripted upstream."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import signal
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from websockets.asyncio.client import connect, unix_connect
from websockets.asyncio.server import ServerConnection, unix_serve
from websockets.exceptions import ConnectionClosed, InvalidStatus

from proxy import recording_proxy
from proxy.core.address import ListenAddress
from proxy.core.cassette import Cassette, frame_of, load
from proxy.core.rules import load_rules
from proxy.errors import UsageError
from proxy.wire.upstream import Transport, Upstream
from tests.faults import fail_writes_after
from tests.scripted_upstream import ScriptedUpstream

RelayFactory = Callable[..., AbstractAsyncContextManager[str]]


@pytest.fixture
def cassette_path(tmp_path: Path) -> Path:
    return tmp_path / "c.jsonl"


@pytest.fixture
def relay(upstream: ScriptedUpstream, cassette_path: Path) -> RelayFactory:
    """Factory: `async with relay(**options) as url` records to cassette_path."""

    def make(**options: Any) -> AbstractAsyncContextManager[str]:
        return recording_proxy(options.pop("upstream_url", upstream.url), cassette_path, **options)

    return make


def frames_of(tape: Cassette, conn: int) -> list[tuple[str, bytes]]:
    return [(e["dir"], frame_of(e)) for e in tape.frames(conn)]


def events(tape: Cassette, kind: str) -> list[dict[str, Any]]:
    return [e for e in tape.events if e["kind"] == kind]


async def test_frames_forwarded_verbatim_and_recorded(
    relay: RelayFactory, upstream: ScriptedUpstream, cassette_path: Path
) -> None:
    """Text frames pass unchanged both ways; the cassette reconstructs each byte for byte."""
    sent = [
        '{"id":1,"method":"initialize","params":{"clientInfo":{"name":"t","version":"0"}}}',
        '{ "id" : 2, "method":"x", "params": {"f": 1.50, "u": "\\u00e9"} }',
        '{"method":"initialized"}',
    ]
    async with relay() as url, connect(url) as ws:
        for frame in sent:
            await ws.send(frame)
        echoed = [await ws.recv() for _ in sent]
    assert echoed == sent
    assert upstream.received == [sent]
    tape = load(cassette_path)
    recorded = frames_of(tape, 1)
    assert [f for d, f in recorded if d == "c2s"] == [f.encode() for f in sent]
    assert [f for d, f in recorded if d == "s2c"] == [f.encode() for f in sent]
    assert [e["kind"] for e in tape.events] == ["open"] + ["text"] * 6 + ["close"]
    assert [e["raw"] for e in events(tape, "text") if "raw" in e] == [sent[1], sent[1]]


async def test_lone_surrogate_request_is_echoed_and_recorded_raw(
    relay: RelayFactory, upstream: ScriptedUpstream, cassette_path: Path
) -> None:
    """A request orjson refuses (a lone surrogate escape) goes through both ways and is kept
    as raw text; the scripted upstream echoes it instead of failing on it."""
    frame = '{"id":3,"method":"x","params":"\\ud800"}'
    async with relay() as url, connect(url) as ws:
        await ws.send(frame)
        assert await ws.recv() == frame
    assert upstream.received == [[frame]]
    texts = events(load(cassette_path), "text")
    assert [(e["dir"], e["type"], e["raw"], "msg" in e) for e in texts] == [
        ("c2s", "request", frame, False),
        ("s2c", "request", frame, False),
    ]


async def test_garbage_binary_batch_and_invalid_utf8(
    relay: RelayFactory, upstream: ScriptedUpstream, cassette_path: Path
) -> None:
    """Bad input is forwarded unchanged and recorded faithfully; the connection lives on."""
    sent: list[str | bytes] = [
        "not json",
        '{"hello":"world"}',
        '[{"id":1,"method":"a"},{"method":"b"}]',
        b"\xff\xfe\x00binary",
        "",
        '{"id":3,"method":"ok"}',
    ]
    async with relay() as url, connect(url) as ws:
        for frame in sent:
            await ws.send(frame)
        echoed = [await ws.recv() for _ in sent]
    assert echoed == sent
    tape = load(cassette_path)
    c2s = [e for e in tape.frames(1) if e["dir"] == "c2s"]
    assert [e.get("type", e["kind"]) for e in c2s] == [
        "invalid",
        "invalid",
        "batch",
        "binary",
        "invalid",
        "request",
    ]
    assert c2s[3]["b64"] == base64.b64encode(b"\xff\xfe\x00binary").decode()
    assert [frame_of(e) for e in c2s] == [f if isinstance(f, bytes) else f.encode() for f in sent]


async def test_concurrent_connections_keep_their_own_order(
    relay: RelayFactory, upstream: ScriptedUpstream, cassette_path: Path
) -> None:
    """Five clients at once: each has its own upstream connection and connection id."""

    async def client(n: int, url: str) -> list[str | bytes]:
        async with connect(url) as ws:
            for i in range(20):
                await ws.send(f'{{"id":{i},"method":"c{n}"}}')
            return [await ws.recv() for _ in range(20)]

    async with relay() as url:
        results = await asyncio.gather(*(client(n, url) for n in range(5)))
    for n, got in enumerate(results):
        assert got == [f'{{"id":{i},"method":"c{n}"}}' for i in range(20)]
    tape = load(cassette_path)
    assert sorted(tape.connections()) == [1, 2, 3, 4, 5]
    assert len(upstream.received) == 5
    for conn in tape.connections():
        methods = {e["method"] for e in tape.frames(conn)}
        assert len(methods) == 1
        ids = [e["msg"]["id"] for e in tape.frames(conn) if e["dir"] == "c2s"]
        assert ids == list(range(20))
    assert [e["seq"] for e in tape.events] == list(range(1, len(tape.events) + 1))


async def test_server_stream_arrives_in_order(relay: RelayFactory, cassette_path: Path) -> None:
    """A burst of server notifications keeps its order on the wire and in the cassette."""
    async with relay() as url, connect(url) as ws:
        await ws.send("!burst 500")
        got = [await ws.recv() for _ in range(500)]
    assert got == [f'{{"method":"n","params":{{"i":{i}}}}}' for i in range(500)]
    s2c = [e for e in load(cassette_path).frames(1) if e["dir"] == "s2c"]
    assert [e["msg"]["params"]["i"] for e in s2c] == list(range(500))


async def test_message_up_to_16_mib_passes(relay: RelayFactory, cassette_path: Path) -> None:
    """A message just under the app-server's 16 MiB limit is relayed and recorded whole."""
    big = '{"method":"big","params":{"s":"' + "x" * (16 * 1024 * 1024 - 64) + '"}}'
    async with relay() as url, connect(url, max_size=None) as ws:
        await ws.send(big)
        assert await ws.recv() == big
    assert frame_of(load(cassette_path).frames(1)[0]) == big.encode()


async def test_oversize_closes_with_1009(
    relay: RelayFactory, upstream: ScriptedUpstream, cassette_path: Path
) -> None:
    """A message over --max-size closes that connection with 1009, recorded as such."""
    async with relay(max_size=1024) as url, connect(url) as ws:
        await ws.send('{"method":"small"}')
        await ws.recv()
        await ws.send("x" * 2000)
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009
        await asyncio.wait_for(upstream.closed.wait(), 5)
    assert upstream.closes == [(1009, "frame with 2000 bytes exceeds limit of 1024 bytes")]
    close = events(load(cassette_path), "close")
    assert [(c["by"], c["code"], c["leg"]) for c in close] == [("proxy", 1009, "client")]
    assert close[0]["reason"] == "frame with 2000 bytes exceeds limit of 1024 bytes"


async def test_upstream_down_gives_502(tmp_path: Path, cassette_path: Path) -> None:
    """An unreachable upstream: the upgrade gets 502 naming it, the attempt is recorded."""
    dead = "ws://127.0.0.1:9"
    async with recording_proxy(dead, cassette_path) as url:
        with pytest.raises(InvalidStatus) as info:
            async with connect(url):
                pass
    response = info.value.response
    assert response.status_code == 502
    body = response.body.decode()
    assert body.startswith("rpctape: cannot reach upstream ws://127.0.0.1:9/: ")
    assert "Connect call failed" in body or "refused" in body
    (error,) = events(load(cassette_path), "error")
    assert (error["stage"], error["status"], error["upstream"]) == (
        "connect",
        502,
        "ws://127.0.0.1:9/",
    )
    assert error["message"] == body.removeprefix("rpctape: ").rstrip("\n")


async def test_upstream_vanishing_closes_client_with_1011(
    relay: RelayFactory, cassette_path: Path
) -> None:
    """The upstream drops TCP without a close frame: the client gets 1011 and a reason."""
    async with relay() as url, connect(url) as ws:
        await ws.send("!drop")
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (
        1011,
        "upstream connection dropped without a close frame",
    )
    (close,) = events(load(cassette_path), "close")
    assert (close["by"], close["code"], close["leg"], close["forwarded"]) == (
        "server",
        1006,
        "server",
        {"code": 1011, "reason": "upstream connection dropped without a close frame"},
    )


async def test_client_close_propagates_code_and_reason(
    relay: RelayFactory, upstream: ScriptedUpstream, cassette_path: Path
) -> None:
    """The client's close code and reason reach the upstream and the cassette."""
    async with relay() as url:
        ws = await connect(url)
        await ws.send('{"method":"initialized"}')
        await ws.recv()
        await ws.close(4001, "client done")
        await asyncio.wait_for(upstream.closed.wait(), 5)
    assert upstream.closes == [(4001, "client done")]
    (close,) = events(load(cassette_path), "close")
    assert (close["by"], close["code"], close["reason"]) == ("client", 4001, "client done")


async def test_upstream_close_propagates(relay: RelayFactory, cassette_path: Path) -> None:
    """The upstream's close code and reason reach the client."""
    async with relay() as url, connect(url) as ws:
        await ws.send("!close 4002 server done")
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (4002, "server done")
    (close,) = events(load(cassette_path), "close")
    assert (close["by"], close["code"], close["reason"]) == ("server", 4002, "server done")


async def test_origin_refused_unless_allowed(
    relay: RelayFactory, upstream: ScriptedUpstream
) -> None:
    """An Origin header gets 403 like the app-server; an allowed one passes, not forwarded."""
    async with relay() as url:
        with pytest.raises(InvalidStatus) as info:
            async with connect(url, origin="http://localhost"):  # type: ignore[arg-type]
                pass
        assert info.value.response.status_code == 403
        assert b"--allow-origin" in info.value.response.body
    assert upstream.headers == []
    async with (
        relay(allow_origins=frozenset({"http://localhost"}), overwrite=True) as url,
        connect(url, origin="http://localhost") as ws,  # type: ignore[arg-type]
    ):
        await ws.send("{}")
        assert await ws.recv() == "{}"
    assert "Origin" not in upstream.headers[0]


async def test_token_auth(
    relay: RelayFactory, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    """With a token, clients need the bearer header (401 otherwise); it is not passed on."""
    (tmp_path / "token").write_text("s3cret\n")
    async with relay(token_file=tmp_path / "token") as url:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            with pytest.raises(InvalidStatus) as info:
                async with connect(url, additional_headers=headers):
                    pass
            assert info.value.response.status_code == 401
        async with connect(url, additional_headers={"Authorization": "Bearer s3cret"}) as ws:
            await ws.send("{}")
            assert await ws.recv() == "{}"
    assert len(upstream.headers) == 1
    assert "Authorization" not in upstream.headers[0]


async def test_authorization_and_subprotocol_passed_upstream(cassette_path: Path) -> None:
    """Without a token, the client's Authorization, path and subprotocols go upstream."""
    async with (
        ScriptedUpstream(subprotocols=["p2", "p1"]) as upstream,
        recording_proxy(upstream.url, cassette_path) as url,
        connect(
            url + "/some/path?q=1",
            additional_headers={"Authorization": "Bearer user-token", "X-Extra": "1"},
            subprotocols=["p1"],  # type: ignore[list-item]
        ) as ws,
    ):
        assert ws.subprotocol == "p1"
        await ws.send("{}")
        await ws.recv()
    assert upstream.headers[0]["Authorization"] == "Bearer user-token"
    assert upstream.headers[0]["X-Extra"] == "1"
    assert upstream.headers[0]["Sec-WebSocket-Protocol"] == "p1"
    assert upstream.paths == ["/some/path?q=1"]
    (opened,) = events(load(cassette_path), "open")
    assert opened["headers"]["Authorization"].startswith("<redacted:")
    assert opened["subprotocol"] == "p1"
    assert opened["path"] == "/some/path?q=1"
    assert opened["upstream"] == upstream.url + "/some/path?q=1"


async def test_health_endpoints(relay: RelayFactory) -> None:
    """GET /readyz and /healthz answer 200 with an empty body, like the app-server."""
    async with relay() as url, aiohttp.ClientSession() as http:
        base = url.replace("ws://", "http://")
        for path in ("/readyz", "/healthz"):
            async with http.get(base + path) as response:
                assert (response.status, await response.read()) == (200, b"")


async def test_shutdown_closes_connections_cleanly(
    relay: RelayFactory, upstream: ScriptedUpstream, cassette_path: Path
) -> None:
    """Leaving the relay closes open clients with 1001 and records it."""
    async with relay() as url:
        ws = await connect(url)
        await ws.send("{}")
        await ws.recv()
    with pytest.raises(ConnectionClosed) as info:
        await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1001
    await asyncio.wait_for(upstream.closed.wait(), 5)
    assert upstream.closes == [(1001, "rpctape shutting down")]
    (close,) = events(load(cassette_path), "close")
    assert (close["by"], close["code"], close["reason"]) == ("proxy", 1001, "rpctape shutting down")


async def test_fragmented_message_is_relayed_whole(
    relay: RelayFactory, upstream: ScriptedUpstream, cassette_path: Path
) -> None:
    """A message sent in fragments is recorded and forwarded as one message."""
    async with relay() as url, connect(url) as ws:
        await ws.send(['{"method":', '"frag",', '"params":{}}'])
        assert await ws.recv() == '{"method":"frag","params":{}}'
    assert upstream.received == [['{"method":"frag","params":{}}']]
    (first, _) = load(cassette_path).frames(1)
    assert (first["method"], frame_of(first)) == ("frag", b'{"method":"frag","params":{}}')


async def test_invalid_utf8_text_closes_with_1007(
    relay: RelayFactory, upstream: ScriptedUpstream, cassette_path: Path
) -> None:
    """A text frame that is not UTF-8 fails that connection with 1007; nothing is forwarded."""
    async with relay() as url, connect(url) as ws:
        await ws.send('{"method":"ok"}')
        await ws.recv()
        await ws.send(b"\xff\xfe not utf-8", text=True)
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1007
        await asyncio.wait_for(upstream.closed.wait(), 5)
    assert upstream.received == [['{"method":"ok"}']]
    assert upstream.closes == [(1007, "invalid UTF-8 in a text message")]
    (close,) = events(load(cassette_path), "close")
    assert (close["by"], close["code"], close["reason"]) == (
        "proxy",
        1007,
        "invalid UTF-8 in a text message",
    )


RULES_TOML = """
[[rules]]
name = "answer model/list"
dir = "c2s"
method = "model/list"
action = "reply"
result = { data = [] }

[[rules]]
name = "ask the server"
dir = "c2s"
method = "initialized"
action = "inject"
to = "server"
message = { id = "auto", method = "config/read", params = {} }

[[rules]]
name = "hang up"
dir = "c2s"
method = "bye"
action = "close"
code = 4000
reason = "rule says bye"
"""


async def test_rules_file_through_the_relay(
    upstream: ScriptedUpstream, cassette_path: Path, tmp_path: Path
) -> None:
    """reply to the client, inject to the server (its answer hidden), close: all recorded."""
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(RULES_TOML)
    rules = tuple(load_rules([rules_file]))
    async with (
        recording_proxy(upstream.url, cassette_path, rules=rules) as url,
        connect(url) as ws,
    ):
        await ws.send('{"id":7,"method":"model/list","params":{}}')
        assert await ws.recv() == '{"id":7,"result":{"data":[]}}'
        await ws.send('{"method":"initialized"}')
        assert await ws.recv() == '{"method":"initialized"}'
        await ws.send('{"id":8,"method":"x"}')
        assert await ws.recv() == '{"id":8,"method":"x"}'  # config/read's answer was hidden
        await ws.send('{"method":"bye"}')
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
        assert info.value.rcvd is not None
        assert (info.value.rcvd.code, info.value.rcvd.reason) == (4000, "rule says bye")
    assert upstream.received[0][:3] == [
        '{"method":"initialized"}',
        '{"id":"rpctape-1","method":"config/read","params":{}}',
        '{"id":8,"method":"x"}',
    ]
    tape = load(cassette_path)
    by_seq = {e["seq"]: e for e in tape.frames()}
    injected = [e for e in by_seq.values() if e.get("origin") == "rpctape"]
    assert [(e["dir"], e["rule"], e.get("method") or e.get("response_to")) for e in injected] == [
        ("s2c", "answer model/list", "model/list"),
        ("c2s", "ask the server", "config/read"),
    ]
    (echo,) = [e for e in by_seq.values() if e.get("hidden")]
    assert (echo["dir"], echo["msg"], echo["forwarded"], echo["response_to"]) == (
        "s2c",
        {"id": "rpctape-1", "result": {"config": {}}},
        False,
        "config/read",
    )
    (close,) = [e for e in tape.events if e["kind"] == "close"]
    assert (close["by"], close["code"], close["reason"]) == ("proxy", 4000, "rule says bye")


def test_upstream_forms(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """ws://, unix://PATH, unix:// (the default control socket) and a command."""
    monkeypatch.setenv("CODEX_HOME", str(tmp_path))
    assert Upstream.parse("ws://127.0.0.1:4222") == Upstream(
        Transport.WEBSOCKET, "ws://127.0.0.1:4222"
    )
    assert Upstream.parse("unix:///run/a.sock") == Upstream(
        Transport.UNIX, "unix:///run/a.sock", socket="/run/a.sock"
    )
    default = f"{tmp_path}/app-server-control/app-server-control.sock"
    assert Upstream.parse("unix://") == Upstream(
        Transport.UNIX, f"unix://{default}", socket=default
    )
    assert Upstream.parse(None, ["codex", "app-server", "--x", "a b"]) == Upstream(
        Transport.STDIO,
        "stdio:codex app-server --x 'a b'",
        command=("codex", "app-server", "--x", "a b"),
    )
    for bad, message in [
        ("http://x", "--upstream must be a ws:// URL or unix://PATH"),
        ("ws://127.0.0.1:99999", "the port must be a number from 1 to 65535"),
        (None, "give --upstream ws://HOST:PORT or unix://PATH, or -- COMMAND"),
    ]:
        with pytest.raises(UsageError, match=re.escape(message)):
            Upstream.parse(bad)
    with pytest.raises(UsageError, match="either --upstream or a command"):
        Upstream.parse("ws://x:1", ["codex"])


async def test_listen_and_upstream_on_unix_sockets(tmp_path: Path) -> None:
    """The relay listens on a unix socket and relays to a websocket server on another."""
    upstream_sock, listen_sock = str(tmp_path / "up.sock"), str(tmp_path / "rpctape.sock")

    async def echo(ws: ServerConnection) -> None:
        async for frame in ws:
            await ws.send(frame)

    async with unix_serve(echo, upstream_sock):
        cassette = tmp_path / "c.jsonl"
        async with recording_proxy(
            f"unix://{upstream_sock}", cassette, listen=ListenAddress.parse(f"unix://{listen_sock}")
        ) as url:
            assert url == f"unix://{listen_sock}"
            async with unix_connect(listen_sock, uri="ws://localhost/x") as ws:
                await ws.send('{"method":"hi"}')
                assert await ws.recv() == '{"method":"hi"}'
    assert not Path(listen_sock).exists()
    tape = load(cassette)
    assert (tape.header["transport"], tape.header["upstream"]) == (
        "unix",
        f"unix://{upstream_sock}",
    )
    assert [frame_of(e) for e in tape.frames()] == [b'{"method":"hi"}'] * 2


WRITE_FAILED = "rpctape: cannot write cassette c.jsonl: No space left on device (errno 28)"


async def test_cassette_write_failure_closes_clients_and_refuses_new_ones(
    monkeypatch: pytest.MonkeyPatch, upstream: ScriptedUpstream, cassette_path: Path
) -> None:
    """The disk fills on the 6th write: that frame is not forwarded; both clients (also the
    idle one) and their upstream connections get 1011 naming the error; a new upgrade and
    /readyz get 503 with the reason; the cassette keeps every line written before."""
    accepted = fail_writes_after(monkeypatch, 5)  # header, 2 opens, "a" both ways
    async with recording_proxy(upstream.url, cassette_path) as url:
        first, idle = await connect(url), await connect(url)
        await first.send('{"method":"a"}')
        assert await first.recv() == '{"method":"a"}'
        await first.send('{"method":"b"}')
        for ws in (first, idle):
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None
            assert (info.value.rcvd.code, info.value.rcvd.reason) == (1011, WRITE_FAILED)
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url):
                pass
        async with aiohttp.ClientSession() as http:
            base = url.replace("ws://", "http://")
            async with http.get(base + "/readyz") as ready:
                assert ready.status == 503
                assert "cannot write cassette" in await ready.text()
            async with http.get(base + "/healthz") as alive:
                assert alive.status == 200
        while len(upstream.closes) < 2:
            await asyncio.wait_for(upstream.closed.wait(), 5)
            upstream.closed.clear()
    assert refused.value.response.status_code == 503
    assert refused.value.response.body.decode() == (
        f"rpctape: cannot write cassette {cassette_path}: No space left on device (errno 28); "
        "frames from now on cannot be recorded\n"
    )
    assert upstream.received == [['{"method":"a"}'], []]
    assert upstream.closes == [(1011, WRITE_FAILED), (1011, WRITE_FAILED)]
    tape = load(cassette_path)
    assert len(accepted) == 5
    assert [(e["kind"], e.get("dir")) for e in tape.events] == [
        ("open", None), ("open", None), ("text", "c2s"), ("text", "s2c")
    ]  # fmt: skip


async def test_write_failure_with_a_command_upstream(
    monkeypatch: pytest.MonkeyPatch, cassette_path: Path
) -> None:
    """record -- COMMAND: the frame that cannot be recorded never reaches the child; the
    client gets 1011 with the reason and the child is stopped."""
    fail_writes_after(monkeypatch, 3)  # header, open, "a"
    echo = "import sys\nfor line in sys.stdin: print(line, end='', flush=True)"
    command = (sys.executable, "-c", echo)
    async with recording_proxy(None, cassette_path, command=command) as url, connect(url) as ws:
        await ws.send('{"method":"a"}')  # recorded, forwarded; the echo cannot be
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (1011, WRITE_FAILED)
    assert [e["kind"] for e in load(cassette_path).events] == ["open", "text"]


async def test_full_tmpfs_with_rpctape_record(
    tiny_tmpfs: Path, upstream: ScriptedUpstream
) -> None:
    """A real full disk under `rpctape record`: the client gets 1011 and the reason, a new
    upgrade gets 503, SIGTERM ends it with status 74 and stderr has exactly one error line."""
    cassette = tiny_tmpfs / "c.jsonl"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "record", "--cassette", str(cassette),
        "--listen", "ws://127.0.0.1:0", "--upstream", upstream.url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        url = line.decode().split()[-1]
        sent = 0
        with pytest.raises(ConnectionClosed) as info:
            async with connect(url) as ws:
                while True:  # 64 KiB fill up after some 30 frames of 2 KB each way
                    await ws.send('{"method":"fill","params":"' + "x" * 2000 + '"}')
                    await ws.recv()
                    sent += 1
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url):
                pass
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 10)  # a hang guard, not a timing
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert 10 < sent < 40
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (1011, WRITE_FAILED)
    assert refused.value.response.status_code == 503
    assert proc.returncode == 74
    assert err.decode().splitlines() == [
        f"rpctape: error: cannot write cassette {cassette}: No space left on device (errno 28); "
        "frames from now on cannot be recorded. Clients are refused (HTTP 503) until rpctape "
        "is stopped"
    ]
    assert out.decode().endswith(f"to {cassette} (stopped at the write error)\n")
    tape = load(cassette)  # every whole line is there; the torn last one is ignored
    assert [frame_of(e) for e in tape.frames(1) if e["dir"] == "c2s"][:sent] == [
        ('{"method":"fill","params":"' + "x" * 2000 + '"}').encode()
    ] * sent


MANY = Path(__file__).resolve().parent.parent / "bench" / "many_connections.py"


async def test_many_connections_all_frames_arrive_and_are_recorded() -> None:
    """bench/many_connections.py, small: 20 clients x 100 requests through `rpctape record`
    at once: every answer arrives, and every connection is recorded byte for byte."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(MANY), "--connections", "20", "--frames", "100", "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 100)
    assert proc.returncode == 0, err.decode()
    report = json.loads(out)
    assert report["direct_all_answered"] and report["rpctape_all_answered"]
    assert report["connections_recorded_exactly"] == 20
    assert report["frames_recorded"] == 2 * 20 * 100
