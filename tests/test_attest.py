"""Tests of proxy.core.attest: mode parsing, the rules each mode makes, and every mode through the
recording relay against a scripted upstream that asks attestation/generate."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from proxy import recording_proxy, replay_server
from proxy.core.attest import AttestKind, AttestMode, attestation_rules, build_rules
from proxy.core.cassette import Cassette, load
from proxy.core.redact import marker
from proxy.errors import UsageError
from tests.scripted_upstream import ScriptedUpstream

INIT = '{"id":1,"method":"initialize","params":{"clientInfo":{"name":"t","version":"0"}}}'
ADVERTISED = (
    '{"id":1,"method":"initialize","params":{"clientInfo":{"name":"t","version":"0"},'
    '"capabilities":{"requestAttestation":true}}}'
)


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        ("pass", AttestMode(AttestKind.PASS)),
        ("inject:v1.abc", AttestMode(AttestKind.INJECT, token="v1.abc")),
        ("inject:a:b", AttestMode(AttestKind.INJECT, token="a:b")),
        ("rewrite:U", AttestMode(AttestKind.REWRITE, token="U")),
        ("error", AttestMode(AttestKind.ERROR, code=-32000)),
        ("error:-32099", AttestMode(AttestKind.ERROR, code=-32099)),
        ("garbage", AttestMode(AttestKind.GARBAGE)),
        ("silent", AttestMode(AttestKind.SILENT)),
        ("delay:500", AttestMode(AttestKind.DELAY, ms=500)),
    ],
)
def test_parse_modes(text: str, mode: AttestMode) -> None:
    """Every documented --attest form parses."""
    assert AttestMode.parse(text) == mode


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "injekt:T",
            "--attest 'injekt:T': unknown mode; valid modes: pass, inject:TOKEN, "
            "rewrite:TOKEN, error[:CODE], garbage, silent, delay:MS",
        ),
        ("inject", "--attest inject needs a token: inject:TOKEN"),
        ("error:x", "--attest error:CODE needs an integer code, not 'x'"),
        ("delay", "--attest delay needs milliseconds: delay:MS"),
        ("silent:1", "--attest silent takes no argument"),
    ],
)
def test_parse_errors_list_valid_modes(text: str, message: str) -> None:
    """A typo fails at the edge with the list of valid modes."""
    with pytest.raises(UsageError) as info:
        AttestMode.parse(text)
    assert str(info.value) == message


def test_rules_per_mode() -> None:
    """Local answers advertise the capability; delay holds the right message."""
    inject = attestation_rules([AttestMode.parse("inject:T"), AttestMode.parse("delay:50")])
    assert [(r.name, r.action, r.dir, r.method) for r in inject] == [
        ("attest: advertise requestAttestation", "patch", "c2s", "initialize"),
        ("attest: delay 50 ms", "delay", "s2c", "attestation/generate"),
        (f"attest: inject {marker('T')}", "reply", "s2c", "attestation/generate"),
    ]
    delay = attestation_rules([AttestMode.parse("delay:50")])
    assert [(r.action, r.dir, r.response_to) for r in delay] == [
        ("delay", "c2s", "attestation/generate")
    ]
    assert attestation_rules([AttestMode.parse("rewrite:U")])[0].type == "response"
    assert attestation_rules([], advertise=True)[0].set == {
        "/params/capabilities/requestAttestation": True
    }
    with pytest.raises(UsageError, match="choose one of inject, error, garbage and silent"):
        attestation_rules([AttestMode.parse("inject:T"), AttestMode.parse("silent")])


# --- through the relay ----------------------------------------------------------------


async def session(
    upstream: ScriptedUpstream,
    cassette: Path,
    attest: list[str],
    *,
    answer: Any = None,
    advertise: bool = False,
) -> list[str]:
    """Initialize, let the upstream ask attestation/generate, answer it if the client sees it
    (with ``answer``), then sync with an echo; return the frames the client received."""
    rules = tuple(build_rules([], attest, advertise))
    async with recording_proxy(upstream.url, cassette, rules=rules) as url, connect(url) as ws:
        seen, _ = await drive(ws, answer)
        await sync_with(ws)
    return seen


async def drive(ws: ClientConnection, answer: Any) -> tuple[list[str], float]:
    """The client script: initialize, have the upstream ask attestation/generate, answer it
    with ``answer`` (a result or error member) if it arrives, sync with an echo. Returns the
    frames received before the sync and when the answer was sent."""
    seen: list[str] = []
    answered_at = 0.0
    await ws.send(INIT)
    seen.append(str(await ws.recv()))
    await ws.send("!attest")
    await ws.send('{"method":"sync"}')
    while (frame := str(await ws.recv())) != '{"method":"sync"}':
        seen.append(frame)
        msg = orjson.loads(frame)
        if msg.get("method") == "attestation/generate" and answer is not None:
            await ws.send(orjson.dumps({"id": msg["id"], **answer}).decode())
            answered_at = time.monotonic()
    return seen, answered_at


async def sync_with(ws: ClientConnection) -> None:
    """One more echo so every earlier frame has reached the upstream."""
    await ws.send('{"method":"sync2"}')
    while str(await ws.recv()) != '{"method":"sync2"}':
        pass


def by_method(tape: Cassette, method: str) -> list[dict[str, Any]]:
    return [e for e in tape.frames() if method in (e.get("method"), e.get("response_to"))]


async def test_inject_answers_for_the_client(upstream: ScriptedUpstream, tmp_path: Path) -> None:
    """inject:T: capability set, rpctape answers, the client never sees the request."""
    cassette = tmp_path / "c.jsonl"
    seen = await session(upstream, cassette, ["inject:v1.T"])
    init = orjson.loads(upstream.received[0][0])
    assert init["params"]["capabilities"] == {"requestAttestation": True}
    assert [a for _, a in upstream.answers] == [{"id": 0, "result": {"token": "v1.T"}}]
    assert seen == [ADVERTISED]  # the upstream's echo of initialize; no attestation/generate
    request, reply = by_method(load(cassette), "attestation/generate")
    assert (request["dir"], request["forwarded"], request["rules"]) == (
        "s2c",
        False,
        [{"rule": f"attest: inject {marker('v1.T')}", "action": "reply"}],
    )
    assert (reply["dir"], reply["origin"], reply["rule"], reply["response_to"]) == (
        "c2s",
        "rpctape",
        f"attest: inject {marker('v1.T')}",
        "attestation/generate",
    )
    assert reply["msg"] == {"id": 0, "result": {"token": marker("v1.T")}}
    assert b"v1.T" not in cassette.read_bytes()
    initialize, echoed = [e for e in load(cassette).frames() if e.get("method") == "initialize"]
    assert (initialize["dir"], echoed["dir"]) == ("c2s", "s2c")
    assert initialize["delivered"]["params"]["capabilities"] == {"requestAttestation": True}
    assert "capabilities" not in initialize["msg"]["params"]


async def test_rewrite_replaces_the_clients_token(
    upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    """rewrite:U: the client answers T, the server gets U; the cassette shows both."""
    cassette = tmp_path / "c.jsonl"
    seen = await session(upstream, cassette, ["rewrite:U"], answer={"result": {"token": "T"}})
    assert '{"id":0,"method":"attestation/generate","params":{}}' in seen
    assert [a for _, a in upstream.answers] == [{"id": 0, "result": {"token": "U"}}]
    (_, answer) = by_method(load(cassette), "attestation/generate")
    assert answer["msg"]["result"]["token"] == marker("T")
    assert answer["delivered"]["result"]["token"] == marker("U")
    assert answer["rules"] == [{"rule": f"attest: rewrite {marker('U')}", "action": "patch"}]
    assert b'"U"' not in cassette.read_bytes() and b"rewrite U" not in cassette.read_bytes()


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (
            "error",
            {
                "id": 0,
                "error": {
                    "code": -32000,
                    "message": "attestation refused by rpctape (--attest error)",
                },
            },
        ),
        (
            "error:-32099",
            {
                "id": 0,
                "error": {
                    "code": -32099,
                    "message": "attestation refused by rpctape (--attest error)",
                },
            },
        ),
        ("garbage", {"id": 0, "result": {}}),
    ],
)
async def test_local_error_and_garbage(
    upstream: ScriptedUpstream, tmp_path: Path, mode: str, expected: dict[str, Any]
) -> None:
    """error[:CODE] and garbage answer the server themselves."""
    seen = await session(upstream, tmp_path / "c.jsonl", [mode])
    assert [a for _, a in upstream.answers] == [expected]
    assert seen == [ADVERTISED]


async def test_silent_swallows_the_request(upstream: ScriptedUpstream, tmp_path: Path) -> None:
    """silent: nobody answers; the request is recorded as not forwarded."""
    cassette = tmp_path / "c.jsonl"
    seen = await session(upstream, cassette, ["silent"])
    assert upstream.answers == [] and seen == [ADVERTISED]
    (request,) = by_method(load(cassette), "attestation/generate")
    assert request["forwarded"] is False


async def test_delay_holds_the_clients_answer(upstream: ScriptedUpstream, tmp_path: Path) -> None:
    """delay:MS holds the client's answer at least MS milliseconds, other traffic flows."""
    cassette = tmp_path / "c.jsonl"
    async with (
        recording_proxy(
            upstream.url, cassette, rules=tuple(build_rules([], ["delay:300"], False))
        ) as url,
        connect(url) as ws,
    ):
        await ws.send("!attest")
        request = orjson.loads(await ws.recv())
        await ws.send(orjson.dumps({"id": request["id"], "result": {"token": "T"}}).decode())
        await ws.send('{"method":"after"}')  # queued behind the held answer (same direction)
        assert await ws.recv() == '{"method":"after"}'
    ((arrived, answer),) = upstream.answers
    assert answer == {"id": 0, "result": {"token": "T"}}
    assert arrived - upstream.asked[0] >= 0.3
    (_, recorded) = by_method(load(cassette), "attestation/generate")
    assert recorded["delay_ms"] == 300


