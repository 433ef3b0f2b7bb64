"""``rpctape-codex``: a stand-in for the ``codex`` executable that records or replays.

Clients that start codex themselves take a path to its executable: the official Python SDK
(``CodexConfig(codex_bin=...)``), codex-app-server-sdk (``CODEX_APP_SERVER_CMD``), the
desktop app (``CODEX_CLI_PATH``), the VS Code extension (``chatgpt.cliExecutable``). Point
it at ``rpctape-codex`` and ``rpctape-codex [GLOBAL OPTIONS] app-server [--listen stdio://]``
serves the app-server session over stdio from a cassette, or records it through the real
codex, according to the environment:

``RPCTAPE_CASSETTE``       the cassette (required to replay; recording without it writes
                           ``$RPCTAPE_CASSETTE_DIR/<UTC time>-<pid>.jsonl``)
``RPCTAPE_CASSETTE_DIR``   that folder (default ``~/.rpctape/cassettes``)
``RPCTAPE_RECORD_MODE``    ``none``, ``once`` (default), ``new_episodes``, ``all``
``RPCTAPE_ARGS``           options of the options model, as ``rpctape replay`` takes them
                           (``rpctape-codex --rpctape-help`` lists those that apply)
``RPCTAPE_REAL_CODEX``     the real codex (default: as ``appserver.find_codex`` finds it)
``RPCTAPE_REPORT``         append one JSON line per session to this file (the pytest fixture)
``RPCTAPE_LOG``            rpctape's own log goes to this file (default: errors on stderr)

Every other invocation (``--version``, ``login``, ``app-server generate-json-schema``) runs
the real codex in this process's place. A stdio session is one connection, served by the
session layer (:class:`~proxy.wire.session.Session`) like every door. Exit codes:
:data:`EXIT_MISS` when the replay ended the session because the client said something the
recording does not have (the explanation is written on stderr before stdout ends),
:data:`EXIT_USAGE` for bad settings or when it cannot serve (the reason also answers the
client's first request, as a JSON-RPC error), 74 when the cassette cannot be written, 1 for a
``--strict`` replay whose report is not clean; recording exits with the real codex's status.
A stand-in started, directly or not, by a stand-in (``RPCTAPE_REAL_CODEX`` leading back to
``rpctape-codex``) stops at once with :data:`EXIT_USAGE`.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import select
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import orjson

from ..core.jsonrpc import Direction
from ..core.modes import Plan, RecordMode, parse_mode, plan_for
from ..core.options import Door, Settings, parse_words
from ..core.replay_report import ReplayMismatch
from ..errors import RpctapeError, UsageError
from ..wire.runner import freeze_loaded
from ..wire.runner import run as run_loop
from ..wire.session import Session
from .dialect import CODEX

PROG = "rpctape-codex"
EXIT_USAGE = 2
"""Bad settings (mode, RPCTAPE_ARGS, a missing cassette), or no real codex to run."""
EXIT_MISS = 3
"""The replay ended the session on a miss (close 4409 or 4404 over a websocket)."""
EXIT_DISCONNECTED = 4
"""A ``disconnect`` fault ended the session (stdout ended; docs/replay.md, Faults)."""
EXIT_WRITE_FAILED = 74
"""The cassette could not be written (EX_IOERR, as ``rpctape record`` and ``wrap``)."""
CANNOT_SERVE_CODE = -32098
"""JSON-RPC error code of the answer to the first request when the stand-in cannot serve
(JSON-RPC 2.0 section 5.1: -32000 to -32099 are implementation-defined server errors)."""
FIRST_REQUEST_TIMEOUT = 10.0
"""Seconds the stand-in that cannot serve waits for the client's first request."""
EXPLAIN_GRACE = 0.5
"""Seconds between the explanation on stderr and the end of stdout: the official SDK reads
stderr in a thread racing its stdout reader, which loses the tail about 1 run in 8 without a
pause (tests/test_e2e_sdk.py)."""

ENV_CASSETTE = "RPCTAPE_CASSETTE"
ENV_CASSETTE_DIR = "RPCTAPE_CASSETTE_DIR"
ENV_MODE = "RPCTAPE_RECORD_MODE"
ENV_ARGS = "RPCTAPE_ARGS"
ENV_REAL = "RPCTAPE_REAL_CODEX"
ENV_REPORT = "RPCTAPE_REPORT"
ENV_LOG = "RPCTAPE_LOG"

