"""The rpctape pytest plugin: serve a cassette to the code under test.

Registered through the ``pytest11`` entry point as ``rpctape``. A test asks for the
``rpctape_url`` fixture (the ``ws://`` URL the code under test connects to) and may carry
``@pytest.mark.rpctape(cassette="name.jsonl", record_mode="none", ...)``. The replay server
runs in a background thread with its own event loop, so the fixture works the same for sync
and async tests. See docs/replay.md for every option.

At the end of the run the plugin can say which cassettes of the folders it served no test
used, and which recorded connections no test played (``--rpctape-unused``), and which
replayed cassettes were recorded with another codex than the project's
(``rpctape_codex_version``, ``--rpctape-stale``). Under pytest-xdist each worker keeps its
own ledger (:class:`~proxy.core.usage.Usage`) and hands it to the controller when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
import pytest

from .codex.dialect import CODEX
from .core.cassette import load
from .core.modes import Plan, RecordMode, Stale, parse_mode
from .core.options import SPECS, Door, Settings, to_words
from .core.recorded import recorded_connections
from .core.replay_report import ReplayReport
from .core.usage import Unplayed, Usage
from .errors import CassetteError, RpctapeError, UsageError
from .wire.session import Session
from .wire.store import cassette_files, restore

MARKER = "rpctape"
MARKER_OPTIONS = frozenset({"cassette", *SPECS})
"""Keyword arguments ``@pytest.mark.rpctape(...)`` accepts."""

START_TIMEOUT = 60.0
"""Longest wait for the replay server, or an upstream command, to be ready."""

STOP_GRACE = 10.0
"""How long an upstream command gets to exit after SIGTERM before SIGKILL."""

_LISTENING = re.compile(r"listening on:? (wss?://[\w.:\[\]/-]+)")

_SESSION = pytest.StashKey["RpctapeSession"]()
_USAGE = pytest.StashKey[Usage]()
_FINDINGS = pytest.StashKey["Findings"]()
WORKER_KEY = "rpctape_usage"
"""The key of a pytest-xdist worker's ledger in its ``workeroutput``."""


class UnusedAction(enum.StrEnum):
    """``--rpctape-unused``: what the end of the run does with unused cassettes and
    recorded connections never played."""

    REPORT = "report"
    """List them in the terminal summary."""
    FAIL = "fail"
    """List them, and make the run's exit status 1 when there are any."""


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--rpctape-record-mode`` and the ``rpctape_*`` ini options."""
    group = parser.getgroup("rpctape", "record and replay codex app-server traffic")
    group.addoption(
        "--rpctape-record-mode",
        dest="rpctape_record_mode",
        default=None,
        metavar="MODE",
        help="record mode for every rpctape test, overriding markers: "
        "none, once, new_episodes or all",
    )
    parser.addini(
        "rpctape_cassette_dir",
        "folder of cassettes, relative to each test module's folder (default: cassettes)",
        default="cassettes",
    )
    parser.addini(
        "rpctape_upstream",
        "upstream used when recording: a ws:// URL, or a command that prints "
        "'listening on ws://HOST:PORT' ({python} is this Python)",
        default="",
    )
    parser.addini("rpctape_record_mode", "default record mode (default: none)", default="none")
    parser.addini(
        "rpctape_codex",
        "the real codex the rpctape_codex fixture records through (default: $RPCTAPE_CODEX, "
        "else the project-local install)",
        default="",
    )
    parser.addini(
        "rpctape_strict",
        "fail tests with a miss or an unused recorded client message (default: false)",
        type="bool",
        default=False,
    )
    parser.addini(
        "rpctape_codex_version",
        "the codex version the project is pinned to (e.g. 0.171.0): replaying a cassette "
        "recorded with another one warns, or fails with --rpctape-stale=fail",
        default="",
    )
    group.addoption(
        "--rpctape-stale",
        dest="rpctape_stale",
        default=None,
        metavar="ACTION",
        help="a replayed cassette recorded with another codex than rpctape_codex_version: "
        "warn (listed at the end; the default) or fail (the test fails)",
    )
    group.addoption(
        "--rpctape-unused",
        dest="rpctape_unused",
        default=None,
        metavar="ACTION",
        help="at the end, list the cassettes of the served cassette folders no test used and "
        "the recorded connections never played: report, or fail (exit status 1)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker; refuse an invalid ``--rpctape-record-mode`` up front."""
    config.addinivalue_line(
        "markers",
        f"{MARKER}(cassette=None, record_mode=None, ...any option of rpctape's options model, "
        "by its name: strict, match, match_on, on_miss, pace, ignore, upstream, rules, attest, "
        "faults, redact_keys, redact_values, ...): serve a cassette through the rpctape_url or "
        "rpctape_codex fixture (rpctape plugin; docs/replay.md)",
    )
    try:
        for value, what in (
            (config.getoption("rpctape_record_mode"), "--rpctape-record-mode"),
            (config.getini("rpctape_record_mode"), "ini rpctape_record_mode"),
        ):
            if value is not None:
                parse_mode(RecordMode, value, f"record mode ({what})")
        _check_pins(config)
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[_USAGE] = Usage()


