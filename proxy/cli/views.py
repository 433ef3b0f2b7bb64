"""The views of a cassette: ``show``, ``report``, ``har``, ``import-har`` and ``diff``."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import orjson
import typer

from ..core.cassette import Event, load, parse_lines
from ..core.jsonrpc import Direction
from ..core.options import SPECS
from ..core.redact import Redactor
from ..core.timeline import HEADER_LINE, describe, select, styled, summary
from ..errors import CassetteNotFound, RpctapeError, UsageError
from .common import app, at_least, cassette_file, fail, load_cassette, say, warn


def follow(path: Path, poll: float = 0.2) -> Iterator[Event]:
    """The header, then every event of a cassette, then each event appended later, forever.

    Reads what is there, then polls the file every ``poll`` seconds for new complete lines
    (a line still being written waits for its newline). Stop it with Ctrl-C.
    """
    try:
        stream = path.open("rb")
    except FileNotFoundError:
        raise CassetteNotFound(f"no cassette at {path}") from None
    with stream:
        pending, number = b"", 0
        while True:
            chunk = stream.read()
            if not chunk:
                time.sleep(poll)
                continue
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                number += 1
                if number == 1:
                    yield parse_lines(line + b"\n", source=str(path)).header
                elif line.strip():
                    yield parse_lines(HEADER_LINE + line + b"\n", source=str(path)).events[0]


OverwriteOption = Annotated[bool, typer.Option(help="Replace an existing output file.")]
RedactKeyOption = Annotated[
    list[str] | None, typer.Option(help="Also redact JSON members with this key.")
]
NoRedactOption = Annotated[
    bool, typer.Option("--no-redact", help="Record secrets as they are (careful).")
]


@app.command()
def show(
    cassette: Annotated[Path, typer.Argument(help="Cassette file.")],
    conn: Annotated[int | None, typer.Option(help="Only this connection.")] = None,
    method: Annotated[str | None, typer.Option(help="Only this method and its responses.")] = None,
    json: Annotated[bool, typer.Option("--json", help="One event per line, as JSON.")] = False,
    width: Annotated[
        int,
        typer.Option(
            callback=lambda v: at_least(v, 0), help="Line width (default: the terminal's)."
        ),
    ] = 0,
    follow_: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", help="Keep printing events as they are appended (Ctrl-C stops)."
        ),
    ] = False,
    header_: Annotated[
        bool,
        typer.Option("--header", help="Print only the header, with the codex that recorded it."),
    ] = False,
) -> None:
    """Print a cassette as a timeline (in colour on a terminal), or --follow a recording."""
    if header_:
        from ..codex.dialect import CODEX
        from ..core.dialect import recorded_version
        from ..core.timeline import header_json, header_lines

        try:
            tape = load_cassette(cassette)
        except RpctapeError as exc:
            raise fail(exc) from None
        found = recorded_version(tape, CODEX)
        if json:
            sys.stdout.buffer.write(orjson.dumps(header_json(tape.header, found)) + b"\n")
            sys.stdout.flush()
        else:
            for line in header_lines(tape.header, found):
                say(line)
        return
    from rich.console import Console

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
            stream = follow(cassette_file(cassette))
            header = next(stream)
            if not json:
                say(f"{cassette}: following {header.get('upstream')} (Ctrl-C stops)")
            for event in stream:
                if select([event], conn, method):
                    emit(event)
        except KeyboardInterrupt:
            return
        except RpctapeError as exc:
            raise fail(exc) from None
        return
    try:
        tape = load_cassette(cassette)
    except RpctapeError as exc:
        raise fail(exc) from None
    events = select(tape.events, conn, method)
    for warning in tape.warnings:
        warn(f"rpctape: warning: {warning}")
    if not events and (conn is not None or method is not None):
        wanted = " ".join(
            f"--{name} {value}" for name, value in (("conn", conn), ("method", method)) if value
        )
        known = sorted({str(e.get("method")) for e in tape.events if e.get("method")})
        raise fail(
            f"no event of {cassette} matches {wanted}",
            f"It has connection(s) {', '.join(map(str, tape.connections())) or 'none'} "
            f"and methods {', '.join(known) or 'none'}",
            code=1,
        )
    if not json:
        say(
            f"{cassette}: rpctape cassette v{tape.original_version}, "
            f"{tape.header.get('transport', 'websocket')} upstream {tape.header.get('upstream')}, "
            f"{summary(tape)}"
        )
    for event in events:
        emit(event)




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
    from ..core.report import render_html

    try:
        tape = load_cassette(cassette)
        target = _output(cassette, out, ".html", overwrite)
        target.write_text(render_html(tape, cassette.name), encoding="utf-8")
    except (RpctapeError, OSError) as exc:
        raise fail(exc) from None
    say(f"wrote {target} ({len(tape.events)} events); open it in a browser")


@app.command()
def har(
    cassette: Annotated[Path, typer.Argument(help="Cassette file.")],
    out: Annotated[
        Path | None, typer.Option("-o", "--out", help="HAR file (default: CASSETTE.har).")
    ] = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Export a cassette as HAR 1.2 with DevTools' websocket messages (one entry per connection)."""
    from ..core.har import to_har

    try:
        tape = load_cassette(cassette)
        target = _output(cassette, out, ".har", overwrite)
        document = to_har(tape)
        target.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    except (RpctapeError, OSError) as exc:
        raise fail(exc) from None
    entries = document["log"]["entries"]
    say(f"wrote {target} ({len(entries)} websocket entr{'y' if len(entries) == 1 else 'ies'})")


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
    from ..core.har import import_har
    from ..wire.store import CassetteWriter

    try:
        if no_redact and redact_key:
            raise UsageError("--no-redact excludes --redact-key: drop one of them")
        redactor = Redactor.build(redact_key or (), enabled=not no_redact)
        if not har_file.is_file():
            raise UsageError(f"no HAR file at {har_file}")
        try:
            document = orjson.loads(har_file.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise UsageError(f"{har_file} is not JSON ({exc}); save the capture as HAR") from None
        target = out or har_file.with_suffix(".jsonl")
        recorder = import_har(
            document, redactor, lambda header: CassetteWriter(target, header, overwrite=overwrite)
        )
    except (RpctapeError, OSError) as exc:
        raise fail(exc) from None
    say(
        f"wrote {target}: {recorder.connections} connection(s), "
        f"{recorder.frames[Direction.C2S]} frame(s) client>server, "
        f"{recorder.frames[Direction.S2C]} frame(s) server>client"
    )




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
    from ..core.diff import diff_cassettes

    try:
        report = diff_cassettes(load(a), load(b), ignore or ())
    except RpctapeError as exc:
        raise fail(exc) from None
    if json:
        sys.stdout.buffer.write(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2) + b"\n")
        sys.stdout.flush()
    else:
        for entry in report.entries:
            for line in entry.render():
                say(line)
        say(f"{a} ~ {b}: {report.summary()}")
    if not report.equivalent:
        raise typer.Exit(1)




@app.command()
def redact(
    cassettes: Annotated[
        list[Path],
        typer.Argument(
            metavar="CASSETTE...", help="Cassette files, or folders of cassettes (recursive)."
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option("-o", "--out", help="Write the redacted cassette here (one cassette)."),
    ] = None,
    redact_key: Annotated[
        list[str] | None,
        typer.Option("--redact-key", metavar="KEY", help=SPECS["redact_keys"].help),
    ] = None,
    redact_value: Annotated[
        list[str] | None,
        typer.Option("--redact-value", metavar="REGEX", help=SPECS["redact_values"].help),
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Write nothing; exit 1 naming each place that would be redacted."
        ),
    ] = False,
) -> None:
    """Redact existing cassettes again (today's defaults plus --redact-key/--redact-value),
    in place and atomically; every line without a secret is kept byte for byte."""
    from .redact import redact_command

    status = redact_command(cassettes, out, redact_key or (), redact_value or (), check)
    if status:
        raise typer.Exit(status)
