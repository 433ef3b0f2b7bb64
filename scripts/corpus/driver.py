"""Run one corpus scenario against the real app-server and record it (scripts/record_cassettes.py).

A scenario is a small async function of a :class:`Run`: it sends requests (with ids and
values taken from earlier answers), waits for named notifications, and answers the server's
requests through the scenario's ``answers``. :func:`record_scenario` sets the stage (fixtures,
fake model backend scripted with the scenario's replies, stub servers, the real app-server
configured for the scenario), records one connection of rpctape's built-in client through
:func:`proxy.recording_proxy` with redaction on, and renames the cassette into
place only when the scenario ran to its end.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy import __version__, recording_proxy
from proxy.codex.appserver import AppServer, merge_config
from proxy.codex.backend import FakeBackend, Reply
from proxy.codex.client import ClientOptions, RpcError, SessionClient

from . import fixtures
from .oauth_mcp import OAuthMcpServer


class ScenarioFailed(AssertionError):
    """A request answered otherwise than the scenario expects (the cassette is not kept)."""


@dataclass
class Run:
    """What a scenario drives: the client, the codex version, and the stage's addresses."""

    client: SessionClient
    version: str
    backend: FakeBackend
    oauth: OAuthMcpServer | None = None
    _mark: int = 0

    def since(self) -> int:
        """Remember how many notifications arrived so far (for :meth:`note`)."""
        self._mark = len(self.client.notifications)
        return self._mark

    async def ok(self, method: str, params: Any = None) -> Any:
        """Send a request that must answer with a result; return it."""
        try:
            return await self.client.call(method, params)
        except RpcError as exc:
            raise ScenarioFailed(f"{method} answered with an error: {exc.error}") from None

    async def fails(self, method: str, params: Any = None) -> Any:
        """Send a request that must answer with an error; return the error."""
        try:
            result = await self.client.call(method, params)
        except RpcError as exc:
            return exc.error
        raise ScenarioFailed(f"{method} answered with a result, not an error: {result}")

    async def note(self, method: str, start: int | None = None) -> dict[str, Any]:
        """The first notification ``method`` since :meth:`since` (or index ``start``)."""
        return await self.client.wait_for(method, self._mark if start is None else start)

    async def notify(self, method: str, params: Any = None) -> None:
        await self.client.notify(method, params)

    async def start(self, *, experimental: bool = False) -> None:
        """``initialize`` then ``initialized`` (``experimental``: advertising
        ``capabilities.experimentalApi``, which some params and login types need)."""
        if not experimental:
            await self.client.initialize()
            return
        client_info = {"name": self.client.options.client_name, "version": __version__}
        await self.ok(
            "initialize", {"clientInfo": client_info, "capabilities": {"experimentalApi": True}}
        )
        await self.notify("initialized")

    async def thread(self, **params: Any) -> str:
        """``thread/start`` in the fixtures' repository; the thread's id."""
        result = await self.ok("thread/start", {"cwd": str(fixtures.WORK), **params})
        thread_id: str = result["thread"]["id"]
        return thread_id

    async def turn(self, thread_id: str, text: str, **params: Any) -> dict[str, Any]:
        """``turn/start`` with one text input; waits for ``turn/completed`` and returns it."""
        mark = len(self.client.notifications)
        await self.ok(
            "turn/start",
            {"threadId": thread_id, "input": [{"type": "text", "text": text}], **params},
        )
        return await self.client.wait_for("turn/completed", mark)


Answer = Callable[[dict[str, Any]], dict[str, Any] | None]


