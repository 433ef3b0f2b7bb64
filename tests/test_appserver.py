"""Tests of proxy.codex.appserver: config writing, finding codex, and running the real
app-server."""

from __future__ import annotations

import asyncio
import datetime
import os
import tomllib
from pathlib import Path
from typing import Any

import orjson
import pytest

from proxy.codex.appserver import (
    LOCAL_CODEX,
    PINNED_CODEX_VERSION,
    AppServer,
    AuthMode,
    choose_codex,
    codex_config,
    codex_path,
    find_codex,
    installed_codex_versions,
    live_group_members,
    write_codex_home,
)
from proxy.codex.backend import DEFAULT_REPLY, FakeBackend, Reply, id_token_claims
from proxy.codex.client import ClientOptions, SessionClient
from proxy.errors import AppServerError, UsageError
from tests.helpers import decode_jwt_payload

EXEC_ARGS = {"cmd": "touch x", "sandbox_permissions": "require_escalated", "justification": "why"}

SCOPED_POST = ("POST", "/backend-api/codex/responses")
"""The only request that carries ``x-oai-attestation`` in ChatGPT mode without websockets."""

ATTESTATION_REQUEST = '{"method":"attestation/generate","id":0,"params":{}}'
"""The server's first attestation request, exactly as sent."""

LONG_AGO = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
"""A ``last_refresh`` old enough for codex to refresh its ChatGPT tokens at start."""


def process_group_alive(pgid: int) -> bool:
    """Whether any process of the group ``pgid`` is still running (zombies do not count)."""
    return bool(live_group_members(pgid))


def received(client: SessionClient) -> list[Any]:
    """Every message the client received, parsed, in order."""
    return [orjson.loads(frame) for direction, frame in client.frames if direction == "s2c"]


# --- no app-server needed ---------------------------------------------------------------


def test_write_codex_home_config(tmp_path: Path) -> None:
    """config.toml points a mock provider at <backend>/v1 in API-key mode."""
    write_codex_home(tmp_path / "home", "http://127.0.0.1:9/", approval_policy="on-request")
    config = tomllib.loads((tmp_path / "home" / "config.toml").read_text(encoding="utf-8"))
    assert config == {
        "model": "mock-model",
        "approval_policy": "on-request",
        "sandbox_mode": "read-only",
        "model_provider": "mock",
        "analytics": {"enabled": False},
        "model_providers": {
            "mock": {
                "name": "mock",
                "base_url": "http://127.0.0.1:9/v1",
                "wire_api": "responses",
                "env_key": "FAKE_OPENAI_KEY",
                "request_max_retries": 0,
                "stream_max_retries": 0,
                "supports_websockets": False,
            }
        },
    }


def test_write_codex_home_chatgpt_mode(tmp_path: Path) -> None:
    """ChatGPT mode: provider under /backend-api/codex with OpenAI auth, plus auth.json."""
    home = tmp_path / "home"
    refreshed = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    write_codex_home(
        home, "http://127.0.0.1:9", auth="chatgpt", responses_websocket=True, last_refresh=refreshed
    )
    config = tomllib.loads((home / "config.toml").read_text(encoding="utf-8"))
    assert config == {
        "model": "mock-model",
        "approval_policy": "never",
        "sandbox_mode": "read-only",
        "model_provider": "mock",
        "chatgpt_base_url": "http://127.0.0.1:9/backend-api/",
        "analytics": {"enabled": False},
        "model_providers": {
            "mock": {
                "name": "mock",
                "base_url": "http://127.0.0.1:9/backend-api/codex",
                "wire_api": "responses",
                "requires_openai_auth": True,
                "request_max_retries": 0,
                "stream_max_retries": 0,
                "supports_websockets": True,
            }
        },
    }
    auth_path = home / "auth.json"
    assert auth_path.stat().st_mode & 0o777 == 0o600
    auth = orjson.loads(auth_path.read_bytes())
    id_token = auth["tokens"].pop("id_token")
    assert auth == {
        "auth_mode": "chatgpt",
        "OPENAI_API_KEY": None,
        "tokens": {
            "access_token": "access-x",
            "refresh_token": "refresh-x",
            "account_id": "acct-1",
        },
        "last_refresh": "2026-01-02T03:04:05Z",
    }
    assert (
        decode_jwt_payload(id_token)
        == id_token_claims()
        == {
            "email": "user@example.com",
            "https://api.openai.com/auth": {
                "chatgpt_plan_type": "pro",
                "chatgpt_user_id": "user-1",
                "chatgpt_account_id": "acct-1",
            },
        }
    )


