"""Tests of proxy.pytest_plugin: example projects run by a real `pytest`, as a user would."""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from proxy.codex.appserver import FAKE_API_KEY, FAKE_API_KEY_ENV, write_codex_home
from proxy.codex.backend import FakeBackend, Reply
from proxy.core.cassette import frame_of, load
from proxy.core.options import Door, parse_words
from proxy.errors import UsageError
from proxy.pytest_plugin import MARKER_OPTIONS, cassette_path, resolve_settings, standin_args
from tests.helpers import C, S, fake_item, write_tape
from tests.projects import INI, run_pytest, summary
from tests.scripted_upstream import ScriptedUpstream

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = Path(__file__).resolve().parent / "plugin_examples"


def make_project(tmp_path: Path, example: str, ini_extra: str = "") -> Path:
    """A throw-away project: pytest.ini, the example as test_<name>.py, a cassettes/ folder."""
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "pytest.ini").write_text(INI + ini_extra)
    shutil.copy(EXAMPLES / f"{example}_example.py", tmp_path / f"test_{example}.py")
    (tmp_path / "cassettes").mkdir()
    return tmp_path


async def test_replay_sync_async_strict_and_refusals(tmp_path: Path) -> None:
    """Sync and async tests replay; a strict miss fails with the why; bad cassettes error."""
    project = make_project(tmp_path, "replay")
    shutil.copy(REPO / "cassettes" / "initialize-model-list-config.jsonl", project / "cassettes")
    code, out = await run_pytest(project)
    assert (code, summary(out)) == (1, "1 failed, 2 passed, 3 errors"), out
    assert "FAILED test_replay.py::test_strict_miss - Failed: rpctape strict replay failed" in out
    assert "During handling of the above exception" not in out
    assert (
        "rpctape: unknown @pytest.mark.rpctape option(s) cassete; valid: "
        + ", ".join(sorted(MARKER_OPTIONS))
    ) in out
    assert (
        "rpctape: no recorded match for request initialize "
        "(live connection 1, recorded connection 1, client message 1)"
    ) in out
    assert '/params/clientInfo/name: got "intruder", recorded "rpctape-client"' in out
    # Once in the failure, not in the log too (pytest's own short summary at the end repeats
    # the failure message whole when CI is set, so it is not counted).
    failures = out.split("short test summary info")[0]
    assert failures.count('/params/clientInfo/name: got "intruder"') == 1, out
    assert (
        "rpctape: cassette name '../outside.jsonl' must be a relative path inside the "
        f"cassette folder {project / 'cassettes'}"
    ) in out
    assert (
        f"rpctape: no cassette at {project / 'cassettes' / 'missing.jsonl'}; record mode "
        "'none' only replays"
    ) in out


async def test_record_mode_typo_on_the_command_line(tmp_path: Path) -> None:
    """--rpctape-record-mode with a typo stops pytest with the valid values."""
    project = make_project(tmp_path, "modes")
    code, out = await run_pytest(project, "--rpctape-record-mode=sometimes")
    assert code == 4
    assert (
        "ERROR: invalid record mode (--rpctape-record-mode) 'sometimes'; "
        "valid values: none, once, new_episodes, all"
    ) in out


async def test_all_from_the_command_line_then_replay_without_upstream(tmp_path: Path) -> None:
    """--rpctape-record-mode=all overrides the marker and records; a plain run then replays."""
    project = make_project(tmp_path, "modes")
    cassette = project / "cassettes" / "echo.jsonl"
    async with ScriptedUpstream() as upstream:
        code, out = await run_pytest(
            project,
            "-k",
            "test_echo",
            "--rpctape-record-mode=all",
            "-o",
            f"rpctape_upstream={upstream.url}",
        )
        assert (code, summary(out)) == (0, "1 passed, 1 deselected"), out
    assert [(e["dir"], frame_of(e)) for e in load(cassette).frames()] == [
        ("c2s", b'{"id":1,"method":"echo","params":{"n":1}}'),
        ("s2c", b'{"id":1,"method":"echo","params":{"n":1}}'),
    ]
    recorded = cassette.read_bytes()
    code, out = await run_pytest(project, "-k", "test_echo")
    assert (code, summary(out)) == (0, "1 passed, 1 deselected"), out
    assert cassette.read_bytes() == recorded
    assert sorted(p.name for p in cassette.parent.iterdir()) == ["echo.jsonl"]