@dataclass(frozen=True)
class CorpusScenario:
    """One cassette of the corpus: its stage and what the client does."""

    name: str
    intent: str
    """Why the cassette exists and what it shows (the header's ``meta.intent``)."""
    drive: Callable[[Run], Awaitable[None]]
    replies: tuple[Reply, ...] = ()
    """The fake model's answers, in order."""
    approval_policy: str = "never"
    auth: str = "apikey"
    config: Mapping[str, Any] = field(default_factory=dict)
    """Merged into the app-server's config.toml."""
    mcp_stdio: bool = False
    """Configure the stdio MCP stub as ``mcp_servers.corpus``."""
    oauth_mcp: bool = False
    """Start the HTTP MCP stub with its OAuth endpoint, configured as ``mcp_servers.remote``."""
    answers: Mapping[str, Any] = field(default_factory=dict)
    """Server request method -> the ``result`` the client answers it with."""
    versions: frozenset[str] | None = None
    """The codex versions that have what this scenario exercises (None: every version)."""
    delta_delay: float = 0.0
    """Seconds between the model's text deltas (a turn that streams slowly)."""
    deltas: int = 3
    string_ids: bool = False
    refusals: int = 0
    """How many model requests the backend refuses with 401 first (see
    :meth:`FakeBackend.refuse`)."""
    attestation_token: str | None = None
    """The client advertises requestAttestation and answers attestation/generate with it."""

    def applies_to(self, version: str) -> bool:
        return self.versions is None or version in self.versions


def _mcp_config(oauth: OAuthMcpServer | None, stdio: bool) -> dict[str, Any]:
    servers: dict[str, Any] = {}
    if stdio:
        servers["corpus"] = {"command": "python3", "args": [str(fixtures.MCP_STDIO)]}
    if oauth is not None:
        servers["remote"] = {"url": oauth.mcp_url}
    return {"mcp_servers": servers} if servers else {}


@contextlib.asynccontextmanager
async def _maybe_oauth(wanted: bool) -> AsyncIterator[OAuthMcpServer | None]:
    if not wanted:
        yield None
        return
    async with OAuthMcpServer() as server:
        yield server


@dataclass
class Stage:
    """What a scenario runs against: the fake backend, the stubs, the real app-server."""

    backend: FakeBackend
    server: AppServer
    oauth: OAuthMcpServer | None


@contextlib.asynccontextmanager
async def stage(scenario: CorpusScenario, codex: Path) -> AsyncIterator[Stage]:
    """Set the stage for ``scenario``: fresh fixtures, the fake backend scripted with its
    replies, its stubs, and the real app-server configured for it (working directory and
    ``HOME`` in the fixtures); everything is stopped on exit. Recording and ``rpctape
    verify`` (scripts/verify_cassettes.py --corpus) share it."""
    fixtures.prepare()
    async with (
        FakeBackend(deltas=scenario.deltas, delta_delay=scenario.delta_delay) as backend,
        _maybe_oauth(scenario.oauth_mcp) as oauth,
    ):
        config = merge_config(_mcp_config(oauth, scenario.mcp_stdio), scenario.config)
        async with AppServer(
            backend.url,
            codex,
            approval_policy=scenario.approval_policy,
            auth=scenario.auth,
            extra_config=config,
            workdir=fixtures.WORK,
            extra_env={"HOME": str(fixtures.HOME)},
        ) as server:
            backend.script(*scenario.replies)
            backend.refuse(scenario.refusals)
            yield Stage(backend, server, oauth)


async def record_scenario(
    scenario: CorpusScenario, target: Path, codex: Path, version: str
) -> Path:
    """Record ``scenario`` with ``codex`` (of ``version``) into ``target``, replaced only if
    the scenario ran to its end; every process and server it starts is stopped on return."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.recording")
    temp.unlink(missing_ok=True)
    meta = {
        "made_by": "scripts/record_cassettes.py --corpus",
        "scenario": scenario.name,
        "codex": version,
        "intent": scenario.intent,
    }

    def answer(request: dict[str, Any]) -> dict[str, Any] | None:
        method = request["method"]
        if method in scenario.answers:
            return {"result": scenario.answers[method]}
        return None

    options = ClientOptions(
        string_ids=scenario.string_ids,
        request_attestation=scenario.attestation_token is not None,
        attestation_token=scenario.attestation_token,
        answer=answer,
        timeout=30.0,
    )
    try:
        async with (
            stage(scenario, codex) as stage_,
            recording_proxy(stage_.server.url, temp, meta=meta) as url,
            SessionClient(url, options) as client,
        ):
            await scenario.drive(Run(client, version, stage_.backend, stage_.oauth))
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    return target
