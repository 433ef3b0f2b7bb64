"""Tests of proxy.codex.schema and `rpctape validate`: codex's generated JSON Schema, per
version."""

from __future__ import annotations

import asyncio
import signal
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner
from websockets.asyncio.client import connect

from proxy.cli import app
from proxy.codex.appserver import PINNED_CODEX_VERSION, AppServer, find_codex
from proxy.codex.backend import FakeBackend
from proxy.codex.schema import (
    Validator,
    Violation,
    cache_root,
    codex_version,
    pointer_of,
    response_names,
    schema_dir,
)
from proxy.core.cassette import load, new_header
from proxy.core.jsonrpc import Direction, MessageType
from proxy.core.pointer import resolve
from proxy.core.recorder import Recorder
from proxy.errors import UsageError
from proxy.wire.session import Tally
from proxy.wire.store import CassetteWriter, cassette_files

CASSETTES = cassette_files([Path(__file__).resolve().parent.parent / "cassettes"], recursive=False)
C2S, S2C = Direction.C2S, Direction.S2C
REQ, NOTE, RES, ERR = (
    MessageType.REQUEST,
    MessageType.NOTIFICATION,
    MessageType.RESPONSE,
    MessageType.ERROR,
)
runner = CliRunner()
SchemaFor = Callable[[str], Path]


@pytest.fixture
def validator(codex_schema: SchemaFor, codex_version: str) -> Validator:
    return Validator(codex_schema(codex_version), label=f"codex {codex_version}")


def unknown(label: str, direction: Direction, type_: MessageType, method: str) -> Violation:
    what = "result of unknown method" if type_ is RES else "unknown method"
    return Violation(
        direction,
        type_,
        method,
        "" if type_ is RES else "/method",
        f"{what} {method}: a cassette from a newer codex? ({label} does not know it)",
        unknown_method=True,
    )


# --- one planted violation per message kind --------------------------------------------------


def test_client_request_input_as_string(validator: Validator) -> None:
    """turn/start with `input` a string, not a list: pointer /params/input and the type message."""
    msg = {"id": 3, "method": "turn/start", "params": {"threadId": "t", "input": "hi"}}
    result = validator.inspect(C2S, msg)
    assert result.checked
    assert (
        result.violations
        == validator.check(C2S, msg)
        == [Violation(C2S, REQ, "turn/start", "/params/input", "'hi' is not of type 'array'")]
    )


def test_client_request_error_inside_tagged_union(validator: Validator) -> None:
    """An error inside the `text` branch of the UserInput union points into that branch."""
    bad = {"type": "text", "text": 5}
    msg = {"id": 3, "method": "turn/start", "params": {"threadId": "t", "input": [bad]}}
    assert validator.check(C2S, msg) == [
        Violation(C2S, REQ, "turn/start", "/params/input/0/text", "5 is not of type 'string'")
    ]


def test_client_notification(validator: Validator) -> None:
    """`initialized` passes (extra params allowed); a misspelt one is an unknown method."""
    assert validator.check(C2S, {"method": "initialized", "params": {"x": 1}}) == []
    assert validator.check(C2S, {"method": "initialised"}) == [
        unknown(validator.label, C2S, NOTE, "initialised")
    ]


def test_server_request_missing_members(validator: Validator) -> None:
    """An approval request without itemId / startedAtMs: one violation each at /params."""
    msg = {
        "id": 0,
        "method": "item/commandExecution/requestApproval",
        "params": {"threadId": "t", "turnId": "u"},
    }
    method = "item/commandExecution/requestApproval"
    assert validator.check(S2C, msg) == [
        Violation(S2C, REQ, method, "/params", "'itemId' is a required property"),
        Violation(S2C, REQ, method, "/params", "'startedAtMs' is a required property"),
    ]


def test_server_notification(validator: Validator) -> None:
    """A delta that is a number; emittedAtMs beside params is allowed."""
    params = {"delta": 5, "itemId": "i", "threadId": "t", "turnId": "u"}
    msg = {"method": "item/agentMessage/delta", "params": params, "emittedAtMs": 1}
    assert validator.check(S2C, msg) == [
        Violation(
            S2C, NOTE, "item/agentMessage/delta", "/params/delta", "5 is not of type 'string'"
        )
    ]


