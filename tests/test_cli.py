"""Tests of proxy.cli: `rpctape record` as a real process (signals, SIGKILL), `rpctape show`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import orjson
import pytest
from typer.testing import CliRunner
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from proxy.cassette import frame_of, load
from proxy.cli import app
from tests.scripted_upstream import ScriptedUpstream

runner = CliRunner()


@asynccontextmanager
async def record_process(*args: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """Start `rpctape record ARGS` and yield it with the URL from its `listening on` line."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        "record",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert line.startswith("listening on ws://127.0.0.1:"), line
        yield proc, line.removeprefix("listening on ").strip()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_record_process_signal_summary(tmp_path: Path, sig: signal.Signals) -> None:
    """`listening on` first, then on SIGTERM or SIGINT a one-line summary and exit 0."""
    cassette = tmp_path / "c.jsonl"
    async with (
        ScriptedUpstream() as upstream,
        record_process(
            "--upstream", upstream.url, "--listen", "ws://127.0.0.1:0", "--cassette", str(cassette)
        ) as (proc, url),
    ):
        async with connect(url) as ws:
            await ws.send('{"id":1,"method":"ping"}')
            assert await ws.recv() == '{"id":1,"method":"ping"}'
            proc.send_signal(sig)
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 1001
        out, errs = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, errs
    assert out.decode() == (
        f"recorded 1 connection(s), 1 frame(s) client>server, 1 frame(s) server>client "
        f"to {cassette}\n"
    )
    tape = load(cassette)
    assert [e["kind"] for e in tape.events] == ["open", "text", "text", "close"]
    assert tape.events[-1]["by"] == "proxy" and tape.events[-1]["code"] == 1001


async def test_sigkill_leaves_every_received_frame_in_the_cassette(tmp_path: Path) -> None:
    """Kill -9 mid-stream: the cassette loads and holds every frame the client received."""
    cassette = tmp_path / "c.jsonl"
    received: list[str | bytes] = []
    async with (
        ScriptedUpstream() as upstream,
        record_process(
            "--upstream", upstream.url, "--listen", "ws://127.0.0.1:0", "--cassette", str(cassette)
        ) as (proc, url),
        connect(url) as ws,
    ):
        await ws.send("!burst 20000 2000")  # 40 MB: more than the socket buffers hold
        for _ in range(300):
            received.append(await ws.recv())
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        try:
            while True:
                received.append(await asyncio.wait_for(ws.recv(), 10))
        except ConnectionClosed:
            pass
    assert proc.returncode == -signal.SIGKILL
    tape = load(cassette)
    recorded = [frame_of(e) for e in tape.frames(1) if e["dir"] == "s2c"]
    assert len(received) >= 300
    assert recorded[: len(received)] == [f.encode() for f in received if isinstance(f, str)]
    assert len(recorded) < 20000  # it really was killed mid-stream


def test_record_refuses_non_loopback_without_token(tmp_path: Path) -> None:
    """A non-loopback --listen needs --allow-remote and --token-file."""
    result = runner.invoke(
        app,
        [
            "record",
            "--upstream",
            "ws://127.0.0.1:9",
            "--listen",
            "ws://0.0.0.0:0",
            "--cassette",
            str(tmp_path / "c.jsonl"),
        ],
    )
    assert result.exit_code == 2
    assert result.stderr == (
        "rpctape: error: --listen ws://0.0.0.0:0 is not a loopback address; pass "
        "--allow-remote together with --token-file FILE to accept remote clients\n"
    )
    assert not (tmp_path / "c.jsonl").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--listen", "http://127.0.0.1:0"], "--listen must look like ws://127.0.0.1:4223"),
        (
            ["--upstream", "http://x"],
            "--upstream must be a ws:// URL or unix://PATH (or a command after --), not 'http://x'",
        ),
    ],
)
def test_record_bad_urls(tmp_path: Path, args: list[str], message: str) -> None:
    """Malformed URLs fail at the edge with exit 2 and a message."""
    base = {"--upstream": "ws://127.0.0.1:9", "--listen": "ws://127.0.0.1:0"}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    argv = ["record", "--cassette", str(tmp_path / "c.jsonl")]
    for key, value in base.items():
        argv += [key, value]
    result = runner.invoke(app, argv)
    assert result.exit_code == 2
    assert message in result.stderr