def test_api_key_mode_writes_no_auth_json_and_modes_are_validated(tmp_path: Path) -> None:
    """API-key mode (the default) writes no auth.json; an unknown mode lists the valid ones."""
    write_codex_home(tmp_path, "http://h", auth=AuthMode.API_KEY)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["config.toml"]
    assert codex_config("http://h", responses_websocket=True)["model_providers"]["mock"][
        "supports_websockets"
    ]
    with pytest.raises(
        UsageError, match="invalid auth mode 'chatgtp'; valid values: apikey, chatgpt"
    ):
        codex_config("http://h", auth="chatgtp")
    with pytest.raises(UsageError, match="valid values"):
        AppServer("http://h", auth="api-key")


def test_codex_config_extra_merges_nested_tables() -> None:
    """extra overrides single keys inside nested tables and adds new ones."""
    config = codex_config(
        "http://h",
        extra={"model_providers": {"mock": {"supports_websockets": True}}, "new": 1},
    )
    assert config["model_providers"]["mock"]["supports_websockets"] is True
    assert config["model_providers"]["mock"]["base_url"] == "http://h/v1"
    assert config["new"] == 1


def test_find_codex_bad_explicit_path(tmp_path: Path) -> None:
    """A missing explicit codex path raises AppServerError telling to run `./dev setup`."""
    missing = tmp_path / "no-codex"
    with pytest.raises(AppServerError, match=r"\./dev setup") as caught:
        find_codex(missing)
    assert str(missing) in str(caught.value)
    assert isinstance(caught.value, RuntimeError)


def test_find_codex_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$RPCTAPE_CODEX is used when no explicit path is given; explicit wins over it."""
    fake = tmp_path / "codex"
    fake.write_text("#!/bin/sh\n")
    monkeypatch.setenv("RPCTAPE_CODEX", str(fake))
    assert find_codex() == fake
    monkeypatch.setenv("RPCTAPE_CODEX", str(tmp_path / "gone"))
    with pytest.raises(AppServerError, match=r"\$RPCTAPE_CODEX"):
        find_codex()
    assert find_codex(fake) == fake


def test_find_codex_default_is_project_local(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without explicit path or env var, the project-local .tools install is the only choice."""
    monkeypatch.delenv("RPCTAPE_CODEX", raising=False)
    assert LOCAL_CODEX.parts[-5:] == (
        ".tools",
        f"codex-{PINNED_CODEX_VERSION}",
        "node_modules",
        ".bin",
        "codex",
    )
    if LOCAL_CODEX.is_file():
        assert find_codex() == LOCAL_CODEX
    else:
        with pytest.raises(AppServerError, match=r"\./dev setup"):
            find_codex()


def test_appserver_bad_codex_path_raises(tmp_path: Path) -> None:
    """AppServer with a nonexistent codex fails at once with the helpful message."""
    with pytest.raises(AppServerError, match=r"\./dev setup"):
        AppServer("http://127.0.0.1:9", codex=tmp_path / "missing")


async def test_exit_before_ready_reports_log_tail(tmp_path: Path) -> None:
    """A codex that exits at once gives AppServerError with its exit code and output."""
    fake = tmp_path / "codex"
    fake.write_text("#!/bin/sh\necho 'boom: bad config' >&2\nexit 3\n")
    fake.chmod(0o755)
    server = AppServer("http://127.0.0.1:9", codex=fake, ready_timeout=10)
    with pytest.raises(AppServerError, match="exited with code 3") as caught:
        await server.start()
    assert "boom: bad config" in str(caught.value)
    await server.close()


async def test_never_ready_times_out_and_kills(tmp_path: Path) -> None:
    """A codex that never listens times out with AppServerError and is killed."""
    fake = tmp_path / "codex"
    pid_file = tmp_path / "pid"
    fake.write_text(f"#!/bin/sh\necho $$ > {pid_file}\necho starting\nexec sleep 60\n")
    fake.chmod(0o755)
    server = AppServer("http://127.0.0.1:9", codex=fake, ready_timeout=0.5, grace=0.5)
    with pytest.raises(AppServerError, match=r"not ready after 0.5s(.|\n)*starting"):
        await server.start()
    pid = int(pid_file.read_text())
    assert not process_group_alive(pid)


# --- the real app-server ----------------------------------------------------------------


