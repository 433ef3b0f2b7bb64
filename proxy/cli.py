"""The ``rpctape`` command line: parses options, validates them at the edge, runs the modules."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import shutil
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn
from urllib.parse import urlsplit

import orjson
import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text
from typer._click.exceptions import ClickException, NoArgsIsHelpError  # typer vendors click

from . import __version__
from .core.attest import USAGE as ATTEST_USAGE
from .core.attest import build_rules
from .core.cassette import Cassette, CassetteWriter, load, new_header
from .core.jsonrpc import Direction
from .core.modes import RecordMode, parse_mode
from .core.recorder import Recorder
from .core.redact import Redactor
from .core.replay import ReplayReport
from .core.rules import load_rules
from .core.timeline import describe, follow, select, styled, summary
from .errors import CassetteError, CassetteWriteError, MissingExtra, RpctapeError, UsageError
from .wire.relay import DEFAULT_MAX_SIZE, ListenAddress, RecordingRelay, RelayOptions
from .wire.replay_server import ReplayServer
from .wire.runner import LoopUnavailable, freeze_loaded
from .wire.runner import run as run_loop
from .wire.upstream import describe_connect_error

if TYPE_CHECKING:
    from .codex.schema import Validator

app = typer.Typer(
    name="rpctape",
    help="Record and replay the JSON-RPC traffic of Codex app-server.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        _say(f"rpctape {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version."
        ),
    ] = False,
) -> None:
    """Record and replay the JSON-RPC traffic of Codex app-server."""


# Options shared by several commands, declared once.
RulesOption = Annotated[
    list[Path] | None, typer.Option("--rules", help="TOML rules file (repeatable).")
]
AttestOption = Annotated[
    list[str] | None, typer.Option(help=f"attestation/generate behaviour: {ATTEST_USAGE}.")
]
AdvertiseOption = Annotated[
    bool, typer.Option(help="Set capabilities.requestAttestation in initialize.")
]
RedactKeyOption = Annotated[
    list[str] | None, typer.Option(help="Also redact JSON members with this key.")
]
RedactValueOption = Annotated[
    list[str] | None,
    typer.Option(help="Also redact text matching this regex, wherever it stands (repeatable)."),
]
NoRedactOption = Annotated[
    bool, typer.Option("--no-redact", help="Record secrets as they are (careful).")
]
OverwriteOption = Annotated[bool, typer.Option(help="Replace an existing cassette.")]
HandshakeTimeoutOption = Annotated[
    float,
    typer.Option(
        min=0.01, help="Seconds a client has to send its whole upgrade request (then dropped)."
    ),
]
VerboseOption = Annotated[int, typer.Option("-v", count=True, help="-v info, -vv frames.")]
ValidateOption = Annotated[
    bool, typer.Option("--validate", help="Check live frames against codex's JSON Schema.")
]
SchemaCodexOption = Annotated[
    str | None,
    typer.Option(
        "--codex", help="--validate against this codex's schema: a path or a version in .tools/."
    ),
]
SchemaDirOption = Annotated[
    Path | None, typer.Option("--schema", help="--validate against this schema folder instead.")
]


def _say(line: str) -> None:
    """One line to stdout, flushed (scripts wait for `listening on ...`)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _warn(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _setup_logging(verbose: int, path: Path | None = None) -> None:
    """Logs go to stderr (never stdout), or to ``path``."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.FileHandler(path) if path else logging.StreamHandler(sys.stderr)
    logging.basicConfig(
        level=level, format="rpctape %(levelname)s %(name)s: %(message)s", handlers=[handler]
    )


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[asyncio.Event]:
    """An event set by SIGINT or SIGTERM; install it before announcing readiness."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _live_status(recorder: Recorder) -> None:
    """Redraw one status line on stderr through rich (only when stderr is a terminal)."""

    def line() -> Text:
        text = Text()
        text.append("rpctape: ", style="bold")
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


EXIT_WRITE_FAILED = 74
"""Exit status of ``record`` and ``wrap`` when the cassette could not be written (EX_IOERR)."""

WRITE_FAILED_TODO = "Clients are refused (HTTP 503) until rpctape is stopped"


async def _record(
    options: RelayOptions, writer: CassetteWriter, recorder: Recorder, started: list[bool]
) -> tuple[str, bool]:
    """Serve until SIGINT/SIGTERM; the summary line, and whether the cassette failed."""
    with _stop_on_signals() as stop:
        async with RecordingRelay(options, recorder) as relay:
            started.append(True)
            _say(f"listening on {relay.url}")
            await _wait_with_status(stop, recorder, relay.failed)
            if relay.failure is not None:
                _error_line(relay.failure, WRITE_FAILED_TODO)
    writer.close()
    failed = relay.failure is not None
    return (
        f"recorded {recorder.connections} connection(s), "
        f"{recorder.frames[Direction.C2S]} frame(s) client>server, "
        f"{recorder.frames[Direction.S2C]} frame(s) server>client to {writer.path}"
        + (
            f"; {recorder.violations} schema violation(s) (annotated in the cassette)"
            if recorder.validator is not None
            else ""
        )
        + (" (stopped at the write error)" if failed else "")
    ), failed


async def _wait_with_status(
    stop: asyncio.Event, recorder: Recorder, failed: asyncio.Event | None = None
) -> None:
    """Wait for ``stop``, with a live status line on stderr when it is a terminal.

    ``failed`` (the cassette cannot be written) ends the wait early, so that the caller
    prints its one error line, then waits for ``stop`` without the status line.
    """
    status = (
        asyncio.create_task(_live_status(recorder), name="live-status")
        if sys.stderr.isatty()
        else None
    )
    waits: list[asyncio.Task[bool]] = [asyncio.create_task(stop.wait(), name="record:stop")]
    if failed is not None:
        waits.append(asyncio.create_task(failed.wait(), name="record:write-failed"))
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
        if status is not None:
            status.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await status
    if failed is not None and failed.is_set() and not stop.is_set():
        await stop.wait()


def _schema_validator(validate: bool, codex: str | None, schema: Path | None) -> Validator | None:
    """The :class:`proxy.codex.schema.Validator` of ``--validate`` (``None`` without it)."""
    if not validate:
        if codex is not None or schema is not None:
            raise UsageError("--codex and --schema choose the schema of --validate: add --validate")
        return None
    from .codex.appserver import choose_codex
    from .codex.schema import Validator, codex_version, schema_dir

    if codex is not None and schema is not None:
        raise UsageError("--codex and --schema exclude each other: give one schema source")
    if schema is not None:
        return Validator(schema)
    binary = choose_codex(codex)
    version = codex_version(binary)
    return Validator(schema_dir(binary, version=version), label=f"codex {version}")


def _at_least(value: int, low: int) -> int:
    """An option callback: the same message whatever typer's version (its range check's
    wording changed between releases)."""
    if value < low:
        raise typer.BadParameter(f"{value} is less than {low}, the smallest allowed")
    return value


def _fail(what: BaseException | str, todo: str = "", code: int = 2) -> typer.Exit:
    """The one error style of every command: ``rpctape: error: WHAT. WHAT TO DO`` on stderr.

    Returns the exit to raise (``raise _fail(...) from None``); ``code`` 2 for bad usage
    or input, 1 for "ran, found nothing / failed".
    """
    _error_line(what, todo)
    return typer.Exit(code)


def _error_line(what: BaseException | str, todo: str = "") -> None:
    """``rpctape: error: WHAT. WHAT TO DO`` on stderr, on one line."""
    line = " ".join(str(what).split())  # one line, whatever the message held
    if todo:
        line = f"{line.rstrip('.')}. {todo}"
    _warn(f"rpctape: error: {line}")


def _port_checked(option: str, url: str) -> str:
    """``url`` if its port (when it has one) is a TCP port, else a :class:`UsageError`."""
    try:
        urlsplit(url).port  # noqa: B018 (raises ValueError out of range)
    except ValueError:
        raise UsageError(
            f"{option} {url}: the port must be a number from 0 to 65535"
            + (" (0 picks a free one)" if option == "--listen" else "")
        ) from None
    return url


def _listen_address(url: str) -> ListenAddress:
    return ListenAddress.parse(_port_checked("--listen", url))


def _read_token(path: Path) -> str:
    """The token clients must send, from ``--token-file``."""
    if not path.is_file():
        raise UsageError(
            f"--token-file {path}: no such file; write the token into a file and pass its path"
        )
    token = path.read_text().strip()
    if not token:
        raise UsageError(f"--token-file {path} is empty")
    return token


def _cassette_file(path: Path) -> Path:
    """The same message for a directory whatever the command (show, replay, report, har)."""
    if path.is_dir():
        raise CassetteError(f"{path} is a directory, not a cassette file; name a .jsonl file")
    return path


def _load(path: Path) -> Cassette:
    return load(_cassette_file(path))


def _redactor(
    redact_key: Sequence[str] | None, no_redact: bool, redact_value: Sequence[str] | None = None
) -> Redactor:
    if no_redact and (redact_key or redact_value):
        raise UsageError(
            "--no-redact excludes --redact-key and --redact-value: --no-redact records every "
            "secret as it is; drop one of them"
        )
    return Redactor.build(redact_key or (), enabled=not no_redact, values=redact_value or ())


def _executable(command: Sequence[str], option: str) -> None:
    """Fail early, before any cassette exists, when the command cannot be started."""
    if command and shutil.which(command[0]) is None:
        raise UsageError(
            f"{option} {command[0]}: no such executable; give a path to it or a command on PATH"
        )


def _bind_error(exc: OSError, listen: str) -> UsageError | OSError:
    if exc.errno == errno.EADDRINUSE:
        return UsageError(
            f"cannot listen on {listen}: the address is already in use; stop what holds it "
            "or pick another port (port 0 picks a free one)"
        )
    return exc


@app.command()
def record(
    cassette: Annotated[Path, typer.Option(help="Cassette file to write (JSON Lines).")],
    command: Annotated[
        list[str] | None,
        typer.Argument(help="After --: start this app-server per client, over stdio."),
    ] = None,
    upstream: Annotated[
        str | None,
        typer.Option(help="The app-server: ws://HOST:PORT, unix://PATH, or unix:// (default)."),
    ] = None,
    listen: Annotated[str, typer.Option(help="Where clients connect; port 0 picks one.")] = (
        "ws://127.0.0.1:4223"
    ),
    max_size: Annotated[
        int,
        typer.Option(
            callback=lambda v: _at_least(v, 1), help="Largest message in bytes (1009 beyond)."
        ),
    ] = DEFAULT_MAX_SIZE,
    allow_origin: Annotated[
        list[str] | None, typer.Option(help="Accept upgrades with this Origin (repeatable).")
    ] = None,
    allow_remote: Annotated[
        bool, typer.Option(help="Allow a non-loopback --listen (needs --token-file).")
    ] = False,
    token_file: Annotated[
        Path | None, typer.Option(help="Clients must send 'Authorization: Bearer <token>'.")
    ] = None,
    redact_key: RedactKeyOption = None,
    redact_value: RedactValueOption = None,
    no_redact: NoRedactOption = False,
    overwrite: OverwriteOption = False,
    rules: RulesOption = None,
    attest: AttestOption = None,
    advertise_attestation: AdvertiseOption = False,
    handshake_timeout: HandshakeTimeoutOption = 10.0,
    verbose: VerboseOption = 0,
    validate: ValidateOption = False,
    codex: SchemaCodexOption = None,
    schema: SchemaDirOption = None,
) -> None:
    """Relay clients to an app-server and record every frame to a cassette."""
    _setup_logging(verbose)
    try:
        address = _listen_address(listen)
        if upstream is not None:
            _port_checked("--upstream", upstream)
        _executable(command or (), "record --")
        token = None
        if not address.is_loopback and not (allow_remote and token_file):
            raise UsageError(
                f"--listen {listen} is not a loopback address; pass --allow-remote "
                "together with --token-file FILE to accept remote clients"
            )
        if token_file is not None:
            token = _read_token(token_file)
        redactor = _redactor(redact_key, no_redact, redact_value)
        validator = _schema_validator(validate, codex, schema)
        options = RelayOptions(
            upstream,
            command=tuple(command or ()),
            listen=address,
            max_size=max_size,
            allow_origins=frozenset(allow_origin or ()),
            token=token,
            rules=tuple(build_rules(rules or (), attest or (), advertise_attestation)),
            handshake_timeout=handshake_timeout,
        )
        target = options.target
        header = new_header(target.url, transport=target.kind)
        existed = cassette.exists()
        writer = CassetteWriter(cassette, header, overwrite=overwrite)
    except (RpctapeError, OSError) as exc:
        raise _fail(exc) from None
    recorder = Recorder(writer, redactor, validator=validator.pairs if validator else None)
    started: list[bool] = []
    try:
        line, failed = run_loop(_record(options, writer, recorder, started))
    except OSError as exc:
        with contextlib.suppress(OSError):
            writer.close()
        if isinstance(exc, CassetteWriteError):
            raise _fail(exc, code=EXIT_WRITE_FAILED) from None
        if not started and not existed:
            cassette.unlink(missing_ok=True)  # a failed start leaves no header-only cassette
        raise _fail(_bind_error(exc, listen)) from None
    _say(line)
    if failed:
        raise typer.Exit(EXIT_WRITE_FAILED)  # the error line was printed when it happened


@app.command()
def show(
    cassette: Annotated[Path, typer.Argument(help="Cassette file.")],
    conn: Annotated[int | None, typer.Option(help="Only this connection.")] = None,
    method: Annotated[str | None, typer.Option(help="Only this method and its responses.")] = None,
    json: Annotated[bool, typer.Option("--json", help="One event per line, as JSON.")] = False,
    width: Annotated[
        int,
        typer.Option(
            callback=lambda v: _at_least(v, 0), help="Line width (default: the terminal's)."
        ),
    ] = 0,
    follow_: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", help="Keep printing events as they are appended (Ctrl-C stops)."
        ),
    ] = False,
) -> None:
    """Print a cassette as a timeline (in colour on a terminal), or --follow a recording."""
    console = Console(soft_wrap=True, highlight=False, markup=False, emoji=False)
    payload_width = max(20, (width or shutil.get_terminal_size((160, 24)).columns) - 70)

    def emit(event: dict[str, object]) -> None:
        if json:
            sys.stdout.buffer.write(orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE))
            sys.stdout.flush()
        else:
            console.print(styled(describe(event, payload_width), event))

    if follow_:
        try:
            stream = follow(_cassette_file(cassette))
            header = next(stream)
            if not json:
                _say(f"{cassette}: following {header.get('upstream')} (Ctrl-C stops)")
            for event in stream:
                if select([event], conn, method):
                    emit(event)
        except KeyboardInterrupt:
            return
        except RpctapeError as exc:
            raise _fail(exc) from None
        return
    try:
        tape = _load(cassette)
    except RpctapeError as exc:
        raise _fail(exc) from None
    events = select(tape.events, conn, method)
    for warning in tape.warnings:
        _warn(f"rpctape: warning: {warning}")
    if not events and (conn is not None or method is not None):
        wanted = " ".join(
            f"--{name} {value}" for name, value in (("conn", conn), ("method", method)) if value
        )
        known = sorted({str(e.get("method")) for e in tape.events if e.get("method")})
        raise _fail(
            f"no event of {cassette} matches {wanted}",
            f"It has connection(s) {', '.join(map(str, tape.connections())) or 'none'} "
            f"and methods {', '.join(known) or 'none'}",
            code=1,
        )
    if not json:
        _say(
            f"{cassette}: rpctape cassette v{tape.original_version}, "
            f"{tape.header.get('transport', 'websocket')} upstream {tape.header.get('upstream')}, "
            f"{summary(tape)}"
        )
    for event in events:
        emit(event)