CASSETTE = (
    b'{"rpctape":1,"created":"2026-11-23T00:00:00+00:00","tool":"rpctape 0.1.0",'
    b'"upstream":"ws://u","transport":"websocket","meta":{}}\n'
    b'{"seq":1,"t":0.0,"conn":1,"kind":"open","path":"/","headers":{},"subprotocol":null,'
    b'"upstream":"ws://u/","transport":"websocket"}\n'
    b'{"seq":2,"t":0.001,"conn":1,"kind":"text","dir":"c2s","type":"request",'
    b'"method":"model/list","msg":{"id":1,"method":"model/list"}}\n'
    b'{"seq":3,"t":0.0125,"conn":1,"kind":"text","dir":"s2c","type":"response",'
    b'"response_to":"model/list","msg":{"id":1,"result":{"data":[]}}}\n'
    b'{"seq":4,"t":0.02,"conn":1,"kind":"close","by":"client","code":1000,"reason":"bye"}\n'
)


def test_show_timeline(tmp_path: Path) -> None:
    """`rpctape show` prints a header and one line per event."""
    path = tmp_path / "c.jsonl"
    path.write_bytes(CASSETTE)
    result = runner.invoke(app, ["show", str(path), "--width", "120"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"{path}: rpctape cassette v1, websocket upstream ws://u, 1 connection(s), "
        "1 frame(s) client>server, 1 frame(s) server>client",
        f"    0.000   1   open         {'websocket / -> websocket ws://u/':<40} {{}}",
        f'    0.001   1 > request      {"model/list":<40} {{"id":1,"method":"model/list"}}',
        f"    0.013   1 < response     {'response to model/list':<40} "
        '{"id":1,"result":{"data":[]}}',
        f"    0.020   1   close        {'by client 1000':<40} bye",
    ]


def test_show_filters_and_json(tmp_path: Path) -> None:
    """--method keeps a method and its responses; --json prints events as lines."""
    path = tmp_path / "c.jsonl"
    path.write_bytes(CASSETTE)
    result = runner.invoke(app, ["show", str(path), "--method", "model/list", "--json"])
    assert result.exit_code == 0
    assert [orjson.loads(line)["seq"] for line in result.stdout.splitlines()] == [2, 3]
    result = runner.invoke(app, ["show", str(path), "--conn", "2", "--json"])
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "rpctape: error: no cassette at {path}\n"),
        (
            b"hello\n",
            "rpctape: error: {path} is not an rpctape cassette: its first line is not "
            'a header with an integer "rpctape" format version\n',
        ),
        (
            b'{"rpctape":7}\n',
            "rpctape: error: {path} uses cassette format 7, but this rpctape "
            "(0.1.0) reads formats up to 1: upgrade rpctape\n",
        ),
    ],
)
def test_show_errors(tmp_path: Path, content: bytes | None, message: str) -> None:
    """Missing file, non-cassette and newer version give exit 2 and a clear message."""
    path = tmp_path / "c.jsonl"
    if content is not None:
        path.write_bytes(content)
    result = runner.invoke(app, ["show", str(path)])
    assert result.exit_code == 2
    assert result.stderr == message.format(path=path)


def test_show_reports_torn_line(tmp_path: Path) -> None:
    """A torn last line is reported on stderr; the rest is shown."""
    path = tmp_path / "c.jsonl"
    path.write_bytes(CASSETTE + b'{"seq":5,')
    result = runner.invoke(app, ["show", str(path), "--json"])
    assert result.exit_code == 0
    assert "torn last line (9 bytes) ignored" in result.stderr
    assert len(result.stdout.splitlines()) == 4


def test_python_dash_m_proxy_runs() -> None:
    """`python -m proxy version` works (used by tests and the benchmark)."""
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "version"], capture_output=True, check=True, timeout=30
    )
    assert done.stdout == b"rpctape 0.1.0\n"


async def test_backend_command_serves_and_logs(tmp_path: Path) -> None:
    """`rpctape backend` prints its URL, answers /v1/responses with SSE, logs, exits on SIGTERM."""
    log = tmp_path / "requests.jsonl"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "backend", "--listen", "http://127.0.0.1:0",
        "--reply", "Hi there", "--log", str(log),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.removeprefix("listening on ").strip()
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{url}/v1/responses", json={"model": "m"}) as response,
        ):
            body = await response.text()
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert '"content":[{"type":"output_text","text":"Hi there"}]' in body
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    (record,) = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    assert (record["method"], record["path"], record["body"]) == (
        "POST",
        "/v1/responses",
        {"model": "m"},
    )