@pytest.mark.e2e
async def test_text_turn_streams_backend_reply(backend: FakeBackend) -> None:
    """A full turn: deltas stream the backend's reply and the agent message equals it."""
    async with AppServer(backend.url) as server, SessionClient(server.url) as client:
        await client.initialize()
        thread_id = await client.start_thread()
        await client.run_turn(thread_id, "hi")
    deltas = [p["delta"] for p in client.named("item/agentMessage/delta")]
    assert deltas == ["Hello from ", "rpctape's fake ", "backend."]
    completed = [p["item"] for p in client.named("item/completed")]
    assert [item["type"] for item in completed] == ["userMessage", "agentMessage"]
    assert completed[1]["text"] == DEFAULT_REPLY
    assert completed[0]["content"] == [{"type": "text", "text": "hi", "text_elements": []}]
    (turn,) = [p["turn"] for p in client.named("turn/completed")]
    assert turn["status"] == "completed"
    methods = [m["method"] for m in received(client) if "method" in m]
    turn_methods = methods[methods.index("turn/started") :]
    assert [m for m in turn_methods if m.startswith(("turn/", "item/"))] == [
        "turn/started",
        "item/started",
        "item/completed",
        "item/started",
        "item/agentMessage/delta",
        "item/agentMessage/delta",
        "item/agentMessage/delta",
        "item/completed",
        "turn/completed",
    ]
    assert [(r["method"], r["path"]) for r in backend.requests] == [("POST", "/v1/responses")]
    headers = backend.requests[0]["headers"]
    assert headers["Authorization"] == "<redacted>"
    assert headers["Accept"] == "text/event-stream"
    assert backend.requests[0]["body"]["model"] == "mock-model"


@pytest.mark.e2e
async def test_approval_flow_runs_command(backend: FakeBackend) -> None:
    """A scripted exec_command asks for approval; 'accept' runs it and the turn completes."""
    backend.script(Reply.function_call(name="exec_command", arguments=EXEC_ARGS))
    async with (
        AppServer(backend.url, approval_policy="on-request") as server,
        SessionClient(server.url) as client,
    ):
        await client.initialize()
        thread_id = await client.start_thread()
        await client.run_turn(thread_id, "make a file")
        assert (server.workdir / "x").is_file()
        workdir = str(server.workdir)
    (approval,) = [m for m in client.server_requests if m["method"].endswith("requestApproval")]
    assert approval["method"] == "item/commandExecution/requestApproval"
    assert isinstance(approval["id"], int)
    params = approval["params"]
    assert params["itemId"] == "call-1"
    assert params["command"] == "/bin/bash -lc 'touch x'"
    assert params["cwd"] == workdir
    assert params["reason"] == "why"
    assert params["threadId"] == thread_id
    (resolved,) = client.named("serverRequest/resolved")
    assert resolved == {"threadId": thread_id, "requestId": approval["id"]}
    command = [p["item"] for p in client.named("item/completed")][1]
    assert (command["type"], command["status"], command["exitCode"]) == (
        "commandExecution",
        "completed",
        0,
    )
    assert client.named("turn/completed")[0]["turn"]["items"][-1]["text"] == DEFAULT_REPLY
    # The second POST carries the tool output back; the default text reply ends the turn.
    assert [r["path"] for r in backend.requests] == ["/v1/responses", "/v1/responses"]
    last_input = backend.requests[1]["body"]["input"]
    assert [item["type"] for item in last_input[-2:]] == ["function_call", "function_call_output"]
    assert last_input[-1]["call_id"] == "call-1"


@pytest.mark.e2e
async def test_process_and_home_gone_after_exit(backend: FakeBackend) -> None:
    """After the context exits the process group is gone and the temporary home removed."""
    async with AppServer(backend.url) as server:
        pid, home, log_path = server.pid, server.codex_home, server.log_path
        assert process_group_alive(pid)
        assert (home / "config.toml").is_file()
        assert "listening on: ws://127.0.0.1:" in log_path.read_text(encoding="utf-8")
    assert not process_group_alive(pid)
    assert not home.exists()
    await server.close()  # a second close is harmless