@app.command()
def backend(
    listen: Annotated[str, typer.Option(help="http://HOST:PORT; port 0 picks one.")] = (
        "http://127.0.0.1:0"
    ),
    reply: Annotated[str | None, typer.Option(help="The assistant's reply text.")] = None,
    log: Annotated[Path | None, typer.Option(help="Append one JSON line per request.")] = None,
    deltas: Annotated[
        int, typer.Option(min=1, help="Stream each text reply in at most N deltas.")
    ] = 3,
    delta_delay: Annotated[
        float, typer.Option(min=0, help="Milliseconds between two text deltas (slow streaming).")
    ] = 0.0,
) -> None:
    """Run the fake model backend (OpenAI Responses API over SSE) for offline turns."""
    try:
        from .codex.backend import DEFAULT_REPLY, serve_backend
    except MissingExtra as exc:
        raise _fail(exc) from None

    try:
        parts = urlsplit(_port_checked("--listen", listen))
    except UsageError as exc:
        raise _fail(exc) from None
    if parts.scheme != "http" or not parts.hostname or parts.port is None:
        raise _fail(UsageError(f"--listen must look like http://127.0.0.1:0, not {listen!r}"))

    async def run() -> None:
        with _stop_on_signals() as stop:
            task = asyncio.create_task(
                serve_backend(
                    parts.hostname or "",
                    parts.port or 0,
                    reply or DEFAULT_REPLY,
                    log,
                    deltas=deltas,
                    delta_delay=delta_delay / 1000,
                ),
                name="backend",
            )
            stopping = asyncio.create_task(stop.wait(), name="backend:signals")
            try:
                await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if task.done():
                    task.result()  # it could not start: raise why
            finally:
                for pending in (task, stopping):
                    pending.cancel()
                await asyncio.gather(task, stopping, return_exceptions=True)

    try:
        run_loop(run())
    except OSError as exc:
        raise _fail(_bind_error(exc, listen)) from None


