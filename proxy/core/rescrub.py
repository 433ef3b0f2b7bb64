"""Re-scrubbing: today's redaction applied again to a cassette that is already written.

Pure code: cassette bytes and a :class:`~proxy.core.redact.Redactor` in, new bytes and the
places redacted out (``rpctape redact`` does the file I/O, :mod:`proxy.wire.store`). The
engine is the recorder's own (:func:`proxy.core.recorder.frame_line`,
:func:`~proxy.core.recorder.redact_frame`, :func:`~proxy.core.recorder.redact_fields`), so:

- the header line, and every line with nothing to redact, come back byte for byte;
- a redacted line is the line the recorder would have written for that event with this
  redactor: the frame's ``redacted``, ``raw`` and ``msg`` as docs/cassette-format.md says,
  every other field as it was, in its place;
- a frame redacted before keeps its ``redacted`` pointers: the new ones join them, in the
  order the recorder lists them (the order of the message);
- rescrubbing twice gives what rescrubbing once gave (a marker is never redacted again).

What the recorder redacts, this redacts: text frames (JSON members by key, ``env`` maps,
credential-shaped text, frames that are not JSON), a rule's ``delivered`` message and the
messages of schema ``violations``; ``path``, ``headers`` and ``upstream`` of ``open``
events; ``reason`` of ``close`` events; ``message``, ``path``, ``upstream`` and
``headers`` of ``error`` events. A torn last line (which readers ignore) has its secrets
replaced as text. Binary frames, events of kinds this rpctape does not know, and the header
line are left as they are, as the recorder leaves them.

Two things a cassette no longer holds cannot be redone exactly: a header sent twice was
joined with ``, `` when recorded, so a secret header sent twice gets one marker for the
joined value (the recorder gave each its own); and a schema violation is not checked again,
its message is redacted as text (a secret value it quotes is replaced by its marker).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from . import pointer as _pointer
from .cassette import Event, frame_of, parse_lines
from .jsonrpc import parse
from .recorder import frame_line, redact_binary, redact_fields
from .redact import Redactor, marker

__all__ = ["Place", "Rescrubbed", "rescrub", "rescrub_event"]

_FRAME_FIELDS = ("redacted", "raw", "msg")
"""The fields :func:`~proxy.core.recorder.frame_line` writes, always last in a text event."""

_HEADER_FIELDS = {"open": ("path", "upstream"), "close": ("reason",)}


@dataclass(frozen=True, slots=True)
class Place:
    """One place a secret was found: the line of the file, its event and where in it."""

    line: int
    """Line number in the file, from 1 (the header is line 1)."""
    seq: int | None
    conn: int | None
    kind: str
    """The event's kind (``text``, ``open``, ...), or ``torn`` for a torn last line."""
    where: str
    """A JSON pointer into the frame (``/params/token``; ``frame text`` for a frame
    without ``msg``), ``header NAME``, a field name (``path``, ``upstream``, ``reason``,
    ``message``), ``delivered /POINTER``, ``violations``, or ``torn last line``."""

    def render(self, source: str) -> str:
        """``SOURCE:LINE: seq N conn C KIND WHERE``, as ``rpctape redact --check`` prints it."""
        event = "" if self.seq is None else f"seq {self.seq} conn {self.conn} "
        return f"{source}:{self.line}: {event}{self.kind} {self.where}"

    def to_json(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "seq": self.seq,
            "conn": self.conn,
            "kind": self.kind,
            "where": self.where,
        }


@dataclass(frozen=True, slots=True)
class Rescrubbed:
    """What :func:`rescrub` gave: the new bytes and what changed."""

    data: bytes
    places: list[Place] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    """Numbers of the lines that changed."""

    @property
    def changed(self) -> bool:
        return bool(self.lines)