async def test_new_episodes_replays_known_and_appends_new(tmp_path: Path) -> None:
    """new_episodes: the known connection is replayed, the new one relayed and appended."""
    project = make_project(tmp_path, "modes")
    cassette = write_tape(
        project / "cassettes" / "episodes.jsonl", [(C, "first"), (S, "recorded first")]
    )
    async with ScriptedUpstream() as upstream:
        code, out = await run_pytest(
            project, "-k", "test_episodes", "-o", f"rpctape_upstream={upstream.url}"
        )
    assert (code, summary(out)) == (0, "1 passed, 1 deselected"), out
    assert upstream.received == [["second"]]
    tape = load(cassette)
    assert tape.connections() == [1, 2]
    assert [frame_of(e) for e in tape.frames(2)] == [b"second", b"second"]


@pytest.mark.e2e
async def test_once_records_from_the_real_app_server_then_replays(tmp_path: Path) -> None:
    """once: the first run records through the upstream command; the second needs no upstream."""
    command = f"{{python}} {REPO / 'scripts' / 'record_cassettes.py'} serve"
    project = make_project(tmp_path, "once", f"rpctape_upstream = {command}\n")
    cassette = project / "cassettes" / "once.jsonl"
    code, out = await run_pytest(project)
    assert (code, summary(out)) == (0, "1 passed"), out
    tape = load(cassette)
    methods = [e.get("method") for e in tape.frames() if e["dir"] == "c2s"]
    assert methods == ["initialize", "initialized", "thread/start", "turn/start"]
    recorded = cassette.read_bytes()
    code, out = await run_pytest(project, "-o", "rpctape_upstream=ws://127.0.0.1:9")
    assert (code, summary(out)) == (0, "1 passed"), out
    assert cassette.read_bytes() == recorded


@pytest.mark.parametrize("name", ["../x.jsonl", "/etc/passwd", "a/../../x.jsonl", ""])
def test_cassette_names_cannot_escape(tmp_path: Path, name: str) -> None:
    """Absolute names and names with .. are refused."""
    with pytest.raises(UsageError, match="must be a relative path inside the cassette folder"):
        cassette_path(tmp_path, name)


def test_cassette_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    """A name that resolves outside the folder through a symlink is refused too."""
    folder = tmp_path / "cassettes"
    folder.mkdir()
    (folder / "link").symlink_to(tmp_path)
    assert cassette_path(folder, "sub/x.jsonl") == folder / "sub" / "x.jsonl"
    with pytest.raises(UsageError, match="resolves outside the cassette folder"):
        cassette_path(folder, "link/x.jsonl")


SDK_PIPES = ("-W", "ignore::pytest.PytestUnraisableExceptionWarning")
"""The SDK's `close()` never closes its child's pipes (see tests/test_e2e_sdk.py)."""


@pytest.mark.e2e
async def test_rpctape_codex_records_the_sdk_then_replays_without_codex(tmp_path: Path) -> None:
    """The rpctape_codex fixture as an SDK user writes it: the first run records through the
    real codex (fake model backend), the second replays with no codex and no backend."""
    project = make_project(tmp_path / "project", "codex_sdk", "rpctape_record_mode = once\n")
    cassette = project / "cassettes" / "sdk-two-turns.jsonl"
    home = tmp_path / "home"
    async with FakeBackend() as backend:
        write_codex_home(home, backend.url)
        backend.script(Reply.text("First answer."), Reply.text("Second answer."))
        code, out = await run_pytest(
            project, *SDK_PIPES, env={"CODEX_HOME": str(home), FAKE_API_KEY_ENV: FAKE_API_KEY}
        )
    assert (code, summary(out)) == (0, "1 passed"), out
    methods = [e.get("method") for e in load(cassette).frames() if e["dir"] == "c2s"]
    assert (methods[0], methods.count("turn/start")) == ("initialize", 2)
    recorded = cassette.read_bytes()
    code, out = await run_pytest(
        project, *SDK_PIPES, "-o", f"rpctape_codex={tmp_path / 'no-codex'}",
        env={"CODEX_HOME": str(tmp_path / "no-home")},
    )  # fmt: skip
    assert (code, summary(out)) == (0, "1 passed"), out
    assert cassette.read_bytes() == recorded
    assert sorted(p.name for p in cassette.parent.iterdir()) == ["sdk-two-turns.jsonl"]