def _check_pins(config: pytest.Config) -> None:
    """``rpctape_codex_version``, ``--rpctape-stale`` and ``--rpctape-unused``, checked."""
    pinned = str(config.getini("rpctape_codex_version")).strip()
    if pinned:
        parse = SPECS["codex_version"].parse
        assert parse is not None
        try:
            parse(pinned)
        except UsageError as exc:
            raise UsageError(f"ini rpctape_codex_version: {exc}") from None
    stale = config.getoption("rpctape_stale")
    if stale is not None:
        parse_mode(Stale, stale, "stale action (--rpctape-stale)")
        if not pinned:
            raise UsageError(
                "--rpctape-stale says what replaying a cassette recorded with another codex "
                "does: set the ini option rpctape_codex_version to the version the project "
                "is pinned to"
            )
    unused = config.getoption("rpctape_unused")
    if unused is not None:
        parse_mode(UnusedAction, unused, "--rpctape-unused action")


# --- settings --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TestSettings:
    """One test's cassette and options, resolved from marker, command line and ini."""

    cassette: Path
    settings: Settings
    given: dict[str, Any]
    """What the marker and the ini gave, by option name (the stand-in gets them as words)."""
    folder: Path
    """The cassette folder the cassette was looked up in (``--rpctape-unused`` walks it)."""

    @property
    def record_mode(self) -> RecordMode:
        return self.settings.record_mode

    @property
    def strict(self) -> bool:
        return self.settings.strict


def cassette_path(folder: Path, name: str) -> Path:
    """``folder/name``, refusing names that leave ``folder`` (absolute, ``..``, symlinks)."""
    relative = Path(name)
    if not name or relative.is_absolute() or ".." in relative.parts:
        raise UsageError(
            f"cassette name {name!r} must be a relative path inside the cassette folder {folder}"
        )
    path = folder / relative
    if not path.resolve().is_relative_to(folder.resolve()):
        raise UsageError(f"cassette {name!r} resolves outside the cassette folder {folder}")
    return path


def default_cassette_name(item: pytest.Item) -> str:
    """``<module>.<test name>.jsonl`` with anything unusual replaced by ``_``."""
    module = Path(str(item.path)).stem
    return re.sub(r"[^\w.-]", "_", f"{module}.{item.name}") + ".jsonl"