async def test_advertise_only(upstream: ScriptedUpstream, tmp_path: Path) -> None:
    """--advertise-attestation sets the capability and leaves answering to the client."""
    seen = await session(
        upstream, tmp_path / "c.jsonl", [], answer={"result": {"token": "C"}}, advertise=True
    )
    assert orjson.loads(upstream.received[0][0])["params"]["capabilities"] == {
        "requestAttestation": True
    }
    assert [a for _, a in upstream.answers] == [{"id": 0, "result": {"token": "C"}}]
    assert '{"id":0,"method":"attestation/generate","params":{}}' in seen


async def test_pass_changes_nothing(upstream: ScriptedUpstream, tmp_path: Path) -> None:
    """pass: frames and cassette are as without rules."""
    cassette = tmp_path / "c.jsonl"
    await session(upstream, cassette, ["pass"], answer={"result": {"token": "C"}})
    assert upstream.received[0][0] == INIT
    assert not any("rules" in e or "origin" in e for e in load(cassette).frames())


async def test_delay_gives_way_on_close(upstream: ScriptedUpstream, tmp_path: Path) -> None:
    """A held message whose connection closes first is reported as not delivered."""
    cassette = tmp_path / "c.jsonl"
    rules = tuple(build_rules([], ["delay:5000"], False))
    async with recording_proxy(upstream.url, cassette, rules=rules) as url, connect(url) as ws:
        await ws.send("!attest")
        request = orjson.loads(await ws.recv())
        await ws.send(orjson.dumps({"id": request["id"], "result": {"token": "T"}}).decode())
        await asyncio.sleep(0.05)
    errors = [e["message"] for e in load(cassette).events if e["kind"] == "error"]
    assert errors == ["1 delayed frame(s) not delivered: closed first"]
    assert upstream.answers == []


