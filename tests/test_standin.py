"""Tests of proxy.codex.standin (`rpctape-codex`): run as a client would, against
tests/fake_codex.py."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import time
from pathlib import Path

import orjson
import pytest

from proxy.codex.standin import Invocation, parse_invocation
from proxy.core.cassette import frame_of, load
from proxy.core.options import SPECS
from proxy.pytest_plugin import standin_executable

FAKE = Path(__file__).resolve().parent / "fake_codex.py"
INIT = {"id": 1, "method": "initialize", "params": {"clientInfo": {"name": "t", "version": "1"}}}


def lines(*messages: object) -> str:
    """Messages as JSON Lines."""
    return "".join(json.dumps(m) + "\n" for m in messages)


def approval_session(decision: str, first_id: object = 1) -> list[object]:
    """initialize, `ask`, and (once the server's `approve` request came) the answer to it."""
    init = {**INIT, "id": first_id}
    ask = {"id": "a", "method": "ask", "params": "touch x"}
    return [init, ask, {"id": "s1", "result": {"decision": decision}}]


def _env(env: dict[str, str]) -> dict[str, str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("RPCTAPE_")}
    full.update(env)
    return full


def standin(
    tmp_path: Path, args: list[str], stdin: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run rpctape-codex ARGS with ``env`` added (RPCTAPE_* variables) and ``stdin``."""
    return subprocess.run(
        [str(standin_executable(tmp_path)), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=_env(env),
        timeout=60,
        check=False,
    )


def converse(
    tmp_path: Path, args: list[str], messages: list[object], **env: str
) -> subprocess.CompletedProcess[str]:
    """Like :func:`standin`, but the last message (an answer) is written only once a server
    request arrived, as a client does; stdin is closed when the output ends."""
    with subprocess.Popen(
        [str(standin_executable(tmp_path)), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(env),
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        proc.stdin.write(lines(*messages[:-1]))
        proc.stdin.flush()
        out: list[str] = []
        for line in proc.stdout:
            out.append(line)
            if "method" in json.loads(line):  # the server's request: answer it
                proc.stdin.write(lines(messages[-1]))
                proc.stdin.flush()
            if '"result": {"decision"' in line:
                break
        proc.stdin.close()
        out += proc.stdout.readlines()
        code = proc.wait(60)
        return subprocess.CompletedProcess(proc.args, code, "".join(out), proc.stderr.read())


APP_SERVER = ["--config", "model=x", "app-server", "--listen", "stdio://"]


def test_once_records_through_the_real_codex_then_replays_without_it(
    tmp_path: Path, fake_codex: Path
) -> None:
    """once: the first session is recorded through the real codex (its arguments passed
    through); the next ones replay with no real codex at all, ids remapped."""
    cassette, report = tmp_path / "c" / "s.jsonl", tmp_path / "report.jsonl"
    env = {"RPCTAPE_CASSETTE": str(cassette), "RPCTAPE_REAL_CODEX": str(fake_codex)}
    first = converse(tmp_path, APP_SERVER, approval_session("accept"), **env)
    assert (first.returncode, first.stderr) == (0, "")
    expected: list[dict[str, object]] = [
        {"id": 1, "result": {"userAgent": "fake", "argv": APP_SERVER}},
        {"id": "s1", "method": "approve", "params": {"what": "touch x"}},
        {"id": "a", "result": {"decision": "accept"}},
    ]
    assert [json.loads(x) for x in first.stdout.splitlines()] == expected
    assert [p.name for p in cassette.parent.iterdir()] == ["s.jsonl"]  # no temporary left
    assert len(list(load(cassette).frames())) == 6
    env.update(RPCTAPE_REAL_CODEX=str(tmp_path / "none"), RPCTAPE_REPORT=str(report))
    for _ in range(2):
        again = converse(tmp_path, APP_SERVER, approval_session("accept", "x-1"), **env)
        assert (again.returncode, again.stderr) == (0, "")
        assert [json.loads(x) for x in again.stdout.splitlines()] == [
            {**expected[0], "id": "x-1"},
            *expected[1:],
        ]
    sessions = [json.loads(x) for x in report.read_text().splitlines()]
    assert [(s["plan"], s["exit"], s["clean"], s["closed"]) for s in sessions] == [
        ("replay", 0, True, None)
    ] * 2


def test_a_different_answer_ends_the_replay_with_exit_3_and_the_reason_on_stderr(
    tmp_path: Path, fake_codex: Path
) -> None:
    """Declining what the recording accepted: stdout ends at once, the explanation is on
    stderr (once), the exit code is 3 and the report file says why."""
    cassette, report = tmp_path / "s.jsonl", tmp_path / "report.jsonl"
    env = {"RPCTAPE_CASSETTE": str(cassette), "RPCTAPE_REAL_CODEX": str(fake_codex)}
    assert converse(tmp_path, APP_SERVER, approval_session("accept"), **env).returncode == 0
    env["RPCTAPE_REPORT"] = str(report)
    declined = converse(tmp_path, APP_SERVER, approval_session("decline"), **env)
    explanation = (
        'rpctape: no recorded match for response to id "s1" (live connection 1, recorded '
        "connection 1, client message 3)\n"
        "closest recorded client messages:\n"
        '- seq 6 response to approve, next in order: /result/decision: got "decline", '
        'recorded "accept"'
    )
    assert (declined.returncode, declined.stderr) == (3, explanation + "\n")
    assert [json.loads(x)["id"] for x in declined.stdout.splitlines()] == [1, "s1"]
    (session,) = [json.loads(x) for x in report.read_text().splitlines()]
    assert session["closed"] == [
        4409,
        'rpctape: response to approve: /result/decision: got "decline", recorded "accept"',
    ]
    assert session["explanation"] == explanation
    assert (session["exit"], session["clean"]) == (3, False)


def test_other_invocations_run_the_real_codex(tmp_path: Path, fake_codex: Path) -> None:
    """--version and app-server subcommands go to the real codex, arguments and exit code
    unchanged; without one, a single clear line and exit 2."""
    env = {"RPCTAPE_REAL_CODEX": str(fake_codex)}
    version = standin(tmp_path, ["--version"], "", **env)
    assert (version.returncode, version.stdout) == (0, "fake-codex 1.0\n")
    schema = ["-c", "a=b", "app-server", "generate-json-schema", "--out", "x"]
    generated = standin(tmp_path, schema, "", **env)
    assert (generated.returncode, generated.stderr) == (5, f"fake-codex: {' '.join(schema)}\n")
    missing = standin(tmp_path, ["login"], "", RPCTAPE_REAL_CODEX=str(tmp_path / "nope"))
    assert (missing.returncode, missing.stdout) == (2, "")
    assert missing.stderr == (
        f"rpctape-codex: error: $RPCTAPE_REAL_CODEX {tmp_path / 'nope'}: no such file; point "
        "it at the real codex\n"
    )


@pytest.mark.parametrize(
    ("args", "env", "error"),
    [
        (["app-server"], {"RPCTAPE_RECORD_MODE": "sometimes"},
         "invalid record mode ($RPCTAPE_RECORD_MODE) 'sometimes'; valid values: none, once, "
         "new_episodes, all"),
        (["app-server"], {"RPCTAPE_ARGS": "--match-on exactt"},
         "invalid match_on 'exactt'; valid values: a preset (codex, exact) or a "
         "comma-separated list of method, body, clientInfo, cwd, timestamps"),
        (["app-server"], {"RPCTAPE_ARGS": "--colour"},
         "$RPCTAPE_ARGS: unrecognized arguments: --colour; valid options: "
         + ", ".join(spec.flag for spec in SPECS.values())),
        (["app-server"], {"RPCTAPE_RECORD_MODE": "none"},
         "record mode 'none' replays: set $RPCTAPE_CASSETTE to the cassette"),
        (["app-server", "--listen", "ws://127.0.0.1:0"], {},
         "app-server --listen ws://127.0.0.1:0: rpctape-codex serves stdio only; use `rpctape "
         "replay --listen` (or record) for a websocket client"),
    ],
)  # fmt: skip
def test_bad_settings_fail_with_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], error: str
) -> None:
    """A typo or a missing setting: one line on stderr, exit 2, and the same line as the
    JSON-RPC error answering the client's first request (clients that hide stderr show it)."""
    result = standin(tmp_path, args, lines(INIT), **env)
    answer = {"id": 1, "error": {"code": -32098, "message": f"rpctape-codex: error: {error}"}}
    assert (result.returncode, result.stdout, result.stderr) == (
        2, orjson.dumps(answer).decode() + "\n", f"rpctape-codex: error: {error}\n"
    )  # fmt: skip


def test_new_episodes_replays_a_known_session_and_appends_a_new_one(
    tmp_path: Path, fake_codex: Path
) -> None:
    """new_episodes: a session whose first message matches a recorded one is replayed (no real
    codex needed); another is recorded through the real codex and appended."""
    cassette = tmp_path / "s.jsonl"
    env = {
        "RPCTAPE_CASSETTE": str(cassette),
        "RPCTAPE_REAL_CODEX": str(fake_codex),
        "RPCTAPE_RECORD_MODE": "new_episodes",
    }
    assert converse(tmp_path, APP_SERVER, approval_session("accept"), **env).returncode == 0
    ask_first: list[object] = [
        {"id": 9, "method": "ask", "params": "y"},
        {"id": "s1", "result": {"decision": "accept"}},
    ]
    new = converse(tmp_path, APP_SERVER, ask_first, **env)
    assert (new.returncode, new.stderr) == (0, "")
    assert json.loads(new.stdout.splitlines()[-1]) == {"id": 9, "result": {"decision": "accept"}}
    assert load(cassette).connections() == [1, 2]
    env["RPCTAPE_REAL_CODEX"] = str(tmp_path / "none")
    for session in (approval_session("accept", 4), ask_first):
        replayed = converse(tmp_path, APP_SERVER, session, **env)
        assert (replayed.returncode, replayed.stderr) == (0, "")
    assert load(cassette).connections() == [1, 2]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["app-server", "--listen", "stdio://"], Invocation(
            ("app-server", "--listen", "stdio://"), True)),
        (["--config", "a=b", "-c", "x=y", "app-server"], Invocation(
            ("--config", "a=b", "-c", "x=y", "app-server"), True)),
        (["app-server", "--listen=ws://h:1"], Invocation(("app-server", "--listen=ws://h:1"),
                                                         True, "ws://h:1")),
        (["--config", "app-server"], Invocation(("--config", "app-server"), False)),
        (["app-server", "generate-ts"], Invocation(("app-server", "generate-ts"), False)),
        (["app-server", "--help"], Invocation(("app-server", "--help"), False)),
        (["exec", "app-server"], Invocation(("exec", "app-server"), False)),
        ([], Invocation((), False)),
    ],
)  # fmt: skip
def test_parse_invocation(argv: list[str], expected: Invocation) -> None:
    """The subcommand is found after codex's global options (the SDK puts --config first)."""
    assert parse_invocation(argv) == expected