def test_result_checked_against_the_answered_method(validator: Validator) -> None:
    """A result is checked against the result type of the request it answers."""
    result = {"userAgent": 7, "codexHome": "/h", "platformFamily": "unix", "platformOs": "linux"}
    assert validator.check(S2C, {"id": 1, "result": result}, "initialize") == [
        Violation(S2C, RES, "initialize", "/result/userAgent", "7 is not of type 'string'")
    ]
    answer = {"id": 0, "result": {"decision": "maybe"}}
    method = "item/commandExecution/requestApproval"
    assert validator.check(C2S, answer, method) == [
        Violation(
            C2S,
            RES,
            method,
            "/result/decision",
            "'maybe' is not valid under any of the given schemas",
        )
    ]
    assert validator.check(C2S, {"id": 0, "result": {"decision": "accept"}}, method) == []


def test_error_reply(validator: Validator) -> None:
    """Errors are checked against JSONRPCError whatever the method."""
    msg = {"id": 1, "error": {"code": "-32600", "message": "Not initialized"}}
    assert validator.check(S2C, msg, "initialize") == [
        Violation(S2C, ERR, "initialize", "/error/code", "'-32600' is not of type 'integer'")
    ]
    assert validator.check(S2C, {"id": 1, "error": {"code": 1}}, None) == [
        Violation(S2C, ERR, None, "/error", "'message' is a required property")
    ]


def test_unknown_methods_and_unpaired_responses(validator: Validator) -> None:
    """Unknown request and result methods are flagged; a response of no known request is
    not checked at all."""
    label = validator.label
    assert validator.check(C2S, {"id": 1, "method": "future/x", "params": {}}) == [
        unknown(label, C2S, REQ, "future/x")
    ]
    assert validator.check(S2C, {"id": 1, "result": {}}, "future/x") == [
        unknown(label, S2C, RES, "future/x")
    ]
    unpaired = validator.inspect(S2C, {"id": 1, "result": {}}, None)
    assert (unpaired.violations, unpaired.checked) == ([], False)
    assert validator.inspect(S2C, [1, 2]).checked is False


def test_precompile_builds_every_method(validator: Validator) -> None:
    """precompile() builds one validator per request, notification and result type; checks
    after it give the same answers."""
    requests = [(d, m) for d in Direction for m in validator.methods(d, REQ)]
    notes = [(d, m) for d in Direction for m in validator.methods(d, NOTE)]
    results = [(d, m) for d, m in requests if validator.response_schema(d, m) is not None]
    assert validator.precompile() == len(requests) + len(notes) + len(results)
    msg = {"id": 3, "method": "turn/start", "params": {"threadId": "t", "input": "hi"}}
    assert [v.pointer for v in validator.check(C2S, msg)] == ["/params/input"]


def test_every_request_method_has_a_result_type(validator: Validator, codex_version: str) -> None:
    """The method-to-result mapping covers every request (but one with no result file)."""
    no_result = {
        d: [m for m in validator.methods(d, REQ) if validator.response_schema(d, m) is None]
        for d in Direction
    }
    expected = [] if codex_version == "0.169.0" else ["modelProvider/default/set"]
    assert no_result == {C2S: expected, S2C: []}
    assert validator.response_schema(C2S, "config/batchWrite") == "ConfigWriteResponse"
    assert validator.response_schema(C2S, "turn/start") == "TurnStartResponse"


def test_response_names_candidates() -> None:
    """Params type first, then the method camel-cased from each segment, then overrides."""
    params = {"anyOf": [{"$ref": "#/definitions/GetAccountRateLimitsParams"}, {"type": "null"}]}
    assert response_names("account/rateLimits/read", params) == [
        "GetAccountRateLimitsResponse",
        "AccountRateLimitsReadResponse",
        "RateLimitsReadResponse",
        "ReadResponse",
    ]
    assert response_names("account/logout", {"type": "null"})[-1] == "LogoutAccountResponse"


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.one_of(st.text(max_size=6), st.integers(0, 3)), max_size=5),
    st.integers(),
)
def testpointer_of_resolves_to_the_value(path: list[str | int], value: int) -> None:
    """A violation's pointer, RFC 6901 escaped, leads back to the offending value."""
    doc: Any = value
    for step in reversed(path):
        doc = [None] * step + [doc] if isinstance(step, int) else {step: doc}
    assert resolve(doc, pointer_of(path)) == value


def test_not_a_schema_folder(tmp_path: Path) -> None:
    """A folder without the generated files is refused with one clear line."""
    with pytest.raises(UsageError, match=r"is not a codex schema directory .*ClientRequest\.json"):
        Validator(tmp_path)


# --- cassettes and the command line ----------------------------------------------------------


