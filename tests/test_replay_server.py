"""Functional tests of replay on the session layer (proxy.ReplayServer, `rpctape replay`) with
real sockets."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect, unix_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from proxy import ReplayServer, recording_proxy, replay_server
from proxy.codex.appserver import AppServer
from proxy.codex.backend import FakeBackend
from proxy.codex.client import ClientOptions, scripted_session
from proxy.core.cassette import Cassette, frame_of, load
from proxy.core.jsonrpc import Direction
from proxy.core.replay_report import ReplayMismatch
from proxy.errors import CassetteNotFound, UsageError
from tests.faults import fail_writes_after
from tests.helpers import (
    CASSETTES,
    REPO,
    C,
    S,
    Script,
    live_exchange,
    write_tape,
)
from tests.scripted_upstream import ScriptedUpstream

DEAD_UPSTREAM = "ws://127.0.0.1:9"





async def recv_all(ws: ClientConnection, count: int) -> list[bytes]:
    """``count`` frames as bytes, each within 5 seconds."""
    frames = []
    for _ in range(count):
        frame = await asyncio.wait_for(ws.recv(), 5)
        frames.append(frame.encode() if isinstance(frame, str) else frame)
    return frames





def client_for(url: str) -> connect:
    """A websockets client for ``ws://HOST:PORT`` or ``unix:///PATH``."""
    if url.startswith("unix://"):
        return unix_connect(url.removeprefix("unix://"), max_size=None)
    return connect(url, max_size=None)


async def drive_like_the_recording(url: str, tape: Cassette, conn: int) -> int:
    """Send the recorded client frames with other ids and traces; check every reply exactly.

    Returns how many server frames were checked.
    """
    checked = 0
    async with client_for(url) as ws:
        for expected, message in live_exchange(tape, conn):
            assert await recv_all(ws, len(expected)) == expected
            checked += len(expected)
            if message is not None:
                await ws.send(message.decode())
    return checked


@pytest.mark.parametrize("cassette", CASSETTES, ids=[p.stem for p in CASSETTES])
async def test_real_cassette_replays_exactly_to_other_ids(cassette: Path) -> None:
    """Each real cassette: another id type and a trace get exactly the recorded results."""
    tape = load(cassette)
    server = replay_server(cassette, strict=True)
    async with server as url:
        checked = [await drive_like_the_recording(url, tape, c) for c in tape.connections()]
    assert checked == [
        len([e for e in tape.frames(c) if e["dir"] == "s2c"]) for c in tape.connections()
    ]
    assert server.report.clean
    assert server.report.render().splitlines()[0] == (
        f"rpctape replay report for {cassette}: 1 live connection(s), 0 miss(es), "
        "0 recorded client message(s) not replayed, 0 recorded server message(s) not sent"
    )


def test_the_real_cassettes_are_there() -> None:
    """The five real cassettes of cassettes/README.md exist."""
    assert [p.name for p in CASSETTES] == [
        "attestation.jsonl",
        "command-approval.jsonl",
        "initialize-model-list-config.jsonl",
        "turn-streamed.jsonl",
        "two-turns.jsonl",
    ]


async def test_wrong_request_gets_the_explanatory_error() -> None:
    """An initialize with another client name gets error -32099 naming the differing field."""
    cassette = REPO / "cassettes" / "initialize-model-list-config.jsonl"
    seqs = {e.get("method"): e["seq"] for e in load(cassette).frames() if e["dir"] == "c2s"}
    request = {
        "id": "x",
        "method": "initialize",
        "params": {"clientInfo": {"name": "someone-else", "version": "0.1.0"}},
    }
    async with replay_server(cassette, match_on="exact") as url, connect(url) as ws:
        await ws.send(orjson.dumps(request).decode())
        reply = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
    assert reply["id"] == "x"
    assert reply["error"]["code"] == -32099
    assert reply["error"]["message"] == (
        "rpctape: no recorded match for request initialize "
        "(live connection 1, recorded connection 1, client message 1)\n"
        "closest recorded client messages:\n"
        f"- seq {seqs['initialize']} request initialize, next in order: "
        '/params/clientInfo/name: got "someone-else", recorded "rpctape-client"\n'
        f'- seq {seqs["model/list"]} request model/list: method differs: got "initialize", '
        'recorded "model/list"; /params/clientInfo: got {"name":"someone-else","version":"0.1..., '
        "recorded (absent)\n"
        f"- seq {seqs['config/read']} request config/read: method differs: got "
        '"initialize", recorded "config/read"; /params/clientInfo: got {"name":"someone-else",'
        '"version":"0.1..., recorded (absent)'
    )


