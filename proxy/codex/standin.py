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
``RPCTAPE_ARGS``           rules, attestation and matching options (:data:`ARGS_HELP`)
``RPCTAPE_REAL_CODEX``     the real codex (default: as ``appserver.find_codex`` finds it)
``RPCTAPE_REPORT``         append one JSON line per session to this file (the pytest fixture)
``RPCTAPE_LOG``            rpctape's own log goes to this file (default: errors on stderr)

Every other invocation (``--version``, ``login``, ``app-server generate-json-schema``) runs
the real codex in this process's place. A stdio session is one connection: the cassette's
first recorded connection is replayed. Exit codes: :data:`EXIT_MISS` when the replay ended
the session because the client said something the recording does not have (the explanation
is written on stderr before stdout ends), :data:`EXIT_USAGE` for bad settings, 1 for a
``--strict`` replay whose report is not clean; recording exits with the real codex's status.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import logging
import os
import secrets
import shlex
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import orjson

from ..core.cassette import CassetteWriter, load, new_header
from ..core.modes import RecordMode, parse_mode
from ..core.planner import ConnectionReplay, ReplayOptions
from ..core.recorder import Recorder
from ..core.redact import Redactor
from ..core.replay_session import ReplaySession
from ..core.rules import Rule
from ..errors import RpctapeError, UsageError
from ..wire.bridge import Bridge
from ..wire.legs import ChildLeg, StdioLeg
from ..wire.relay import DEFAULT_MAX_SIZE
from ..wire.replay_server import ReplayServer, explain_miss_closes, recorded_bridge
from ..wire.runner import freeze_loaded
from ..wire.runner import run as run_loop
from ..wire.wrap import FORWARDED_SIGNALS, exit_status
from .dialect import CODEX

PROG = "rpctape-codex"
EXIT_USAGE = 2
"""Bad settings (mode, RPCTAPE_ARGS, a missing cassette), or no real codex to run."""
EXIT_MISS = 3
"""The replay ended the session on a miss (close 4409 or 4404 over a websocket)."""
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

ARGS_HELP = (
    "--rules FILE, --attest MODE, --advertise-attestation, --match-on WHAT, --match ORDER, "
    "--ignore POINTER, --on-miss error|close, --pace SPEED, --allow-playback-repeats, --strict, "
    "--redact-key KEY, --redact-value REGEX, --no-redact"
)


class _ArgsError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _ArgsError(message)


def _args_parser() -> _Parser:
    parser = _Parser(prog=ENV_ARGS, add_help=False, exit_on_error=False)
    parser.add_argument("--rules", action="append", default=[], type=Path)
    parser.add_argument("--attest", action="append", default=[])
    parser.add_argument("--advertise-attestation", action="store_true")
    parser.add_argument("--match-on", default="codex")
    parser.add_argument("--match", default="strict")
    parser.add_argument("--ignore", action="append", default=[])
    parser.add_argument("--on-miss", default="error")
    parser.add_argument("--pace", default="fast")
    parser.add_argument("--allow-playback-repeats", action="store_true")
    parser.add_argument("--strict", action="store_true")
    parser.add_argument("--redact-key", action="append", default=[])
    parser.add_argument("--redact-value", action="append", default=[])
    parser.add_argument("--no-redact", action="store_true")
    return parser