@app.command()
def demo(
    cassette: Annotated[Path, typer.Option(help="Where to write the demo cassette.")] = Path(
        "out/demo.jsonl"
    ),
    codex: Annotated[Path | None, typer.Option(help="The codex binary to run.")] = None,
) -> None:
    """Record a real session end to end: app-server + fake backend + recorder + client."""
    try:
        from .codex.demo import run_demo

        run_loop(run_demo(cassette, codex, _say, shutil.get_terminal_size((160, 24)).columns))
    except RpctapeError as exc:
        raise _fail(exc) from None


async def _replay(server: ReplayServer) -> ReplayReport:
    """Serve until SIGINT/SIGTERM (handlers set before `listening on` is printed)."""
    with _stop_on_signals() as stop:
        url = await server.start()
        try:
            _say(f"listening on {url}")
            await stop.wait()
        finally:
            await server.close()
    if server.failure is not None:
        _error_line(server.failure, "The recording was not kept; the cassette is unchanged")
    return server.report


@app.command()
def replay(
    cassette: Annotated[Path, typer.Argument(help="Cassette file to serve.")],
    listen: Annotated[
        str | None,
        typer.Option(
            help="ws://HOST:PORT (port 0 picks one) or unix:///PATH; default ws://127.0.0.1:4223."
        ),
    ] = None,
    stdio: Annotated[
        bool,
        typer.Option(
            "--stdio",
            help="Serve one client on stdin/stdout (newline-delimited JSON) instead of "
            "listening; exit when stdin ends.",
        ),
    ] = False,
    pace: Annotated[
        str, typer.Option(help="fast, recorded, or a speed-up factor such as 10.")
    ] = "fast",
    on_miss: Annotated[
        str, typer.Option(help="An unmatched request gets: error (JSON-RPC -32099) or close.")
    ] = "error",
    strict: Annotated[
        bool, typer.Option(help="Exit 1 on any miss or unused recorded client message.")
    ] = False,
    ignore: Annotated[
        list[str] | None,
        typer.Option(help="Also ignore this JSON pointer when matching (repeatable)."),
    ] = None,
    match: Annotated[str, typer.Option(help="strict or any-order.")] = "strict",
    match_on: Annotated[
        str,
        typer.Option(
            help="What is compared: codex (default: ignores clientInfo, working directories and "
            "timestamps), exact, or aspects such as method,body,cwd (docs/replay.md)."
        ),
    ] = "codex",
    order: Annotated[
        str,
        typer.Option(
            help="Order across connections: thread (default: a frame about a thread waits for "
            "earlier messages about it on other connections), global, or none (docs/replay.md)."
        ),
    ] = "thread",
    hold_timeout: Annotated[
        float,
        typer.Option(
            help="Seconds a frame is held for another connection before it is sent anyway."
        ),
    ] = 10.0,
    record_mode: Annotated[
        str, typer.Option(help="none, once, new_episodes or all (as in VCR.py).")
    ] = "none",
    upstream: Annotated[
        str | None, typer.Option(help="The app-server to record from (record modes).")
    ] = None,
    rules: RulesOption = None,
    attest: AttestOption = None,
    advertise_attestation: AdvertiseOption = False,
    token_file: Annotated[
        Path | None, typer.Option(help="Clients must send 'Authorization: Bearer <token>'.")
    ] = None,
    handshake_timeout: HandshakeTimeoutOption = 10.0,
    verbose: VerboseOption = 0,
    validate: ValidateOption = False,
    codex: SchemaCodexOption = None,
    schema: SchemaDirOption = None,
) -> None:
    """Serve a cassette to clients as if it were the app-server (docs/replay.md)."""
    _setup_logging(verbose)

    async def serve_stdio(server: ReplayServer) -> ReplayReport:
        """Until stdin ends, or SIGINT/SIGTERM."""
        with _stop_on_signals() as stop:
            serving = asyncio.create_task(server.serve_stdio(), name="replay-stdio")
            stopping = asyncio.create_task(stop.wait(), name="replay-stdio:signals")
            try:
                await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not serving.done():
                    await server.close()
                return await serving
            finally:
                for task in (serving, stopping):
                    task.cancel()
                await asyncio.gather(serving, stopping, return_exceptions=True)

    try:
        _cassette_file(cassette)
        if upstream is not None:
            _port_checked("--upstream", upstream)
            if parse_mode(RecordMode, record_mode, "record mode") is RecordMode.NONE:
                raise UsageError(
                    "--upstream is only used to record (--record-mode once, new_episodes or "
                    "all); record mode none only replays: drop --upstream or pick a record mode"
                )
        if stdio and listen is not None:
            raise UsageError("--stdio and --listen exclude each other: stdio does not listen")
        if stdio and parse_mode(RecordMode, record_mode, "record mode") is not RecordMode.NONE:
            raise UsageError(
                f"--stdio only replays: record mode {record_mode!r} is not supported over stdio "
                "(record the session with rpctape record or wrap, then replay it)"
            )
        from .codex.schema import WatchRule

        validator = _schema_validator(validate, codex, schema)
        watch = WatchRule.build(validator) if validator is not None else None
        listen = listen or "ws://127.0.0.1:4223"
        address = _listen_address(listen)
        if not address.is_loopback:
            raise UsageError(
                f"--listen {listen} is not a loopback address; replay serves only this machine"
            )
        server = ReplayServer(
            cassette,
            after_load=freeze_loaded,
            record_mode=record_mode,
            upstream=upstream,
            pace=pace,
            on_miss=on_miss,
            match=match,
            match_on=match_on,
            order=order,
            hold_timeout=hold_timeout,
            ignore=ignore or (),
            listen=address,
            rules=build_rules(rules or (), attest or (), advertise_attestation)
            + ([watch] if watch is not None else []),
            token=None if token_file is None else _read_token(token_file),
            handshake_timeout=handshake_timeout,
        )
        report = run_loop(serve_stdio(server) if stdio else _replay(server))
    except OSError as exc:
        raise _fail(_bind_error(exc, listen or "")) from None
    except RpctapeError as exc:
        raise _fail(exc) from None
    lines = [report.render()]
    if watch is not None:
        found = watch.found
        lines.append(
            f"{found['violations']} schema violation(s) in {found['messages']} live client "
            f"message(s) ({watch.validator.label if watch.validator else ''})"
        )
    for line in lines:
        if stdio:
            _warn(line)  # stdout carries the protocol only
        else:
            _say(line)
    if server.failure is not None:
        raise typer.Exit(EXIT_WRITE_FAILED)  # the error line was printed when it stopped
    if stdio and server.stdio_close is not None:
        raise typer.Exit(3)  # the replay ended the session on a miss (docs/replay.md)
    if strict and not report.clean:
        raise typer.Exit(1)