async def test_on_miss_close_closes_with_4404(tmp_path: Path) -> None:
    """--on-miss close: the unmatched request closes the connection with 4404 and a reason."""
    cassette = write_tape(
        tmp_path / "t.jsonl", [(C, '{"id":1,"method":"a"}'), (S, '{"id":1,"result":{}}')]
    )
    server = replay_server(cassette, on_miss="close")
    async with server as url, connect(url) as ws:
        await ws.send('{"id":1,"method":"b"}')
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 5)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (
        4404,
        "rpctape: no recorded match for request b",
    )
    assert [m.description for m in server.report.misses] == ["request b"]


async def test_connections_served_in_turn_then_404(tmp_path: Path) -> None:
    """Two recorded connections serve two live ones in order; a third is refused at the
    handshake with HTTP 404 and a body saying why."""
    cassette = write_tape(
        tmp_path / "t.jsonl",
        [(S, '{"method":"hello","params":{"n":1}}')],
        [(S, '{"method":"hello","params":{"n":2}}')],
    )
    server = replay_server(cassette)
    async with server as url:
        for n in (1, 2):
            async with connect(url) as ws:
                assert await recv_all(ws, 1) == [
                    f'{{"method":"hello","params":{{"n":{n}}}}}'.encode()
                ]
        with pytest.raises(InvalidStatus) as info:
            await connect(url)
    assert info.value.response.status_code == 404
    assert info.value.response.body.decode() == (
        "rpctape: no recorded match for a new connection (live connection 3)\n"
        f"all 2 recorded connection(s) of {cassette} were already replayed\n"
    )
    assert server.report.render().endswith(
        "live connection 3: no recorded connection: 0 of 0 client message(s) matched, "
        "0 of 0 server message(s) sent\n"
        "  miss: rpctape: no recorded match for a new connection (live connection 3)\n"
        f"    all 2 recorded connection(s) of {cassette} were already replayed"
    )


async def test_binary_and_garbage_frames_over_the_wire(tmp_path: Path) -> None:
    """Binary frames come back as binary frames, garbage text as text, byte for byte."""
    cassette = write_tape(
        tmp_path / "t.jsonl", [(C, b"\x00\xff"), (S, b"\x01\x02"), (C, "junk"), (S, "{oops")]
    )
    async with replay_server(cassette, strict=True) as url, connect(url) as ws:
        await ws.send(b"\x00\xff")
        assert await asyncio.wait_for(ws.recv(), 5) == b"\x01\x02"
        await ws.send("junk")
        assert await asyncio.wait_for(ws.recv(), 5) == "{oops"


async def test_pacing_recorded_honours_gaps(tmp_path: Path) -> None:
    """--pace recorded waits the recorded gaps (0.15 s each): order kept, never faster."""
    script: Script = [(C, '{"id":1,"method":"go"}')] + [
        (S, f'{{"method":"tick","params":{{"n":{n}}}}}') for n in range(3)
    ]
    cassette = write_tape(tmp_path / "t.jsonl", script, gap=0.15)
    async with replay_server(cassette, pace="recorded") as url, connect(url) as ws:
        start = time.monotonic()
        await ws.send('{"id":1,"method":"go"}')
        got = await recv_all(ws, 3)
        elapsed = time.monotonic() - start
    assert got == [f'{{"method":"tick","params":{{"n":{n}}}}}'.encode() for n in range(3)]
    assert elapsed >= 0.45


async def test_pacing_factor_divides_the_gaps(tmp_path: Path) -> None:
    """--pace 10 waits a tenth of each recorded gap (1 s here): at least 0.2 s for two."""
    script: Script = [(C, '{"method":"go"}'), (S, '{"method":"a"}'), (S, '{"method":"b"}')]
    cassette = write_tape(tmp_path / "t.jsonl", script, gap=1.0)
    async with replay_server(cassette, pace="10") as url, connect(url) as ws:
        start = time.monotonic()
        await ws.send('{"method":"go"}')
        assert await recv_all(ws, 2) == [b'{"method":"a"}', b'{"method":"b"}']
        assert time.monotonic() - start >= 0.2


