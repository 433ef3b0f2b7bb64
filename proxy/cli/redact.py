"""``rpctape redact``: today's redaction applied again to cassettes already written.

The pure work is :func:`proxy.core.rescrub.rescrub`; the files are read and replaced with
:mod:`proxy.wire.store` (atomically: a reader sees the old cassette or the new one). Every
cassette is read and rescrubbed before anything is written, so bad input (a file that is
not a cassette, a bad ``--redact-value``) writes nothing.

Exit status: 0 done (or, with ``--check``, nothing to redact); 1 with ``--check`` when
something would be redacted; 2 bad input.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from ..core.redact import Redactor
from ..core.rescrub import Rescrubbed, rescrub
from ..errors import CassetteError, RpctapeError, UsageError
from ..wire.store import cassette_files, replace_atomically

__all__ = ["redact_command"]


def redact_command(
    paths: Sequence[Path],
    out: Path | None = None,
    redact_keys: Sequence[str] = (),
    redact_values: Sequence[str] = (),
    check: bool = False,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Redact ``paths`` (cassette files, and folders walked for their cassettes) in place
    with the default redaction plus ``redact_keys`` and ``redact_values``, or into ``out``
    (one cassette); with ``check``, write nothing and name every place that would change.

    Prints one line per cassette changed (``check``: one per place), then a summary line;
    errors as ``rpctape: error: ...`` on ``stderr``. Returns the exit status.
    """
    say = stdout or sys.stdout
    try:
        if check and out is not None:
            raise UsageError("--check writes nothing: drop -o/--out")
        cassettes = cassette_files(paths) if paths else []
        if not cassettes:
            where = " ".join(str(p) for p in paths)
            raise UsageError(
                f"no cassette in {where}" if paths else "name at least one cassette or folder"
            )
        if out is not None and len(cassettes) != 1:
            raise UsageError("-o/--out names one file: redact one cassette with it")
        redactor = Redactor.build(redact_keys, values=redact_values)
        done: list[tuple[Path, Rescrubbed]] = []
        for path in cassettes:
            if path.is_dir():
                raise CassetteError(f"{path} is a directory, not a cassette file")
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise CassetteError(f"cannot read cassette {path}: {exc.strerror or exc}") from None
            done.append((path, rescrub(data, redactor, source=str(path))))
        changed = [(path, result) for path, result in done if result.changed or out is not None]
        if not check:
            for path, result in changed:
                replace_atomically(out or path, result.data, mode=_mode(path) if out else None)
    except (RpctapeError, OSError) as exc:
        _error(exc, stderr or sys.stderr)
        return 2
    places = sum(len(result.places) for _, result in done)
    holding = sum(1 for _, result in done if result.changed)
    if check:
        for path, result in done:
            for place in result.places:
                print(place.render(str(path)), file=say)
        if places:
            print(
                f"redact --check: {places} secret(s) to redact in {holding} of {len(done)} "
                "cassette(s); run `rpctape redact` on them (with the same options)",
                file=say,
            )
            return 1
        print(f"redact --check: nothing to redact in {len(done)} cassette(s)", file=say)
        return 0
    for path, result in changed:
        target = f" into {out}" if out is not None else ""
        print(
            f"{path}: redacted {len(result.places)} secret(s) in {len(result.lines)} "
            f"line(s){target}",
            file=say,
        )
    print(f"redact: {places} secret(s) in {holding} of {len(done)} cassette(s)", file=say)
    return 0


def _mode(source: Path) -> int:
    """``-o OUT`` gets the mode of the cassette it comes from."""
    return source.stat().st_mode & 0o7777


def _error(what: BaseException, stderr: TextIO) -> None:
    """``rpctape: error: WHAT`` on one line, the style of every rpctape command."""
    print(f"rpctape: error: {' '.join(str(what).split())}", file=stderr)