@app.command(context_settings={"allow_interspersed_args": False})
def wrap(
    cassette: Annotated[Path, typer.Option(help="Cassette file to write (JSON Lines).")],
    command: Annotated[list[str], typer.Argument(help="After --: the app-server command.")],
    overwrite: OverwriteOption = False,
    rules: RulesOption = None,
    attest: AttestOption = None,
    advertise_attestation: AdvertiseOption = False,
    redact_key: RedactKeyOption = None,
    redact_value: RedactValueOption = None,
    no_redact: NoRedactOption = False,
    log: Annotated[
        Path | None, typer.Option(help="Write rpctape's own log here instead of stderr.")
    ] = None,
    verbose: VerboseOption = 0,
) -> None:
    """Stand in for `codex app-server` on stdio: run it, relay stdin/stdout, record both."""
    from .wire.wrap import run_wrap

    _setup_logging(verbose, log)
    existed = cassette.exists()
    try:
        _executable(command, "wrap --")
        rule_list = build_rules(rules or (), attest or (), advertise_attestation)
        redactor = _redactor(redact_key, no_redact, redact_value)
    except RpctapeError as exc:
        raise _fail(exc) from None
    started: list[bool] = []
    try:
        status = run_loop(
            run_wrap(
                command,
                cassette,
                rules=rule_list,
                redactor=redactor,
                overwrite=overwrite,
                on_started=lambda: started.append(True),
            )
        )
    except CassetteWriteError as exc:  # the child is stopped; the lines before it are kept
        if not started and not existed:
            cassette.unlink(missing_ok=True)
        raise _fail(exc, code=EXIT_WRITE_FAILED) from None
    except (RpctapeError, OSError) as exc:
        if not existed and not isinstance(exc, CassetteError):
            cassette.unlink(missing_ok=True)  # it could not start: no cassette left behind
        raise _fail(exc) from None
    raise typer.Exit(status)