async def test_health_endpoints(tmp_path: Path) -> None:
    """GET /readyz and /healthz answer 200 with an empty body."""
    cassette = write_tape(tmp_path / "t.jsonl", [(C, '{"method":"x"}')])
    async with replay_server(cassette) as url, aiohttp.ClientSession() as http:
        for path in ("/readyz", "/healthz"):
            async with http.get(url.replace("ws://", "http://") + path) as response:
                assert (response.status, await response.read()) == (200, b"")


# --- unix sockets ---------------------------------------------------------------------------


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short temporary folder for unix sockets (paths are limited to about 100 bytes)."""
    with tempfile.TemporaryDirectory(prefix="rpctape-") as folder:
        yield Path(folder)


async def test_unix_socket_replays_exactly_and_answers_health_checks(sock_dir: Path) -> None:
    """listen=unix:///PATH: a websocket client over the socket gets exactly the recorded results
    with its own ids; /readyz and /healthz answer 200 over it; the socket file goes on close."""
    cassette = REPO / "cassettes" / "command-approval.jsonl"
    tape = load(cassette)
    path = sock_dir / "replay.sock"
    server = replay_server(cassette, listen=f"unix://{path}", strict=True)
    async with server as url:
        assert url == f"unix://{path}"
        assert path.is_socket()
        checked = await drive_like_the_recording(url, tape, 1)
        connector = aiohttp.UnixConnector(path=str(path))
        async with aiohttp.ClientSession(connector=connector) as http:
            for health in ("/readyz", "/healthz"):
                async with http.get(f"http://localhost{health}") as response:
                    assert (response.status, await response.read()) == (200, b"")
    assert checked == len([e for e in tape.frames(1) if e["dir"] == "s2c"])
    assert not path.exists()
    assert server.report.render().splitlines()[:2] == [
        f"rpctape replay report for {cassette}: 1 live connection(s), 0 miss(es), "
        "0 recorded client message(s) not replayed, 0 recorded server message(s) not sent",
        f"transport: websocket over the unix socket {path}",
    ]


async def test_unix_socket_in_use_is_refused_and_a_stale_one_replaced(sock_dir: Path) -> None:
    """A second server on a listening socket fails and leaves it alone; a stale file is reused."""
    script: Script = [(C, '{"id":1,"method":"a"}'), (S, '{"id":1,"result":{}}')]
    cassette = write_tape(sock_dir / "t.jsonl", script)
    path = sock_dir / "s.sock"
    async with replay_server(cassette, listen=f"unix://{path}") as url:
        with pytest.raises(UsageError) as info:
            await replay_server(cassette, listen=f"unix://{path}").start()
        assert str(info.value) == (
            f"--listen unix://{path}: a server is already listening there; stop it or pick "
            "another path"
        )
        async with client_for(url) as ws:
            await ws.send('{"id":"a","method":"a"}')
            assert await recv_all(ws, 1) == [b'{"id":"a","result":{}}']
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody accepts
    async with replay_server(cassette, listen=f"unix://{path}") as url, client_for(url) as ws:
        await ws.send('{"id":"b","method":"a"}')
        assert await recv_all(ws, 1) == [b'{"id":"b","result":{}}']
    assert not path.exists()
    (sock_dir / "file").write_text("")
    with pytest.raises(UsageError, match="the path exists and is not a socket"):
        await replay_server(cassette, listen=f"unix://{sock_dir / 'file'}").start()


async def test_shutdown_closes_live_connections_with_1001(tmp_path: Path) -> None:
    """Leaving the block closes open clients (1001) and the report counts what was unused."""
    cassette = write_tape(tmp_path / "t.jsonl", [(C, '{"method":"x"}')])
    server = replay_server(cassette)
    async with server as url:
        ws = await connect(url)
    with pytest.raises(ConnectionClosed) as info:
        await asyncio.wait_for(ws.recv(), 5)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (1001, "rpctape shutting down")
    assert [u.description for u in server.report.unused_client] == ["> notification x"]


async def test_strict_api_raises_on_unused_messages(tmp_path: Path) -> None:
    """strict=True: leaving the block with an unused recorded request raises ReplayMismatch."""
    cassette = write_tape(
        tmp_path / "t.jsonl", [(C, '{"id":1,"method":"a"}'), (C, '{"id":2,"method":"b"}')]
    )
    with pytest.raises(ReplayMismatch) as info:
        async with replay_server(cassette, strict=True) as url, connect(url) as ws:
            await ws.send('{"id":1,"method":"a"}')
    assert "not replayed: seq 3 > request b" in str(info.value)


async def test_bad_options_fail_with_valid_values(tmp_path: Path) -> None:
    """Typos in modes are refused up front, listing what is valid."""
    with pytest.raises(UsageError) as info:
        ReplayServer(tmp_path / "x.jsonl", record_mode="new-episodes")
    assert str(info.value) == (
        "invalid record mode 'new-episodes'; valid values: none, once, new_episodes, all"
    )
    with pytest.raises(UsageError, match="invalid pace 'slow'; valid values: fast, recorded"):
        ReplayServer(tmp_path / "x.jsonl", pace="slow")


# --- record modes -------------------------------------------------------------------------


async def test_mode_none_needs_the_cassette(tmp_path: Path) -> None:
    """record_mode none with no cassette fails with a hint, and listens on nothing."""
    server = ReplayServer(tmp_path / "missing.jsonl")
    with pytest.raises(CassetteNotFound) as info:
        await server.start()
    assert str(info.value) == (
        f"no cassette at {tmp_path / 'missing.jsonl'}; record mode 'none' only replays: record "
        "it first (record mode 'once' with an upstream, or rpctape record)"
    )


async def echo(url: str, frames: list[str]) -> list[str | bytes]:
    async with connect(url) as ws:
        got = []
        for frame in frames:
            await ws.send(frame)
            got.append(await asyncio.wait_for(ws.recv(), 5))
        return got


async def test_mode_once_records_then_replays_without_upstream(tmp_path: Path) -> None:
    """once: the first run records through the upstream; the second replays it alone."""
    cassette = tmp_path / "sub" / "once.jsonl"
    frames = ['{"id":1,"method":"ping"}', '{"method":"n"}']
    async with ScriptedUpstream() as upstream:
        first = replay_server(cassette, record_mode="once", upstream=upstream.url)
        async with first as url:
            assert await echo(url, frames) == frames
    assert first.report.notes == (
        f"recorded 1 connection(s), 2 frame(s) client>server, 2 frame(s) server>client "
        f"from {upstream.url}",
    )
    assert [e["kind"] for e in load(cassette).events] == ["open"] + ["text"] * 4 + ["close"]
    second = replay_server(cassette, record_mode="once", upstream=DEAD_UPSTREAM, strict=True)
    async with second as url:
        # The echo server's frames were requests, not responses: replayed verbatim.
        assert await echo(url, ['{"id":"s","method":"ping"}', '{"method":"n"}']) == frames
    assert list(cassette.parent.iterdir()) == [cassette]


async def test_mode_all_replaces_only_when_recording_completes(tmp_path: Path) -> None:
    """all: a failed block keeps the old cassette and leaves no temp file; a good one replaces."""
    cassette = write_tape(tmp_path / "all.jsonl", [(C, '{"method":"old"}')])
    before = cassette.read_bytes()
    async with ScriptedUpstream() as upstream:
        with pytest.raises(RuntimeError, match="test failed"):
            async with replay_server(cassette, record_mode="all", upstream=upstream.url) as url:
                await echo(url, ['{"method":"new"}'])
                raise RuntimeError("test failed")
        assert cassette.read_bytes() == before
        assert list(tmp_path.iterdir()) == [cassette]
        async with replay_server(cassette, record_mode="all", upstream=upstream.url) as url:
            await echo(url, ['{"method":"new"}'])
    assert [e.get("method") for e in load(cassette).frames()] == ["new", "new"]
    assert list(tmp_path.iterdir()) == [cassette]


async def test_mode_new_episodes_replays_matches_and_appends_the_rest(tmp_path: Path) -> None:
    """new_episodes: a known first message is replayed; an unknown one is recorded and appended."""
    cassette = write_tape(tmp_path / "ep.jsonl", [(C, '{"method":"known"}'), (S, '{"method":"r"}')])
    old = load(cassette)
    async with ScriptedUpstream() as upstream:
        server = replay_server(cassette, record_mode="new_episodes", upstream=upstream.url)
        async with server as url:
            assert await echo(url, ['{"method":"known"}']) == ['{"method":"r"}']
            assert await echo(url, ['{"method":"fresh"}', "two"]) == ['{"method":"fresh"}', "two"]
    assert upstream.received == [['{"method":"fresh"}', "two"]]
    tape = load(cassette)
    assert tape.events[: len(old.events)] == old.events
    assert tape.connections() == [1, 2]
    assert [(e["dir"], frame_of(e)) for e in tape.frames(2)] == [
        ("c2s", b'{"method":"fresh"}'),
        ("s2c", b'{"method":"fresh"}'),
        ("c2s", b"two"),
        ("s2c", b"two"),
    ]
    assert [e["seq"] for e in tape.events] == list(range(1, len(tape.events) + 1))
    assert server.report.render().splitlines()[1:] == [
        "live connection 1 = recorded connection 1: 1 of 1 client message(s) matched, "
        "1 of 1 server message(s) sent",
        "live connection 2: relayed to the upstream and recorded as connection 2",
    ]


async def test_mode_needing_an_upstream_says_so(tmp_path: Path) -> None:
    """once with a missing cassette and no upstream is a usage error."""
    with pytest.raises(UsageError) as info:
        await ReplayServer(tmp_path / "x.jsonl", record_mode="once").start()
    assert str(info.value) == (
        f"record mode 'once' needs an upstream to record {tmp_path / 'x.jsonl'} "
        "(it does not exist yet)"
    )


# --- the command line -----------------------------------------------------------------------


@asynccontextmanager
async def replay_process(
    *args: str, listen: str = "ws://127.0.0.1:0"
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """Start `rpctape replay ARGS` and yield it with the URL from its `listening on` line."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        "replay",
        *args,
        "--listen",
        listen,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert line.startswith(f"listening on {listen.removesuffix(':0')}"), line
        yield proc, line.removeprefix("listening on ").strip()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


