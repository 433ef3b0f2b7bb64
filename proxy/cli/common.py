"""What every ``rpctape`` command shares: the typer app, output, the one error style, exit
statuses, logging, and stopping on signals."""

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

import typer

from ..core.cassette import Cassette, load
from ..errors import CassetteError, UsageError

app = typer.Typer(
    name="rpctape",
    help="Record and replay the JSON-RPC traffic of Codex app-server.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

EXIT_WRITE_FAILED = 74
"""Exit status when the cassette could not be written (EX_IOERR), whatever the door."""
EXIT_MISS = 3
"""Exit status of a stdio replay the replay ended on a miss (docs/replay.md)."""
EXIT_DISCONNECTED = 4
"""Exit status of a stdio session a ``disconnect`` fault ended (docs/replay.md, Faults)."""
DEFAULT_LISTEN = "ws://127.0.0.1:4223"
"""Where ``record`` and ``replay`` listen unless told otherwise."""


def say(line: str) -> None:
    """One line to stdout, flushed (scripts wait for `listening on ...`)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def warn(line: str) -> None:
    """One line to stderr, flushed."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def setup_logging(verbose: int, path: Path | None = None) -> None:
    """Logs go to stderr (never stdout), or to ``path``."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.FileHandler(path) if path else logging.StreamHandler(sys.stderr)
    logging.basicConfig(
        level=level, format="rpctape %(levelname)s %(name)s: %(message)s", handlers=[handler]
    )


@contextlib.contextmanager
def stop_on_signals() -> Iterator[asyncio.Event]:
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


def fail(what: BaseException | str, todo: str = "", code: int = 2) -> typer.Exit:
    """The one error style of every command: ``rpctape: error: WHAT. WHAT TO DO`` on stderr.

    Returns the exit to raise (``raise fail(...) from None``); ``code`` 2 for bad usage
    or input, 1 for "ran, found nothing / failed", 74 for a cassette that cannot be written.
    """
    error_line(what, todo)
    return typer.Exit(code)


def error_line(what: BaseException | str, todo: str = "") -> None:
    """``rpctape: error: WHAT. WHAT TO DO`` on stderr, on one line (a bad ``--fault``: the
    line that names the wrong part, then the grammar)."""
    grammar = getattr(what, "grammar", None)
    if isinstance(grammar, str):
        warn(f"rpctape: error: {getattr(what, 'problem', what)}\n{grammar}")
        return
    line = " ".join(str(what).split())  # one line, whatever the message held
    if todo:
        line = f"{line.rstrip('.')}. {todo}"
    warn(f"rpctape: error: {line}")


def at_least(value: int, low: int) -> int:
    """An option callback: the same message whatever typer's version."""
    if value < low:
        raise typer.BadParameter(f"{value} is less than {low}, the smallest allowed")
    return value


def port_checked(option: str, url: str) -> str:
    """``url`` if its port (when it has one) is a TCP port, else a :class:`UsageError`."""
    from urllib.parse import urlsplit

    try:
        urlsplit(url).port  # noqa: B018 (raises ValueError out of range)
    except ValueError:
        raise UsageError(
            f"{option} {url}: the port must be a number from 0 to 65535"
            + (" (0 picks a free one)" if option == "--listen" else "")
        ) from None
    return url


def cassette_file(path: Path) -> Path:
    """The same message for a directory whatever the command (show, replay, report, har)."""
    if path.is_dir():
        raise CassetteError(f"{path} is a directory, not a cassette file; name a .jsonl file")
    return path


def load_cassette(path: Path) -> Cassette:
    """A cassette named on the command line."""
    return load(cassette_file(path))


def executable(command: Sequence[str], option: str) -> None:
    """Fail early, before any cassette exists, when the command cannot be started."""
    if command and shutil.which(command[0]) is None:
        raise UsageError(
            f"{option} {command[0]}: no such executable; give a path to it or a command on PATH"
        )


def bind_error(exc: OSError, listen: str) -> UsageError | OSError:
    """A bind failure as the user should read it."""
    if exc.errno == errno.EADDRINUSE:
        return UsageError(
            f"cannot listen on {listen}: the address is already in use; stop what holds it "
            "or pick another port (port 0 picks a free one)"
        )
    return exc