@dataclass(frozen=True)
class Settings:
    """Everything a session needs, validated at the edge (one clear line when wrong)."""

    cassette: Path | None
    mode: RecordMode
    rules: tuple[Rule, ...] = ()
    replay: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of :class:`~proxy.wire.replay_server.ReplayServer` (matching, pacing)."""
    strict: bool = False
    redactor: Redactor = field(default_factory=Redactor)
    real: str | None = None
    report: Path | None = None


def settings_from(env: dict[str, str] | os._Environ[str]) -> Settings:
    """Read the ``RPCTAPE_*`` variables; raise :class:`UsageError` with one clear line."""
    from ..core.attest import build_rules

    mode = parse_mode(RecordMode, env.get(ENV_MODE) or "once", f"record mode (${ENV_MODE})")
    try:
        words = shlex.split(env.get(ENV_ARGS, ""))
        args = _args_parser().parse_args(words)
    except (ValueError, _ArgsError, argparse.ArgumentError) as exc:
        raise UsageError(f"${ENV_ARGS}: {exc}; valid options: {ARGS_HELP}") from None
    if args.no_redact and (args.redact_key or args.redact_value):
        raise UsageError(f"${ENV_ARGS}: --no-redact excludes --redact-key and --redact-value")
    rules = tuple(build_rules(args.rules, args.attest, args.advertise_attestation))
    replay = {
        "pace": args.pace,
        "on_miss": args.on_miss,
        "match": args.match,
        "ignore": tuple(args.ignore),
        "match_on": args.match_on,
        "allow_playback_repeats": args.allow_playback_repeats,
    }
    ReplayOptions.build(**replay)  # a typo fails here, before any session starts
    redactor = Redactor.build(args.redact_key, enabled=not args.no_redact, values=args.redact_value)
    cassette = Path(env[ENV_CASSETTE]).expanduser() if env.get(ENV_CASSETTE) else None
    report = Path(env[ENV_REPORT]) if env.get(ENV_REPORT) else None
    return Settings(
        cassette, mode, rules, replay, args.strict, redactor, env.get(ENV_REAL) or None, report
    )


def real_codex(settings: Settings) -> str:
    """The real codex executable, or :class:`UsageError` saying how to name one."""
    if settings.real is not None:
        path = Path(settings.real)
        if not path.is_file():
            raise UsageError(f"${ENV_REAL} {path}: no such file; point it at the real codex")
        return str(path)
    try:
        from .appserver import find_codex

        return str(find_codex())
    except (RpctapeError, ImportError) as exc:
        raise UsageError(f"no real codex to run ({exc}); set ${ENV_REAL}") from None


def default_cassette(env: dict[str, str] | os._Environ[str]) -> Path:
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

    def to_json(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "cassette": self.cassette,
            "exit": self.exit,
            "clean": self.clean,
            "closed": None if self.closed is None else list(self.closed),
            "explanation": self.explanation,
            "report": self.report,
        }


def _explain(text: str) -> None:
    """The one explanation of a miss that ended the session: stderr, flushed, then stdout
    ends (the official SDK reads stderr in a thread that races its stdout reader)."""
    data = (text.rstrip("\n") + "\n").encode()
    with contextlib.suppress(OSError):
        while data:
            data = data[os.write(2, data) :]


async def replay(settings: Settings, cassette: Path) -> Outcome:
    """Serve ``cassette``'s first recorded connection on stdio until the client leaves."""
    server = ReplayServer(
        cassette, rules=settings.rules, after_load=freeze_loaded, dialect=CODEX, **settings.replay
    )
    explained: list[str] = []

    def explain(text: str) -> None:
        explained.append(text)
        _explain(text)

    with _stop_on_signals(server.close):
        report = await server.serve_stdio(explain=explain, explain_grace=EXPLAIN_GRACE)
        hold_stop_signals()
    closed = server.stdio_close
    outcome = Outcome("replay", str(cassette), clean=report.clean, report=report.render())
    if closed is not None:
        outcome.closed = (closed.code, closed.reason)
        outcome.explanation = "\n".join(explained)
        outcome.exit = EXIT_MISS
    elif settings.strict and not report.clean:
        _explain(report.render())
        outcome.exit = 1
    return outcome