def resolve_settings(item: pytest.Item, door: Door = Door.FIXTURE) -> TestSettings:
    """Marker arguments, then ``--rpctape-record-mode`` and the ini options, resolved by the
    options model for ``door`` (an option that cannot apply there is refused with why)."""
    config = item.config
    marker = item.get_closest_marker(MARKER)
    kwargs: dict[str, Any] = dict(marker.kwargs) if marker is not None else {}
    if marker is not None and marker.args:
        raise UsageError("@pytest.mark.rpctape takes keyword arguments only")
    unknown = sorted(set(kwargs) - MARKER_OPTIONS)
    if unknown:
        raise UsageError(
            f"unknown @pytest.mark.rpctape option(s) {', '.join(unknown)}; "
            f"valid: {', '.join(sorted(MARKER_OPTIONS))}"
        )
    folder, cassette = cassette_of(item, kwargs.pop("cassette", None))
    kwargs["record_mode"] = (
        config.getoption("rpctape_record_mode")
        or kwargs.get("record_mode")
        or config.getini("rpctape_record_mode")
    )
    if kwargs.get("strict") is None:
        kwargs["strict"] = bool(config.getini("rpctape_strict"))
    if kwargs.get("codex_version") is None:
        kwargs["codex_version"] = str(config.getini("rpctape_codex_version")).strip() or None
    kwargs["stale"] = config.getoption("rpctape_stale") or kwargs.get("stale")
    mode = parse_mode(RecordMode, kwargs["record_mode"], "record mode")
    if door is Door.FIXTURE:
        if not mode.records(cassette.is_file()):
            kwargs.pop("upstream", None)  # replaying: no upstream is used
        elif not kwargs.get("upstream"):
            kwargs["upstream"] = str(config.getini("rpctape_upstream")).strip() or None
    if "rules" in kwargs:
        kwargs["rules"] = [str(p.resolve()) for p in _rule_files(item, kwargs["rules"])]
    try:
        settings = Settings.resolve(door, _without_command(kwargs))
    except UsageError as exc:
        raise UsageError(f"@pytest.mark.rpctape: {exc}") from None
    return TestSettings(cassette, settings, kwargs, folder)


def cassette_of(item: pytest.Item, name: str | None) -> tuple[Path, Path]:
    """The cassette folder of ``item`` and its cassette there (``name``, else the default
    name)."""
    folder = Path(str(item.config.getini("rpctape_cassette_dir")))
    if not folder.is_absolute():
        folder = Path(str(item.path)).parent / folder
    return folder, cassette_path(folder, name or default_cassette_name(item))


def _without_command(kwargs: dict[str, Any]) -> dict[str, Any]:
    """An upstream that is a command (not a URL) is started by the fixture; the session
    gets its URL."""
    upstream = kwargs.get("upstream")
    if isinstance(upstream, str) and upstream and not re.match(r"wss?://|unix://", upstream):
        return {k: v for k, v in kwargs.items() if k != "upstream"}
    return kwargs


def _strings(value: Any, what: str) -> list[str]:
    """A marker value that is one string or a list of strings."""
    items = [value] if isinstance(value, str | Path) else list(value or ())
    if not all(isinstance(v, str | Path) for v in items):
        raise UsageError(f"@pytest.mark.rpctape({what}=...) takes a string or a list of strings")
    return [str(v) for v in items]


def _rule_files(item: pytest.Item, rules: Any) -> list[Path]:
    """Rule files named by the marker, relative to the test file's folder."""
    here = Path(str(item.path)).parent
    return [here / name for name in _strings(rules, "rules")]


# --- the upstream command --------------------------------------------------------------------


