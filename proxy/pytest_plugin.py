"""The rpctape pytest plugin: serve a cassette to the code under test.

Registered through the ``pytest11`` entry point as ``rpctape``. A test asks for the
``rpctape_url`` fixture (the ``ws://`` URL the code under test connects to) and may carry
``@pytest.mark.rpctape(cassette="name.jsonl", record_mode="none", ...)``. The replay server
runs in a background thread with its own event loop, so the fixture works the same for sync
and async tests. See docs/replay.md for every option.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
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
from .core.modes import RecordMode, parse_mode
from .core.options import SPECS, Door, Settings, to_words
from .core.replay_report import ReplayReport
from .errors import RpctapeError, UsageError
from .wire.session import Session

MARKER = "rpctape"
MARKER_OPTIONS = frozenset({"cassette", *SPECS})
"""Keyword arguments ``@pytest.mark.rpctape(...)`` accepts."""

START_TIMEOUT = 60.0
"""Longest wait for the replay server, or an upstream command, to be ready."""

STOP_GRACE = 10.0
"""How long an upstream command gets to exit after SIGTERM before SIGKILL."""

_LISTENING = re.compile(r"listening on:? (wss?://[\w.:\[\]/-]+)")

_SESSION = pytest.StashKey["RpctapeSession"]()


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


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker; refuse an invalid ``--rpctape-record-mode`` up front."""
    config.addinivalue_line(
        "markers",
        f"{MARKER}(cassette=None, record_mode=None, ...any option of rpctape's options model, "
        "by its name: strict, match, match_on, on_miss, pace, ignore, upstream, rules, attest, "
        "faults, redact_keys, redact_values, ...): serve a cassette through the rpctape_url or "
        "rpctape_codex fixture (rpctape plugin; docs/replay.md)",
    )
    for value, what in (
        (config.getoption("rpctape_record_mode"), "--rpctape-record-mode"),
        (config.getini("rpctape_record_mode"), "ini rpctape_record_mode"),
    ):
        if value is not None:
            try:
                parse_mode(RecordMode, value, f"record mode ({what})")
            except UsageError as exc:
                raise pytest.UsageError(str(exc)) from None


# --- settings --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TestSettings:
    """One test's cassette and options, resolved from marker, command line and ini."""

    cassette: Path
    settings: Settings
    given: dict[str, Any]
    """What the marker and the ini gave, by option name (the stand-in gets them as words)."""

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
    folder = Path(str(config.getini("rpctape_cassette_dir")))
    if not folder.is_absolute():
        folder = Path(str(item.path)).parent / folder
    cassette = cassette_path(folder, kwargs.pop("cassette", None) or default_cassette_name(item))
    kwargs["record_mode"] = (
        config.getoption("rpctape_record_mode")
        or kwargs.get("record_mode")
        or config.getini("rpctape_record_mode")
    )
    if kwargs.get("strict") is None:
        kwargs["strict"] = bool(config.getini("rpctape_strict"))
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
    return TestSettings(cassette, settings, kwargs)


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


def _start(item: pytest.Item) -> RpctapeSession:
    resolved = resolve_settings(item)
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
        url = background.start()
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
    try:
        session = _start(item)
    except (RpctapeError, FileNotFoundError) as exc:
        problem = f"rpctape: {exc}"
    else:
        problem = ""
    if problem:
        pytest.fail(problem, pytrace=False)  # outside the except block: no chained traceback
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
        """A recording made by a failed test is not kept (the old cassette comes back)."""
        if passed or not self.record_mode.records(self._existed):
            return
        if self._backup is not None:
            self.cassette.write_bytes(self._backup)
        elif not self._existed:
            self.cassette.unlink(missing_ok=True)


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
    )
    settings.cassette.parent.mkdir(parents=True, exist_ok=True)
    item.stash[_CODEX] = standin
    try:
        yield standin
    finally:
        del item.stash[_CODEX]


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
