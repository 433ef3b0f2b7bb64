"""End to end: `rpctape verify` plays shipped cassettes' clients against the real app-server.

The app-server is set up as scripts/record_cassettes.py set it up when it recorded the
cassette (fake backend scripted with the same replies, same approval policy and auth mode).
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest

from proxy.codex.appserver import PINNED_CODEX_VERSION, AppServer, find_codex
from proxy.codex.backend import FakeBackend
from proxy.codex.dialect import CODEX
from proxy.core.cassette import load
from proxy.core.dialect import RecordedVersion, VersionSource
from proxy.core.diff import EntryKind
from proxy.wire.recorded_client import (
    Verdict,
    render_summary,
    summary_json,
    verify_cassette,
    verify_paths,
)
from proxy.wire.upstream import Upstream

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "cassettes"

pytestmark = pytest.mark.e2e


@functools.cache
def _scenarios() -> ModuleType:
    """scripts/record_cassettes.py, which holds how each shipped cassette was made."""
    name = "rpctape_record_cassettes"
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / "record_cassettes.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while it runs
    spec.loader.exec_module(module)
    return module


def scenario(name: str) -> Any:
    found = [s for s in _scenarios().SCENARIOS if s.name == name]
    assert len(found) == 1
    return found[0]


def rpctape(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args],
        capture_output=True, text=True, timeout=100, check=False, env=env,
    )  # fmt: skip


async def verify_live(codex: Path, case: Any, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``rpctape ARGS --upstream URL`` against a fresh backend and app-server set up as
    ``case`` was recorded."""
    async with (
        FakeBackend() as backend,
        AppServer(backend.url, codex, approval_policy=case.approval_policy) as server,
    ):
        backend.script(*case.replies)
        # In a thread: the backend serves from this test's event loop meanwhile.
        return await asyncio.to_thread(rpctape, *args, "--upstream", server.url)


async def test_command_approval_verifies_against_each_codex(
    tmp_path: Path, codex_bin: Path, codex_version: str
) -> None:
    """command-approval.jsonl (an approval answered with the live request's id): equivalent
    against 0.169.0; against 0.171.0 exactly the version strings of docs/drift.md differ."""
    case = scenario("command-approval")
    cassette = SHIPPED / "command-approval.jsonl"
    out = tmp_path / "new.jsonl"
    async with (
        FakeBackend() as backend,
        AppServer(backend.url, codex_bin, approval_policy=case.approval_policy) as server,
    ):
        backend.script(*case.replies)
        outcome = await verify_cassette(cassette, Upstream.parse(server.url), out, timeout=60)
    assert outcome.failures == []
    assert outcome.diff is not None
    new = load(out)
    assert new.header["meta"]["verified_from"] == "command-approval.jsonl"
    answers = [e for e in new.frames() if e["dir"] == "c2s" and e.get("type") == "response"]
    asks = [e for e in new.frames() if e.get("method") == "item/commandExecution/requestApproval"]
    assert [a["msg"]["id"] for a in answers] == [q["msg"]["id"] for q in asks]
    assert [a["msg"]["result"] for a in answers] == [{"decision": "accept"}]
    changes = [
        (e.kind, e.type, e.method, c.pointer, c.a, c.b)
        for e in outcome.diff.entries
        for c in e.changes
    ]
    if codex_version == PINNED_CODEX_VERSION:
        assert outcome.diff.equivalent, changes
        assert outcome.ok
        return
    agent = next(c for c in changes if c[3] == "/result/userAgent")
    assert agent[5] == agent[4].replace(f"/{PINNED_CODEX_VERSION} ", f"/{codex_version} ")
    assert [c for c in changes if c[3] != "/result/userAgent"] == [
        (EntryKind.CHANGED, "response", "thread/start", "/result/thread/cliVersion",
         PINNED_CODEX_VERSION, codex_version),
        (EntryKind.CHANGED, "notification", "thread/started", "/params/thread/cliVersion",
         PINNED_CODEX_VERSION, codex_version),
    ]  # fmt: skip
    assert [e.kind for e in outcome.diff.entries if e.kind is not EntryKind.CHANGED] == []