GLOBAL_OPTIONS_WITH_VALUE = frozenset(
    {"-c", "--config", "--enable", "--disable", "--remote", "--remote-auth-token-env", "-i",
     "--image", "-m", "--model", "--local-provider", "-p", "--profile", "-s", "--sandbox",
     "-C", "--cd", "--add-dir", "-a", "--ask-for-approval"}
)  # fmt: skip
"""codex's global options that take a value (codex 0.169.0 ``--help``)."""
APP_SERVER_OPTIONS_WITH_VALUE = frozenset(
    {"--listen", "-c", "--config", "--ws-auth", "--ws-token-file", "--ws-token-sha256",
     "--ws-shared-secret-file", "--ws-issuer", "--ws-audience", "--ws-max-clock-skew-seconds"}
)  # fmt: skip

log = logging.getLogger("rpctape.standin")


# --- the command line codex was given ---------------------------------------------------------


@dataclass(frozen=True)
class Invocation:
    """What a client asked codex for: an app-server session over stdio, or anything else."""

    argv: tuple[str, ...]
    serve: bool
    """``app-server`` with no subcommand: rpctape serves it."""
    listen: str = "stdio://"


def parse_invocation(argv: Sequence[str]) -> Invocation:
    """Find the subcommand after codex's global options; refuse a non-stdio ``--listen``."""
    args = tuple(argv)
    index = _first_positional(args, 0, GLOBAL_OPTIONS_WITH_VALUE)
    if index is None or args[index] != "app-server":
        return Invocation(args, False)
    rest = args[index + 1 :]
    if _first_positional(rest, 0, APP_SERVER_OPTIONS_WITH_VALUE) is not None:
        return Invocation(args, False)  # app-server generate-json-schema, proxy, ...
    if any(a in ("-h", "--help") for a in rest):
        return Invocation(args, False)
    listen = "stdio://"
    for i, arg in enumerate(rest):
        if arg == "--listen" and i + 1 < len(rest):
            listen = rest[i + 1]
        elif arg.startswith("--listen="):
            listen = arg.split("=", 1)[1]
    return Invocation(args, True, listen)


def _first_positional(args: Sequence[str], start: int, valued: frozenset[str]) -> int | None:
    i = start
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return i + 1 if i + 1 < len(args) else None
        if not arg.startswith("-") or arg == "-":
            return i
        i += 2 if arg in valued else 1
    return None


# --- settings from the environment ------------------------------------------------------------

ENV_GUARD = "RPCTAPE_STANDIN_PID"
"""Set in the environment of the real codex a stand-in runs: a stand-in that finds it was
started by a stand-in (through a symlink, a wrapper or PATH) and would start itself forever."""


@dataclass(frozen=True)
class Setup:
    """What one stand-in run needs, read from the environment at the edge."""

    settings: Settings
    cassette: Path | None
    real: str | None = None
    report: Path | None = None


def setup_from(env: Mapping[str, str]) -> Setup:
    """Read the ``RPCTAPE_*`` variables; raise :class:`UsageError` with one clear line.

    ``RPCTAPE_ARGS`` holds options of the options model (:mod:`proxy.core.options`), parsed
    and checked as every door does; ``RPCTAPE_RECORD_MODE`` is its ``--record-mode``."""
    given = parse_words(env.get(ENV_ARGS, ""), Door.STANDIN, source=f"${ENV_ARGS}")
    mode = env.get(ENV_MODE) or None
    if mode is not None:
        parse_mode(RecordMode, mode, f"record mode (${ENV_MODE})")
        if given.get("record_mode") not in (None, mode):
            raise UsageError(
                f"${ENV_MODE}={mode} and --record-mode {given['record_mode']} in ${ENV_ARGS} "
                "disagree; give one of them"
            )
        given["record_mode"] = mode
    settings = Settings.resolve(Door.STANDIN, given, defaults={"record_mode": "once"})
    cassette = Path(env[ENV_CASSETTE]).expanduser() if env.get(ENV_CASSETTE) else None
    report = Path(env[ENV_REPORT]) if env.get(ENV_REPORT) else None
    return Setup(settings, cassette, env.get(ENV_REAL) or None, report)


def real_codex(named: str | None) -> str:
    """The real codex executable, or :class:`UsageError` saying how to name one; never
    this stand-in itself."""
    if named is not None:
        path = Path(named)
        if not path.is_file():
            raise UsageError(f"${ENV_REAL} {path}: no such file; point it at the real codex")
        real = str(path)
    else:
        try:
            from .appserver import find_codex

            real = str(find_codex())
        except (RpctapeError, ImportError) as exc:
            raise UsageError(f"no real codex to run ({exc}); set ${ENV_REAL}") from None
    if os.path.realpath(real) == os.path.realpath(sys.argv[0] or PROG):
        raise _loop_error(real)
    return real