def rescrub(data: bytes, redactor: Redactor, *, source: str = "<cassette>") -> Rescrubbed:
    """Redact a cassette's bytes again with ``redactor``; see the module's docstring.

    The cassette must load (:func:`~proxy.core.cassette.parse_lines` raises
    :class:`~proxy.errors.CassetteError` naming ``source`` and the line otherwise).
    """
    parse_lines(data, source=source)  # refuse what is not a readable cassette, as load does
    if not redactor.enabled:
        return Rescrubbed(data)
    lines = data.split(b"\n")
    tail = lines.pop()  # after the last newline: b"" or a last line without one
    out: list[bytes] = [lines[0]] if lines else []
    places: list[Place] = []
    changed: list[int] = []
    for number, line in enumerate(lines[1:], start=2):
        new = _line(line, number, redactor, places)
        if new is not None:
            changed.append(number)
            line = new
        out.append(line)
    if not lines:  # a header without newline, and nothing else
        return Rescrubbed(data)
    if tail:
        number = len(lines) + 1
        new = _line(tail, number, redactor, places, torn=True)
        if new is not None:
            changed.append(number)
            tail = new
    out.append(tail)
    return Rescrubbed(b"\n".join(out), places, changed) if changed else Rescrubbed(data)


def _line(
    line: bytes, number: int, redactor: Redactor, places: list[Place], *, torn: bool = False
) -> bytes | None:
    """The new text of one line (without its newline), or ``None`` when it stays."""
    if not line.strip():
        return None
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError:
        if not torn:  # parse_lines let it through: it cannot be
            raise
        text, changed = redactor.redact_frame_text(line.decode(errors="surrogateescape"))
        if not changed:
            return None
        places.append(Place(number, None, None, "torn", "torn last line"))
        return text.encode(errors="surrogateescape")
    found = rescrub_event(event, redactor)
    if found is None:
        return None
    new, where = found
    seq, conn = event.get("seq"), event.get("conn")
    places += [Place(number, seq, conn, str(event.get("kind")), w) for w in where]
    return new.rstrip(b"\n")


def rescrub_event(event: Event, redactor: Redactor) -> tuple[bytes, list[str]] | None:
    """One cassette event redacted again: its new line (with ``\\n``) and where secrets were
    found (:attr:`Place.where`), or ``None`` when nothing in it is redacted."""
    kind = event.get("kind")
    if kind == "text":
        return _text(event, redactor)
    if kind in ("open", "close", "error"):
        return _other(event, str(kind), redactor)
    if kind == "binary":
        return _binary(event, redactor)
    return None  # unknown kinds are not ours


def _binary(event: Event, redactor: Redactor) -> tuple[bytes, list[str]] | None:
    """A binary frame whose payload is text, redacted as the recorder redacts it
    (:func:`~proxy.core.recorder.redact_binary`)."""
    found = redact_binary(redactor, frame_of(event))
    if found is None:
        return None
    data, pointers = found
    old: list[str] = list(event.get("redacted") or ())
    new = [p for p in pointers if p not in old]
    if not new:
        return None
    rebuilt: Event = {}
    for name, value in event.items():
        if name == "redacted":
            continue
        if name == "b64":
            rebuilt["redacted"] = [*old, *new]
            value = base64.b64encode(data).decode("ascii")
        rebuilt[name] = value
    return orjson.dumps(rebuilt, option=orjson.OPT_APPEND_NEWLINE), [p or "frame text" for p in new]


