"""Ten tests on both fixtures for `pytest -n 4`: six with a cassette of their own, and two
pairs sharing one (`shared-ws.jsonl` on the websocket fixture, `shared-codex.jsonl` on the
stand-in).

The tests are listed so that pytest-xdist's first chunks (two consecutive tests per worker)
put the two tests of each pair on different workers, and each pair meets before asking for
its cassette (`together`): when recording, both ask at once; one records, and holds on until
the other one's session logged that it waits for its turn (`partner_waits`); the other then
replays. Each test writes what its session did (record or replay, and whether it waited) to
$PARALLEL_RESULTS/<test>.json.

The websocket tests record against an echo server (tests/scripted_upstream.py, given with
-o rpctape_upstream=ws://...), the stand-in tests through tests/fake_codex.py (-o
rpctape_codex=...). Copied into a temporary project and run by tests/test_pytest_plugin.py;
not collected here.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from pathlib import Path

import pytest
from websockets.sync.client import connect

from proxy.pytest_plugin import CodexStandin, RpctapeSession

MEET = Path(os.environ.get("PARALLEL_MEET", "."))
WORKERS = "PYTEST_XDIST_WORKER" in os.environ
if WORKERS:  # the sessions of this worker's websocket tests say when they wait their turn
    _log = logging.getLogger("rpctape.session")
    _log.setLevel(logging.INFO)
    _log.addHandler(logging.FileHandler(MEET / f"worker-{os.getpid()}.log"))

THREAD = '{"method":"thread/started","params":{"thread":{"cliVersion":"0.171.0"}}}'
"""Echoed by the upstream: a server message naming codex 0.171.0 (the header's codex)."""


@pytest.fixture
def together(request: pytest.FixtureRequest) -> None:
    """Wait (at most 20 s) for the other test sharing this test's cassette, in another
    pytest-xdist worker (a run without workers goes on at once)."""
    if not WORKERS:
        return
    marker = request.node.get_closest_marker("rpctape")
    assert marker is not None
    folder = MEET / marker.kwargs["cassette"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / request.node.name).touch()
    deadline = time.monotonic() + 20
    while len(list(folder.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)


def partner_waits(cassette: str) -> None:
    """Recording a shared cassette: hold on (at most 20 s) until the other test's session
    logged that it waits for this one's recording (a run without workers goes on)."""
    deadline = time.monotonic() + 20
    while WORKERS and time.monotonic() < deadline:
        for log in MEET.glob("*.log"):
            if any("waiting for" in line and line.endswith(f"/{cassette}")
                   for line in log.read_text().splitlines()):  # fmt: skip
                return
        time.sleep(0.02)


def note(request: pytest.FixtureRequest, plan: str, waited: bool) -> None:
    """What this test's session did."""
    out = Path(os.environ["PARALLEL_RESULTS"]) / f"{request.node.name}.json"
    out.write_text(json.dumps({"plan": plan, "waited": waited}))


def echo(request: pytest.FixtureRequest, session: RpctapeSession, word: str) -> None:
    """A thread notification and ``word``, each echoed."""
    assert session.plan is not None
    note(request, session.plan.value, session.server.server.waited > 0)
    if session.plan.value == "record" and session.cassette.name.startswith("shared"):
        partner_waits(session.cassette.name)
    with connect(session.url) as ws:
        for frame in (THREAD, word):
            ws.send(frame)
            assert ws.recv() == frame
            time.sleep(0.2)


def ask(request: pytest.FixtureRequest, standin: CodexStandin, what: str) -> None:
    """initialize, ask, answer the server's approval request; check every reply."""
    log = MEET / f"standin-{request.node.name}.log"
    with subprocess.Popen(
        standin.argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **standin.env, "RPCTAPE_LOG": str(log)},
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        exchange = [
            ({"id": 1, "method": "initialize", "params": {"clientInfo": {"name": "p"}}}, None),
            ({"id": 2, "method": "ask", "params": what}, {"id": "s1", "method": "approve",
                                                          "params": {"what": what}}),
            ({"id": "s1", "result": {"decision": "accept"}}, {"id": 2, "result": {
                "decision": "accept"}}),
        ]  # fmt: skip
        for n, (message, reply) in enumerate(exchange):
            proc.stdin.write(json.dumps(message) + "\n")
            proc.stdin.flush()
            got = json.loads(proc.stdout.readline())
            if reply is not None:
                assert got == reply
            recording = f"record {standin.env['RPCTAPE_CASSETTE']} over stdio" in log.read_text()
            if n == 0 and recording and standin.cassette.name.startswith("shared"):
                partner_waits(standin.cassette.name)
            time.sleep(0.2)
        proc.stdin.close()
        assert proc.wait(30) == 0
    (session,) = standin.sessions()
    note(request, session["plan"], "waited " in session["report"])


@pytest.mark.rpctape(cassette="shared-ws.jsonl")
def test_shared_ws_first(together: None, rpctape: RpctapeSession, request: pytest.FixtureRequest) -> None:  # noqa: E501
    echo(request, rpctape, "shared")


@pytest.mark.rpctape(cassette="ws-1.jsonl")
def test_ws_1(rpctape: RpctapeSession, request: pytest.FixtureRequest) -> None:
    echo(request, rpctape, "ws 1")


@pytest.mark.rpctape(cassette="shared-ws.jsonl")
def test_shared_ws_second(together: None, rpctape: RpctapeSession, request: pytest.FixtureRequest) -> None:  # noqa: E501
    echo(request, rpctape, "shared")


@pytest.mark.rpctape(cassette="ws-2.jsonl")
def test_ws_2(rpctape: RpctapeSession, request: pytest.FixtureRequest) -> None:
    echo(request, rpctape, "ws 2")


@pytest.mark.rpctape(cassette="shared-codex.jsonl")
def test_shared_codex_first(together: None, rpctape_codex: CodexStandin, request: pytest.FixtureRequest) -> None:  # noqa: E501
    ask(request, rpctape_codex, "shared")


@pytest.mark.rpctape(cassette="codex-1.jsonl")
def test_codex_1(rpctape_codex: CodexStandin, request: pytest.FixtureRequest) -> None:
    ask(request, rpctape_codex, "codex 1")


@pytest.mark.rpctape(cassette="shared-codex.jsonl")
def test_shared_codex_second(together: None, rpctape_codex: CodexStandin, request: pytest.FixtureRequest) -> None:  # noqa: E501
    ask(request, rpctape_codex, "shared")


@pytest.mark.rpctape(cassette="codex-2.jsonl")
def test_codex_2(rpctape_codex: CodexStandin, request: pytest.FixtureRequest) -> None:
    ask(request, rpctape_codex, "codex 2")


@pytest.mark.rpctape(cassette="ws-3.jsonl")
def test_ws_3(rpctape: RpctapeSession, request: pytest.FixtureRequest) -> None:
    echo(request, rpctape, "ws 3")


@pytest.mark.rpctape(cassette="codex-3.jsonl")
def test_codex_3(rpctape_codex: CodexStandin, request: pytest.FixtureRequest) -> None:
    ask(request, rpctape_codex, "codex 3")