async def test_rpctape_codex_fails_a_replay_miss_once_with_the_explanation(tmp_path: Path) -> None:
    """A stdio client recorded accepting, replayed declining: the test fails once, the
    explanation as its failure message; the cassette recorded by the first run is kept."""
    project = make_project(tmp_path / "project", "codex_fake", "rpctape_record_mode = once\n")
    real = project / "real-codex"
    real.write_text(f'#!/bin/sh\nexec {sys.executable} {REPO / "tests" / "fake_codex.py"} "$@"\n')
    real.chmod(0o755)
    code, out = await run_pytest(project, "-o", f"rpctape_codex={real}")
    assert (code, summary(out)) == (0, "1 passed"), out
    recorded = (project / "cassettes" / "ask.jsonl").read_bytes()
    code, out = await run_pytest(project, env={"DECISION": "decline"})
    assert (code, summary(out)) == (1, "1 failed"), out
    explanation = (
        'rpctape-codex: rpctape: no recorded match for response to id "s1" (live connection 1, '
        "recorded connection 1, client message 2)\n"
        "closest recorded client messages:\n"
        '- seq 4 response to approve, next in order: /result/decision: got "decline", '
        'recorded "accept"'
    )
    assert "_ test_ask _" in out and f"_\n{explanation}\n=====" in out, out
    failures = out.split("short test summary info")[0]  # pytest's summary repeats it in CI
    assert failures.count("no recorded match for response") == 1, out
    assert "FAILED test_codex_fake.py::test_ask - Failed: rpctape-codex: rpctape: no reco" in out
    assert (project / "cassettes" / "ask.jsonl").read_bytes() == recorded


RULES = """
[[rules]]
name = "fake token"
dir = "s2c"
method = "attestation/generate"
action = "reply"
result = { token = "T" }
"""


def test_marker_options_become_rpctape_args_and_rules(tmp_path: Path) -> None:
    """The marker's matching, redaction, rules (relative to the test file) and attest options
    as the stand-in's RPCTAPE_ARGS (the options model's words), and as rules for the
    websocket fixture; a bad value is refused with the option's name."""
    (tmp_path / "r.toml").write_text(RULES)
    marker = pytest.mark.rpctape(
        match_on="exact", ignore=["/params/a", "/params/b"], redact_keys="k", rules="r.toml",
        attest=["inject:v1.T"], allow_playback_repeats=True, pace="recorded",
    )  # fmt: skip
    item = fake_item(tmp_path, marker.mark)
    resolved = resolve_settings(item, Door.CODEX_FIXTURE)
    rules_file = str((tmp_path / "r.toml").resolve())
    assert standin_args(resolved) == [
        "--match-on", "exact", "--ignore", "/params/a", "--ignore", "/params/b",
        "--redact-key", "k", "--rules", rules_file, "--attest", "inject:v1.T",
        "--allow-playback-repeats", "--pace", "recorded",
    ]  # fmt: skip
    assert parse_words(shlex.join(standin_args(resolved)), Door.STANDIN, source="x") == {
        "match_on": "exact", "ignore": ["/params/a", "/params/b"], "redact_keys": ["k"],
        "rules": [rules_file], "attest": ["inject:v1.T"], "allow_playback_repeats": True,
        "pace": "recorded",
    }  # fmt: skip
    rules = resolved.settings.rule_list()
    assert [r.name for r in rules] == [
        "fake token",
        "attest: advertise requestAttestation",
        "attest: inject <redacted:9d8f6a4e>",
    ]
    bad = fake_item(tmp_path, pytest.mark.rpctape(attest=[1]).mark)
    with pytest.raises(UsageError, match=r"attest= expected text, not 1"):
        resolve_settings(bad, Door.CODEX_FIXTURE)


def fake_codex(project: Path) -> Path:
    """An executable in ``project`` that runs tests/fake_codex.py (the real codex to record
    through)."""
    real = project / "real-codex"
    real.write_text(f'#!/bin/sh\nexec {sys.executable} {REPO / "tests" / "fake_codex.py"} "$@"\n')
    real.chmod(0o755)
    return real


AGENT = "p/0.171.0 (Linux; x86_64) (p; 1)"
WS_HEADER = {"rpctape": 1, "tool": "rpctape 0.1.0", "upstream": "UPSTREAM",
             "transport": "websocket", "meta": {}, "codex": "0.171.0"}  # fmt: skip
CODEX_HEADER = {"rpctape": 1, "tool": "rpctape 0.1.0", "upstream": "stdio:REAL app-server "
                "--listen stdio://", "transport": "stdio", "meta": {"client_transport": "stdio"},
                "codex": "0.171.0"}  # fmt: skip
