"""Start the real ``codex app-server`` for tests, the demo and scripts.

:class:`AppServer` runs ``codex app-server --listen ws://127.0.0.1:0`` in a throw-away
``CODEX_HOME`` whose ``config.toml`` points the model provider at a fake backend
(:class:`proxy.codex.backend.FakeBackend`), so full turns run offline. Two auth modes
(:class:`AuthMode`): API-key mode (the default) and ChatGPT mode, the only mode in which the
app-server asks its client for attestation (``attestation/generate``).

Facts this module relies on (codex 0.169.0, checked by running it):

* ``--listen ws://127.0.0.1:0`` binds a free port and prints, on stderr,
  ``  listening on: ws://127.0.0.1:PORT``; that line is how the port is learned.
* ``GET /readyz`` on that port answers 200 once the server accepts connections.
* ``.tools/codex-VERSION/node_modules/.bin/codex`` (one npm prefix per version, from
  ``./dev setup``) is a Node launcher that (on Node < 23.11) spawns the native
  binary as a child and forwards SIGTERM to it; a SIGKILL of the launcher alone would orphan
  the child. The server is therefore started in its own session and signalled as a process
  group whose id is the launcher's PID, which also reaches any command it runs.
* ChatGPT mode: codex reads the fake login from ``$CODEX_HOME/auth.json``; with a stale
  ``last_refresh`` it POSTs ``$CODEX_REFRESH_TOKEN_URL_OVERRIDE`` at start, before any client
  connects. All its traffic then goes to ``chatgpt_base_url`` and the provider's
  ``base_url``: a traced run (``strace -f -e connect``, one turn, then 15 s idle) opened no
  connection and made no DNS query to any other host, so nothing waits on public hosts.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import datetime
import enum
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp
import orjson
import tomli_w
from websockets.asyncio.client import unix_connect
from websockets.exceptions import InvalidHandshake

from proxy.codex.backend import (
    ACCOUNT_ID,
    CHATGPT_ACCESS_TOKEN,
    CHATGPT_REFRESH_TOKEN,
    REFRESH_TOKEN_PATH,
    fake_id_token,
)
from proxy.core.modes import parse_mode
from proxy.errors import AppServerError

__all__ = [
    "FAKE_API_KEY",
    "PINNED_CODEX_VERSION",
    "REFRESH_URL_ENV_VAR",
    "TOOLS_DIR",
    "AppServer",
    "AuthMode",
    "chatgpt_auth_json",
    "choose_codex",
    "codex_config",
    "codex_path",
    "find_codex",
    "installed_codex_versions",
    "live_group_members",
    "parse_auth_mode",
    "write_codex_home",
]

PINNED_CODEX_VERSION = "0.169.0"
"""The codex release rpctape is tested against by default (installed by ``./dev setup``)."""

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The rpctape checkout: the parent of the ``proxy/`` package folder."""

TOOLS_DIR = REPO_ROOT / ".tools"
"""Where ``./dev setup`` installs each codex version, one npm prefix per version
(``.tools/codex-VERSION/``), never globally."""


def codex_path(version: str, tools: Path = TOOLS_DIR) -> Path:
    """Where ``./dev setup`` puts codex ``version``.

    That is ``.tools/codex-VERSION/node_modules/.bin/codex``.
    """
    return tools / f"codex-{version}" / "node_modules" / ".bin" / "codex"


LOCAL_CODEX = codex_path(PINNED_CODEX_VERSION)
"""The pinned default codex of the project-local install."""

CODEX_ENV_VAR = "RPCTAPE_CODEX"
"""Environment variable naming the codex executable to use instead of the local one."""

FAKE_API_KEY_ENV = "FAKE_OPENAI_KEY"
FAKE_API_KEY = "rpctape-fake-key"
"""The API key the app-server sends to the fake backend (redacted in its log)."""

REFRESH_URL_ENV_VAR = "CODEX_REFRESH_TOKEN_URL_OVERRIDE"
"""Where codex refreshes ChatGPT tokens; set to the fake backend's ``/oauth/token``."""


class AuthMode(enum.StrEnum):
    """How the app-server authenticates to the (fake) model backend."""

    API_KEY = "apikey"
    """A provider with ``env_key``: ``POST <backend>/v1/responses`` with a fake API key."""
    CHATGPT = "chatgpt"
    """``auth.json`` with fake ChatGPT tokens and ``requires_openai_auth``: requests go to
    ``<backend>/backend-api/...`` and model requests carry ``x-oai-attestation`` when the
    client advertised ``requestAttestation``."""


