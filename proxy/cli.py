"""The ``rpctape`` command line: parses options, validates them at the edge, runs the modules."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated

import orjson
import typer

from . import __version__
from .attest import USAGE as ATTEST_USAGE
from .attest import AttestKind, AttestMode, attestation_rules
from .cassette import CassetteWriter, load, new_header
from .errors import MissingExtra, RpctapeError, UsageError
from .jsonrpc import Direction
from .modes import RecordMode, parse_mode
from .recorder import Recorder
from .redact import Redactor
from .relay import DEFAULT_MAX_SIZE, ListenAddress, RecordingRelay, RelayOptions
from .replay import ReplayReport
from .replay_server import ReplayServer
from .rules import Rule, load_rules
from .timeline import render, select, summary

app = typer.Typer(
    name="rpctape",
    help="Record and replay the JSON-RPC traffic of Codex app-server.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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
VerboseOption = Annotated[int, typer.Option("-v", count=True, help="-v info, -vv frames.")]


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
    """Redraw one status line on stderr (only called when stderr is a terminal)."""
    try:
        while True:
            sys.stderr.write(
                f"\r\x1b[Krpctape: {recorder.open_connections} open / "
                f"{recorder.connections} connection(s), "
                f"{recorder.frames[Direction.C2S]} > {recorder.frames[Direction.S2C]} < frames"
            )
            sys.stderr.flush()
            await asyncio.sleep(0.5)
    finally:
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()


async def _record(options: RelayOptions, writer: CassetteWriter, recorder: Recorder) -> str:
    with _stop_on_signals() as stop:
        async with RecordingRelay(options, recorder) as relay:
            _say(f"listening on {relay.url}")
            await _wait_with_status(stop, recorder)
    writer.close()
    return (
        f"recorded {recorder.connections} connection(s), "
        f"{recorder.frames[Direction.C2S]} frame(s) client>server, "
        f"{recorder.frames[Direction.S2C]} frame(s) server>client to {writer.path}"
    )


async def _wait_with_status(stop: asyncio.Event, recorder: Recorder) -> None:
    """Wait for ``stop``, with a live status line on stderr when it is a terminal."""
    status = (
        asyncio.create_task(_live_status(recorder), name="live-status")
        if sys.stderr.isatty()
        else None
    )
    try:
        await stop.wait()
    finally:
        if status is not None:
            status.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await status


def build_rules(files: Sequence[Path], attest: Sequence[str], advertise: bool) -> list[Rule]:
    """Rules from files first, then the attestation switches; validated at the edge."""
    modes = [AttestMode.parse(text) for text in attest]
    return load_rules(files) + attestation_rules(
        [m for m in modes if m.kind is not AttestKind.PASS], advertise=advertise
    )


def _fail(exc: BaseException) -> typer.Exit:
    _warn(f"rpctape: error: {exc}")
    return typer.Exit(2)


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
    max_size: Annotated[int, typer.Option(help="Largest message in bytes (1009 beyond).")] = (
        DEFAULT_MAX_SIZE
    ),
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
    verbose: VerboseOption = 0,
) -> None:
    """Relay clients to an app-server and record every frame to a cassette."""
    _setup_logging(verbose)
    try:
        address = ListenAddress.parse(listen)
        token = None
        if not address.is_loopback and not (allow_remote and token_file):
            raise UsageError(
                f"--listen {listen} is not a loopback address; pass --allow-remote "
                "together with --token-file FILE to accept remote clients"
            )
        if token_file is not None:
            token = token_file.read_text().strip()
            if not token:
                raise UsageError(f"--token-file {token_file} is empty")
        options = RelayOptions(
            upstream,
            command=tuple(command or ()),
            listen=address,
            max_size=max_size,
            allow_origins=frozenset(allow_origin or ()),
            token=token,
            rules=tuple(build_rules(rules or (), attest or (), advertise_attestation)),
        )
        redactor = Redactor.build(
            redact_key or (), enabled=not no_redact, values=redact_value or ()
        )
        target = options.target
        header = new_header(target.url, transport=target.kind)
        writer = CassetteWriter(cassette, header, overwrite=overwrite)
    except (RpctapeError, OSError) as exc:
        raise _fail(exc) from None
    recorder = Recorder(writer, redactor)
    try:
        line = asyncio.run(_record(options, writer, recorder))
    except OSError as exc:
        writer.close()
        raise _fail(exc) from None
    _say(line)


@app.command()
def show(
    cassette: Annotated[Path, typer.Argument(help="Cassette file.")],
    conn: Annotated[int | None, typer.Option(help="Only this connection.")] = None,
    method: Annotated[str | None, typer.Option(help="Only this method and its responses.")] = None,
    json: Annotated[bool, typer.Option("--json", help="One event per line, as JSON.")] = False,
    width: Annotated[int, typer.Option(help="Line width (default: the terminal's).")] = 0,
) -> None:
    """Print a cassette as a timeline."""
    try:
        tape = load(cassette)
    except RpctapeError as exc:
        raise _fail(exc) from None
    events = select(tape.events, conn, method)
    for warning in tape.warnings:
        _warn(f"rpctape: warning: {warning}")
    if json:
        out = sys.stdout.buffer
        for event in events:
            out.write(orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE))
        out.flush()
        return
    _say(
        f"{cassette}: rpctape cassette v{tape.original_version}, "
        f"{tape.header.get('transport', 'websocket')} upstream {tape.header.get('upstream')}, "
        f"{summary(tape)}"
    )
    for line in render(events, width or shutil.get_terminal_size((160, 24)).columns):
        _say(line)


@app.command()
def backend(
    listen: Annotated[str, typer.Option(help="http://HOST:PORT; port 0 picks one.")] = (
        "http://127.0.0.1:0"
    ),
    reply: Annotated[str | None, typer.Option(help="The assistant's reply text.")] = None,
    log: Annotated[Path | None, typer.Option(help="Append one JSON line per request.")] = None,
) -> None:
    """Run the fake model backend (OpenAI Responses API over SSE) for offline turns."""
    from urllib.parse import urlsplit

    try:
        from .backend import DEFAULT_REPLY, serve_backend
    except MissingExtra as exc:
        raise _fail(exc) from None

    parts = urlsplit(listen)
    if parts.scheme != "http" or not parts.hostname or parts.port is None:
        raise _fail(UsageError(f"--listen must look like http://127.0.0.1:0, not {listen!r}"))

    async def run() -> None:
        with _stop_on_signals() as stop:
            task = asyncio.create_task(
                serve_backend(parts.hostname or "", parts.port or 0, reply or DEFAULT_REPLY, log),
                name="backend",
            )
            try:
                await stop.wait()
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    asyncio.run(run())


@app.command()
def demo(
    cassette: Annotated[Path, typer.Option(help="Where to write the demo cassette.")] = Path(
        "out/demo.jsonl"
    ),
    codex: Annotated[Path | None, typer.Option(help="The codex binary to run.")] = None,
) -> None:
    """Record a real session end to end: app-server + fake backend + recorder + client."""
    try:
        from .demo import run_demo

        asyncio.run(run_demo(cassette, codex, _say, shutil.get_terminal_size((160, 24)).columns))
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
    record_mode: Annotated[
        str, typer.Option(help="none, once, new_episodes or all (as in VCR.py).")
    ] = "none",
    upstream: Annotated[
        str | None, typer.Option(help="The app-server to record from (record modes).")
    ] = None,
    rules: RulesOption = None,
    attest: AttestOption = None,
    advertise_attestation: AdvertiseOption = False,
    verbose: VerboseOption = 0,
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
        if stdio and listen is not None:
            raise UsageError("--stdio and --listen exclude each other: stdio does not listen")
        if stdio and parse_mode(RecordMode, record_mode, "record mode") is not RecordMode.NONE:
            raise UsageError(
                f"--stdio only replays: record mode {record_mode!r} is not supported over stdio "
                "(record the session with rpctape record or wrap, then replay it)"
            )
        listen = listen or "ws://127.0.0.1:4223"
        address = ListenAddress.parse(listen)
        if not address.is_loopback:
            raise UsageError(
                f"--listen {listen} is not a loopback address; replay serves only this machine"
            )
        server = ReplayServer(
            cassette,
            record_mode=record_mode,
            upstream=upstream,
            pace=pace,
            on_miss=on_miss,
            match=match,
            ignore=ignore or (),
            listen=address,
            rules=build_rules(rules or (), attest or (), advertise_attestation),
        )
        report = asyncio.run(serve_stdio(server) if stdio else _replay(server))
    except (RpctapeError, OSError) as exc:
        raise _fail(exc) from None
    if stdio:
        _warn(report.render())  # stdout carries the protocol only
    else:
        _say(report.render())
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
    from .wrap import run_wrap

    _setup_logging(verbose, log)
    try:
        rule_list = build_rules(rules or (), attest or (), advertise_attestation)
        redactor = Redactor.build(
            redact_key or (), enabled=not no_redact, values=redact_value or ()
        )
        status = asyncio.run(
            run_wrap(command, cassette, rules=rule_list, redactor=redactor, overwrite=overwrite)
        )
    except (RpctapeError, OSError) as exc:
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
        from .attest_check import render_table, run_all, to_json
    except MissingExtra as exc:
        raise _fail(exc) from None

    def progress(line: str) -> None:
        _warn(f"rpctape attest-check {line}")

    try:
        outcomes = asyncio.run(run_all(out, codex, progress=progress))
    except RpctapeError as exc:
        raise _fail(exc) from None
    if json:
        sys.stdout.buffer.write(to_json(outcomes) + b"\n")
        sys.stdout.flush()
    else:
        for line in render_table(outcomes):
            _say(line)
        failed = sum(not o.ok for o in outcomes)
        _say(
            f"{len(outcomes) - failed} passed, {failed} failed; cassettes and backend logs in {out}"
        )
    if not all(o.ok for o in outcomes):
        raise typer.Exit(1)


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
    from .appserver import choose_codex
    from .schema import Report, Validator, check_cassette, codex_version, schema_dir

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
    from .diff import diff_cassettes

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


@app.command()
def version() -> None:
    """Print the rpctape version."""
    _say(f"rpctape {__version__}")


def main() -> None:
    """Console entry point."""
    app()
