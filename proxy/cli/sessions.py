"""``rpctape record``, ``replay`` and ``wrap``: shells over one session layer.

Each command collects the options model's words (:mod:`proxy.cli.options`), resolves them for
its door, and hands a :class:`~proxy.wire.session.Session` its settings; what a record mode
means, when a cassette is replaced and how clients are served is decided there, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..codex.dialect import CODEX
from ..core.jsonrpc import Direction
from ..core.options import Door, Settings
from ..core.replay_report import ReplayMismatch
from ..errors import CassetteError, CassetteWriteError, RpctapeError, UsageError
from ..wire.runner import freeze_loaded
from ..wire.runner import run as run_loop
from ..wire.session import Session
from .common import (
    DEFAULT_LISTEN,
    EXIT_DISCONNECTED,
    EXIT_MISS,
    EXIT_WRITE_FAILED,
    app,
    bind_error,
    cassette_file,
    error_line,
    executable,
    fail,
    say,
    setup_logging,
    stop_on_signals,
    warn,
)
from .options import session_options

VerboseOption = Annotated[int, typer.Option("-v", count=True, help="-v info, -vv frames.")]

WRITE_FAILED_TODO = "Clients are refused (HTTP 503) until rpctape is stopped"


def _validator(settings: Settings, only: Direction | None = None) -> Any:
    """``--validate``'s check (codex's schema), or ``None``."""
    if not settings.validate:
        return None
    from ..codex.schema import validator_for

    return validator_for(settings, only)


async def _live_status(session: Session) -> None:
    """Redraw one status line on stderr through rich (only when stderr is a terminal)."""
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    def line() -> Text:
        recorder = session.recorder
        text = Text()
        text.append("rpctape: ", style="bold")
        if recorder is None:
            text.append("replaying")
            return text
        text.append(f"{recorder.open_connections} open", style="green")
        text.append(f" / {recorder.connections} connection(s), ")
        text.append(f"{recorder.frames[Direction.C2S]} >", style="cyan")
        text.append(" ")
        text.append(f"{recorder.frames[Direction.S2C]} <", style="green")
        text.append(" frames")
        if recorder.validator is not None:
            text.append(f", {recorder.violations} schema violation(s)", style="red")
        return text

    console = Console(stderr=True, highlight=False)
    with Live(line(), console=console, transient=True, auto_refresh=False) as live:
        while True:
            live.update(line(), refresh=True)
            await asyncio.sleep(0.5)


async def _serve(session: Session, *, status: bool) -> None:
    """Listen until SIGINT/SIGTERM (handlers set before ``listening on`` is printed); a
    cassette that cannot be written is said at once, then the wait goes on."""
    with stop_on_signals() as stop:
        await session.start()
        try:
            say(f"listening on {session.url}")
            shown = (
                asyncio.create_task(_live_status(session), name="live-status")
                if status and sys.stderr.isatty()
                else None
            )
            waits: list[asyncio.Task[Any]] = [asyncio.create_task(stop.wait(), name="stop")]
            failed = session.failed
            if failed is not None:
                waits.append(asyncio.create_task(failed.wait(), name="write-failed"))
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in waits:
                    task.cancel()
                await asyncio.gather(*waits, return_exceptions=True)
                if shown is not None:
                    shown.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await shown
            if failed is not None and failed.is_set() and not stop.is_set():
                listener_failure = session._listener.failure if session._listener else None
                error_line(listener_failure or "the cassette cannot be written", WRITE_FAILED_TODO)
                await stop.wait()
        finally:
            await session.close()


def _run_session(session: Session, listen: str, **serve: Any) -> None:
    """Run a listening session; bad input and start failures in the one error style."""
    try:
        run_loop(_serve(session, **serve))
    except CassetteWriteError as exc:
        raise fail(exc, code=EXIT_WRITE_FAILED) from None
    except OSError as exc:
        raise fail(bind_error(exc, listen)) from None
    except RpctapeError as exc:
        raise fail(exc) from None


@app.command()
@session_options(Door.RECORD, defaults={"listen": DEFAULT_LISTEN})
def record(
    cassette: Annotated[Path, typer.Option(help="Cassette file to write (JSON Lines).")],
    command: Annotated[
        list[str] | None,
        typer.Argument(help="After --: start this app-server per client, over stdio."),
    ] = None,
    verbose: VerboseOption = 0,
    *,
    given: dict[str, Any],
) -> None:
    """Relay clients to an app-server and record every frame to a cassette."""
    setup_logging(verbose)
    argv = list(command or ())
    try:
        settings = Settings.resolve(
            Door.RECORD, given, defaults={"listen": DEFAULT_LISTEN, "record_mode": "all"}
        )
        if settings.upstream is None and not argv:
            raise UsageError("give --upstream ws://HOST:PORT or unix://PATH, or -- COMMAND")
        executable(argv, "record --")
        session = Session(
            cassette_file(cassette), settings=settings, door=Door.RECORD, command=argv,
            dialect=CODEX, validator=_validator(settings), fresh=True, keep_partial=True,
        )  # fmt: skip
    except RpctapeError as exc:
        raise fail(exc) from None
    _run_session(session, str(settings.listen), status=True)
    recorder = session.recorder
    assert recorder is not None
    say(
        f"recorded {recorder.connections} connection(s), "
        f"{recorder.frames[Direction.C2S]} frame(s) client>server, "
        f"{recorder.frames[Direction.S2C]} frame(s) server>client to {cassette}"
        + (
            f"; {recorder.violations} schema violation(s) (annotated in the cassette)"
            if recorder.validator is not None
            else ""
        )
        + (" (stopped at the write error)" if session.failure is not None else "")
    )
    for line in session.faults.report_lines():
        warn(line)
    if session.failure is not None:
        raise typer.Exit(EXIT_WRITE_FAILED)  # the error line was printed when it happened


@app.command()
@session_options(Door.REPLAY, Door.REPLAY_STDIO, defaults={"listen": DEFAULT_LISTEN})
def replay(
    cassette: Annotated[Path, typer.Argument(help="Cassette file to serve.")],
    stdio: Annotated[
        bool,
        typer.Option(
            "--stdio",
            help="Serve one client on stdin/stdout (newline-delimited JSON) instead of "
            "listening; exit when stdin ends.",
        ),
    ] = False,
    verbose: VerboseOption = 0,
    *,
    given: dict[str, Any],
) -> None:
    """Serve a cassette to clients as if it were the app-server (docs/replay.md)."""
    setup_logging(verbose)
    door = Door.REPLAY_STDIO if stdio else Door.REPLAY
    try:
        settings = Settings.resolve(
            door, given, defaults={} if stdio else {"listen": DEFAULT_LISTEN}
        )
        session = Session(
            cassette_file(cassette), settings=settings, door=door, dialect=CODEX,
            validator=_validator(settings, Direction.C2S), after_load=freeze_loaded,
        )  # fmt: skip
        if stdio:
            with contextlib.suppress(ReplayMismatch):  # --strict: the exit status says it
                run_loop(session.serve_stdio(explain=warn, own_signals=True))
        else:
            _run_session(session, str(settings.listen), status=False)
    except CassetteWriteError as exc:
        raise fail(exc, code=EXIT_WRITE_FAILED) from None
    except OSError as exc:
        raise fail(bind_error(exc, str(given.get("listen") or DEFAULT_LISTEN))) from None
    except RpctapeError as exc:
        raise fail(exc) from None
    report = session.report
    (warn if stdio else say)(report.render())  # over stdio, stdout carries the protocol only
    for line in session.faults.report_lines():
        warn(line)
    if settings.report_json is not None:
        _write_report_json(settings.report_json, report)
    if session.failure is not None:
        error_line(session.failure, "The recording was not kept; the cassette is unchanged")
        raise typer.Exit(EXIT_WRITE_FAILED)
    if stdio and session.stdio_close is not None:
        raise typer.Exit(EXIT_MISS)  # the replay ended the session on a miss (docs/replay.md)
    if stdio and session.faults.closed is not None:
        raise typer.Exit(EXIT_DISCONNECTED)
    if settings.strict and not report.clean:
        raise typer.Exit(1)


def _write_report_json(path: Path, report: Any) -> None:
    import orjson

    to_json = getattr(report, "to_json", None)
    body = to_json() if to_json is not None else {"report": report.render()}
    path.write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n")


@app.command(context_settings={"allow_interspersed_args": False})
@session_options(Door.WRAP)
def wrap(
    cassette: Annotated[Path, typer.Option(help="Cassette file to write (JSON Lines).")],
    command: Annotated[list[str], typer.Argument(help="After --: the app-server command.")],
    log: Annotated[
        Path | None, typer.Option(help="Write rpctape's own log here instead of stderr.")
    ] = None,
    verbose: VerboseOption = 0,
    *,
    given: dict[str, Any],
) -> None:
    """Stand in for `codex app-server` on stdio: run it, relay stdin/stdout, record both."""
    setup_logging(verbose, log)
    try:
        settings = Settings.resolve(Door.WRAP, given, defaults={"record_mode": "all"})
        executable(command, "wrap --")
        session = Session(
            cassette_file(cassette), settings=settings, door=Door.WRAP, command=command,
            dialect=CODEX, validator=_validator(settings), fresh=True, keep_partial=True,
        )  # fmt: skip
        run_loop(session.serve_stdio(own_signals=True))
    except CassetteWriteError as exc:
        raise fail(exc, code=EXIT_WRITE_FAILED) from None
    except (RpctapeError, OSError) as exc:
        raise fail(exc) from None
    for line in session.faults.report_lines():
        warn(line)
    if session.failure is not None:
        raise fail(session.failure, code=EXIT_WRITE_FAILED)
    if session.faults.closed is not None:
        raise typer.Exit(EXIT_DISCONNECTED)
    if session.child_status is None:
        raise fail(CassetteError(f"could not start {' '.join(command)}"))
    raise typer.Exit(session.child_status)


@app.command()
def faults(
    cassette: Annotated[Path, typer.Argument(help="Cassette file to plan the faults on.")],
    fault: Annotated[
        list[str] | None,
        typer.Option("--fault", metavar="SPEC", help="A fault, WHEN:WHAT (repeatable)."),
    ] = None,
) -> None:
    """Dry run: the recorded frames (connection, seq, method) each --fault would hit.

    Exit 0 when every fault hits a frame, 1 when one hits none, 2 for a bad spec."""
    from ..core.faults import faults_command

    raise typer.Exit(faults_command(cassette_file(cassette), fault or ()))