def _text(event: Event, redactor: Redactor) -> tuple[bytes, list[str]] | None:
    raw = frame_of(event)
    where: list[str] = []
    head = {name: value for name, value in event.items() if name not in _FRAME_FIELDS}
    if "delivered" in head:  # what a rule forwarded: redacted as the recorder does
        head["delivered"], pointers = redactor.redact_json(head["delivered"])
        where += [f"delivered {p or '/'}" for p in pointers]
    might = redactor.might_redact(raw)
    if not might and not where and "violations" not in head:
        return None  # the common case: no parse
    parsed = parse(raw)
    old: list[str] = list(event.get("redacted") or ())
    line = frame_line(head, raw, parsed, redactor)  # adds redacted, raw, msg to head
    new: list[str] = head.get("redacted", [])
    if "violations" in head:
        secrets = _secret_strings(parsed.msg, new) if parsed.has_msg else []
        violations = _violations(head["violations"], redactor, secrets)
        if violations is not None:
            head["violations"] = violations
            where.append("violations")
    where += [p or "frame text" for p in new if p not in old]
    if not where:
        return None
    if old or "violations" in where:
        if old:
            head = _with_pointers(head, _in_order([*old, *new], head.get("msg")))
        line = orjson.dumps(head, option=orjson.OPT_APPEND_NEWLINE)
    return line, where


def _other(event: Event, kind: str, redactor: Redactor) -> tuple[bytes, list[str]] | None:
    """``open``, ``close`` and ``error`` events: the fields the recorder redacts."""
    texts = ("path", "upstream", "message") if kind == "error" else _HEADER_FIELDS[kind]
    fields = {name: event[name] for name in texts if isinstance(event.get(name), str)}
    headers = event.get("headers")
    if kind != "close" and isinstance(headers, dict):
        fields["headers"] = headers
    if kind == "close" and isinstance(event.get("forwarded"), dict):
        fields["forwarded"] = event["forwarded"]
    redacted = redact_fields(redactor, kind, fields)
    where: list[str] = []
    for name in [name for name in event if name in redacted]:  # in the event's order
        value = redacted[name]
        if name == "headers":
            where += [f"header {h}" for h, v in value.items() if v != headers[h]]  # type: ignore[index]
        elif value != event[name]:
            where.append(name)
    if not where:
        return None
    new = {name: redacted.get(name, value) for name, value in event.items()}
    return orjson.dumps(new, option=orjson.OPT_APPEND_NEWLINE), where


def _violations(
    violations: Any, redactor: Redactor, secrets: list[str]
) -> list[dict[str, Any]] | None:
    """Schema violations with secrets out of their texts, or ``None`` when none changed."""
    if not isinstance(violations, list):
        return None
    out: list[Any] = []
    for item in violations:
        if isinstance(item, dict):
            item = dict(item)
            for name in ("pointer", "message"):
                value = item.get(name)
                if isinstance(value, str):
                    for secret in secrets:  # a value the validator quoted
                        value = value.replace(secret, marker(secret))
                    item[name] = redactor.redact_text(value)
        out.append(item)
    return out if out != violations else None


def _secret_strings(msg: Any, pointers: Iterable[str]) -> list[str]:
    """The string values at ``pointers`` of the frame's message (the secrets replaced by
    key), longest first; empty strings are not secrets worth replacing."""
    found: set[str] = set()
    for pointer in pointers:
        try:
            value = _pointer.resolve(msg, pointer)
        except (KeyError, _pointer.PointerError):
            continue
        if isinstance(value, str) and value:
            found.add(value)
    return sorted(found, key=len, reverse=True)


def _in_order(pointers: list[str], msg: Any) -> list[str]:
    """``pointers`` without repeats, in the order the recorder lists them: the order their
    places come in the message (depth first, members in order); unknown ones last."""
    order: dict[str, int] = {}

    def walk(node: Any, path: str) -> None:
        order.setdefault(path, len(order))
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}/{_pointer.token(key)}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{path}/{index}")

    if msg is not None:
        walk(msg, "")
    unique = list(dict.fromkeys(pointers))
    return sorted(unique, key=lambda p: order.get(p, len(order)))


def _with_pointers(head: Event, pointers: list[str]) -> Event:
    """``head`` with ``redacted`` set to ``pointers``, before ``raw`` and ``msg``."""
    out = {name: value for name, value in head.items() if name not in _FRAME_FIELDS}
    out["redacted"] = pointers
    for name in ("raw", "msg"):
        if name in head:
            out[name] = head[name]
    return out
