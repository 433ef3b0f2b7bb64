"""Tests of proxy.cli: `rpctape record` as a real process (signals, SIGKILL), `rpctape show`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import aiohttp
import orjson
import pytest
from typer.testing import CliRunner
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from proxy.cli import app
from proxy.codex.appserver import installed_codex_versions
from proxy.core.cassette import frame_of, load
from tests.helpers import rpctape_listening
from tests.scripted_upstream import ScriptedUpstream

runner = CliRunner()


def record_process(
    *args: str, loop: str = "auto"
) -> AbstractAsyncContextManager[tuple[asyncio.subprocess.Process, str]]:
    """`rpctape record ARGS` on the event ``loop`` named (proxy/wire/runner.py), with the URL
    from its `listening on` line."""
    return rpctape_listening("record", *args, env={"RPCTAPE_LOOP": loop})


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_record_process_signal_summary(
    tmp_path: Path, sig: signal.Signals, loop: str
) -> None:
    """`listening on` first, then on SIGTERM or SIGINT a one-line summary and exit 0; the same
    on uvloop and on asyncio's own loop (the fallback where uvloop is not installed)."""
    cassette = tmp_path / "c.jsonl"
    async with (
        ScriptedUpstream() as upstream,
        record_process(
            "--upstream", upstream.url, "--listen", "ws://127.0.0.1:0", "--cassette", str(cassette),
            loop=loop,
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


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
async def test_sigkill_leaves_every_received_frame_in_the_cassette(
    tmp_path: Path, loop: str
) -> None:
    """Kill -9 mid-stream: the cassette loads and holds every frame the client received."""
    cassette = tmp_path / "c.jsonl"
    received: list[str | bytes] = []
    async with (
        ScriptedUpstream() as upstream,
        record_process(
            "--upstream", upstream.url, "--listen", "ws://127.0.0.1:0", "--cassette", str(cassette),
            loop=loop,
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
    assert all(isinstance(f, str) for f in received)  # the burst is text frames only
    # Every frame the client got (300 before the kill, and whatever was in flight) is in the
    # cassette, in order: a shorter cassette would make the slice shorter than the list.
    assert recorded[: len(received)] == [str(f).encode() for f in received]
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


def test_show_header_says_which_codex_recorded_it(tmp_path: Path) -> None:
    """`rpctape show --header`: the header's fields, then the codex version and where it was
    read (here the shipped cassette's meta); --json as one object."""
    shipped = Path(__file__).resolve().parent.parent / "cassettes" / "two-turns.jsonl"
    result = runner.invoke(app, ["show", "--header", str(shipped)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "rpctape: 1",
        "created: 2026-11-23T21:30:01+00:00",
        "tool: rpctape 0.1.0",
        "upstream: ws://127.0.0.1:42959",
        "transport: websocket",
        'meta: {"made_by":"scripts/record_cassettes.py","scenario":"two-turns","codex":"0.169.0"}',
        "codex: 0.169.0 (meta)",
    ]
    path = tmp_path / "c.jsonl"
    path.write_bytes(CASSETTE)
    result = runner.invoke(app, ["show", "--header", "--json", str(path)])
    assert result.exit_code == 0, result.stderr
    body = orjson.loads(result.stdout)
    assert (body["codex"], body["codex_from"]) == (None, None)
    assert body["header"] == load(path).header
    header = orjson.dumps({**load(path).header, "codex": "0.171.0"})
    path.write_bytes(header + CASSETTE[CASSETTE.index(b"\n") :])
    result = runner.invoke(app, ["show", "--header", str(path)])
    assert result.stdout.splitlines()[-1] == "codex: 0.171.0"


def test_show_filters_and_json(tmp_path: Path) -> None:
    """--method keeps a method and its responses; --json prints events as lines."""
    path = tmp_path / "c.jsonl"
    path.write_bytes(CASSETTE)
    result = runner.invoke(app, ["show", str(path), "--method", "model/list", "--json"])
    assert result.exit_code == 0
    assert [orjson.loads(line)["seq"] for line in result.stdout.splitlines()] == [2, 3]
    result = runner.invoke(app, ["show", str(path), "--conn", "2", "--json"])
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == (
        f"rpctape: error: no event of {path} matches --conn 2. "
        "It has connection(s) 1 and methods model/list\n"
    )


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
                expected = (
                    "1 open\x1b[0m / 1 connection(s), \x1b[36m1 >\x1b[0m \x1b[32m1 <\x1b[0m frames"
                )
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


# -- CLI edges: each one clear line, driving the real command line ----------------------------


def rpctape(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m proxy ARGS` to completion (for commands that fail before serving)."""
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args],
        capture_output=True, text=True, timeout=60, check=False, cwd=cwd,
    )  # fmt: skip


def one_error(done: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The single `rpctape: error:` line of a failed run (and nothing on stdout)."""
    assert (done.returncode, done.stdout) == (code, ""), done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("rpctape: error: ")
    return line.removeprefix("rpctape: error: ")


RECORD = ("record", "--upstream", "ws://127.0.0.1:9", "--listen", "ws://127.0.0.1:0")
LISTEN_99999 = "--listen ws://127.0.0.1:99999: the port must be a number from 0 to 65535"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("record", "--upstream", "ws://127.0.0.1:9", "--listen", "ws://127.0.0.1:99999"),
            f"{LISTEN_99999} (0 picks a free one)",
        ),
        (
            ("replay", "cassettes/two-turns.jsonl", "--listen", "ws://127.0.0.1:99999"),
            f"{LISTEN_99999} (0 picks a free one)",
        ),
        (
            ("backend", "--listen", "http://127.0.0.1:99999"),
            "--listen http://127.0.0.1:99999: the port must be a number from 0 to 65535 "
            "(0 picks a free one)",
        ),
        (
            ("record", "--upstream", "ws://127.0.0.1:99999", "--listen", "ws://127.0.0.1:0"),
            "--upstream ws://127.0.0.1:99999: the port must be a number from 0 to 65535",
        ),
        (
            ("replay", "cassettes/two-turns.jsonl", "--record-mode", "all",
             "--upstream", "ws://127.0.0.1:70000", "--listen", "ws://127.0.0.1:0"),
            "--upstream ws://127.0.0.1:70000: the port must be a number from 0 to 65535",
        ),
        (
            (*RECORD, "--token-file", "/nonexistent"),
            "--token-file /nonexistent: no such file; write the token into a file and pass its "
            "path",
        ),
        (
            (*RECORD, "--no-redact", "--redact-key", "cwd"),
            "--no-redact excludes --redact-key and --redact-value: --no-redact records every "
            "secret as it is; drop one of them",
        ),
        (
            (*RECORD, "--max-size", "-5"),
            "invalid value for --max-size: -5 is less than 1, the smallest allowed",
        ),
        (
            ("show", "cassettes/two-turns.jsonl", "--width", "-3"),
            "Invalid value for '--width': -3 is less than 0, the smallest allowed. "
            "Run `rpctape show -h` for help",
        ),
        (
            ("replay", "cassettes/two-turns.jsonl", "--upstream", "ws://127.0.0.1:9"),
            "--upstream is only used to record (--record-mode once, new_episodes or all); "
            "record mode none only replays: drop --upstream or pick a record mode",
        ),
        (
            ("attest-check", "--codex", "/nonexistent"),
            "codex not found at /nonexistent (the given codex path; installed in .tools/: "
            f"{', '.join(installed_codex_versions()) or 'none'}). Run `./dev setup` to "
            "install @openai/codex@0.169.0 into .tools/, or set RPCTAPE_CODEX to a codex "
            "executable.",
        ),
        (("record", "--bogus"), "No such option: --bogus. Run `rpctape record -h` for help"),
    ],
)  # fmt: skip
def test_bad_options_give_one_line(
    args: tuple[str, ...], message: str, tmp_path: Path
) -> None:
    """Bad options and values: one `rpctape: error:` line, exit 2, no traceback, no cassette."""
    cassette = tmp_path / "c.jsonl"
    argv = [*args, "--cassette", str(cassette)] if args[0] == "record" else list(args)
    done = rpctape(*argv, cwd=Path(__file__).parent.parent)
    assert one_error(done) == message
    assert not cassette.exists()


@pytest.mark.parametrize("command", ["show", "replay", "report", "har"])
def test_a_directory_is_not_a_cassette_for_any_command(command: str, tmp_path: Path) -> None:
    """show, replay, report and har say the same thing about a directory."""
    message = f"{tmp_path} is a directory, not a cassette file; name a .jsonl file"
    assert one_error(rpctape(command, str(tmp_path))) == message


def test_wrap_missing_command_leaves_no_cassette(tmp_path: Path) -> None:
    """`wrap -- /nonexistent`: one line naming the command, no cassette."""
    cassette = tmp_path / "w.jsonl"
    done = rpctape("wrap", "--cassette", str(cassette), "--", "/nonexistent", "app-server")
    assert one_error(done) == (
        "wrap -- /nonexistent: no such executable; give a path to it or a command on PATH"
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


@pytest.mark.parametrize("command", ["record", "replay", "backend"])
def test_port_in_use_is_one_line_and_leaves_no_cassette(command: str, tmp_path: Path) -> None:
    """A taken port: a clear line; record removes the cassette it created, so a retry works."""
    import socket

    cassette = tmp_path / "c.jsonl"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        scheme = "http" if command == "backend" else "ws"
        listen = ("--listen", f"{scheme}://127.0.0.1:{port}")
        argv = {
            "record": ["record", "--upstream", "ws://127.0.0.1:9", *listen, "--cassette",
                       str(cassette)],
            "replay": ["replay", "cassettes/two-turns.jsonl", *listen],
            "backend": ["backend", *listen],
        }[command]  # fmt: skip
        done = rpctape(*argv, cwd=Path(__file__).parent.parent)
    assert one_error(done) == (
        f"cannot listen on {scheme}://127.0.0.1:{port}: the address is already in use; stop "
        "what holds it or pick another port (port 0 picks a free one)"
    )
    assert not cassette.exists()


def test_help_version_and_usage_errors() -> None:
    """-h works for the app and each command; --version prints it; no command is usage."""
    assert rpctape("--version").stdout == "rpctape 0.1.0\n"
    assert "Usage: rpctape [OPTIONS] COMMAND" in rpctape("-h").stdout
    assert "Usage: rpctape show [OPTIONS]" in rpctape("show", "-h").stdout
    assert "--install-completion" in rpctape("--help").stdout
    completion = subprocess.run(
        [sys.executable, "-m", "proxy"], capture_output=True, text=True, timeout=60, check=True,
        env={**os.environ, "_RPCTAPE_COMPLETE": "complete_bash", "COMP_WORDS": "rpctape re",
             "COMP_CWORD": "1"},
    )  # fmt: skip
    assert completion.stdout.split() == ["record", "replay", "report", "redact"]
    assert one_error(rpctape("nope")) == (
        "No such command 'nope'. Run `rpctape -h` for help"
    )


def test_show_method_matching_nothing_says_so(tmp_path: Path) -> None:
    """`show --method X` that matches nothing: one line listing what there is, exit 1."""
    path = tmp_path / "c.jsonl"
    path.write_bytes(CASSETTE)
    assert one_error(rpctape("show", str(path), "--method", "X"), code=1) == (
        f"no event of {path} matches --method X. It has connection(s) 1 and methods model/list"
    )


def test_show_colour_and_rule_effects(tmp_path: Path) -> None:
    """On a colour terminal arrows and kinds are coloured; what rules did is shown."""
    path = tmp_path / "c.jsonl"
    dropped = (
        b'{"seq":5,"t":0.03,"conn":1,"kind":"text","dir":"c2s","type":"notification",'
        b'"method":"noise","rules":[{"rule":"quiet","action":"drop"}],"forwarded":false,'
        b'"msg":{"method":"noise"}}\n'
    )
    path.write_bytes(CASSETTE + dropped)
    env = {**os.environ, "FORCE_COLOR": "1", "COLUMNS": "200"}
    env.pop("NO_COLOR", None)
    coloured = subprocess.run(
        [sys.executable, "-m", "proxy", "show", str(path), "--width", "160"],
        capture_output=True, text=True, timeout=60, check=True, env=env,
    ).stdout  # fmt: skip
    assert "\x1b[36m>\x1b[0m" in coloured  # c2s arrow in cyan
    assert "\x1b[32m<\x1b[0m" in coloured  # s2c arrow in green
    plain = rpctape("show", str(path), "--width", "160").stdout
    assert "\x1b[" not in plain
    assert plain.splitlines()[-1] == (
        f"    0.030   1 > notification {'noise':<40} [dropped] {{\"method\":\"noise\"}}"
    )


async def test_show_follow_prints_appended_events(tmp_path: Path) -> None:
    """`show --follow` prints what is there, then each line as it is appended; Ctrl-C ends it."""
    path = tmp_path / "c.jsonl"
    lines = CASSETTE.splitlines(keepends=True)
    path.write_bytes(lines[0] + lines[1])
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "show", "--follow", str(path), "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None

        async def next_seq() -> int:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 20)
            return int(orjson.loads(line)["seq"])

        assert await next_seq() == 1
        with path.open("ab") as out:
            out.write(lines[2])
            out.flush()
            assert await next_seq() == 2
            out.write(lines[3][:10])  # a line being written is not printed half
            out.flush()
            out.write(lines[3][10:] + lines[4])
            out.flush()
            assert await next_seq() == 3
            assert await next_seq() == 4
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        assert proc.stderr is not None
        assert await proc.stderr.read() == b""
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_report_and_har_commands(tmp_path: Path) -> None:
    """report and har write their files next to the cassette or to -o; import-har reads back."""
    source = Path(__file__).parent.parent / "cassettes" / "two-turns.jsonl"
    cassette = tmp_path / "two.jsonl"
    cassette.write_bytes(source.read_bytes())
    done = rpctape("report", str(cassette))
    assert done.stdout == f"wrote {tmp_path / 'two.html'} (40 events); open it in a browser\n"
    assert one_error(rpctape("report", str(cassette))) == (
        f"{tmp_path / 'two.html'} already exists; pass --overwrite to replace it, or -o FILE"
    )
    har = tmp_path / "s.har"
    assert rpctape("har", str(cassette), "-o", str(har)).stdout == (
        f"wrote {har} (1 websocket entry)\n"
    )
    back = tmp_path / "back.jsonl"
    done = rpctape("import-har", str(har), "-o", str(back))
    assert done.stdout == (
        f"wrote {back}: 1 connection(s), 5 frame(s) client>server, 33 frame(s) server>client\n"
    )
    assert [frame_of(e) for e in load(back).frames()] == [
        frame_of(e) for e in load(cassette).frames()
    ]
    (tmp_path / "bad.har").write_text("{nope")
    assert one_error(rpctape("import-har", str(tmp_path / "bad.har"))).startswith(
        f"{tmp_path / 'bad.har'} is not JSON ("
    )
