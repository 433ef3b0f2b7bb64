"""``rpctape coverage``: how much of a codex version's protocol a set of cassettes exercises.

The command's whole body, apart from the command line: :func:`coverage_command` finds the
cassettes (:func:`cassette_files`), loads the schema's method lists
(:func:`proxy.codex.schema.schema_methods`), measures them (:mod:`proxy.core.coverage`) and
prints the report as text (:func:`render`) or JSON. docs/drift.md, "rpctape coverage", has
the JSON shape.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import orjson

from ..core.cassette import load
from ..core.coverage import Coverage, Kind, Outcome, SchemaMethods, measure
from ..core.jsonrpc import Direction, MessageType
from ..errors import RpctapeError, UsageError
from .appserver import choose_codex
from .schema import codex_version, schema_dir, schema_methods

__all__ = ["cassette_files", "coverage_command", "load_schema", "render"]

_KINDS = {
    Kind.CLIENT_REQUEST: (Direction.C2S, MessageType.REQUEST),
    Kind.CLIENT_NOTIFICATION: (Direction.C2S, MessageType.NOTIFICATION),
    Kind.SERVER_REQUEST: (Direction.S2C, MessageType.REQUEST),
    Kind.SERVER_NOTIFICATION: (Direction.S2C, MessageType.NOTIFICATION),
}
_TITLES = {
    Kind.CLIENT_REQUEST: "client requests",
    Kind.SERVER_REQUEST: "server requests",
    Kind.CLIENT_NOTIFICATION: "client notifications",
    Kind.SERVER_NOTIFICATION: "server notifications",
}


def cassette_files(paths: Iterable[Path]) -> list[Path]:
    """The cassettes named by ``paths``: a file is taken as it is; a folder is walked for
    ``*.jsonl`` files, in sorted order, leaving out every file or folder whose name starts
    with ``.`` (hidden files and rpctape's temporary ``.NAME.xxxx.recording`` and
    ``.NAME.xxxx.verify.jsonl`` files). A path that does not exist is a :class:`UsageError`."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                candidate
                for candidate in sorted(path.rglob("*.jsonl"))
                if candidate.is_file()
                and not any(part.startswith(".") for part in candidate.relative_to(path).parts)
            )
        elif path.exists():
            found.append(path)
        else:
            raise UsageError(f"no cassette or folder at {path}")
    return found


def load_schema(codex: str | Path | None, schema: Path | None) -> SchemaMethods:
    """The method lists of ``--schema DIR``, else of ``--codex`` (a path or an installed
    version; default the pinned codex), generated once per version and cached."""
    if codex is not None and schema is not None:
        raise UsageError("--codex and --schema exclude each other: give one schema source")
    if schema is not None:
        root, label = schema, str(schema)
    else:
        binary = choose_codex(str(codex) if codex is not None else None)
        version = codex_version(binary)
        root, label = schema_dir(binary, version=version), f"codex {version}"
    lists = schema_methods(root)
    return SchemaMethods(label, {kind: frozenset(lists[key]) for kind, key in _KINDS.items()})


def _names(methods: Sequence[str]) -> str:
    return ", ".join(methods) if methods else "(none)"


def render(coverage: Coverage) -> list[str]:
    """The text report: a summary line per kind, then the lists."""
    lines = [f"coverage of {len(coverage.cassettes)} cassette(s) against {coverage.schema.label}"]
    for kind in Kind:
        counts = coverage.counts(kind)
        title = _TITLES[kind]
        if kind.is_request:
            lines.append(
                f"{title}: {counts[Outcome.RESULT.value]} of {counts['schema']} answered with a "
                f"result, {counts[Outcome.ERROR_ONLY.value]} only with errors, "
                f"{counts[Outcome.UNANSWERED.value]} never answered, "
                f"{counts['schema'] - counts['exercised']} not exercised"
            )
        else:
            lines.append(f"{title}: {counts['exercised']} of {counts['schema']} seen")
    unknown = coverage.unknown()
    lines.append(f"methods the schema does not know: {len(unknown)}")
    for kind in Kind:
        title = _TITLES[kind]
        lines.append("")
        if kind.is_request:
            for outcome, what in (
                (Outcome.RESULT, "answered with a result"),
                (Outcome.ERROR_ONLY, "answered only with errors"),
                (Outcome.UNANSWERED, "never answered"),
            ):
                lines.append(f"{title} {what}: {_names(coverage.with_outcome(kind, outcome))}")
        else:
            lines.append(f"{title} seen: {_names(coverage.with_outcome(kind, Outcome.SEEN))}")
        lines.append(f"{title} not exercised: {_names(coverage.not_exercised(kind))}")
    if unknown:
        lines.append("")
        lines.append(f"methods {coverage.schema.label} does not know:")
        lines.extend(
            f"  {_TITLES[u.kind][:-1]} {u.method} ({', '.join(sorted(u.cassettes))})"
            for u in unknown
        )
    return lines


def coverage_command(
    paths: Sequence[Path], codex: str | Path | None, schema: Path | None, json: bool
) -> int:
    """Run ``rpctape coverage``: print the report on stdout; return the exit status (0, or 2
    with one ``rpctape: error: ...`` line on stderr for bad input)."""
    try:
        if not paths:
            raise UsageError("name at least one cassette or folder")
        files = cassette_files(paths)
        if not files:
            raise UsageError(f"no *.jsonl cassette in {', '.join(map(str, paths))}")
        methods = load_schema(codex, schema)
        coverage = measure(methods, ((str(f), load(f)) for f in files))
    except RpctapeError as exc:
        print(f"rpctape: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    if json:
        sys.stdout.buffer.write(orjson.dumps(coverage.to_json(), option=orjson.OPT_INDENT_2))
        sys.stdout.buffer.write(b"\n")
        sys.stdout.flush()
    else:
        print("\n".join(render(coverage)), flush=True)
    return 0
