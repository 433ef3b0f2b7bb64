"""codex's own tools: ``backend``, ``demo``, ``client``, ``validate``, ``attest-check``,
``verify`` and ``version``."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import orjson
import typer

from ..core.cassette import load
from ..core.rules import load_rules
from ..errors import RpctapeError, UsageError
from ..version import __version__
from ..wire.runner import run as run_loop
from ..wire.upstream import describe_connect_error
from .common import (
    app,
    bind_error,
    executable,
    fail,
    load_cassette,
    port_checked,
    say,
    setup_logging,
    stop_on_signals,
    warn,
)

VerboseOption = Annotated[int, typer.Option("-v", count=True, help="-v info, -vv frames.")]
SchemaCodexOption = Annotated[
    Path | None,
    typer.Option(
        help="Against this codex's schema: a path, or a version installed by ./dev setup such "
        "as 0.171.0 (default: the pinned one)."
    ),
]
SchemaFolderOption = Annotated[
    Path | None,
    typer.Option(help="A `codex app-server generate-json-schema` output folder instead."),
]
RulesOption = Annotated[
    list[Path] | None, typer.Option("--rules", help="TOML rules file (repeatable).")
]


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
    from ..codex.backend import DEFAULT_REPLY, serve_backend

    try:
        parts = urlsplit(port_checked("--listen", listen))
    except UsageError as exc:
        raise fail(exc) from None
    if parts.scheme != "http" or not parts.hostname or parts.port is None:
        raise fail(UsageError(f"--listen must look like http://127.0.0.1:0, not {listen!r}"))

    async def run() -> None:
        with stop_on_signals() as stop:
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
        raise fail(bind_error(exc, listen)) from None


@app.command()
def demo(
    cassette: Annotated[Path, typer.Option(help="Where to write the demo cassette.")] = Path(
        "out/demo.jsonl"
    ),
    codex: Annotated[Path | None, typer.Option(help="The codex binary to run.")] = None,
) -> None:
    """Record a real session end to end: app-server + fake backend + recorder + client."""
    try:
        from ..codex.demo import run_demo

        run_loop(run_demo(cassette, codex, say, shutil.get_terminal_size((160, 24)).columns))
    except RpctapeError as exc:
        raise fail(exc) from None




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
    from ..codex.appserver import find_codex
    from ..codex.attest_check import run_all, to_json

    def progress(line: str) -> None:
        warn(f"rpctape attest-check {line}")

    try:
        find_codex(codex)  # one clear line instead of a failed row per case
        outcomes = run_loop(run_all(out, codex, progress=progress))
    except RpctapeError as exc:
        raise fail(exc) from None
    if json:
        sys.stdout.buffer.write(to_json(outcomes) + b"\n")
        sys.stdout.flush()
    else:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table("case", "expected", "observed", "verdict", box=None, pad_edge=False)
        for o in outcomes:
            problems = "".join(f"\n  - {p}" for p in o.problems)
            verdict = Text("ok", "green") if o.ok else Text("FAIL", "bold red")
            table.add_row(Text(o.case), Text(o.expected), Text(o.observed + problems), verdict)
        Console(highlight=False, width=max(120, shutil.get_terminal_size().columns)).print(table)
        failed = sum(not o.ok for o in outcomes)
        say(
            f"{len(outcomes) - failed} passed, {failed} failed; cassettes and backend logs in {out}"
        )
    if not all(o.ok for o in outcomes):
        raise typer.Exit(1)




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
    from ..codex.client import DECISIONS, ClientOptions, SessionClient, prompt_session

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
            session = SessionClient(port_checked("URL", argv[0]), options)
        else:
            executable(argv, "client --")
            session = SessionClient(None, options, command=argv)

        async def drive() -> list[str]:
            async with session:
                return await prompt_session(session, prompt or ["Say hello."])

        replies = run_loop(drive())
    except TimeoutError:
        raise fail(
            f"no reply from {session.url} within {timeout:g} s", "Raise --timeout"
        ) from None
    except UsageError as exc:
        raise fail(exc) from None
    except OSError as exc:
        raise fail(
            f"cannot reach {' '.join(argv)}: {describe_connect_error(exc)}",
            "Is the app-server running and the URL right?",
        ) from None
    except RpctapeError as exc:
        raise fail(exc, "Is the app-server running and the URL right?") from None
    for reply in replies:
        say(reply)


@app.command()
def validate(
    cassettes: Annotated[list[Path], typer.Argument(help="Cassette files to check.")],
    codex: SchemaCodexOption = None,
    schema: SchemaFolderOption = None,
    experimental: Annotated[
        bool, typer.Option(help="Include codex's experimental methods in the schema.")
    ] = False,
    json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check every recorded message against codex's own JSON Schema (docs/drift.md).

    Exit 1 on any violation or method the schema does not know, 0 otherwise.
    """
    from ..codex.appserver import choose_codex
    from ..codex.schema import Report, Validator, check_cassette, codex_version, schema_dir

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
        raise fail(exc) from None
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
            say(finding.render())
        say(
            f"{len(cassettes)} cassette(s), {counts['messages']} message(s) checked against "
            f"{validator.label}: {counts['violations']} violation(s), "
            f"{counts['unknown_methods']} unknown method(s), {counts['unchecked']} not checked"
        )
    if not report.clean:
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
            help="Cassettes (or folders of them) to verify; after --, an app-server to start "
            "(one per connection).",
        ),
    ],
    upstream: Annotated[
        str | None, typer.Option(help="The live app-server: ws://HOST:PORT or unix://PATH.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Write the new recording here (one cassette only; default: "
            ".NAME.verify.jsonl beside the cassette, replaced by the next run, removed when "
            "equivalent)."
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
    from ..codex.dialect import CODEX
    from ..wire.recorded_client import (
        VerifyOutcome,
        render_outcome,
        render_summary,
        settle,
        verify_cassette,
        verify_paths,
    )
    from ..wire.upstream import Upstream

    setup_logging(verbose)
    command: list[str] = ctx.meta["after --"]
    cassettes = [Path(a) for a in args[: len(args) - len(command)]]
    try:
        if not cassettes:
            raise UsageError("name at least one cassette to verify")
        if out is not None and (len(cassettes) != 1 or cassettes[0].is_dir()):
            raise UsageError("--out names one file: verify one cassette with it")
        if out is not None and update:
            raise UsageError("--out and --update exclude each other: --update writes the cassette")
        if upstream is not None:
            port_checked("--upstream", upstream)
        target = Upstream.parse(upstream, command)
        executable(command, "verify --")
        rule_list = load_rules(rules or ())
        for path in cassettes:
            if not path.is_dir():
                load_cassette(path)  # a missing or unreadable cassette: one line, before any run
    except RpctapeError as exc:
        raise fail(exc) from None
    outcomes: list[VerifyOutcome] = []

    def show(outcome: VerifyOutcome) -> None:
        outcomes.append(outcome)
        if not json:
            for line in render_outcome(outcome):
                say(line)

    async def run() -> list[Any]:
        if out is not None:
            outcome = await verify_cassette(
                cassettes[0], target, out, rules=rule_list, timeout=timeout,
                ignore=ignore or (), dialect=CODEX,
            )  # fmt: skip
            settle(outcome, update=False, keep=True)
            show(outcome)
            return []
        return await verify_paths(
            cassettes, target, dialect=CODEX, update=update, on_outcome=show,
            rules=rule_list, timeout=timeout, ignore=ignore or (),
        )  # fmt: skip

    try:
        rows = run_loop(run())
    except (RpctapeError, OSError) as exc:
        raise fail(exc) from None
    results = outcomes
    if not json and (len(rows) > 1 or any(path.is_dir() for path in cassettes)):
        for line in render_summary(rows):
            say(line)
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
    errors = [row for row in rows if getattr(row, "error", None)]
    if errors:
        raise typer.Exit(1)
    bad = [o for o in results if o.failures or (not update and not o.ok)]
    if bad:
        raise typer.Exit(1)


@app.command()
def coverage(
    paths: Annotated[
        list[Path], typer.Argument(help="Cassettes, or folders walked for *.jsonl files.")
    ],
    codex: SchemaCodexOption = None,
    schema: SchemaFolderOption = None,
    json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Which methods of codex's protocol the cassettes exercise, and how (docs/drift.md)."""
    from ..codex.coverage_cli import coverage_command

    status = coverage_command(paths, codex, schema, json)
    if status:
        raise typer.Exit(status)


@app.command()
def version() -> None:
    """Print the rpctape version."""
    say(f"rpctape {__version__}")

