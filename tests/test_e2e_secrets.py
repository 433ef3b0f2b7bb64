"""End to end: secrets planted in a real app-server session never reach the cassette."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from record_cassettes import SCENARIOS, Scenario  # scripts/ is on pytest's pythonpath
from websockets.asyncio.client import connect

from proxy import recording_proxy
from proxy.codex.appserver import AppServer
from proxy.codex.backend import FakeBackend
from proxy.codex.client import ClientOptions, SessionClient
from proxy.core.cassette import frame_of, load

pytestmark = pytest.mark.e2e

BEARER = "zqBearerTok3n0a1b2c3d4e5"
GITHUB = "ghp_Zq0123456789abcdefghijklmnopqrstuv"
MCP_ENV = "zqMcpEnvValue9f8e7d6c5"
QUERY = "zqQueryTok3nXy7w"
ATTESTATION = "v1.zqAttestationHeader42"
AWS_ID = "AKIAZQ1234567890ABCD"
AWS_SECRET = "zqAwsSecretAccessKey0987"
OPENAI_KEY = "sk-proj-zq0123456789abcdefghij"
PRETTY_TOKEN = "zqPrettyPrintedToken77"
SECRETS = [BEARER, GITHUB, MCP_ENV, QUERY, ATTESTATION, AWS_ID, AWS_SECRET, OPENAI_KEY,
           PRETTY_TOKEN]  # fmt: skip

CONFIG = {
    "model_providers": {
        "other": {
            "name": "other",
            "base_url": "http://127.0.0.1:9/v1",
            "wire_api": "responses",
            "experimental_bearer_token": BEARER,
        }
    },
    "mcp_servers": {
        "github": {
            "command": "/bin/false",
            "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": GITHUB, "OTHER_SETTING": MCP_ENV},
        }
    },
}


async def test_planted_secrets_never_reach_the_cassette(tmp_path: Path) -> None:
    """Config secrets, env maps, an upgrade query token and header, keys in requests:
    the cassette holds none of them, and everything else of the session is still there."""
    cassette = tmp_path / "secrets.jsonl"
    requests = [
        {"id": 1, "method": "initialize", "params": {"clientInfo": {"name": "t", "version": "1"}}},
        {"method": "initialized"},
        {"id": 2, "method": "config/read", "params": {}},
        {"id": 3, "method": "account/login/start", "params": {
            "type": "amazonBedrock", "accessKeyId": AWS_ID, "secretAccessKey": AWS_SECRET}},
        {"id": 4, "method": "model/list", "params": {"note": f"my key is {OPENAI_KEY}"}},
    ]  # fmt: skip
    pretty = json.dumps({"id": 5, "method": "model/list", "params": {
        "token": PRETTY_TOKEN, "keep": "é"}}, indent=2, ensure_ascii=False)  # fmt: skip
    replies: dict[int, dict[str, object]] = {}
    async with (
        FakeBackend() as backend,
        AppServer(backend.url, extra_config=CONFIG) as server,
        recording_proxy(server.url, cassette) as url,
        connect(
            f"{url}/?token={QUERY}&mode=test",
            additional_headers={"X-OAI-Attestation": ATTESTATION},
            max_size=None,
        ) as ws,
    ):
        for request in requests:
            await ws.send(orjson.dumps(request).decode())
        await ws.send(pretty)
        while len(replies) < 5:
            message = orjson.loads(await ws.recv())
            if "id" in message and "method" not in message:
                replies[message["id"]] = message
    config_reply = json.dumps(replies[2])
    assert BEARER in config_reply and GITHUB in config_reply  # the server did send them

    data = cassette.read_bytes()
    assert [s for s in SECRETS if s.encode() in data] == []
    tape = load(cassette)
    assert tape.warnings == []
    (opened,) = [e for e in tape.events if e["kind"] == "open"]
    assert opened["path"].startswith("/?token=<redacted:") and opened["path"].endswith("&mode=test")
    assert opened["headers"]["X-OAI-Attestation"].startswith("<redacted:")
    frames = {(e["dir"], e.get("method") or e.get("response_to")): e for e in tape.frames()}
    config = frames[("s2c", "config/read")]["msg"]["result"]["config"]
    assert config["model_providers"]["other"]["base_url"] == "http://127.0.0.1:9/v1"
    assert config["model_providers"]["other"]["experimental_bearer_token"].startswith("<redacted")
    env = config["mcp_servers"]["github"]["env"]
    assert sorted(env) == ["GITHUB_PERSONAL_ACCESS_TOKEN", "OTHER_SETTING"]
    assert all(value.startswith("<redacted:") for value in env.values())
    assert config["mcp_servers"]["github"]["command"] == "/bin/false"
    login = frames[("c2s", "account/login/start")]["msg"]["params"]
    assert login["type"] == "amazonBedrock" and login["accessKeyId"].startswith("<redacted:")
    (pretty_event,) = [e for e in tape.frames() if e["dir"] == "c2s" and e["msg"].get("id") == 5]
    marked = pretty_event["msg"]["params"]["token"]
    assert marked.startswith("<redacted:")  # the pretty-printed frame is kept, but its secret
    assert frame_of(pretty_event).decode() == pretty.replace(PRETTY_TOKEN, marked)
    assert all(frame_of(e) for e in tape.frames())


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
async def test_every_recorded_scenario_keeps_planted_secrets_out(
    tmp_path: Path, scenario: Scenario
) -> None:
    """Every scenario the shipped cassettes are recorded from (scripts/record_cassettes.py),
    run against the real app-server with secrets planted in its config and the upgrade URL:
    the server sends them (config/read at the end), the cassette holds none of them."""
    cassette = tmp_path / "c.jsonl"
    options = ClientOptions(
        string_ids=scenario.string_ids,
        request_attestation=scenario.attestation_token is not None,
        attestation_token=scenario.attestation_token,
    )
    async with (
        FakeBackend() as backend,
        AppServer(
            backend.url,
            approval_policy=scenario.approval_policy,
            auth=scenario.auth,
            extra_config=CONFIG,
        ) as server,
    ):
        backend.script(*scenario.replies)
        async with (
            recording_proxy(server.url, cassette) as url,
            SessionClient(f"{url}/?token={QUERY}", options) as client,
        ):
            await scenario.drive(client)
            config = orjson.dumps(await client.call("config/read", {})).decode()
    assert BEARER in config and GITHUB in config and MCP_ENV in config  # really sent
    planted = [BEARER, GITHUB, MCP_ENV, QUERY]
    if scenario.attestation_token is not None:
        planted.append(scenario.attestation_token)
    data = cassette.read_bytes()
    assert [s for s in planted if s.encode() in data] == []
    tape = load(cassette)
    assert tape.warnings == [] and len(tape.frames()) > 4
    assert all(frame_of(e) for e in tape.frames())