@pytest.mark.e2e
async def test_cancelled_task_leaves_no_process(backend: FakeBackend) -> None:
    """Cancelling a task inside the context still stops the server."""
    pids: list[int] = []
    entered = asyncio.Event()

    async def hold() -> None:
        async with AppServer(backend.url) as server:
            pids.append(server.pid)
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(hold(), name="hold-appserver")
    await asyncio.wait_for(entered.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not process_group_alive(pids[0])


# --- ChatGPT mode: attestation ----------------------------------------------------------


def attestation_headers(backend: FakeBackend) -> list[tuple[str, str, str | None]]:
    """(method, path, x-oai-attestation or None) of every backend record, in order."""
    found = []
    for record in backend.requests:
        values = [v for k, v in record["headers"].items() if k.lower() == "x-oai-attestation"]
        found.append((record["method"], record["path"], values[0] if values else None))
    return found


@pytest.mark.e2e
async def test_chatgpt_turns_attestation_header_on_scoped_post_only(backend: FakeBackend) -> None:
    """ChatGPT mode, two turns: one attestation/generate per POST, header only on the POST.

    The login is stale, so the server also refreshes its tokens through the backend first.
    """
    options = ClientOptions(request_attestation=True, attestation_token="T", timeout=20)
    async with (
        AppServer(backend.url, auth="chatgpt", last_refresh=LONG_AGO) as server,
        SessionClient(server.url, options) as client,
    ):
        await client.initialize()
        thread_id = await client.start_thread()
        for text in ("one", "two"):
            completed = await client.run_turn(thread_id, text)
            assert completed["params"]["turn"]["status"] == "completed"
            assert completed["params"]["turn"]["items"][-1]["text"] == DEFAULT_REPLY
    assert client.server_requests == [
        {"method": "attestation/generate", "id": 0, "params": {}},
        {"method": "attestation/generate", "id": 1, "params": {}},
    ]
    frames = [frame for _, frame in client.frames if isinstance(frame, str)]
    first = frames.index(ATTESTATION_REQUEST)
    assert frames[first + 1] == '{"id":0,"result":{"token":"T"}}'
    # Asked after the turn has started (its turn/start result, id 3, came first).
    assert any(f.startswith('{"id":3,"result":{"turn"') for f in frames[:first])
    seen = attestation_headers(backend)
    assert [header for *request, header in seen if tuple(request) == SCOPED_POST] == [
        '{"v":1,"s":0,"t":"T"}',
        '{"v":1,"s":0,"t":"T"}',
    ]
    others = [
        (method, path, header) for method, path, header in seen if (method, path) != SCOPED_POST
    ]
    assert {header for _, _, header in others} == {None}
    paths = {path for _, path, _ in others}
    assert {
        "/oauth/token",
        "/backend-api/codex/models",
        "/backend-api/wham/accounts/check",
    } <= paths
    assert any(path.startswith("/backend-api/ps/") for path in paths)
    (post, _) = [r for r in backend.requests if (r["method"], r["path"]) == SCOPED_POST]
    assert post["headers"]["Authorization"] == "<redacted>"
    assert post["headers"]["chatgpt-account-id"] == "acct-1"
    (refresh,) = [r for r in backend.requests if r["path"] == "/oauth/token"]
    assert refresh["body"]["grant_type"] == "refresh_token"
    assert refresh["body"]["refresh_token"] == "refresh-x"


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("advertise", "answer", "header"),
    [
        (True, {"error": {"code": -32000, "message": "no attestation"}}, '{"v":1,"s":2}'),
        (True, {"result": {}}, '{"v":1,"s":4}'),
        (True, None, '{"v":1,"s":1}'),
        (False, None, None),
    ],
    ids=["error-reply", "result-without-token", "no-answer", "not-advertised"],
)
async def test_chatgpt_attestation_outcomes(
    backend: FakeBackend, advertise: bool, answer: dict[str, Any] | None, header: str | None
) -> None:
    """Each client behaviour gives its envelope on the POST, and the turn still completes."""
    options = ClientOptions(
        request_attestation=advertise, attestation_reply=answer, answer_attestation=bool(answer)
    )
    async with (
        AppServer(backend.url, auth="chatgpt") as server,
        SessionClient(server.url, options) as client,
    ):
        await client.initialize()
        thread_id = await client.start_thread()
        await client.run_turn(thread_id, "hi")
    asked = [m for m in client.server_requests if m["method"] == "attestation/generate"]
    assert asked == (
        [{"method": "attestation/generate", "id": 0, "params": {}}] if advertise else []
    )
    (turn,) = client.named("turn/completed")
    assert turn["turn"]["status"] == "completed"
    seen = attestation_headers(backend)
    assert [h for *request, h in seen if tuple(request) == SCOPED_POST] == [header]
    assert {h for *request, h in seen if tuple(request) != SCOPED_POST} == {None}