def test_shipped_cassettes_validate(codex_bin: Path, tmp_path: Path) -> None:
    """Every shipped cassette passes against each installed codex's schema."""
    env = {"XDG_CACHE_HOME": str(tmp_path)}
    args = ["validate", *map(str, CASSETTES), "--codex", str(codex_bin)]
    result = runner.invoke(app, args, env=env)
    version = codex_version(codex_bin)
    assert result.exit_code == 0, result.output
    assert result.output == (
        f"{len(CASSETTES)} cassette(s), 131 message(s) checked against codex {version}: "
        "0 violation(s), 0 unknown method(s), 0 not checked\n"
    )
    assert (tmp_path / "rpctape" / "schemas" / version / "ClientRequest.json").is_file()


def _planted(tmp_path: Path) -> Path:
    """two-turns.jsonl with turn/start's input made a string and a request renamed."""
    lines = (CASSETTES[-1]).read_bytes().splitlines()
    assert CASSETTES[-1].name == "two-turns.jsonl"
    out = []
    for line in lines:
        event = orjson.loads(line)
        if event.get("method") == "turn/start" and event["seq"] < 20:
            event["msg"]["params"]["input"] = "First question."
        if event.get("method") == "model/list":
            event["msg"]["method"] = event["method"] = "model/list2"
        out.append(orjson.dumps(event))
    path = tmp_path / "planted.jsonl"
    path.write_bytes(b"\n".join(out) + b"\n")
    return path


def test_validate_json_report_exact(codex_schema: SchemaFor, tmp_path: Path) -> None:
    """--json: the whole report, exactly; exit 1."""
    cassette = _planted(tmp_path)
    events = [orjson.loads(line) for line in cassette.read_bytes().splitlines()[1:]]
    (seq,) = [e["seq"] for e in events if e.get("method") == "turn/start" and e["seq"] < 20]
    schema = codex_schema("0.169.0")
    result = runner.invoke(app, ["validate", str(cassette), "--schema", str(schema), "--json"])
    assert result.exit_code == 1
    frames = [e for e in events if e["kind"] == "text"]
    assert orjson.loads(result.stdout) == {
        "schema": str(schema),
        "cassettes": [str(cassette)],
        "findings": [
            {
                "cassette": str(cassette),
                "seq": seq,
                "conn": 1,
                "dir": "c2s",
                "type": "request",
                "method": "turn/start",
                "pointer": "/params/input",
                "message": "'First question.' is not of type 'array'",
                "unknown_method": False,
            }
        ],
        "counts": {
            "messages": len(frames),
            "unchecked": 0,
            "violations": 1,
            "unknown_methods": 0,
        },
    }


def test_validate_text_report_with_unknown_method(codex_schema: SchemaFor, tmp_path: Path) -> None:
    """Text output: one line per finding, then the counts; unknown methods counted apart."""
    cassette = tmp_path / "c.jsonl"
    cassette.write_bytes(
        b'{"rpctape":1}\n'
        b'{"seq":1,"conn":1,"kind":"text","dir":"c2s","type":"request","method":"future/x",'
        b'"msg":{"id":1,"method":"future/x","params":{}}}\n'
        b'{"seq":2,"conn":1,"kind":"text","dir":"s2c","type":"response","response_to":"future/x",'
        b'"msg":{"id":1,"result":{}}}\n'
        b'{"seq":3,"conn":1,"kind":"text","dir":"c2s","type":"invalid","raw":"not json"}\n'
    )
    schema = codex_schema("0.169.0")
    result = runner.invoke(app, ["validate", str(cassette), "--schema", str(schema)])
    assert result.exit_code == 1
    note = f"a cassette from a newer codex? ({schema} does not know it)"
    assert result.output.splitlines() == [
        f"{cassette}: seq 1 conn 1 c2s request future/x /method: unknown method future/x: {note}",
        f"{cassette}: seq 2 conn 1 s2c response future/x: result of unknown method future/x: "
        + note,
        f"1 cassette(s), 2 message(s) checked against {schema}: 0 violation(s), "
        "2 unknown method(s), 1 not checked",
    ]


def test_validate_bad_input_one_line(tmp_path: Path) -> None:
    """Conflicting options and a missing cassette give one error line and exit 2."""
    both = runner.invoke(app, ["validate", "x.jsonl", "--codex", "c", "--schema", str(tmp_path)])
    assert (both.exit_code, both.stderr) == (
        2,
        "rpctape: error: --codex and --schema exclude each other: give one schema source\n",
    )
    missing = runner.invoke(
        app, ["validate", str(tmp_path / "no.jsonl"), "--schema", str(tmp_path)]
    )
    assert missing.exit_code == 2
    assert missing.stderr.startswith(f"rpctape: error: {tmp_path} is not a codex schema directory")