class UpstreamCommand:
    """An upstream started from a command line, for recording.

    The command runs in its own session with the pytest root as working directory, its
    output going to a temporary log; its URL is the first ``listening on ws://...`` (or
    codex's ``listening on: ws://...``) it prints on stdout or stderr. :meth:`stop` sends
    SIGTERM to its process group, then SIGKILL after :data:`STOP_GRACE` seconds.
    """

    def __init__(self, command: str, cwd: Path) -> None:
        self.argv = [part.replace("{python}", sys.executable) for part in shlex.split(command)]
        self.cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self, timeout: float = START_TIMEOUT) -> str:
        """Start the command and return the URL it prints; raise if it does not."""
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        try:
            self._proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            self.stop()
            raise UsageError(
                f"cannot start rpctape_upstream {shlex.join(self.argv)}: {exc}"
            ) from exc
        deadline = time.monotonic() + timeout
        while True:
            output = self.output()
            match = _LISTENING.search(output)
            if match:
                return match.group(1)
            if self._proc.poll() is not None or time.monotonic() > deadline:
                code = self._proc.returncode
                self.stop()
                state = f"exited with code {code}" if code is not None else "timed out"
                raise RpctapeError(
                    f"rpctape_upstream {shlex.join(self.argv)} {state} without printing "
                    f"'listening on ws://HOST:PORT'; its output:\n{output[-2000:]}"
                )
            time.sleep(0.05)

    def output(self) -> str:
        """Everything the command printed so far."""
        if self._log is None:
            return ""
        self._log.flush()
        return os.pread(self._log.fileno(), 1 << 20, 0).decode(errors="replace")

    def stop(self) -> None:
        """Stop the command's process group and close the log; safe twice."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(STOP_GRACE)
            _signal_group(proc.pid, signal.SIGKILL)  # anything the command left behind
            proc.wait()
        log, self._log = self._log, None
        if log is not None:
            log.close()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


# --- the server thread -------------------------------------------------------------------------


class BackgroundServer:
    """A :class:`~proxy.wire.session.Session` running in a thread with its own event loop.

    Sync tests have no loop, and an async test's loop is blocked while it waits on the
    server in a sync call; a separate thread serves both the same way.
    """

    def __init__(self, server: Session) -> None:
        self.server = server
        self.url = ""
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._commit = True

    def start(self, timeout: float = START_TIMEOUT) -> str:
        """Start the thread and wait until the server listens; re-raise a start failure."""
        self._thread = threading.Thread(target=self._run, name="rpctape-replay", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RpctapeError(f"the rpctape replay server did not start in {timeout:g}s")
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self.url

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # handed to the test's thread, never lost
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.url = await self.server.start()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.server.close(commit=self._commit)

    def stop(self, *, commit: bool) -> None:
        """Close the server (keeping a recording only if ``commit``) and join; safe twice."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._commit = commit
        if self._loop is not None and self._stop is not None and thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error


@dataclass
class RpctapeSession:
    """What the ``rpctape`` fixture gives a test: the URL, the cassette, and the report."""

    url: str
    cassette: Path
    record_mode: RecordMode
    strict: bool
    server: BackgroundServer
    upstream: UpstreamCommand | None = None

    @property
    def plan(self) -> Plan | None:
        """What the session did: replay, record, or both (``new_episodes``)."""
        return self.server.server.plan

    @property
    def report(self) -> ReplayReport:
        """What was not replayed and every miss (so far, or final after the test)."""
        return self.server.server.report

    def finish(self, *, passed: bool) -> ReplayReport:
        """Stop the server (a recording is kept only if ``passed``) and the upstream."""
        try:
            self.server.stop(commit=passed)
        finally:
            if self.upstream is not None:
                self.upstream.stop()
        return self.report


def _start(item: pytest.Item, resolved: TestSettings) -> RpctapeSession:
    settings = resolved.settings
    command: UpstreamCommand | None = None
    upstream = resolved.given.get("upstream")
    if settings.record_mode.records(resolved.cassette.is_file()):
        if not upstream:
            raise UsageError(
                f"record mode {settings.record_mode.value!r} needs an upstream to record "
                f"{resolved.cassette}: set the rpctape_upstream ini option or "
                "@pytest.mark.rpctape(upstream=...)"
            )
        if settings.upstream is None:  # a command that prints its URL
            command = UpstreamCommand(str(upstream), item.config.rootpath)
            settings = dataclasses.replace(settings, upstream=command.start())
    try:
        server = Session(
            resolved.cassette, settings=settings, door=Door.FIXTURE, dialect=CODEX,
            validator=_validator(settings),
        )  # fmt: skip
        background = BackgroundServer(server)
        url = background.start(START_TIMEOUT + settings.lock_timeout)  # it may wait its turn
    except BaseException:
        if command is not None:
            command.stop()
        raise
    return RpctapeSession(
        url, resolved.cassette, settings.record_mode, settings.strict, background, command
    )


def _validator(settings: Settings) -> Any:
    if not settings.validate:
        return None
    from .codex.schema import validator_for

    return validator_for(settings)