def test_recording_without_a_cassette_goes_to_the_cassette_folder(
    tmp_path: Path, fake_codex: Path
) -> None:
    """No RPCTAPE_CASSETTE: the session is recorded into RPCTAPE_CASSETTE_DIR as
    <UTC time>-<pid>.jsonl (what the desktop app and VS Code setups use)."""
    env = {"RPCTAPE_REAL_CODEX": str(fake_codex), "RPCTAPE_CASSETTE_DIR": str(tmp_path / "t")}
    result = standin(tmp_path, ["app-server", "--listen", "stdio://"], lines(INIT), **env)
    assert (result.returncode, result.stderr) == (0, "")
    (cassette,) = (tmp_path / "t").iterdir()
    assert re.fullmatch(r"\d{8}T\d{6}Z-\d+\.jsonl", cassette.name)
    tape = load(cassette)
    assert tape.header["upstream"] == f"stdio:{fake_codex} app-server --listen stdio://"
    assert [json.loads(frame_of(e)) for e in tape.frames()] == [
        INIT,
        {"id": 1, "result": {"userAgent": "fake", "argv": ["app-server", "--listen", "stdio://"]}},
    ]


@pytest.mark.parametrize("how", ["wrapper", "symlink"])
def test_the_standin_never_runs_itself_as_the_real_codex(tmp_path: Path, how: str) -> None:
    """RPCTAPE_REAL_CODEX leading back to rpctape-codex (a wrapper script that execs it, or
    a symlink named codex): one line saying so, exit 2, at once; recording and other
    invocations alike (`codex --version` through such a wrapper used to spin forever)."""
    me = standin_executable(tmp_path)
    codex = tmp_path / "bin" / "codex"
    codex.parent.mkdir()
    if how == "wrapper":
        codex.write_text(f'#!/bin/sh\nexec {me} "$@"\n')
        codex.chmod(0o755)
    else:
        codex.symlink_to(me)
    env = {"RPCTAPE_REAL_CODEX": str(codex), "RPCTAPE_CASSETTE": str(tmp_path / "c.jsonl"),
           "RPCTAPE_RECORD_MODE": "all"}  # fmt: skip
    for args, stdin in ((["--version"], ""), (["app-server"], lines(INIT))):
        result = standin(tmp_path, args, stdin, **env)
        assert result.returncode == 2, (args, result.stderr)
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"rpctape-codex: error: $RPCTAPE_REAL_CODEX ({codex}) leads back "
                               "to rpctape-codex, which would start itself forever")  # fmt: skip
    assert not (tmp_path / "c.jsonl").exists()


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"RPCTAPE_RECORD_MODE": "none", "RPCTAPE_CASSETTE": "{tmp}/missing.jsonl"},
         "no cassette at {tmp}/missing.jsonl; record mode 'none' only replays: record it "
         "first ($RPCTAPE_RECORD_MODE=once)"),
        ({"RPCTAPE_RECORD_MODE": "all", "RPCTAPE_CASSETTE": "{tmp}/c.jsonl",
          "RPCTAPE_REAL_CODEX": "{tmp}/no-codex"},
         "$RPCTAPE_REAL_CODEX {tmp}/no-codex: no such file; point it at the real codex"),
    ],
    ids=["no cassette", "no real codex"],
)  # fmt: skip
def test_when_it_cannot_serve_the_first_request_gets_the_reason(
    tmp_path: Path, env: dict[str, str], reason: str
) -> None:
    """A client that reads codex's stderr only at debug level still shows why: the first
    request is answered with a JSON-RPC error carrying the line written on stderr."""
    env = {k: v.format(tmp=tmp_path) for k, v in env.items()}
    reason = reason.format(tmp=tmp_path)
    notification = {"method": "initialized"}
    result = standin(tmp_path, ["app-server"], lines(notification, INIT), **env)
    line = f"rpctape-codex: error: {reason}"
    assert result.returncode == 2
    assert result.stderr == line + "\n"
    assert orjson.loads(result.stdout) == {"id": 1, "error": {"code": -32098, "message": line}}