def test_schema_generated_once_per_version(codex_bin: Path, tmp_path: Path) -> None:
    """The second run reads the cache: codex is asked for its version, never to generate again."""
    log = tmp_path / "calls.log"
    counting = tmp_path / "codex"
    counting.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {codex_bin} "$@"\n')
    counting.chmod(counting.stat().st_mode | stat.S_IXUSR)
    cache = tmp_path / "cache"
    first = schema_dir(counting, cache=cache)
    stamp = (first / "ClientRequest.json").stat().st_mtime_ns
    second = schema_dir(counting, cache=cache)
    experimental = schema_dir(counting, cache=cache, experimental=True)
    calls = log.read_text().splitlines()
    assert first == second == cache / codex_version(codex_bin)
    assert experimental == cache / f"{codex_version(codex_bin)}-experimental"
    assert (first / "ClientRequest.json").stat().st_mtime_ns == stamp
    generated = [c for c in calls if c.startswith("app-server generate-json-schema")]
    assert len(generated) == 2
    assert generated[1].endswith(" --experimental")
    assert sorted(p.name for p in cache.iterdir()) == sorted([first.name, experimental.name])


def test_cache_root_respects_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """$XDG_CACHE_HOME/rpctape/schemas, else ~/.cache/rpctape/schemas."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_root() == tmp_path / "rpctape" / "schemas"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "rpctape" / "schemas"


def test_generate_failure_is_one_clear_error(tmp_path: Path) -> None:
    """A codex that cannot generate leaves no cache entry and says why."""
    fake = tmp_path / "codex"
    fake.write_text(
        '#!/bin/sh\nif [ "$1" = --version ]; then echo "codex-cli 9.9.9"; exit 0; fi\n'
        'echo "no such subcommand" >&2\nexit 2\n'
    )
    fake.chmod(0o755)
    result = runner.invoke(
        app,
        ["validate", str(CASSETTES[0]), "--codex", str(fake)],
        env={"XDG_CACHE_HOME": str(tmp_path / "cache")},
    )
    assert result.exit_code == 2
    assert result.stderr == (
        f"rpctape: error: {fake} app-server generate-json-schema failed (exit 2): "
        "no such subcommand\n"
    )
    assert list((tmp_path / "cache" / "rpctape" / "schemas").iterdir()) == []


# --- live traffic: record --validate (the recorder's hook) and replay --validate ----------------

BAD_TURN = b'{"id":3,"method":"turn/start","params":{"threadId":"t","input":"First question."}}'
GOOD_INIT = b'{"id":1,"method":"initialize","params":{"clientInfo":{"name":"c","version":"1"}}}'


def test_recorder_annotates_violations_and_counts_them(
    validator: Validator, tmp_path: Path
) -> None:
    """A frame that breaks the schema carries `violations` in its cassette line; a good one
    carries none; the recorder counts them."""
    path = tmp_path / "c.jsonl"
    writer = CassetteWriter(path, new_header("ws://x"))
    recorder = Recorder(writer, validator=validator.pairs)
    recorder.open(1, path="/", headers=(), subprotocol=None, upstream="ws://x")
    recorder.record_frames(1, C2S, [(True, GOOD_INIT), (True, BAD_TURN)])
    writer.close()
    assert recorder.violations == 1
    good, bad = load(path).frames()
    assert "violations" not in good
    assert bad["violations"] == [
        {"pointer": "/params/input", "message": "'First question.' is not of type 'array'"}
    ]
    assert bad["msg"] == orjson.loads(BAD_TURN)


def test_violation_messages_never_carry_a_secret(validator: Validator) -> None:
    """A secret in the offending value is checked and reported in its redacted form."""
    secret = "sk-proj-" + "a1b2c3d4" * 6
    frame = b'{"id":3,"method":"turn/start","params":{"threadId":"t","input":"%s"}}' % (
        secret.encode()
    )
    recorder = Recorder(None, validator=validator.pairs)
    recorder.open(1, path="/", headers=(), subprotocol=None, upstream="ws://x")
    event, line = recorder.text_line(1, C2S, frame, *recorder.inspect(1, C2S, frame))
    assert secret.encode() not in line
    assert "sk-proj" not in line.decode()
    ((violation),) = event["violations"]
    assert violation["pointer"] == "/params/input"
    assert violation["message"].endswith(" is not of type 'array'")
    assert recorder.violations == 1


def test_a_failing_validator_is_logged_and_the_frame_recorded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A validator that raises does not cost the frame: recorded without annotation."""

    def broken(direction: Direction, msg: Any, response_to: str | None) -> list[tuple[str, str]]:
        raise RuntimeError("boom")

    recorder = Recorder(None, validator=broken)
    recorder.open(1, path="/", headers=(), subprotocol=None, upstream="ws://x")
    (event,) = recorder.record_frames(1, C2S, [(True, GOOD_INIT)])
    assert "violations" not in event and event["method"] == "initialize"
    assert recorder.violations == 0
    assert "schema validator failed on a c2s frame" in caplog.text