@pytest.fixture
def rpctape(request: pytest.FixtureRequest) -> Iterator[RpctapeSession]:
    """Serve the test's cassette (see ``@pytest.mark.rpctape``); stopped after the test."""
    item = request.node
    assert isinstance(item, pytest.Item)
    resolved: TestSettings | None = None
    try:
        resolved = resolve_settings(item)
        session = _start(item, resolved)
    except (RpctapeError, FileNotFoundError) as exc:
        problem = f"rpctape: {exc}"
    else:
        problem = ""
    if problem:
        if resolved is not None:
            _note(item.config, resolved)
        pytest.fail(problem, pytrace=False)  # outside the except block: no chained traceback
    assert resolved is not None
    item.stash[_SESSION] = session
    replay_log = logging.getLogger("rpctape.replay")
    replay_log.addFilter(_in_the_report)
    try:
        yield session
    finally:
        # The call hook already stopped it unless the test never ran (setup error, skip).
        session.finish(passed=False)
        replay_log.removeFilter(_in_the_report)
        del item.stash[_SESSION]
        server = session.server.server
        _note(
            item.config, resolved, played=session.report.played,
            recorded=server.plan not in (None, Plan.REPLAY), stale=server.stale or "",
        )  # fmt: skip


def _note(
    config: pytest.Config,
    resolved: TestSettings,
    *,
    played: tuple[int, ...] | list[int] = (),
    recorded: bool = False,
    stale: str = "",
) -> None:
    """Add what a fixture served to the run's ledger."""
    usage = config.stash.get(_USAGE, None)
    if usage is not None:
        usage.served(
            _key(resolved.folder), _key(resolved.cassette),
            played=played, recorded=recorded, stale=stale,
        )  # fmt: skip


def _key(path: Path) -> str:
    """How the ledger names a file or folder: its resolved path."""
    return str(path.resolve())


def _in_the_report(record: logging.LogRecord) -> bool:
    """Drop the replay's warnings (each miss, each unclean connection) from the captured log:
    the report attached to the test, or its failure message, says each of them once."""
    return record.levelno < logging.WARNING


@pytest.fixture
def rpctape_url(rpctape: RpctapeSession) -> str:
    """The ``ws://127.0.0.1:PORT`` URL the code under test should connect to."""
    return rpctape.url


# --- the codex stand-in (stdio clients) ----------------------------------------------------

def standin_args(resolved: TestSettings) -> list[str]:
    """The marker's options as ``RPCTAPE_ARGS`` words (the record mode goes in
    ``RPCTAPE_RECORD_MODE``; rule files are absolute already)."""
    return to_words({k: v for k, v in resolved.given.items() if k != "record_mode"})