def parse_auth_mode(value: str | AuthMode) -> AuthMode:
    """``value`` as an :class:`AuthMode`; a typo raises :class:`UsageError` listing the modes."""
    return parse_mode(AuthMode, value, "auth mode")


_LISTENING = re.compile(r"listening on: (ws://[\w.:\[\]-]+)")
_LOG_TAIL_CHARS = 2000


_VERSION_DIR = re.compile(r"codex-(\d+\.\d+\.\d+(?:[-+][\w.]+)?)")


def _version_key(version: str) -> tuple[tuple[int, ...], str]:
    """Sort key putting ``0.9.0`` before ``0.10.0`` (numeric release, then the rest)."""
    release, _, rest = version.partition("-")
    return tuple(int(part) for part in release.split("+")[0].split(".")), rest


def installed_codex_versions(tools: Path = TOOLS_DIR) -> list[str]:
    """The codex versions ``./dev setup`` installed under ``tools``, oldest first.

    A version counts once its prefix holds the launcher (``codex_path``) and the stamp
    ``.installed`` that ``./dev setup`` writes after a complete ``npm install``.
    """
    found = []
    for prefix in tools.glob("codex-*"):
        match = _VERSION_DIR.fullmatch(prefix.name)
        if match and (prefix / ".installed").is_file() and codex_path(match[1], tools).is_file():
            found.append(match[1])
    return sorted(found, key=_version_key)


def find_codex(explicit: str | Path | None = None, *, version: str | None = None) -> Path:
    """The codex executable: ``explicit``, else ``version`` from ``.tools/``, else
    ``$RPCTAPE_CODEX``, else the pinned default (:data:`PINNED_CODEX_VERSION`) from ``.tools/``.

    A named ``version`` means that release as ``./dev setup`` installed it (see
    :func:`installed_codex_versions`), whatever ``$RPCTAPE_CODEX`` says. Never falls back to
    a codex on ``PATH``. Raises :class:`AppServerError` if the chosen file does not exist.
    """
    if explicit is not None:
        candidate, source = Path(explicit), "the given codex path"
    elif version is not None:
        candidate, source = codex_path(version), f"the project-local install of {version}"
    elif os.environ.get(CODEX_ENV_VAR):
        candidate, source = Path(os.environ[CODEX_ENV_VAR]), f"${CODEX_ENV_VAR}"
    else:
        candidate, source = LOCAL_CODEX, "the project-local install"
    if not candidate.is_file():
        installed = ", ".join(installed_codex_versions()) or "none"
        raise AppServerError(
            f"codex not found at {candidate} ({source}; installed in .tools/: {installed}). "
            f"Run `./dev setup` to install @openai/codex@{version or PINNED_CODEX_VERSION} "
            f"into .tools/, or set {CODEX_ENV_VAR} to a codex executable."
        )
    return candidate.absolute()  # the app-server starts in a directory of its own


_VERSION_CHOICE = re.compile(r"\d+\.\d+\.\d+(?:[-+][\w.]+)?")


def choose_codex(choice: str | Path | None) -> Path:
    """A person's ``--codex``: an existing path, else a version installed in ``.tools/``
    (``0.171.0``), else :func:`find_codex`'s default when ``None``."""
    if choice is not None and not Path(choice).exists() and _VERSION_CHOICE.fullmatch(str(choice)):
        return find_codex(version=str(choice))
    return find_codex(choice)