THREAD = {"method": "thread/started", "params": {"thread": {"cliVersion": "0.171.0"}}}


def ws_lines(word: str) -> list[dict[str, object]]:
    """Every line of a websocket test's cassette (parallel_example.py), without times."""
    note = {"type": "notification", "method": "thread/started", "msg": THREAD}
    echoed = {"type": "invalid", "raw": word}
    return [
        WS_HEADER,
        {"seq": 1, "conn": 1, "kind": "open", "path": "/", "subprotocol": None,
         "upstream": "UPSTREAM/", "transport": "websocket", "client_transport": "websocket"},
        {"seq": 2, "conn": 1, "kind": "text", "dir": "c2s", **note},
        {"seq": 3, "conn": 1, "kind": "text", "dir": "s2c", **note},
        {"seq": 4, "conn": 1, "kind": "text", "dir": "c2s", **echoed},
        {"seq": 5, "conn": 1, "kind": "text", "dir": "s2c", **echoed},
        {"seq": 6, "conn": 1, "kind": "close", "by": "client", "code": 1000, "reason": "",
         "leg": "client", "forwarded": {"code": 1000, "reason": ""}},
    ]  # fmt: skip


def codex_lines(what: str) -> list[dict[str, object]]:
    """Every line of a stand-in test's cassette (parallel_example.py), without times."""
    def text(seq: int, direction: str, kind: str, msg: dict[str, object],
             **more: object) -> dict[str, object]:  # fmt: skip
        spaced = json.dumps(msg)  # the client and fake_codex.py write JSON with spaces
        return {"seq": seq, "conn": 1, "kind": "text", "dir": direction, "type": kind, **more,
                "raw": spaced, "msg": msg}  # fmt: skip

    init = {"id": 1, "method": "initialize", "params": {"clientInfo": {"name": "p"}}}
    answer = {"id": 1, "result": {"userAgent": AGENT,
                                  "argv": ["app-server", "--listen", "stdio://"]}}  # fmt: skip
    closed = {"code": 1000, "reason": "the client closed its input"}
    return [
        CODEX_HEADER,
        {"seq": 1, "conn": 1, "kind": "open", "path": "", "subprotocol": None,
         "upstream": "stdio:REAL app-server --listen stdio://", "transport": "stdio",
         "client_transport": "stdio"},
        text(2, "c2s", "request", init, method="initialize"),
        text(3, "s2c", "response", answer, response_to="initialize"),
        text(4, "c2s", "request", {"id": 2, "method": "ask", "params": what}, method="ask"),
        text(5, "s2c", "request", {"id": "s1", "method": "approve", "params": {"what": what}},
             method="approve"),
        text(6, "c2s", "response", {"id": "s1", "result": {"decision": "accept"}},
             response_to="approve"),
        text(7, "s2c", "response", {"id": 2, "result": {"decision": "accept"}},
             response_to="ask"),
        {"seq": 8, "conn": 1, "kind": "close", "by": "client", "code": None,
         "reason": "the client closed its input", "leg": "client", "forwarded": closed},
        {"seq": 9, "conn": 1, "kind": "close", "by": "proxy", "code": 1000,
         "reason": "the client closed its input", "leg": "server", "forwarded": closed,
         "exit_code": 0},
    ]  # fmt: skip


PARALLEL_CASSETTES = {
    "codex-1.jsonl": codex_lines("codex 1"), "codex-2.jsonl": codex_lines("codex 2"),
    "codex-3.jsonl": codex_lines("codex 3"), "shared-codex.jsonl": codex_lines("shared"),
    "shared-ws.jsonl": ws_lines("shared"), "ws-1.jsonl": ws_lines("ws 1"),
    "ws-2.jsonl": ws_lines("ws 2"), "ws-3.jsonl": ws_lines("ws 3"),
}  # fmt: skip


def cassette_lines(folder: Path, upstream: str, real: Path) -> dict[str, list[dict[str, object]]]:
    """Every line of every file in ``folder`` (hidden ones too), without what differs from
    run to run: times, the creation date, a websocket client's headers, the upstream's port
    and the real codex's path."""
    found = {}
    for path in sorted(folder.iterdir()):
        lines = []
        for raw in path.read_bytes().splitlines():
            line = json.loads(raw)
            for volatile in ("t", "created", "headers"):
                line.pop(volatile, None)
            for key in ("upstream",):
                if isinstance(line.get(key), str):
                    line[key] = line[key].replace(upstream, "UPSTREAM").replace(str(real), "REAL")
            lines.append(line)
        found[path.name] = lines
    return found