def standin_executable(folder: Path) -> Path:
    """``rpctape-codex``: beside this Python, else on PATH, else a wrapper written in ``folder``
    that runs ``python -m proxy.codex.standin``."""
    beside = Path(sys.executable).with_name("rpctape-codex")
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("rpctape-codex")
    if found:
        return Path(found)
    wrapper = folder / "rpctape-codex"
    root = Path(__file__).resolve().parent.parent
    wrapper.write_text(
        f"#!/bin/sh\nPYTHONPATH={shlex.quote(str(root))}${{PYTHONPATH:+:$PYTHONPATH}} "
        f'exec {shlex.quote(sys.executable)} -m proxy.codex.standin "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper


def _real_codex(config: pytest.Config) -> str:
    named = str(config.getini("rpctape_codex")).strip()
    if named:
        return str(Path(named).expanduser())
    try:
        from .codex.appserver import find_codex

        return str(find_codex())
    except (RpctapeError, ImportError):
        return ""  # the stand-in says so if it has to record


@dataclass
class CodexStandin:
    """What the ``rpctape_codex`` fixture gives a test: a codex executable bound to the test's
    cassette. Start the client with :attr:`path` as its codex binary and :attr:`env` merged
    into its environment (``CodexConfig(codex_bin=str(s.path), env=s.env)``)."""

    path: Path
    env: dict[str, str]
    cassette: Path
    record_mode: RecordMode
    strict: bool
    report_file: Path
    _backup: bytes | None = None
    _existed: bool = False
    _lock_timeout: float = 120.0

    @property
    def argv(self) -> list[str]:
        """The command a client that takes a whole command line should run."""
        return [str(self.path), "app-server", "--listen", "stdio://"]

    def sessions(self) -> list[dict[str, Any]]:
        """One entry per stand-in session so far (plan, exit, clean, closed, report)."""
        if not self.report_file.is_file():
            return []
        lines = self.report_file.read_bytes().splitlines()
        return [orjson.loads(line) for line in lines if line.strip()]

    def problem(self) -> str:
        """Why the test fails because of the replay (once), or ``""``."""
        for session in self.sessions():
            if session["closed"] is not None or session["plan"] == "error":
                return f"rpctape-codex: {session['explanation']}"
        if self.strict:
            for session in self.sessions():
                if not session["clean"]:
                    return f"rpctape strict replay failed\n{session['report']}"
        return ""

    def finish(self, *, passed: bool) -> None:
        """A recording a stand-in of a failed test kept is undone: the cassette as it was
        when the test started comes back (atomically, under the cassette's lock)."""
        if passed or not any(session.get("kept") for session in self.sessions()):
            return
        restore(self.cassette, self._backup, timeout=self._lock_timeout)


_CODEX = pytest.StashKey[CodexStandin]()


@pytest.fixture
def rpctape_codex(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CodexStandin]:
    """A codex executable for stdio clients, bound to the test's cassette (see
    ``@pytest.mark.rpctape``): it replays, or records through the real codex."""
    item = request.node
    assert isinstance(item, pytest.Item)
    try:
        settings = resolve_settings(item, Door.CODEX_FIXTURE)
        args = standin_args(settings)
        settings.settings.rule_list()  # a bad rules file fails the test here, with its reason
    except (RpctapeError, FileNotFoundError) as exc:
        problem = f"rpctape: {exc}"
    else:
        problem = ""
    if problem:
        pytest.fail(problem, pytrace=False)
    folder = tmp_path_factory.mktemp("rpctape-codex")
    report = folder / "sessions.jsonl"
    env = {
        "RPCTAPE_CASSETTE": str(settings.cassette.resolve()),
        "RPCTAPE_RECORD_MODE": settings.record_mode.value,
        "RPCTAPE_ARGS": shlex.join(args),
        "RPCTAPE_REPORT": str(report),
    }
    real = _real_codex(item.config)
    if real:
        env["RPCTAPE_REAL_CODEX"] = real
    existed = settings.cassette.is_file()
    standin = CodexStandin(
        standin_executable(folder),
        env,
        settings.cassette,
        settings.record_mode,
        settings.strict,
        report,
        settings.cassette.read_bytes() if existed and settings.record_mode.records(True) else None,
        existed,
        settings.settings.lock_timeout,
    )
    settings.cassette.parent.mkdir(parents=True, exist_ok=True)
    item.stash[_CODEX] = standin
    try:
        yield standin
    finally:
        del item.stash[_CODEX]
        sessions = standin.sessions()
        _note(
            item.config, settings,
            played=[n for s in sessions for n in s.get("played", ())],
            recorded=any(s["plan"] in (Plan.RECORD.value, Plan.EPISODES.value) for s in sessions),
            stale=next((s["stale"] for s in sessions if s.get("stale")), ""),
        )  # fmt: skip


# --- after the test body ---------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    """After the test body: stop the server, attach the report, fail a strict miss (once)."""
    try:
        result = yield
    except BaseException:
        session = item.stash.get(_SESSION, None)
        if session is not None:
            report = session.finish(passed=False)
            item.add_report_section("call", "rpctape", report.render())
        standin = item.stash.get(_CODEX, None)
        if standin is not None:
            standin.finish(passed=False)
            problem = standin.problem()
            if problem:
                item.add_report_section("call", "rpctape", problem)
        raise
    session = item.stash.get(_SESSION, None)
    if session is not None:
        report = session.finish(passed=True)
        if session.strict and not report.clean:
            pytest.fail(f"rpctape strict replay failed\n{report.render()}", pytrace=False)
        item.add_report_section("call", "rpctape", report.render())
    standin = item.stash.get(_CODEX, None)
    if standin is not None:
        problem = standin.problem()
        standin.finish(passed=not problem)
        if problem:
            pytest.fail(problem, pytrace=False)
    return result


# --- the end of the run ----------------------------------------------------------------------


@dataclass(frozen=True)
class Findings:
    """What the end of the run reports: stale cassettes, unused ones, unplayed connections."""

    stale: tuple[str, ...] = ()
    unused: tuple[str, ...] | None = None
    """``None`` without ``--rpctape-unused``."""
    unplayed: tuple[Unplayed, ...] = ()


FIXTURES = frozenset({"rpctape", "rpctape_url", "rpctape_codex"})
"""The fixtures that serve a test its cassette."""


def pytest_collection_finish(session: pytest.Session) -> None:
    """Every selected test that asks for a cassette claims it (``--rpctape-unused``)."""
    _claim(session.config, session.items)


def pytest_deselected(items: list[pytest.Item]) -> None:
    """Deselected tests (``-k``, ``-m``) claim their cassettes too: they are not unused."""
    if items:
        _claim(items[0].config, items)


def _claim(config: pytest.Config, items: list[pytest.Item]) -> None:
    usage = config.stash.get(_USAGE, None)
    if usage is None:
        return
    for item in items:
        if not FIXTURES & set(getattr(item, "fixturenames", ())):
            continue
        marker = item.get_closest_marker(MARKER)
        name = marker.kwargs.get("cassette") if marker is not None else None
        try:
            folder, cassette = cassette_of(item, name if isinstance(name, str) else None)
        except UsageError:
            continue  # the test itself says why
        usage.claim(_key(folder), _key(cassette))


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """pytest-xdist: a worker ended; add its ledger to the controller's."""
    data = getattr(node, "workeroutput", {}).get(WORKER_KEY)
    usage = node.config.stash.get(_USAGE, None)
    if data is not None and usage is not None:
        usage.merge(data)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A worker hands its ledger over; the controller (or a run without workers) compares
    the ledger with the cassette folders, and ``--rpctape-unused=fail`` sets exit status 1."""
    config = session.config
    usage = config.stash.get(_USAGE, None)
    if usage is None:
        return
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: the controller reports
        config.workeroutput[WORKER_KEY] = usage.to_json()  # type: ignore[attr-defined]
        return
    action = config.getoption("rpctape_unused")
    findings = Findings(tuple(usage.stale[name] for name in sorted(usage.stale)))
    if action is not None:
        folders = [Path(f) for f in sorted(usage.folders) if Path(f).is_dir()]
        listed = [_key(p) for p in cassette_files(folders)]
        findings = dataclasses.replace(
            findings,
            unused=tuple(usage.unused(listed)),
            unplayed=tuple(usage.unplayed(_connections)),
        )
        failed = findings.unused or findings.unplayed
        if action == UnusedAction.FAIL and failed and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    config.stash[_FINDINGS] = findings


def _connections(cassette: str) -> list[int]:
    """The recorded connections of a cassette a replay could play."""
    try:
        return [r.conn for r in recorded_connections(load(Path(cassette)))]
    except (CassetteError, OSError):
        return []  # gone or unreadable: its test said so


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """The ``rpctape`` section: stale cassettes, unused cassettes, unplayed connections."""
    findings = config.stash.get(_FINDINGS, None)
    if findings is None or not (findings.stale or findings.unused is not None):
        return
    root = config.rootpath
    write = terminalreporter.write_line
    terminalreporter.write_sep("=", "rpctape")
    if findings.stale:
        pinned = str(config.getini("rpctape_codex_version")).strip()
        write(
            f"{len(findings.stale)} replayed cassette(s) recorded with another codex than "
            f"{pinned} (rpctape_codex_version):"
        )
        for line in findings.stale:
            write(f"  {line}")
    if findings.unused is not None:
        if not findings.unused and not findings.unplayed:
            write("every cassette of the served cassette folders was used, every recorded "
                  "connection played")  # fmt: skip
        if findings.unused:
            write(f"{len(findings.unused)} cassette(s) no test used:")
            for name in findings.unused:
                write(f"  {_shown(name, root)}")
        if findings.unplayed:
            write(f"{len(findings.unplayed)} cassette(s) with recorded connections never "
                  "played:")  # fmt: skip
            for unplayed in findings.unplayed:
                shown = Unplayed(_shown(unplayed.cassette, root), unplayed.connections)
                write(f"  {shown.render()}")


def _shown(name: str, root: Path) -> str:
    """A path relative to the rootdir where it is inside it."""
    path = Path(name)
    return str(path.relative_to(root.resolve())) if path.is_relative_to(root.resolve()) else name