def merge_config(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated with ``extra``, merging nested tables instead of replacing them."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = merge_config(merged[key], value)
        else:
            merged[key] = value
    return merged


def codex_config(
    backend_url: str,
    *,
    approval_policy: str = "never",
    auth: str | AuthMode = AuthMode.API_KEY,
    responses_websocket: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``config.toml`` content pointing codex at a fake backend.

    ``backend_url`` is the backend's base URL (``http://127.0.0.1:PORT``). In API-key mode
    the provider's ``base_url`` is ``<backend_url>/v1`` and its key comes from ``env_key``.
    In ChatGPT mode ``chatgpt_base_url`` is ``<backend_url>/backend-api/``, the provider's
    ``base_url`` is ``<backend_url>/backend-api/codex`` and ``requires_openai_auth`` makes it
    use the tokens of ``auth.json`` (see :func:`chatgpt_auth_json`); a custom provider, since
    the built-in ``openai`` one does not work against plain-http localhost (docs/app-server.md).
    ``responses_websocket`` sets the provider's ``supports_websockets`` (Responses over a
    websocket instead of POST + SSE). ``extra`` is merged in last (nested tables merge).
    """
    mode = parse_auth_mode(auth)
    base = backend_url.rstrip("/")
    provider: dict[str, Any] = {"name": "mock"}
    if mode is AuthMode.CHATGPT:
        provider |= {"base_url": f"{base}/backend-api/codex", "wire_api": "responses"}
        provider["requires_openai_auth"] = True
    else:
        provider |= {"base_url": f"{base}/v1", "wire_api": "responses"}
        provider["env_key"] = FAKE_API_KEY_ENV
    provider |= {
        "request_max_retries": 0,
        "stream_max_retries": 0,
        "supports_websockets": responses_websocket,
    }
    config: dict[str, Any] = {
        "model": "mock-model",
        "approval_policy": approval_policy,
        "sandbox_mode": "read-only",
        "model_provider": "mock",
    }
    if mode is AuthMode.CHATGPT:
        config["chatgpt_base_url"] = f"{base}/backend-api/"
    config["analytics"] = {"enabled": False}
    config["model_providers"] = {"mock": provider}
    return merge_config(config, extra or {})


def chatgpt_auth_json(now: datetime.datetime | None = None) -> dict[str, Any]:
    """The ``auth.json`` content of a fake ChatGPT login, refreshed at ``now`` (default: now).

    The id_token is an unsigned JWT (:func:`proxy.codex.backend.fake_id_token`); the access token
    is what the backend sees as ``Authorization: Bearer``. A ``last_refresh`` older than
    codex's refresh interval makes codex refresh through ``$CODEX_REFRESH_TOKEN_URL_OVERRIDE``
    first.
    """
    now = now or datetime.datetime.now(datetime.UTC)
    return {
        "auth_mode": "chatgpt",
        "OPENAI_API_KEY": None,
        "tokens": {
            "id_token": fake_id_token(),
            "access_token": CHATGPT_ACCESS_TOKEN,
            "refresh_token": CHATGPT_REFRESH_TOKEN,
            "account_id": ACCOUNT_ID,
        },
        "last_refresh": now.isoformat().replace("+00:00", "Z"),
    }


def write_codex_home(
    home: Path,
    backend_url: str,
    *,
    approval_policy: str = "never",
    auth: str | AuthMode = AuthMode.API_KEY,
    responses_websocket: bool = False,
    extra: Mapping[str, Any] | None = None,
    last_refresh: datetime.datetime | None = None,
) -> None:
    """Write ``home/config.toml`` (see :func:`codex_config`), creating ``home`` if needed.

    In ChatGPT mode also write ``home/auth.json`` (:func:`chatgpt_auth_json`, refreshed at
    ``last_refresh``, default now), readable by its owner only.
    """
    mode = parse_auth_mode(auth)
    home.mkdir(parents=True, exist_ok=True)
    config = codex_config(
        backend_url,
        approval_policy=approval_policy,
        auth=mode,
        responses_websocket=responses_websocket,
        extra=extra,
    )
    (home / "config.toml").write_text(tomli_w.dumps(config), encoding="utf-8")
    if mode is AuthMode.CHATGPT:
        fd = os.open(home / "auth.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as auth_file:
            auth_file.write(orjson.dumps(chatgpt_auth_json(last_refresh)))


# Process groups started here and not yet reaped: killed at interpreter exit as a last resort.
_live_groups: set[int] = set()


@atexit.register
def _kill_leftovers() -> None:
    for pgid in list(_live_groups):
        _signal_group(pgid, signal.SIGKILL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to the process group ``pgid`` (ours, from ``start_new_session``)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def live_group_members(pgid: int) -> list[int]:
    """PIDs in process group ``pgid`` that are still running (zombies excluded; Linux /proc).

    Returns an empty list where ``/proc`` is unavailable.
    """
    members = []
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = entry.read_text(encoding="ascii", errors="replace")
        except OSError:
            continue  # the process is gone
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.parent.name))
    return sorted(members)


class AppServer:
    """A real ``codex app-server`` on ``ws://127.0.0.1:PORT`` talking to a fake backend.

    Use it as ``async with AppServer(backend.url) as server:`` and connect a websocket client
    to :attr:`url` (without an ``Origin`` header: the server refuses any). On exit the server
    is stopped (SIGTERM, then SIGKILL after ``grace`` seconds) and its temporary home removed.

    ``auth="chatgpt"`` runs it in ChatGPT mode against the same backend (see
    :func:`codex_config`, :func:`chatgpt_auth_json`), with ``$CODEX_REFRESH_TOKEN_URL_OVERRIDE``
    pointing at the backend's ``/oauth/token``. ``responses_websocket=True`` makes model
    requests go over a websocket instead of POST + SSE. ``last_refresh`` backdates the
    ChatGPT login (an old one makes codex refresh its tokens first).
    """

    def __init__(
        self,
        backend_url: str,
        codex: str | Path | None = None,
        approval_policy: str = "never",
        *,
        auth: str | AuthMode = AuthMode.API_KEY,
        responses_websocket: bool = False,
        last_refresh: datetime.datetime | None = None,
        extra_config: Mapping[str, Any] | None = None,
        workdir: Path | None = None,
        extra_env: Mapping[str, str] | None = None,
        ready_timeout: float = 30.0,
        grace: float = 3.0,
        unix_socket: bool = False,
    ) -> None:
        self.backend_url = backend_url
        self.unix_socket = unix_socket
        """Listen on ``unix://<tmp>/app-server.sock`` (websocket over a unix socket)."""
        self.codex = find_codex(codex)
        self.approval_policy = approval_policy
        self.auth = parse_auth_mode(auth)
        self.responses_websocket = responses_websocket
        self.last_refresh = last_refresh
        self.extra_config = dict(extra_config or {})
        self._workdir = workdir
        """A working directory of the caller's (it must exist; it is never removed)."""
        self.extra_env = dict(extra_env or {})
        """Added to the server's environment last (e.g. ``HOME``)."""
        self.ready_timeout = ready_timeout
        self.grace = grace
        self._tempdir: Path | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._url: str | None = None

    @property
    def socket_path(self) -> Path:
        """The unix socket the server listens on (with ``unix_socket=True``)."""
        return self._root / "app-server.sock"

    def environment(self) -> dict[str, str]:
        """The environment the server runs with (to start more servers on the same home)."""
        env = {**os.environ, "CODEX_HOME": str(self.codex_home), FAKE_API_KEY_ENV: FAKE_API_KEY}
        env |= self.extra_env
        if self.auth is AuthMode.CHATGPT:
            env[REFRESH_URL_ENV_VAR] = self.backend_url.rstrip("/") + REFRESH_TOKEN_PATH
            # Only the fake ChatGPT login of auth.json may authenticate.
            for name in ("OPENAI_API_KEY", "CODEX_API_KEY"):
                env.pop(name, None)
        return env

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:PORT`` (or ``unix:///path``); valid once started."""
        if self._url is None:
            raise RuntimeError("AppServer is not started")
        return self._url

    @property
    def pid(self) -> int:
        """PID of the started codex process (also the id of its process group)."""
        if self._process is None:
            raise RuntimeError("AppServer is not started")
        return self._process.pid

    @property
    def codex_home(self) -> Path:
        """The temporary ``CODEX_HOME`` holding ``config.toml`` and the server's state."""
        return self._root / "home"

    @property
    def workdir(self) -> Path:
        """The server's working directory (default ``cwd`` of threads; commands run here):
        the ``workdir`` given, else ``work`` in the temporary folder."""
        return self._workdir if self._workdir is not None else self._root / "work"

    @property
    def log_path(self) -> Path:
        """File receiving the server's stdout and stderr."""
        return self._root / "app-server.log"

    @property
    def _root(self) -> Path:
        if self._tempdir is None:
            raise RuntimeError("AppServer is not started")
        return self._tempdir

    def log_tail(self, chars: int = _LOG_TAIL_CHARS) -> str:
        """The last ``chars`` characters of the server's log (empty if there is none)."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except (OSError, RuntimeError):
            return ""
        return text[-chars:]

    async def start(self) -> None:
        """Create the home, start the server, and wait until ``/readyz`` answers 200.

        Raises :class:`AppServerError` (with the log's tail) if the server exits or is not
        ready within ``ready_timeout`` seconds; nothing is left running in that case.
        """
        if self._tempdir is not None:
            raise RuntimeError("AppServer is already started")
        self._tempdir = Path(tempfile.mkdtemp(prefix="rpctape-appserver-"))
        try:
            write_codex_home(
                self.codex_home,
                self.backend_url,
                approval_policy=self.approval_policy,
                auth=self.auth,
                responses_websocket=self.responses_websocket,
                extra=self.extra_config,
                last_refresh=self.last_refresh,
            )
            if self._workdir is None:
                self.workdir.mkdir()
            await self._spawn()
            await self._wait_ready()
        except BaseException:
            await self.close()
            raise

    async def _spawn(self) -> None:
        """Start ``codex app-server`` in its own session, output to the log file."""
        env = self.environment()
        with self.log_path.open("wb") as log:
            try:
                self._process = await asyncio.create_subprocess_exec(
                    str(self.codex),
                    "app-server",
                    "--listen",
                    f"unix://{self.socket_path}" if self.unix_socket else "ws://127.0.0.1:0",
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    cwd=self.workdir,
                    env=env,
                    start_new_session=True,
                )
            except OSError as exc:
                raise AppServerError(f"cannot start {self.codex}: {exc}") from exc
        _live_groups.add(self._process.pid)

    async def _wait_ready(self) -> None:
        """Learn the port from the log's ``listening on:`` line, then poll ``/readyz``."""
        assert self._process is not None
        deadline = time.monotonic() + self.ready_timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while True:
                if self._process.returncode is not None:
                    raise AppServerError(
                        f"codex app-server exited with code {self._process.returncode} "
                        f"before it was ready. Log tail ({self.log_path}):\n{self.log_tail()}"
                    )
                if time.monotonic() > deadline:
                    raise AppServerError(
                        f"codex app-server was not ready after {self.ready_timeout:g}s. "
                        f"Log tail ({self.log_path}):\n{self.log_tail()}"
                    )
                if self.unix_socket:
                    if await self._unix_ready():
                        self._url = f"unix://{self.socket_path}"
                        return
                else:
                    if self._url is None and (match := _LISTENING.search(self.log_tail(1 << 20))):
                        self._url = match.group(1)
                    if self._url is not None and await self._is_ready(session):
                        return
                await asyncio.sleep(0.05)

    async def _unix_ready(self) -> bool:
        """Whether a websocket opens over the unix socket (0.169.0 serves no /readyz there:
        a plain GET gets an empty reply)."""
        if not self.socket_path.exists():
            return False
        try:
            async with unix_connect(str(self.socket_path), uri="ws://localhost/", open_timeout=2):
                return True
        except (OSError, InvalidHandshake, TimeoutError):
            return False

    async def _is_ready(self, session: aiohttp.ClientSession) -> bool:
        """Whether ``GET /readyz`` answers 200."""
        assert self._url is not None
        ready_url = "http" + self._url.removeprefix("ws") + "/readyz"
        try:
            async with session.get(ready_url) as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def close(self) -> None:
        """Stop the server and remove the temporary home; safe to call twice.

        Sends SIGTERM to the server's process group, waits up to ``grace`` seconds, then sends
        SIGKILL. Even if this coroutine is cancelled, the group is killed before it returns.
        """
        process, self._process = self._process, None
        tempdir, self._tempdir = self._tempdir, None
        self._url = None
        try:
            if process is not None and process.returncode is None:
                _signal_group(process.pid, signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.wait(), self.grace)
        finally:
            if process is not None:
                # Sweep the group: the launcher's child and anything it started.
                _signal_group(process.pid, signal.SIGKILL)
                _live_groups.discard(process.pid)
                if process.returncode is None:
                    # SIGKILL makes this prompt; it also runs when close() was cancelled.
                    await process.wait()
                # SIGKILL is delivered asynchronously: give the group a moment to be gone.
                deadline = time.monotonic() + 2.0
                while live_group_members(process.pid) and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
            if tempdir is not None:
                shutil.rmtree(tempdir, ignore_errors=True)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = self._url or "not started"
        return f"<AppServer {state} auth={self.auth.value} codex={self.codex}>"