async def test_parallel_workers_record_then_replay_both_fixtures(tmp_path: Path) -> None:
    """pytest -n 4 over ten tests on both fixtures (parallel_example.py; the websocket ones
    record from tests/scripted_upstream.py, the stand-in ones through tests/fake_codex.py),
    two pairs sharing a cassette and asking for it at once: recording, each pair's cassette
    is written by one worker while the other waits its turn and replays it; every cassette
    is whole, line by line, with no lock or temporary file left. Replaying with -n 4 passes
    the same and changes no byte; one worker records the same cassettes."""
    async def run(project: Path, *args: str) -> tuple[int, str, dict[str, dict[str, Any]]]:
        meet, done = project / "meet", project / "results"
        for folder in (meet, done):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
        env = {"PARALLEL_MEET": str(meet), "PARALLEL_RESULTS": str(done),
               "FAKE_CODEX_USER_AGENT": AGENT}  # fmt: skip
        code, out = await run_pytest(project, *args, env=env)
        return code, out, {p.stem: json.loads(p.read_text()) for p in sorted(done.iterdir())}

    project = make_project(tmp_path / "parallel", "parallel")
    single = make_project(tmp_path / "single", "parallel")
    real, single_real = fake_codex(project), fake_codex(single)
    async with ScriptedUpstream() as upstream:
        record = ("--rpctape-record-mode=once", "-o", f"rpctape_upstream={upstream.url}")
        code, out, did = await run(project, "-n", "4", *record, "-o", f"rpctape_codex={real}")
        assert (code, summary(out)) == (0, "10 passed"), out
        recorded = cassette_lines(project / "cassettes", upstream.url, real)
        code, out, alone = await run(
            single, "-p", "no:xdist", *record, "-o", f"rpctape_codex={single_real}"
        )
        assert (code, summary(out)) == (0, "10 passed"), out
        assert cassette_lines(single / "cassettes", upstream.url, single_real) == recorded
    assert recorded == PARALLEL_CASSETTES
    for pair in ("shared_ws", "shared_codex"):
        assert sorted((did[f"test_{pair}_{n}"]["plan"], did[f"test_{pair}_{n}"]["waited"])
                      for n in ("first", "second")) == [("record", False), ("replay", True)]
    assert sorted(entry["plan"] for entry in alone.values()) == ["record"] * 8 + ["replay"] * 2
    before = {p.name: p.read_bytes() for p in (project / "cassettes").iterdir()}
    code, out, did = await run(
        project, "-n", "4", "--rpctape-record-mode=none", "-o", f"rpctape_codex={tmp_path / 'no'}"
    )
    assert (code, summary(out)) == (0, "10 passed"), out
    assert [entry["plan"] for entry in did.values()] == ["replay"] * 10
    assert {p.name: p.read_bytes() for p in (project / "cassettes").iterdir()} == before


def with_codex(path: Path, version: str) -> Path:
    """Say in a cassette's header which codex made it."""
    head, rest = path.read_bytes().split(b"\n", 1)
    path.write_bytes(json.dumps({**json.loads(head), "codex": version}).encode() + b"\n" + rest)
    return path


def usage_project(tmp_path: Path, ini: str = "") -> Path:
    """usage_example.py with its cassettes: two.jsonl (two connections, one played),
    ws.jsonl and codex.jsonl (made by codex 0.169.0), two.jsonl (by 0.171.0), two cassettes
    no test uses (one in a subfolder) and rpctape's own hidden files (not cassettes)."""
    project = make_project(tmp_path, "usage", ini)
    folder = project / "cassettes"
    with_codex(write_tape(folder / "two.jsonl", [(C, "a"), (S, "b")], [(C, "c"), (S, "d")]),
               "0.171.0")  # fmt: skip
    for name in ("ws.jsonl", "codex.jsonl"):
        with_codex(write_tape(folder / name, [(C, "a"), (S, "b")]), "0.169.0")
    (folder / "sub").mkdir()
    for name in ("orphan.jsonl", "sub/orphan.jsonl", ".hidden.jsonl", ".ws.jsonl.lock"):
        write_tape(folder / name, [(C, "x"), (S, "y")])
    return project