async def record(settings: Settings, cassette: Path, command: Sequence[str]) -> Outcome:
    """Record a whole session through the real codex into a temporary file renamed over
    ``cassette`` when it ends well (the real codex exits 0 or after a signal the client sent)."""
    cassette.parent.mkdir(parents=True, exist_ok=True)
    temp = cassette.with_name(f".{cassette.name}.{secrets.token_hex(4)}.recording")
    upstream = "stdio:" + shlex.join(command)
    header = new_header(upstream, transport="stdio", meta={"client_transport": "stdio"})
    writer = CassetteWriter(temp, header)
    client = await StdioLeg.open(DEFAULT_MAX_SIZE)
    try:
        recorder = Recorder(writer, settings.redactor)
        status = await _record_live(client, command, recorder, upstream, settings.rules)
    except BaseException:
        writer.close()
        temp.unlink(missing_ok=True)
        raise
    finally:
        client.abort()
    writer.close()
    ended_by_client = status in {128 + s for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    if status == 0 or ended_by_client:
        os.replace(temp, cassette)
        log.info("recorded %s", cassette)
    else:
        temp.unlink(missing_ok=True)
        log.warning("the real codex exited with %d: recording not kept", status)
    return Outcome("record", str(cassette), exit=status)


async def episodes(settings: Settings, cassette: Path, invocation: Invocation) -> Outcome:
    """``new_episodes``: replay when the client's first message matches the first message of
    a recorded connection; otherwise record the session through the real codex and append it."""
    exists = cassette.is_file()
    tape = load(cassette) if exists else None
    options = ReplayOptions.build(dialect=CODEX, **settings.replay)
    session = ReplaySession(tape, options, str(cassette))
    client = await StdioLeg.open(DEFAULT_MAX_SIZE)
    try:
        await client.first_message()
        if not client.held:
            return Outcome("episodes", str(cassette))
        is_text, payload = client.held[0]
        live = session.open()
        claim = (
            session.claim_matching(live, payload.decode(errors="replace") if is_text else payload)
            if tape is not None
            else None
        )
        if claim is not None:
            return await _episode_replay(settings, session, client, claim)
        command = [real_codex(settings), *invocation.argv]
        cassette.parent.mkdir(parents=True, exist_ok=True)
        upstream = "stdio:" + shlex.join(command)
        if exists:
            writer = CassetteWriter.append_to(cassette)
        else:
            header = new_header(upstream, transport="stdio", meta={"client_transport": "stdio"})
            writer = CassetteWriter(cassette, header)
        try:
            recorder = Recorder(writer, settings.redactor, after=tape.events if tape else ())
            status = await _record_live(client, command, recorder, upstream, settings.rules)
        finally:
            writer.close()
        return Outcome("episodes-record", str(cassette), exit=status)
    finally:
        client.abort()


async def _episode_replay(
    settings: Settings, session: ReplaySession, client: StdioLeg, claim: ConnectionReplay
) -> Outcome:
    bridge = recorded_bridge(client, claim, settings.rules)
    closed = explain_miss_closes(bridge, claim, _explain, EXPLAIN_GRACE)
    bridge.start()
    stop = asyncio.Event()
    with _stop_on_signals(stop.set):
        waiter = asyncio.ensure_future(stop.wait())
        waits: list[asyncio.Future[Any]] = [bridge.server.lost, waiter]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        hold_stop_signals()
    if not bridge.server.lost.done():
        bridge.shutdown()
    elif closed:
        await asyncio.sleep(EXPLAIN_GRACE)  # the output ends after the reason
    client.close(1000, "replay ended")
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(client.lost), 1.0)
    report = session.report()
    outcome = Outcome("episodes-replay", session.name, clean=report.clean, report=report.render())
    if closed:
        outcome.closed = (closed[0].code, closed[0].reason)
        outcome.exit = EXIT_MISS
    elif settings.strict and not report.clean:
        _explain(report.render())
        outcome.exit = 1
    return outcome


async def _record_live(
    client: StdioLeg,
    command: Sequence[str],
    recorder: Recorder,
    upstream: str,
    rules: Sequence[Rule],
) -> int:
    """Bridge ``client`` to a new child running ``command``, recording (as ``wrap`` does)."""
    conn = recorder.new_connection()
    try:
        child = await ChildLeg.spawn(command, DEFAULT_MAX_SIZE)
    except OSError as exc:
        recorder.error(conn, f"cannot start {upstream}: {exc}", stage="connect")
        raise UsageError(f"cannot start the real codex {command[0]}: {exc}") from None
    recorder.open(conn, path="", headers=(), subprotocol=None, upstream=upstream,
                  transport="stdio", client_transport="stdio")  # fmt: skip
    bridge = Bridge(conn, client, child, recorder, rules)
    bridge.start()
    loop = asyncio.get_running_loop()
    for sig in FORWARDED_SIGNALS:
        loop.add_signal_handler(sig, child.signal, sig)
    try:
        await child.lost
        code = child.exited.result()
        client.close(1000, "app-server exited")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(bridge.wait(), 5)
        hold_stop_signals()
    finally:
        for sig in FORWARDED_SIGNALS:
            loop.remove_signal_handler(sig)
    return exit_status(code)