def test_tally_counts_live_client_violations_and_never_acts(
    validator: Validator, caplog: pytest.LogCaptureFixture
) -> None:
    """replay --validate's observer: client frames are checked and counted, server frames
    are not, and every frame is recorded (here: built) as it came."""
    tally = Tally(validator.pairs, validator.label, only=C2S)
    recorder = Recorder(None, validator=tally)
    recorder.open(1, path="/", headers=(), subprotocol=None, upstream="ws://x")
    for direction, frame in [(C2S, GOOD_INIT), (C2S, BAD_TURN), (S2C, BAD_TURN)]:
        (event,) = recorder.record_frames(1, direction, [(True, frame)])
        assert event["msg"] == orjson.loads(frame)
    assert (tally.messages, tally.violations) == (2, 1)
    assert tally.summary() == f"1 schema violation(s) in 2 live message(s) ({validator.label})"
    assert (
        f"schema violation ({validator.label}) in a live c2s turn/start /params/input: "
        "'First question.' is not of type 'array'"
    ) in caplog.text


@pytest.mark.e2e
async def test_record_validate_against_the_real_app_server(
    tmp_path: Path, codex_schema: SchemaFor
) -> None:
    """`rpctape record --validate`: the bad turn/start is annotated in the cassette and
    counted in the summary; it still reaches the app-server, which answers it."""
    cassette = tmp_path / "c.jsonl"
    codex = str(find_codex())
    async with FakeBackend() as backend, AppServer(backend.url, codex) as server:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy", "record", "--upstream", server.url,
            "--listen", "ws://127.0.0.1:0", "--cassette", str(cassette),
            "--validate", "--codex", codex,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
            assert line.startswith("listening on ws://127.0.0.1:"), line
            async with connect(line.removeprefix("listening on ").strip()) as ws:
                await ws.send(GOOD_INIT.decode())
                assert orjson.loads(await ws.recv())["id"] == 1
                await ws.send(BAD_TURN.decode())
                reply = orjson.loads(await ws.recv())
                while reply.get("id") != 3:
                    reply = orjson.loads(await ws.recv())
                assert reply["error"]["code"] == -32600
            proc.send_signal(signal.SIGINT)
            out, errs = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0, errs
    assert out.decode().endswith(
        f"to {cassette}; 1 schema violation(s) (annotated in the cassette)\n"
    )
    annotated = [e for e in load(cassette).frames() if "violations" in e]
    assert [(e["dir"], e["seq"], e["violations"]) for e in annotated] == [
        (
            "c2s",
            annotated[0]["seq"],
            [{"pointer": "/params/input", "message": "'First question.' is not of type 'array'"}],
        )
    ]
    assert annotated[0]["msg"] == orjson.loads(BAD_TURN)


@pytest.mark.e2e
def test_replay_validate_counts_live_client_violations(codex_schema: SchemaFor) -> None:
    """`rpctape replay --stdio --validate`: the live client's bad turn/start is counted in
    the summary (replay records nothing); the good initialize is not."""
    cassette = Path(__file__).resolve().parent.parent / "cassettes" / "two-turns.jsonl"
    schema = codex_schema(PINNED_CODEX_VERSION)
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "replay", "--stdio", str(cassette), "--validate",
         "--schema", str(schema)],
        input=GOOD_INIT + b"\n" + BAD_TURN + b"\n", capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stderr.decode().splitlines()
    assert f"1 schema violation(s) in 2 live message(s) ({schema})" in lines
    assert any("schema violation" in line and "turn/start /params/input" in line for line in lines)


def test_validate_options_need_validate(tmp_path: Path) -> None:
    """--codex or --schema without --validate is one clear usage error."""
    result = runner.invoke(
        app, ["record", "--cassette", str(tmp_path / "c.jsonl"), "--schema", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert not (tmp_path / "c.jsonl").exists()