def _start(tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(standin_executable(tmp_path)), *APP_SERVER],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(env),
    )  # fmt: skip


def _readable(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    assert proc.stdout is not None
    return bool(select.select([proc.stdout], [], [], timeout)[0])


def test_two_standins_recording_one_cassette_take_turns(tmp_path: Path, fake_codex: Path) -> None:
    """Two rpctape-codex processes, record mode once, no cassette yet: the first records
    (holding the cassette's lock); the second waits, then replays the first one's recording.
    Its header names the codex of the initialize answer; nothing else is left."""
    cassette, report = tmp_path / "c" / "s.jsonl", tmp_path / "report.jsonl"
    env = {
        "RPCTAPE_CASSETTE": str(cassette), "RPCTAPE_REAL_CODEX": str(fake_codex),
        "RPCTAPE_REPORT": str(report), "FAKE_CODEX_USER_AGENT": "t/0.171.0 (Linux) (t; 1)",
    }  # fmt: skip
    answer = {"id": 1, "result": {"userAgent": "t/0.171.0 (Linux) (t; 1)", "argv": APP_SERVER}}
    with _start(tmp_path, env) as first:
        assert first.stdin is not None and first.stdout is not None
        first.stdin.write(lines(INIT).encode())
        first.stdin.flush()
        assert json.loads(first.stdout.readline()) == answer  # it holds the lock now
        log = tmp_path / "second.log"
        with _start(tmp_path, {**env, "RPCTAPE_LOG": str(log)}) as second:
            assert second.stdin is not None and second.stdout is not None
            second.stdin.write(lines(INIT).encode())
            second.stdin.flush()
            deadline = time.monotonic() + 30
            while "waiting for" not in (log.read_text() if log.exists() else ""):
                assert time.monotonic() < deadline, "the second rpctape-codex never waited"
                time.sleep(0.02)
            assert not _readable(second, 0.2)  # waiting for the first one's recording
            first.stdin.close()
            assert first.wait(30) == 0
            assert _readable(second, 30)
            assert json.loads(second.stdout.readline()) == answer
            second.stdin.close()
            assert second.wait(30) == 0
            assert first.stderr is not None and second.stderr is not None
            assert (first.stderr.read(), second.stderr.read()) == (b"", b"")
    sessions = [json.loads(x) for x in report.read_text().splitlines()]
    assert [(s["plan"], s["kept"], s["played"], s["exit"]) for s in sessions] == [
        ("record", True, [], 0), ("replay", False, [1], 0),
    ]  # fmt: skip
    assert "waited " in sessions[1]["report"]
    assert load(cassette).header["codex"] == "0.171.0"
    assert [json.loads(frame_of(e)) for e in load(cassette).frames()] == [INIT, answer]
    assert os.listdir(cassette.parent) == ["s.jsonl"]


def test_the_real_binary_names_the_codex_when_the_recording_does_not(
    tmp_path: Path, fake_codex: Path
) -> None:
    """The initialize answer names no version (userAgent "fake"): the header's codex field
    is what `REAL_CODEX --version` printed."""
    cassette = tmp_path / "s.jsonl"
    env = {"RPCTAPE_CASSETTE": str(cassette), "RPCTAPE_REAL_CODEX": str(fake_codex),
           "FAKE_CODEX_VERSION": "0.170.0"}  # fmt: skip
    result = standin(tmp_path, APP_SERVER, lines(INIT), **env)
    assert (result.returncode, result.stderr) == (0, "")
    assert load(cassette).header["codex"] == "0.170.0"


def test_a_stale_cassette_is_named_or_refused(tmp_path: Path, fake_codex: Path) -> None:
    """--codex-version in RPCTAPE_ARGS: a cassette recorded with another codex is replayed
    and named in the report line (stale warn), or refused with the reason (stale fail)."""
    cassette, report = tmp_path / "s.jsonl", tmp_path / "report.jsonl"
    env = {"RPCTAPE_CASSETTE": str(cassette), "RPCTAPE_REAL_CODEX": str(fake_codex),
           "FAKE_CODEX_VERSION": "0.169.0"}  # fmt: skip
    assert standin(tmp_path, APP_SERVER, lines(INIT), **env).returncode == 0
    env.update(RPCTAPE_REPORT=str(report), RPCTAPE_RECORD_MODE="none")
    why = (
        f"{cassette} was recorded with codex 0.169.0 (header), not 0.171.0 (the pinned "
        "version): re-record it (rpctape verify --update) or pin the version it was made with"
    )
    warned = standin(tmp_path, APP_SERVER, lines(INIT),
                     RPCTAPE_ARGS="--codex-version 0.171.0", **env)  # fmt: skip
    assert (warned.returncode, warned.stderr) == (0, "")
    refused = standin(tmp_path, APP_SERVER, lines(INIT),
                      RPCTAPE_ARGS="--codex-version 0.171.0 --stale fail", **env)  # fmt: skip
    assert (refused.returncode, refused.stderr) == (2, f"rpctape-codex: error: {why}\n")
    sessions = [json.loads(x) for x in report.read_text().splitlines()]
    assert [(s["plan"], s.get("stale"), s["explanation"]) for s in sessions] == [
        ("replay", why, ""), ("error", "", why),
    ]  # fmt: skip