def _found_codex() -> str | None:
    try:
        from .appserver import find_codex

        return str(find_codex())
    except (RpctapeError, ImportError):
        return None


def _loop_error(real: str) -> UsageError:
    return UsageError(
        f"${ENV_REAL} ({real}) leads back to {PROG}, which would start itself forever; "
        f"point ${ENV_REAL} at the real codex binary (e.g. node_modules/.bin/codex)"
    )


def default_cassette(env: Mapping[str, str]) -> Path:
    """``$RPCTAPE_CASSETTE_DIR/<UTC time>-<pid>.jsonl`` (default ``~/.rpctape/cassettes``)."""
    folder = Path(env.get(ENV_CASSETTE_DIR) or "~/.rpctape/cassettes").expanduser()
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    return folder / f"{stamp}-{os.getpid()}.jsonl"


# --- sessions --------------------------------------------------------------------------------


@dataclass
class Outcome:
    """How one session ended: written to ``RPCTAPE_REPORT`` and turned into the exit code."""

    plan: str
    cassette: str
    exit: int = 0
    clean: bool = True
    closed: tuple[int, str] | None = None
    explanation: str = ""
    report: str = ""
    faults: list[dict[str, Any]] = field(default_factory=list)
    """Each ``--fault`` and how often it fired."""
    kept: bool = False
    """A recording became the cassette (the pytest fixture undoes it for a failed test)."""
    played: list[int] = field(default_factory=list)
    """The recorded connections replayed, by number (``--rpctape-unused``)."""
    stale: str = ""
    """Why the replayed cassette is stale (``--codex-version``), or ``""``."""

    def to_json(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "cassette": self.cassette,
            "exit": self.exit,
            "clean": self.clean,
            "closed": None if self.closed is None else list(self.closed),
            "explanation": self.explanation,
            "report": self.report,
            "faults": self.faults,
            "kept": self.kept,
            "played": self.played,
            "stale": self.stale,
        }


def _explain(text: str) -> None:
    """One explanation on stderr, flushed, before stdout ends (the official SDK reads
    stderr in a thread that races its stdout reader)."""
    data = (text.rstrip("\n") + "\n").encode()
    with contextlib.suppress(OSError):
        while data:
            data = data[os.write(2, data) :]


async def run_session(setup: Setup, invocation: Invocation, env: Mapping[str, str]) -> Outcome:
    """Record or replay one app-server session over this process's stdio."""
    settings, cassette = setup.settings, setup.cassette
    mode = settings.record_mode
    exists = cassette is not None and cassette.is_file()
    plan = plan_for(mode, exists)
    command: list[str] = []
    if plan is Plan.REPLAY:
        if cassette is None:
            raise UsageError(
                f"record mode {mode.value!r} replays: set ${ENV_CASSETTE} to the cassette"
            )
        if not exists:
            raise UsageError(
                f"no cassette at {cassette}; record mode {mode.value!r} only replays: record it "
                f"first (${ENV_MODE}=once)"
            )
    elif plan is Plan.EPISODES:
        if cassette is None:
            raise UsageError(f"record mode 'new_episodes' needs ${ENV_CASSETTE}")
        # Needed only if the client's first message matches no recording: checked then.
        command = [setup.real or _found_codex() or "codex", *invocation.argv]
    else:
        command = [real_codex(setup.real), *invocation.argv]
    target = cassette or default_cassette(env)
    validator = None
    if settings.validate:
        from .schema import validator_for

        validator = validator_for(settings, Direction.C2S if plan is Plan.REPLAY else None)
    session = Session(
        target, settings=settings, door=Door.STANDIN, command=command, dialect=CODEX,
        validator=validator, after_load=freeze_loaded, version=lambda: binary_version(command),
    )  # fmt: skip
    explained: list[str] = []

    def explain(text: str) -> None:
        explained.append(text)
        _explain(text)

    with contextlib.suppress(ReplayMismatch):  # --strict: the exit status says it
        await session.serve_stdio(explain=explain, explain_grace=EXPLAIN_GRACE, own_signals=True)
    report = session.report
    decided = session.plan or plan  # decided again once another session's recording ended
    outcome = Outcome(decided.value, str(target), clean=report.clean, report=report.render(),
                      faults=session.faults.summary(), kept=bool(session.kept),
                      played=list(report.played), stale=session.stale or "")  # fmt: skip
    for line in session.faults.report_lines():
        _explain(line)
    if session.failure is not None:
        if not explained:
            explain(f"{PROG}: error: {session.failure}")
        outcome.explanation = "\n".join(explained)
        outcome.exit = EXIT_WRITE_FAILED
        outcome.clean = False
    elif session.refused is not None:
        explain(f"{PROG}: error: {session.refused}")
        outcome.explanation = "\n".join(explained)
        outcome.exit = EXIT_USAGE
        outcome.clean = False
    elif session.stdio_close is not None:
        closed = session.stdio_close
        outcome.closed = (closed.code, closed.reason)
        outcome.explanation = "\n".join(explained)
        outcome.exit = EXIT_MISS
    elif session.faults.closed is not None:  # on purpose: not a problem of the replay
        outcome.exit = EXIT_DISCONNECTED
    elif session.child_status is not None:
        outcome.exit = session.child_status
    elif settings.strict and not report.clean:
        _explain(report.render())
        outcome.exit = 1
    return outcome