# --- the same modes in replay ----------------------------------------------------------


async def replay_session(
    cassette: Path, attest: list[str], *, answer: str | None, **options: Any
) -> tuple[list[str], Any, float]:
    """The client script of :func:`session` against a replay of ``cassette``; returns the
    frames received, the replay report, and the seconds from answering to the final echo."""
    rules = build_rules([], attest, False)
    server = replay_server(cassette, rules=rules, **options)
    token = None if answer is None else {"result": {"token": answer}}
    async with server as url, connect(url) as ws:
        seen, answered_at = await drive(ws, token)
        await sync_with(ws)  # the echo of a frame sent after the answer
        waited = time.monotonic() - answered_at
    return seen, server.report, waited


async def record_attestation(upstream: ScriptedUpstream, cassette: Path, attest: list[str]) -> None:
    """A cassette of the session above: the client answers T unless rpctape does."""
    await session(upstream, cassette, attest, answer={"result": {"token": "T"}})


async def test_replay_without_rules_serves_the_request_to_the_client(
    upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    """The recorded attestation/generate is replayed; the client's answer matches."""
    cassette = tmp_path / "c.jsonl"
    await record_attestation(upstream, cassette, [])
    seen, report, _ = await replay_session(cassette, [], answer="T2")
    assert seen == [INIT, '{"id":0,"method":"attestation/generate","params":{}}']
    assert report.clean, report.render()


async def test_replay_inject_as_recorded(upstream: ScriptedUpstream, tmp_path: Path) -> None:
    """A cassette recorded with inject:X replays with inject:X: same frames, clean report."""
    cassette = tmp_path / "c.jsonl"
    await record_attestation(upstream, cassette, ["inject:X"])
    seen, report, _ = await replay_session(cassette, ["inject:X"], answer=None)
    assert seen == [ADVERTISED]
    assert report.clean, report.render()


async def test_replay_rewrite(upstream: ScriptedUpstream, tmp_path: Path) -> None:
    """rewrite:U in replay: the client answers, rpctape rewrites, the planner matches."""
    cassette = tmp_path / "c.jsonl"
    await record_attestation(upstream, cassette, ["rewrite:U"])
    seen, report, _ = await replay_session(cassette, ["rewrite:U"], answer="T")
    assert seen == [INIT, '{"id":0,"method":"attestation/generate","params":{}}']
    assert report.clean, report.render()


async def test_replay_silent_leaves_the_recorded_answer_unused(
    upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    """silent in replay: the client never sees the request; the recorded answer is unused."""
    cassette = tmp_path / "c.jsonl"
    await record_attestation(upstream, cassette, [])
    seen, report, _ = await replay_session(
        cassette, ["silent"], answer="T", ignore=["/params/capabilities"], match="any-order"
    )
    assert seen == [INIT]
    assert [u.description for u in report.unused_client] == ["> response to attestation/generate"]


async def test_replay_error_is_a_miss_against_a_recorded_token(
    upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    """error in replay answers with an error where a token was recorded: the conversation
    ends at once (4409, naming the difference) and the report says so."""
    cassette = tmp_path / "c.jsonl"
    await record_attestation(upstream, cassette, [])
    rules = build_rules([], ["error"], False)
    server = replay_server(
        cassette, rules=rules, ignore=["/params/capabilities"], match="any-order"
    )
    async with server as url, connect(url) as ws:
        seen, _ = await drive(ws, None)
        with pytest.raises(ConnectionClosed) as closed:
            await sync_with(ws)
    assert seen == [INIT]
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
        4409,
        "rpctape: response to attestation/generate: got an error to id 0, recorded a response "
        "to id 0",
    )
    report = server.report
    (miss,) = report.misses
    assert miss.render().splitlines()[:3] == [
        "rpctape: no recorded match for error to id 0 (live connection 1, recorded connection "
        "1, client message 4)",
        "closest recorded client messages:",
        "- seq 8 response to attestation/generate: got an error to id 0, recorded a response to "
        "id 0",
    ]


async def test_replay_delay_holds_the_answer(upstream: ScriptedUpstream, tmp_path: Path) -> None:
    """delay:300 in replay holds the client's answer, so what follows comes later."""
    cassette = tmp_path / "c.jsonl"
    await record_attestation(upstream, cassette, [])
    seen, report, waited = await replay_session(cassette, ["delay:300"], answer="T")
    assert seen == [INIT, '{"id":0,"method":"attestation/generate","params":{}}']
    assert report.clean, report.render()
    assert waited >= 0.3