INITIALIZE = (
    '{"id":"c","method":"initialize","params":{"clientInfo":'
    '{"name":"rpctape-client","version":"0.1.0"}}}'
)


@pytest.mark.parametrize(("flags", "code"), [(("--strict",), 1), ((), 0)])
async def test_cli_strict_exit_code_on_sigterm(flags: tuple[str, ...], code: int) -> None:
    """`rpctape replay --strict` exits 1 on SIGTERM when recorded requests were not replayed."""
    cassette = REPO / "cassettes" / "turn-streamed.jsonl"
    async with replay_process(str(cassette), *flags) as (proc, url):
        async with connect(url) as ws:
            await ws.send(INITIALIZE)
            assert orjson.loads(await asyncio.wait_for(ws.recv(), 5))["id"] == "c"
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == code, err
    directions = [e["dir"] for e in load(cassette).frames()]
    clients, servers = directions.count("c2s"), directions.count("s2c")
    first_reply = directions.index("c2s", 1) - 1  # the server frames before `initialized`
    lines = out.decode().splitlines()
    assert lines[:2] == [
        f"rpctape replay report for {cassette}: 1 live connection(s), 0 miss(es), "
        f"{clients - 1} recorded client message(s) not replayed, {servers - first_reply} "
        "recorded server message(s) not sent",
        f"live connection 1 = recorded connection 1: 1 of {clients} client message(s) "
        f"matched, {first_reply} of {servers} server message(s) sent",
    ]
    assert "live connection 1 ended:" in err.decode()