def binary_version(command: Sequence[str]) -> str | None:
    """What ``REAL_CODEX --version`` says (the header's ``codex`` field of a recording whose
    server did not name itself), or ``None``."""
    if not command:
        return None
    from .schema import codex_version

    try:
        return codex_version(Path(command[0]))
    except RpctapeError:
        return None


def _write_report(path: Path, outcome: Outcome) -> None:
    line = orjson.dumps(outcome.to_json()) + b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def answer_first_request(message: str, stdin: int = 0, stdout: int = 1,
                         timeout: float = FIRST_REQUEST_TIMEOUT) -> None:  # fmt: skip
    """The stand-in cannot serve: answer the client's first request with a JSON-RPC error
    carrying ``message`` (clients that hide codex's stderr show it), waiting at most
    ``timeout`` seconds for it."""
    deadline = time.monotonic() + timeout
    pending = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        try:
            ready, _, _ = select.select([stdin], [], [], left)
            if not ready:
                return
            chunk = os.read(stdin, 65536)
        except OSError:
            return
        if not chunk:
            return
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            request_id = _request_id(line)
            if request_id is not _NO_ID:
                reply = {"id": request_id, "error": {"code": CANNOT_SERVE_CODE, "message": message}}
                data = orjson.dumps(reply) + b"\n"
                with contextlib.suppress(OSError):
                    while data:
                        data = data[os.write(stdout, data) :]
                return


_NO_ID = object()


def _request_id(line: bytes) -> Any:
    """The id of a JSON-RPC request on ``line``, or :data:`_NO_ID`."""
    try:
        msg = orjson.loads(line)
    except orjson.JSONDecodeError:
        return _NO_ID
    if isinstance(msg, dict) and "method" in msg and "id" in msg:
        return msg["id"]
    return _NO_ID


def run(argv: Sequence[str], env: Mapping[str, str] = os.environ) -> int:
    """The stand-in's work; returns the exit status (execs the real codex for other calls)."""
    invocation = parse_invocation(argv)
    log_file = env.get(ENV_LOG)
    handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    logging.basicConfig(
        level=logging.INFO if log_file else logging.ERROR,
        format=f"{PROG} %(levelname)s %(name)s: %(message)s",
        handlers=[handler],
    )
    setup: Setup | None = None
    try:
        if env.get(ENV_GUARD):
            raise _loop_error(env.get(ENV_REAL) or "codex")
        if not invocation.serve:  # the RPCTAPE_* settings do not matter: no session
            real = real_codex(env.get(ENV_REAL) or None)
            os.execve(real, [real, *invocation.argv], {**env, ENV_GUARD: str(os.getpid())})
        os.environ[ENV_GUARD] = str(os.getpid())  # the real codex we start inherits it
        setup = setup_from(env)
        if invocation.listen != "stdio://":
            raise UsageError(
                f"app-server --listen {invocation.listen}: {PROG} serves stdio only; use "
                "`rpctape replay --listen` (or record) for a websocket client"
            )
        outcome = run_loop(run_session(setup, invocation, env))
    except (RpctapeError, OSError) as exc:
        problem = getattr(exc, "problem", None)
        message = f"{PROG}: error: {' '.join(str(problem or exc).split())}"
        _explain(message + (f"\n{exc.grammar}" if problem and hasattr(exc, "grammar") else ""))
        if setup is not None and setup.report is not None:
            failed = Outcome("error", str(setup.cassette or ""), EXIT_USAGE, False, None, str(exc))
            _write_report(setup.report, failed)
        if invocation.serve:
            answer_first_request(message)
        return EXIT_USAGE
    if setup.report is not None:
        _write_report(setup.report, outcome)
    return outcome.exit


def main() -> NoReturn:
    """Console entry point ``rpctape-codex``."""
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