@contextlib.contextmanager
def _stop_on_signals(stop: Callable[[], Any]) -> Iterator[None]:
    """SIGINT/SIGTERM end a replay cleanly (the SDK closes stdin, then terminates at once)."""
    loop = asyncio.get_running_loop()

    def handler() -> None:
        result = stop()
        if asyncio.iscoroutine(result):
            task = loop.create_task(result, name="standin-stop")
            _stopping.add(task)
            task.add_done_callback(_stopping.discard)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, handler)
    try:
        yield
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


_stopping: set[asyncio.Task[Any]] = set()

STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


def hold_stop_signals() -> None:
    """Once the session is over, before its signal handlers go: a client that terminates
    its codex right after closing stdin (the official SDK does) must not kill this process
    before the cassette is renamed and the report written; the held signal dies with it."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


async def run_session(settings: Settings, invocation: Invocation, env: Any) -> Outcome:
    """Record or replay one app-server session over this process's stdio."""
    mode, cassette = settings.mode, settings.cassette
    exists = cassette is not None and cassette.is_file()
    if mode is RecordMode.NONE or (mode is RecordMode.ONCE and exists):
        if cassette is None:
            raise UsageError(
                f"record mode {mode.value!r} replays: set ${ENV_CASSETTE} to the cassette"
            )
        if not exists:
            raise UsageError(
                f"no cassette at {cassette}; record mode 'none' only replays: record it first "
                f"(${ENV_MODE}=once)"
            )
        return await replay(settings, cassette)
    if mode is RecordMode.NEW_EPISODES:
        if cassette is None:
            raise UsageError(f"record mode 'new_episodes' needs ${ENV_CASSETTE}")
        return await episodes(settings, cassette, invocation)
    command = [real_codex(settings), *invocation.argv]
    return await record(settings, cassette or default_cassette(env), command)


def _write_report(path: Path, outcome: Outcome) -> None:
    line = orjson.dumps(outcome.to_json()) + b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _fail(message: str) -> int:
    _explain(f"{PROG}: error: {' '.join(message.split())}")
    return EXIT_USAGE


def run(argv: Sequence[str], env: Any = os.environ) -> int:
    """The stand-in's work; returns the exit status (execs the real codex for other calls)."""
    invocation = parse_invocation(argv)
    log_file = env.get(ENV_LOG)
    handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    logging.basicConfig(
        level=logging.INFO if log_file else logging.ERROR,
        format=f"{PROG} %(levelname)s %(name)s: %(message)s",
        handlers=[handler],
    )
    settings: Settings | None = None
    try:
        if not invocation.serve:  # the RPCTAPE_* settings do not matter: no session
            real = real_codex(Settings(None, RecordMode.ONCE, real=env.get(ENV_REAL) or None))
            os.execv(real, [real, *invocation.argv])
        settings = settings_from(env)
        if invocation.listen != "stdio://":
            raise UsageError(
                f"app-server --listen {invocation.listen}: {PROG} serves stdio only; use "
                "`rpctape replay --listen` (or record) for a websocket client"
            )
        outcome = run_loop(run_session(settings, invocation, env))
    except (RpctapeError, OSError) as exc:
        code = _fail(str(exc))
        if settings is not None and settings.report is not None:
            failed = Outcome("error", str(settings.cassette or ""), code, False, None, str(exc))
            _write_report(settings.report, failed)
        return code
    if settings.report is not None:
        _write_report(settings.report, outcome)
    return outcome.exit


def main() -> NoReturn:
    """Console entry point ``rpctape-codex``."""
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
