"""The ``rpctape`` command line: one typer app, its commands in modules by kind.

:mod:`proxy.cli.sessions` (``record``, ``replay``, ``wrap``: shells over the session layer,
their options derived from the options model by :mod:`proxy.cli.options`),
:mod:`proxy.cli.views` (a cassette shown, exported, compared) and :mod:`proxy.cli.tools`
(codex's own: the fake backend, the demo, the client, schema validation, attestation checks,
verify).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated, NoReturn

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError  # typer vendors click

from ..version import __version__
from ..wire.runner import LoopUnavailable
from . import sessions, tools, views
from .common import app, fail, say

__all__ = ["app", "main", "sessions", "tools", "views"]


def _print_version(value: bool) -> None:
    if value:
        say(f"rpctape {__version__}")
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
        fail(exc.format_message(), f"Run `{where} -h` for help", code=exc.exit_code)
        return exc.exit_code
    except typer.Abort:
        return 130
    except LoopUnavailable as exc:
        fail(str(exc))
        return 2
    return status if isinstance(status, int) else 0


def main() -> NoReturn:
    """Console entry point."""
    sys.exit(_run())