@app.command("attest-check")
def attest_check(
    codex: Annotated[
        Path | None, typer.Option(help="The codex binary to check (default: the pinned one).")
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    out: Annotated[Path, typer.Option(help="Folder for per-case cassettes and backend logs.")] = (
        Path("out/attest-check")
    ),
) -> None:
    """Check x-oai-attestation end to end against the real app-server, case by case."""
    try:
        from .codex.appserver import find_codex
        from .codex.attest_check import run_all, to_json
    except MissingExtra as exc:
        raise _fail(exc) from None

    def progress(line: str) -> None:
        _warn(f"rpctape attest-check {line}")

    try:
        find_codex(codex)  # one clear line instead of a failed row per case
        outcomes = run_loop(run_all(out, codex, progress=progress))
    except RpctapeError as exc:
        raise _fail(exc) from None
    if json:
        sys.stdout.buffer.write(to_json(outcomes) + b"\n")
        sys.stdout.flush()
    else:
        table = Table("case", "expected", "observed", "verdict", box=None, pad_edge=False)
        for o in outcomes:
            problems = "".join(f"\n  - {p}" for p in o.problems)
            verdict = Text("ok", "green") if o.ok else Text("FAIL", "bold red")
            table.add_row(Text(o.case), Text(o.expected), Text(o.observed + problems), verdict)
        Console(highlight=False, width=max(120, shutil.get_terminal_size().columns)).print(table)
        failed = sum(not o.ok for o in outcomes)
        _say(
            f"{len(outcomes) - failed} passed, {failed} failed; cassettes and backend logs in {out}"
        )
    if not all(o.ok for o in outcomes):
        raise typer.Exit(1)


def _output(source: Path, out: Path | None, suffix: str, overwrite: bool) -> Path:
    target = out or source.with_suffix(suffix)
    if target.exists() and not overwrite:
        raise UsageError(f"{target} already exists; pass --overwrite to replace it, or -o FILE")
    return target


@app.command()
def report(
    cassette: Annotated[Path, typer.Argument(help="Cassette file.")],
    out: Annotated[
        Path | None, typer.Option("-o", "--out", help="HTML file (default: CASSETTE.html).")
    ] = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Write a cassette as one self-contained HTML page: a sequence diagram to share."""
    from .core.report import render_html

    try:
        tape = _load(cassette)
        target = _output(cassette, out, ".html", overwrite)
        target.write_text(render_html(tape, cassette.name), encoding="utf-8")
    except (RpctapeError, OSError) as exc:
        raise _fail(exc) from None
    _say(f"wrote {target} ({len(tape.events)} events); open it in a browser")


@app.command()
def har(
    cassette: Annotated[Path, typer.Argument(help="Cassette file.")],
    out: Annotated[
        Path | None, typer.Option("-o", "--out", help="HAR file (default: CASSETTE.har).")
    ] = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Export a cassette as HAR 1.2 with DevTools' websocket messages (one entry per connection)."""
    from .core.har import to_har

    try:
        tape = _load(cassette)
        target = _output(cassette, out, ".har", overwrite)
        document = to_har(tape)
        target.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    except (RpctapeError, OSError) as exc:
        raise _fail(exc) from None
    entries = document["log"]["entries"]
    _say(f"wrote {target} ({len(entries)} websocket entr{'y' if len(entries) == 1 else 'ies'})")


@app.command("import-har")
def import_har_command(
    har_file: Annotated[Path, typer.Argument(metavar="FILE.har", help="A HAR file.")],
    out: Annotated[
        Path | None, typer.Option("-o", "--out", help="Cassette to write (default: FILE.jsonl).")
    ] = None,
    redact_key: RedactKeyOption = None,
    no_redact: NoRedactOption = False,
    overwrite: OverwriteOption = False,
) -> None:
    """Turn a DevTools capture of an app-server websocket into a cassette `replay` serves."""
    from .core.har import import_har

    try:
        redactor = _redactor(redact_key, no_redact)
        if not har_file.is_file():
            raise UsageError(f"no HAR file at {har_file}")
        try:
            document = orjson.loads(har_file.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise UsageError(f"{har_file} is not JSON ({exc}); save the capture as HAR") from None
        target = out or har_file.with_suffix(".jsonl")
        recorder = import_har(document, target, redactor, overwrite=overwrite)
    except (RpctapeError, OSError) as exc:
        raise _fail(exc) from None
    _say(
        f"wrote {target}: {recorder.connections} connection(s), "
        f"{recorder.frames[Direction.C2S]} frame(s) client>server, "
        f"{recorder.frames[Direction.S2C]} frame(s) server>client"
    )


@app.command()
def client(
    target: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="(URL | -- COMMAND...)",
            help="ws://HOST:PORT of an app-server (or of rpctape), or after --: a stdio "
            "app-server to start, e.g. -- codex app-server.",
        ),
    ] = None,
    prompt: Annotated[
        list[str] | None, typer.Option("--prompt", "-p", help="One turn per prompt (repeatable).")
    ] = None,
    approve: Annotated[
        str, typer.Option(help="Answer approval requests: accept, decline or cancel.")
    ] = "accept",
    timeout: Annotated[
        float, typer.Option(min=0.1, help="Longest wait for one reply, in seconds.")
    ] = 120.0,
) -> None:
    """Drive one session: initialize, thread/start, a turn per --prompt; print the replies."""
    from .codex.client import DECISIONS, ClientOptions, SessionClient, prompt_session

    argv = list(target or ())
    options = ClientOptions(approval_decision=approve, timeout=timeout)
    try:
        if not argv:
            raise UsageError("give a URL (ws://127.0.0.1:4223) or -- COMMAND (a stdio app-server)")
        if approve not in DECISIONS:
            raise UsageError(f"--approve {approve!r} is not one of {', '.join(DECISIONS)}")
        if len(argv) > 1 and urlsplit(argv[0]).scheme in ("ws", "wss"):
            raise UsageError(f"{' '.join(argv)!r}: give one URL, or -- before a command")
        if len(argv) == 1 and urlsplit(argv[0]).scheme in ("ws", "wss"):
            session = SessionClient(_port_checked("URL", argv[0]), options)
        else:
            _executable(argv, "client --")
            session = SessionClient(None, options, command=argv)

        async def drive() -> list[str]:
            async with session:
                return await prompt_session(session, prompt or ["Say hello."])

        replies = run_loop(drive())
    except TimeoutError:
        raise _fail(
            f"no reply from {session.url} within {timeout:g} s", "Raise --timeout"
        ) from None
    except UsageError as exc:
        raise _fail(exc) from None
    except OSError as exc:
        raise _fail(
            f"cannot reach {' '.join(argv)}: {describe_connect_error(exc)}",
            "Is the app-server running and the URL right?",
        ) from None
    except RpctapeError as exc:
        raise _fail(exc, "Is the app-server running and the URL right?") from None
    for reply in replies:
        _say(reply)


@app.command()
def validate(
    cassettes: Annotated[list[Path], typer.Argument(help="Cassette files to check.")],
    codex: Annotated[
        Path | None,
        typer.Option(
            help="Check against this codex's schema: a path, or a version installed by "
            "./dev setup such as 0.171.0 (default: the pinned one)."
        ),
    ] = None,
    schema: Annotated[
        Path | None,
        typer.Option(help="A `codex app-server generate-json-schema` output folder instead."),
    ] = None,
    experimental: Annotated[
        bool, typer.Option(help="Include codex's experimental methods in the schema.")
    ] = False,
    json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check every recorded message against codex's own JSON Schema (docs/drift.md).

    Exit 1 on any violation or method the schema does not know, 0 otherwise.
    """
    from .codex.appserver import choose_codex
    from .codex.schema import Report, Validator, check_cassette, codex_version, schema_dir

    try:
        if codex is not None and schema is not None:
            raise UsageError("--codex and --schema exclude each other: give one schema source")
        if schema is not None:
            if experimental:
                raise UsageError("--experimental needs --codex: a --schema folder is fixed")
            validator = Validator(schema)
        else:
            binary = choose_codex(codex)
            version = codex_version(binary)
            label = f"codex {version}" + (" (experimental)" if experimental else "")
            folder = schema_dir(binary, experimental=experimental, version=version)
            validator = Validator(folder, label=label)
        report = Report()
        for path in cassettes:
            check_cassette(load(path), validator, report, str(path))
    except RpctapeError as exc:
        raise _fail(exc) from None
    counts = report.counts
    if json:
        body = {
            "schema": validator.label,
            "cassettes": [str(p) for p in cassettes],
            "findings": [f.to_json() for f in report.findings],
            "counts": {
                k: counts[k] for k in ("messages", "unchecked", "violations", "unknown_methods")
            },
        }
        sys.stdout.buffer.write(orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n")
        sys.stdout.flush()
    else:
        for finding in report.findings:
            _say(finding.render())
        _say(
            f"{len(cassettes)} cassette(s), {counts['messages']} message(s) checked against "
            f"{validator.label}: {counts['violations']} violation(s), "
            f"{counts['unknown_methods']} unknown method(s), {counts['unchecked']} not checked"
        )
    if not report.clean:
        raise typer.Exit(1)


@app.command()
def diff(
    a: Annotated[Path, typer.Argument(help="Cassette A.")],
    b: Annotated[Path, typer.Argument(help="Cassette B.")],
    ignore: Annotated[
        list[str] | None,
        typer.Option(help="Also ignore this JSON pointer in every message (repeatable)."),
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="Print the differences as JSON.")] = False,
) -> None:
    """Compare two cassettes as conversations; exit 0 when equivalent (docs/drift.md)."""
    from .core.diff import diff_cassettes

    try:
        report = diff_cassettes(load(a), load(b), ignore or ())
    except RpctapeError as exc:
        raise _fail(exc) from None
    if json:
        sys.stdout.buffer.write(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2) + b"\n")
        sys.stdout.flush()
    else:
        for entry in report.entries:
            for line in entry.render():
                _say(line)
        _say(f"{a} ~ {b}: {report.summary()}")
    if not report.equivalent:
        raise typer.Exit(1)


class _SplitAtDashes(typer.core.TyperCommand):
    """Keeps what came after ``--`` apart (``ctx.meta["after --"]``): Click passes it on
    with the other positional arguments."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:  # type: ignore[override]
        ctx.meta["after --"] = args[args.index("--") + 1 :] if "--" in args else []
        return super().parse_args(ctx, args)


@app.command(cls=_SplitAtDashes)
def verify(
    ctx: typer.Context,
    args: Annotated[
        list[str],
        typer.Argument(
            metavar="CASSETTE... [-- COMMAND...]",
            help="Cassettes to verify; after --, an app-server to start (one per connection).",
        ),
    ],
    upstream: Annotated[
        str | None, typer.Option(help="The live app-server: ws://HOST:PORT or unix://PATH.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Write the new recording here (one cassette only; default: a "
            "temporary file beside the cassette, removed when equivalent)."
        ),
    ] = None,
    update: Annotated[
        bool, typer.Option(help="Replace each cassette with its new recording (atomic).")
    ] = False,
    timeout: Annotated[
        float, typer.Option(min=0.1, help="Longest wait for what the recording waited for (s).")
    ] = 30.0,
    ignore: Annotated[
        list[str] | None, typer.Option(help="Ignore this JSON pointer in the diff (repeatable).")
    ] = None,
    rules: RulesOption = None,
    json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    verbose: VerboseOption = 0,
) -> None:
    """Play each cassette's client side against a live app-server, record it, diff it.

    Exit 0 when every cassette is equivalent (with --update: when every one was re-recorded
    to the end), 1 otherwise (docs/drift.md).
    """
    from .wire.recorded_client import (
        VerifyOutcome,
        default_out,
        render_outcome,
        settle,
        verify_cassette,
    )
    from .wire.upstream import Upstream

    _setup_logging(verbose)
    command: list[str] = ctx.meta["after --"]
    cassettes = [Path(a) for a in args[: len(args) - len(command)]]
    try:
        if not cassettes:
            raise UsageError("name at least one cassette to verify")
        if out is not None and len(cassettes) != 1:
            raise UsageError("--out names one file: verify one cassette with it")
        if out is not None and update:
            raise UsageError("--out and --update exclude each other: --update writes the cassette")
        if upstream is not None:
            _port_checked("--upstream", upstream)
        target = Upstream.parse(upstream, command)
        _executable(command, "verify --")
        rule_list = load_rules(rules or ())
        tapes = [(path, _load(path)) for path in cassettes]
    except RpctapeError as exc:
        raise _fail(exc) from None

    async def run() -> list[VerifyOutcome]:
        done = []
        for path, tape in tapes:
            outcome = await verify_cassette(
                path, target, out or default_out(path), rules=rule_list, timeout=timeout,
                ignore=ignore or (), original=tape,
            )  # fmt: skip
            settle(outcome, update=update, keep=out is not None)
            if not json:
                for line in render_outcome(outcome):
                    _say(line)
            done.append(outcome)
        return done

    try:
        outcomes = run_loop(run())
    except (RpctapeError, OSError) as exc:
        raise _fail(exc) from None
    results = outcomes
    if json:
        body = [
            {
                "cassette": str(o.source),
                "new": None if o.updated or not o.out.exists() else str(o.out),
                "updated": o.updated,
                "failures": o.failures,
                "diff": o.diff.to_json() if o.diff is not None else None,
            }
            for o in results
        ]
        sys.stdout.buffer.write(orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n")
        sys.stdout.flush()
    bad = [o for o in results if o.failures or (not update and not o.ok)]
    if bad:
        raise typer.Exit(1)


@app.command()
def version() -> None:
    """Print the rpctape version."""
    _say(f"rpctape {__version__}")


@app.command()
def coverage(
    paths: Annotated[
        list[Path], typer.Argument(help="Cassettes, or folders walked for *.jsonl files.")
    ],
    codex: Annotated[
        Path | None,
        typer.Option(
            help="Measure against this codex's schema: a path, or a version installed by "
            "./dev setup such as 0.171.0 (default: the pinned one)."
        ),
    ] = None,
    schema: Annotated[
        Path | None,
        typer.Option(help="A `codex app-server generate-json-schema` output folder instead."),
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Which methods of codex's protocol the cassettes exercise, and how (docs/drift.md)."""
    from .codex.coverage_cli import coverage_command

    status = coverage_command(paths, codex, schema, json)
    if status:
        raise typer.Exit(status)


def _run(args: Sequence[str] | None = None) -> int:
    """Run the command line; usage errors in the one error style. Returns the exit status."""
    command = typer.main.get_command(app)
    try:
        status = command.main(args=args, prog_name="rpctape", standalone_mode=False)
    except NoArgsIsHelpError:
        return 2  # the help is printed already
    except ClickException as exc:
        context = getattr(exc, "ctx", None)
        where = context.command_path if context is not None else "rpctape"
        _fail(exc.format_message(), f"Run `{where} -h` for help", code=exc.exit_code)
        return exc.exit_code
    except typer.Abort:
        return 130
    except LoopUnavailable as exc:
        _fail(str(exc))
        return 2
    return status if isinstance(status, int) else 0


def main() -> NoReturn:
    """Console entry point."""
    sys.exit(_run())