async def test_cli_listens_on_a_unix_socket(sock_dir: Path) -> None:
    """`--listen unix:///PATH` prints that URL, replays over it, and removes the socket at exit."""
    cassette = REPO / "cassettes" / "turn-streamed.jsonl"
    path = sock_dir / "cli.sock"
    async with replay_process(str(cassette), "--strict", listen=f"unix://{path}") as (proc, url):
        assert url == f"unix://{path}"
        await drive_like_the_recording(url, load(cassette), 1)
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err
    assert out.decode().splitlines()[1] == f"transport: websocket over the unix socket {path}"
    assert not path.exists()


async def test_cli_logs_a_miss_and_exits_0_without_strict() -> None:
    """A miss is logged on stderr with its explanation; without --strict the exit code is 0."""
    cassette = REPO / "cassettes" / "turn-streamed.jsonl"
    async with replay_process(str(cassette)) as (proc, url):
        async with connect(url) as ws:
            await ws.send('{"id":1,"method":"nope"}')
            reply = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0
    assert reply["error"]["code"] == -32099
    assert reply["error"]["message"] in err.decode()
    assert "1 miss(es)" in out.decode().splitlines()[0]


async def test_cli_bad_mode_exits_2() -> None:
    """A typo in --match is refused with exit code 2 and the valid values."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        "replay",
        "x.jsonl",
        "--match",
        "random",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert (proc.returncode, out) == (2, b"")
    assert err.decode() == (
        "rpctape: error: invalid match order 'random'; valid values: strict, any-order\n"
    )


# --- end to end -----------------------------------------------------------------------------


def server_view(frames: Sequence[tuple[Direction, str | bytes]]) -> list[Any]:
    """What a client received, parsed, with response ids dropped."""
    seen = []
    for direction, frame in frames:
        if direction is Direction.S2C:
            msg = orjson.loads(frame)
            if "result" in msg or "error" in msg:
                msg.pop("id")
            seen.append(msg)
    return seen


@pytest.mark.e2e
async def test_round_trip_record_then_replay(tmp_path: Path) -> None:
    """Record a session from the real app-server, replay it to the same script: same messages."""
    cassette = tmp_path / "round.jsonl"
    prompts = ["Say hello.", "And again."]
    async with (
        FakeBackend() as backend,
        AppServer(backend.url) as app,
        recording_proxy(app.url, cassette) as url,
    ):
        recorded_client = await scripted_session(url, prompts)
    server = replay_server(cassette, strict=True)
    async with server as url:
        replayed_client = await scripted_session(url, prompts, ClientOptions(string_ids=True))
    tape = load(cassette)
    recorded = [(Direction(e["dir"]), frame_of(e)) for e in tape.frames()]
    assert server_view(replayed_client.frames) == server_view(recorded)
    assert server_view(recorded_client.frames) == server_view(recorded)
    first_sent = next(f for d, f in replayed_client.frames if d is Direction.C2S)
    assert isinstance(first_sent, str) and first_sent.startswith('{"id":"req-1"')


async def test_package_level_api(tmp_path: Path) -> None:
    """proxy.recording_proxy records and proxy.replay_server replays, from the package."""
    import proxy

    cassette = tmp_path / "api.jsonl"
    async with ScriptedUpstream() as upstream, proxy.recording_proxy(upstream.url, cassette) as url:
        assert await echo(url, ['{"method":"x"}']) == ['{"method":"x"}']
    server = proxy.replay_server(cassette, strict=True)
    async with server as url:
        assert await echo(url, ['{"method":"x"}']) == ['{"method":"x"}']
    assert isinstance(server, ReplayServer) and server.report.clean


async def test_a_hold_that_never_resolves_is_sent_after_the_timeout_and_reported(
    tmp_path: Path,
) -> None:
    """B's resume answer waits for A's turn/start, but no A ever connects: after
    hold_timeout the answer is sent anyway and the report names what it waited for."""
    cassette = write_tape(
        tmp_path / "t.jsonl",
        [
            (C, '{"id":1,"method":"thread/start","params":{}}'),
            (S, '{"id":1,"result":{"thread":{"id":"T"}}}'),
            (C, '{"id":2,"method":"turn/start","params":{"threadId":"T"}}'),
            (S, '{"id":2,"result":{"turn":{"id":"U"}}}'),
        ],
        [
            (C, '{"id":1,"method":"thread/resume","params":{"threadId":"T"}}'),
            (S, '{"id":1,"result":{"thread":{"id":"T"}}}'),
        ],
    )
    server = replay_server(cassette, hold_timeout=0.2)
    async with server as url, connect(url) as ws:
        await ws.send('{"id":9,"method":"thread/resume","params":{"threadId":"T"}}')
        assert await recv_all(ws, 1) == [b'{"id":9,"result":{"thread":{"id":"T"}}}']
    (live, _) = server.report.connections
    assert live.notes == (
        "held seq 9 (< response to thread/resume) 0.2 s for seq 3 (< response to thread/start "
        "on recorded connection 1), seq 4 (> request turn/start on recorded connection 1), "
        "which did not happen; sent it anyway",
    )
    assert (live.live, live.recorded, live.misses) == (1, 2, ())


async def test_the_last_recording_taken_meanwhile_closes_with_4404(tmp_path: Path) -> None:
    """Two clients pass the handshake for the one recording; the first to speak gets it, the
    other is closed with 4404 and the reason, the full explanation in the report."""
    cassette = write_tape(
        tmp_path / "t.jsonl", [(C, '{"id":1,"method":"a"}'), (S, '{"id":1,"result":{}}')]
    )
    server = replay_server(cassette)
    async with server as url, connect(url) as first, connect(url) as second:
        await first.send('{"id":5,"method":"a"}')
        assert await recv_all(first, 1) == [b'{"id":5,"result":{}}']
        await second.send('{"id":6,"method":"a"}')
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(second.recv(), 5)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (
        4404,
        "rpctape: no recorded match for a new connection (live connection 2)",
    )
    assert [m.render() for m in server.report.misses] == [
        "rpctape: no recorded match for a new connection (live connection 2)\n"
        f"all 1 recorded connection(s) of {cassette} were already replayed"
    ]


async def test_a_client_gone_before_speaking_uses_no_recording(tmp_path: Path) -> None:
    """A client that connects and leaves without a message leaves the recording for the next,
    which then replays it cleanly."""
    cassette = write_tape(
        tmp_path / "t.jsonl", [(C, '{"id":1,"method":"a"}'), (S, '{"id":1,"result":{}}')]
    )
    server = replay_server(cassette)
    async with server as url:
        async with connect(url):
            pass
        async with connect(url) as ws:
            await ws.send('{"id":2,"method":"a"}')
            assert await recv_all(ws, 1) == [b'{"id":2,"result":{}}']
    lines = server.report.render().splitlines()
    assert lines[1:4] == [
        "live connection 1: no recorded connection: 0 of 0 client message(s) matched, "
        "0 of 0 server message(s) sent",
        "  note: closed before its first message; no recorded connection was used",
        "live connection 2 = recorded connection 1: 1 of 1 client message(s) matched, "
        "1 of 1 server message(s) sent",
    ]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--order", "sideways"), "invalid order 'sideways'; valid values: thread, global, none"),
        (("--hold-timeout", "0"), "invalid hold timeout 0.0; give a number of seconds above 0"),
    ],
)
async def test_cli_bad_order_or_hold_timeout_exits_2(flags: tuple[str, ...], message: str) -> None:
    """A typo in --order or a hold timeout of 0 is refused in one line with exit code 2."""
    cassette = REPO / "cassettes" / "many-clients" / "rejoin.jsonl"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        "replay",
        str(cassette),
        *flags,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert (proc.returncode, out, err.decode()) == (2, b"", f"rpctape: error: {message}\n")


async def test_mode_all_keeps_the_old_cassette_when_the_recording_fails(
    tmp_path: Path, upstream: ScriptedUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Record mode all on a disk that fills: the client is closed with 1011, and the partial
    recording never replaces the cassette, which stays as it was; failure says why."""
    cassette = write_tape(tmp_path / "t.jsonl", [(C, '{"method":"old"}')])
    before = cassette.read_bytes()
    fail_writes_after(monkeypatch, 2)  # header, open; the first frame fails
    server = replay_server(cassette, record_mode="all", upstream=upstream.url)
    async with server as url, connect(url) as ws:
        await ws.send('{"method":"a"}')
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1011
    assert server.failure is not None and "No space left on device" in str(server.failure)
    assert cassette.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.jsonl"]  # no temporary file left