@pytest.mark.e2e
def test_demo_records_a_real_session(tmp_path: Path) -> None:
    """`rpctape demo` records a full turn from the real app-server and prints its timeline."""
    cassette = tmp_path / "demo.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "demo", "--cassette", str(cassette)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "rpctape demo: fake model backend + real codex app-server + recorder"
    assert lines[-1] == f"cassette: {cassette}  (view it again with: rpctape show {cassette})"
    assert any(" < notification turn/completed " in line for line in lines)
    tape = load(cassette)
    methods = [e.get("method") for e in tape.frames() if e["dir"] == "c2s"]
    assert methods == ["initialize", "initialized", "model/list", "thread/start", "turn/start"]
    assert tape.frames()[-1]["method"] == "turn/completed"
    assert tape.header["meta"] == {"made_by": "rpctape demo"}


async def test_live_status_on_a_terminal(tmp_path: Path) -> None:
    """With stderr on a terminal, record redraws a status line with connections and frames."""
    import pty

    master, slave = pty.openpty()
    os.set_blocking(master, False)
    async with ScriptedUpstream() as upstream:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy", "record", "--upstream", upstream.url,
            "--listen", "ws://127.0.0.1:0", "--cassette", str(tmp_path / "c.jsonl"),
            stdout=asyncio.subprocess.PIPE, stderr=slave,
        )  # fmt: skip
        os.close(slave)
        try:
            assert proc.stdout is not None
            url = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().split()[-1]
            async with connect(url) as ws:
                await ws.send("{}")
                await ws.recv()
                expected = "\r\x1b[Krpctape: 1 open / 1 connection(s), 1 > 1 < frames"
                screen = ""
                for _ in range(100):  # redrawn every 0.5 s; give it up to 10 s
                    await asyncio.sleep(0.1)
                    with contextlib.suppress(BlockingIOError):
                        screen += os.read(master, 65536).decode()
                    if expected in screen:
                        break
            assert expected in screen
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 20)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            os.close(master)


def test_record_refuses_an_invalid_redact_value(tmp_path: Path) -> None:
    """--redact-value takes a regex; a broken one is one line, exit 2, no cassette."""
    cassette = tmp_path / "c.jsonl"
    argv = ["record", "--upstream", "ws://127.0.0.1:9", "--cassette", str(cassette)]
    result = runner.invoke(app, [*argv, "--redact-value", "("])
    assert result.exit_code == 2
    assert result.stderr == (
        "rpctape: error: --redact-value '(': not a regular expression "
        "(missing ), unterminated subpattern at position 0)\n"
    )
    assert not cassette.exists()


@pytest.mark.parametrize(
    ("line", "exit_code", "stderr"),
    [
        (b'{"seq":5,"conn":1,"kind":"close","by":"client","code":1000,"reason":""}', 0,
         "rpctape: warning: {path}:6: close event has no valid 't' (using 0.02)\n"),
        (b'{"seq":5,"t":"x","conn":1,"kind":"close"}', 0,
         "rpctape: warning: {path}:6: close event has no valid 't' (using 0.02)\n"),
        (b'{"seq":5,"t":1,"conn":1,"kind":"text","dir":"c2s"}', 2,
         "rpctape: error: {path}:6: text event has neither 'raw' nor 'msg'\n"),
        (b'{"seq":5,"t":1,"conn":1,"kind":"binary","dir":"c2s","b64":"!!"}', 2,
         "rpctape: error: {path}:6: binary event has no valid base64 'b64' "
         "(Only base64 data is allowed)\n"),
        (b'{"seq":5,"t":1,"conn":1,"kind":"text","dir":"c2s","msg":' + b"[" * 300 + b"]" * 300
         + b"}", 2,
         "rpctape: error: {path}:6: text event nests too deep to be written back "
         "(orjson's limit)\n"),
    ],
)  # fmt: skip
def test_show_crafted_cassettes_without_a_traceback(
    tmp_path: Path, line: bytes, exit_code: int, stderr: str
) -> None:
    """The crafted events of issue 8 give one line with file and line number, no traceback."""
    path = tmp_path / "c.jsonl"
    path.write_bytes(CASSETTE + line + b"\n")
    result = runner.invoke(app, ["show", str(path)])
    assert (result.exit_code, result.stderr) == (exit_code, stderr.format(path=path))