async def test_update_rerecords_the_cassette_through_the_command_line(
    tmp_path: Path, codex_bin: Path, codex_version: str
) -> None:
    """`verify --update` replaces the cassette with the new recording; verifying the updated
    cassette against the same codex is then equivalent (exit 0)."""
    case = scenario("turn-streamed")
    cassette = tmp_path / "turn-streamed.jsonl"
    shutil.copyfile(SHIPPED / "turn-streamed.jsonl", cassette)
    original = cassette.read_bytes()
    done = await verify_live(codex_bin, case, "verify", str(cassette), "--update")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].startswith(
        f"{cassette}: verify: cassette updated with the new recording ("
    )
    updated = cassette.read_bytes()
    assert updated != original
    meta = load(cassette).header["meta"]
    assert meta["verified_from"] == "turn-streamed.jsonl"
    assert meta["scenario"] == "turn-streamed"
    assert "codex" not in meta  # the version that recorded the original is no longer true
    again = await verify_live(codex_bin, case, "verify", str(cassette), "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    (result,) = orjson.loads(again.stdout)
    assert result["cassette"] == str(cassette)
    assert result["failures"] == []
    assert result["updated"] is False
    assert result["new"] is None  # equivalent: the temporary recording is gone
    assert result["diff"]["equivalent"] is True
    assert cassette.read_bytes() == updated
    assert sorted(p.name for p in tmp_path.iterdir()) == ["turn-streamed.jsonl"]


def test_a_server_that_never_sends_what_was_awaited_fails_naming_it(tmp_path: Path) -> None:
    """A recorded notification the live server never sends: verify (here over stdio, one
    child per connection) gives up after --timeout, names it, keeps the new recording and
    exits 1."""
    lines = (SHIPPED / "initialize-model-list-config.jsonl").read_bytes().splitlines()
    planted = []
    for line in lines:
        event = orjson.loads(line)
        if event.get("method") == "initialized":
            never = {
                "seq": event["seq"], "t": event["t"], "conn": event["conn"], "kind": "text",
                "dir": "s2c", "type": "notification", "method": "rpctape/never",
                "msg": {"method": "rpctape/never", "params": {}},
            }  # fmt: skip
            planted.append(orjson.dumps(never))
        planted.append(line)
    cassette = tmp_path / "planted.jsonl"
    cassette.write_bytes(b"\n".join(planted) + b"\n")
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "CODEX_HOME": str(home)}
    out = tmp_path / "new.jsonl"
    done = rpctape(
        "verify", str(cassette), "--timeout", "2", "--out", str(out),
        "--", str(find_codex()), "app-server", env=env,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    failed = [line for line in done.stdout.splitlines() if "FAILED" in line]
    assert failed == [
        f"{cassette}: FAILED conn 1: no progress within 2 s before client message seq 4 "
        "(> notification initialized): still waiting for notification rpctape/never "
        "(0 of 1 came)"
    ]
    assert done.stdout.splitlines()[-1].endswith(f"; new recording in {out}")
    new = load(out)
    frames = [(e["dir"], e.get("method") or e.get("response_to")) for e in new.frames()]
    assert frames[:2] == [("c2s", "initialize"), ("s2c", "initialize")]
    assert [f for f in frames if f[0] == "c2s"] == [("c2s", "initialize")]
    assert new.events[0]["transport"] == "stdio"
    errors = [e["message"] for e in new.events if e["kind"] == "error"]
    assert errors == [f"verify: {failed[0].split('FAILED conn 1: ')[1]}"]
    closes = [e for e in new.events if e["kind"] == "close"]
    assert closes[0]["by"] == "proxy"


async def test_a_folder_summary_against_each_codex(
    tmp_path: Path, codex_bin: Path, codex_version: str
) -> None:
    """verify_paths over a folder against a real app-server: the cassette was recorded with
    0.169.0 (its meta), the server says which codex it is, and the new recording's header
    carries that version; equivalent against 0.169.0, different against 0.171.0."""
    case = scenario("initialize-model-list-config")
    folder = tmp_path / "cassettes"
    folder.mkdir()
    shutil.copyfile(SHIPPED / "initialize-model-list-config.jsonl", folder / "init.jsonl")
    async with (
        FakeBackend() as backend,
        AppServer(backend.url, codex_bin, approval_policy=case.approval_policy) as server,
    ):
        backend.script(*case.replies)
        rows = await verify_paths([folder], Upstream.parse(server.url), dialect=CODEX, timeout=60)
    (row,) = rows
    assert row.recorded == RecordedVersion(PINNED_CODEX_VERSION, VersionSource.META)
    assert row.live_version == codex_version
    body = summary_json(rows)["cassettes"][0]
    assert (body["codex"], body["against"]) == (PINNED_CODEX_VERSION, codex_version)
    if codex_version == PINNED_CODEX_VERSION:
        assert row.verdict is Verdict.EQUIVALENT
        assert sorted(p.name for p in folder.iterdir()) == ["init.jsonl"]
        return
    assert row.verdict is Verdict.DIFFERENT
    new = load(folder / ".init.verify.jsonl")
    assert new.header["codex"] == codex_version
    assert render_summary(rows)[1].split()[1:5] == [
        f"{PINNED_CODEX_VERSION}", "(meta)", codex_version, "different:"
    ]  # fmt: skip