UNUSED = """\
=================================== rpctape ====================================
2 cassette(s) no test used:
  cassettes/orphan.jsonl
  cassettes/sub/orphan.jsonl
1 cassette(s) with recorded connections never played:
  cassettes/two.jsonl: recorded connection(s) 2 never played
"""


async def test_unused_cassettes_and_connections_are_reported_or_fail(tmp_path: Path) -> None:
    """--rpctape-unused=report lists the cassettes of the served folder no test used and the
    recorded connections never played (hidden files are rpctape's own, not cassettes);
    =fail makes the exit status 1, with pytest -n 4 as well (the workers' ledgers merged);
    a deselected test's cassette is not unused; without the option nothing is said."""
    project = usage_project(tmp_path)
    code, out = await run_pytest(project)
    assert (code, summary(out)) == (0, "3 passed"), out
    assert "= rpctape =" not in out, out
    code, out = await run_pytest(project, "--rpctape-unused=report")
    assert (code, summary(out)) == (0, "3 passed"), out
    assert UNUSED in out, out
    code, out = await run_pytest(project, "--rpctape-unused=fail", "-n", "4")
    assert (code, summary(out)) == (1, "3 passed"), out
    assert UNUSED in out, out
    (project / "cassettes" / "orphan.jsonl").unlink()
    shutil.rmtree(project / "cassettes" / "sub")
    code, out = await run_pytest(project, "--rpctape-unused=fail", "-k", "not test_two")
    assert (code, summary(out)) == (0, "2 passed, 1 deselected"), out
    assert (
        "=================================== rpctape ====================================\n"
        "every cassette of the served cassette folders was used, every recorded connection "
        "played\n"
    ) in out, out  # a deselected test's cassette is not unused


def stale_line(project: Path, name: str) -> str:
    return (
        f"{project / 'cassettes' / name} was recorded with codex 0.169.0 (header), not 0.171.0 "
        "(the pinned version): re-record it (rpctape verify --update) or pin the version it "
        "was made with"
    )


async def test_stale_cassettes_are_listed_or_fail_their_tests(tmp_path: Path) -> None:
    """rpctape_codex_version pinned: the cassettes replayed on either fixture that another
    codex made are listed at the end (warn, the default; under pytest -n 2 too), or fail
    their tests with the cassette, its version and the pinned one (--rpctape-stale=fail)."""
    project = usage_project(tmp_path, "rpctape_codex_version = 0.171.0\n")
    listed = (
        "=================================== rpctape ====================================\n"
        "2 replayed cassette(s) recorded with another codex than 0.171.0 "
        "(rpctape_codex_version):\n"
        f"  {stale_line(project, 'codex.jsonl')}\n"
        f"  {stale_line(project, 'ws.jsonl')}\n"
    )
    for args in ((), ("-n", "2")):
        code, out = await run_pytest(project, *args)
        assert (code, summary(out)) == (0, "3 passed"), out
        assert listed in out, out
    code, out = await run_pytest(project, "--rpctape-stale=fail")
    assert (code, summary(out)) == (1, "1 failed, 1 passed, 1 error"), out
    assert f"_\nrpctape: {stale_line(project, 'ws.jsonl')}\n" in out, out
    assert f"_\nrpctape-codex: {stale_line(project, 'codex.jsonl')}\n" in out, out
    assert "= rpctape =" not in out, out  # failed, not listed


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("-o", "rpctape_codex_version=latest"),
         "ini rpctape_codex_version: invalid codex version 'latest'; give one such as 0.171.0"),
        (("-o", "rpctape_codex_version=0.171.0", "--rpctape-stale=maybe"),
         "invalid stale action (--rpctape-stale) 'maybe'; valid values: warn, fail"),
        (("--rpctape-stale=fail",),
         "--rpctape-stale says what replaying a cassette recorded with another codex does: set "
         "the ini option rpctape_codex_version to the version the project is pinned to"),
        (("--rpctape-unused=loud",),
         "invalid --rpctape-unused action 'loud'; valid values: report, fail"),
    ],
)  # fmt: skip
async def test_bad_end_of_run_options_stop_pytest(
    tmp_path: Path, args: tuple[str, ...], error: str
) -> None:
    """A bad pinned version, stale action or unused action stops pytest at once (exit 4)."""
    project = make_project(tmp_path, "modes")
    code, out = await run_pytest(project, *args)
    assert (code, f"ERROR: {error}" in out) == (4, True), out