@pytest.mark.e2e
async def test_chatgpt_websocket_responses_attestation_on_upgrade(backend: FakeBackend) -> None:
    """Responses over a websocket: one attestation for the upgrade, none per request."""
    options = ClientOptions(request_attestation=True, attestation_token="T", timeout=20)
    async with (
        AppServer(backend.url, auth="chatgpt", responses_websocket=True) as server,
        SessionClient(server.url, options) as client,
    ):
        await client.initialize()
        thread_id = await client.start_thread()
        for text in ("one", "two"):
            completed = await client.run_turn(thread_id, text)
            assert completed["params"]["turn"]["items"][-1]["text"] == DEFAULT_REPLY
    assert client.server_requests == [{"method": "attestation/generate", "id": 0, "params": {}}]
    responses = [
        (method, header)
        for method, path, header in attestation_headers(backend)
        if path == "/backend-api/codex/responses"
    ]
    # The upgrade carries the header; the frames sent over the websocket are logged as "WS".
    assert responses == [("GET", '{"v":1,"s":0,"t":"T"}'), ("WS", None), ("WS", None), ("WS", None)]
    (upgrade,) = [r for r in backend.requests if r["method"] == "GET" and "responses" in r["path"]]
    assert upgrade["headers"]["Upgrade"] == "websocket"
    assert upgrade["headers"]["openai-beta"] == "responses_websockets=2026-02-06"
    bodies = [r["body"] for r in backend.requests if r["method"] == "WS"]
    assert [body["type"] for body in bodies] == ["response.create"] * 3
    assert [body.get("generate") for body in bodies] == [False, None, None]
    assert [body.get("previous_response_id") for body in bodies] == [None, "resp-1", "resp-2"]
    others = [h for m, p, h in attestation_headers(backend) if p != "/backend-api/codex/responses"]
    assert set(others) == {None}


def _fake_install(tools: Path, version: str, *, stamp: bool = True) -> Path:
    """Lay out ``tools/codex-VERSION`` as ./dev setup does (launcher and stamp)."""
    launcher = codex_path(version, tools)
    launcher.parent.mkdir(parents=True)
    launcher.write_text("#!/bin/sh\n")
    if stamp:
        (tools / f"codex-{version}" / ".installed").touch()
    return launcher


def test_installed_codex_versions_sorted_and_complete_only(tmp_path: Path) -> None:
    """Versions sort numerically; a prefix without its stamp (npm interrupted) is left out."""
    for version in ("0.171.0", "0.9.0", "0.169.0"):
        _fake_install(tmp_path, version)
    _fake_install(tmp_path, "0.172.0", stamp=False)
    (tmp_path / "codex-junk").mkdir()
    assert installed_codex_versions(tmp_path) == ["0.9.0", "0.169.0", "0.171.0"]
    assert installed_codex_versions(tmp_path / "nothing") == []


def test_find_codex_version_wins_over_env_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A named version is that release from .tools/, even with $RPCTAPE_CODEX set."""
    fake = tmp_path / "codex"
    fake.write_text("#!/bin/sh\n")
    monkeypatch.setenv("RPCTAPE_CODEX", str(fake))
    with pytest.raises(AppServerError, match=r"codex-0\.0\.1/node_modules/\.bin/codex") as caught:
        find_codex(version="0.0.1")
    assert "@openai/codex@0.0.1" in str(caught.value)
    assert find_codex(fake, version="0.0.1") == fake
    for version in installed_codex_versions():
        assert find_codex(version=version) == codex_path(version)


def test_setup_installs_both_versions() -> None:
    """./dev setup installs the pinned default and 0.171.0 side by side (required in CI)."""
    installed = installed_codex_versions()
    if not os.environ.get("CI") and not installed:
        pytest.skip("no codex in .tools/: run ./dev setup")
    assert {PINNED_CODEX_VERSION, "0.171.0"} <= set(installed)


def test_choose_codex_path_or_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--codex takes a path, or a version from .tools/ when no such file exists."""
    monkeypatch.chdir(tmp_path)
    fake = tmp_path / "0.0.1"
    fake.write_text("#!/bin/sh\n")
    assert choose_codex("0.0.1") == fake  # an existing file wins, made absolute
    with pytest.raises(AppServerError, match=r"project-local install of 0\.0\.2"):
        choose_codex("0.0.2")
    with pytest.raises(AppServerError, match="the given codex path"):
        choose_codex("not-a-version")
    for version in installed_codex_versions():
        assert choose_codex(version) == codex_path(version)
