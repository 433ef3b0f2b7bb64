"""Compare two cassettes as conversations, not as lines (``rpctape diff``).

Pure code over loaded cassettes. Connections are paired in order of appearance (the first
of A with the first of B, ...). Within a pair, each direction is aligned on its own (the
relay keeps order per direction; how the two directions interleave is timing) with a
sequence alignment (:class:`difflib.SequenceMatcher`) on the key
``(type, method)``, where a response's method is the one it answers (``response_to``), so
one inserted notification shows as one added message, not as everything after it changed.
Aligned messages are compared member by member after normalisation; what differs is
reported as RFC 6901 pointers with both values.

Normalisation (:class:`Normaliser`, one per connection, in recorded order):

* **request ids**: the top-level ``id`` of a request and of the response or error answering
  it becomes ``<idN>``, numbered by first appearance (client and server requests apart:
  ``<idN>`` and ``<sidN>``);
* **UUIDs** anywhere in a string (any version: thread, turn and item ids are UUIDv7,
  ``installationId`` is v4) become ``<uuidN>`` by first appearance; the same UUID gets the same
  name everywhere in the connection;
* **loopback ports**: ``127.0.0.1:PORT``, ``localhost:PORT``, ``[::1]:PORT`` in strings become
  ``<portN>`` by first appearance (servers started on port 0, e.g. a fake model backend);
* **content digests**: ``sha256:HEX`` (also ``sha1``, ``sha512``) become ``<digestN>`` by
  first appearance (codex's ``config/read`` versions each config layer by its hash, which
  changes with any value in it, ports included);
* **temporary directories**: a path's first segment under the system temporary directory
  (``/tmp/rpctape-appserver-x1y2/home`` -> ``<tmp1>/home``) by first appearance;
* **timestamps in strings**: ``2026-11-23T21:30:01Z``-like date-times (also with ``-`` between
  hours, minutes and seconds, as in rollout file names) become ``<time>``, and
  ``/YYYY/MM/DD/`` path segments become ``/<date>/``;
* **time and duration members are ignored** (left out on both sides): any key that
  :data:`IGNORED_KEY` matches, i.e. ``t``, ``timestamp``, keys ending in ``At``, ``AtMs``,
  ``_at``, ``_at_ms`` (``emittedAtMs``, ``createdAt``, ``updatedAt``, ``recencyAt``,
  ``startedAt``, ``startedAtMs``, ``completedAt``, ``completedAtMs``, ``sectionEnteredAt``,
  ``last_refresh_at``), and durations (``durationMs``, ``duration``, ``elapsedMs``, keys ending
  in ``DurationMs`` / ``_duration_ms``), and operating-system process ids (``processId``,
  ``pid``);
* ``--ignore POINTER`` removes more members (pointers into the message, e.g. ``/params/cwd``).

Messages the alignment leaves unpaired are paired once more: one only in A and one only in B
with the same key and the same normalised content (a notification that came before, rather
than after, another one in the same direction) are reported as **moved**, and then the rest
with the same key, first come first paired, as **changed**; what is still left was
**removed** (only in A) or **added** (only in B). A move alone leaves the cassettes
equivalent, since the order between independent server streams is timing (e.g.
``thread/started`` against the ``thread/start`` result), not protocol. The alignment is
symmetric: ``diff(B, A)`` mirrors ``diff(A, B)``.

Only ``text`` and ``binary`` frames are compared; the cassette's event times (``t``), ``seq``
numbers, headers and close events are not. Binary frames compare by payload, text that is
not JSON by its exact text.
"""

from __future__ import annotations

import contextlib
import enum
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Any

import orjson

from . import pointer as _pointer
from .cassette import Cassette, Event
from .jsonrpc import Direction, id_key, parse

__all__ = [
    "IGNORED_KEY",
    "MISSING",
    "Change",
    "DiffReport",
    "Entry",
    "EntryKind",
    "Normaliser",
    "diff_cassettes",
    "diff_values",
]

IGNORED_KEY = re.compile(
    r"t|timestamp|[A-Za-z0-9_]*(?:[a-z0-9]At|[a-z0-9]AtMs|_at|_at_ms)"
    r"|duration|durationMs|elapsedMs|[A-Za-z0-9_]*(?:DurationMs|_duration_ms)"
    r"|processId|pid"
)
"""Keys of members that hold times or durations: left out of every comparison (fullmatch)."""

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}[:-]\d{2}[:-]\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?"
)
_PORT = re.compile(r"(127\.0\.0\.1:|localhost:|\[::1\]:)(\d{1,5})\b")
_DIGEST = re.compile(r"\b(?:sha1|sha256|sha512):[0-9a-fA-F]{40,128}\b")
_DATE_PATH = re.compile(r"/\d{4}/\d{2}/\d{2}/")
_TEMP_ROOTS = sorted({"/tmp", "/var/tmp", tempfile.gettempdir().rstrip("/")}, key=len, reverse=True)
_TEMP_DIR = re.compile("(?:" + "|".join(re.escape(r) for r in _TEMP_ROOTS) + r")/[\w.-]+")


class _Missing:
    """The value on the side where a member does not exist."""

    def __repr__(self) -> str:
        return "(absent)"


MISSING: Any = _Missing()


class EntryKind(enum.StrEnum):
    """What happened to one message between A and B."""

    ADDED = "added"
    """Only in B."""
    REMOVED = "removed"
    """Only in A."""
    CHANGED = "changed"
    """In both, aligned, with different content."""
    MOVED = "moved"
    """In both with the same content, at another place in the order of its direction."""


@dataclass(frozen=True, slots=True)
class Change:
    """One differing member: its pointer into the (normalised) message and both values."""

    pointer: str
    a: Any
    b: Any

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pointer": self.pointer}
        if self.a is not MISSING:
            out["a"] = self.a
        if self.b is not MISSING:
            out["b"] = self.b
        return out


@dataclass(frozen=True, slots=True)
class Entry:
    """One added, removed or changed message."""

    kind: EntryKind
    conn_a: int | None
    conn_b: int | None
    seq_a: int | None
    seq_b: int | None
    dir: Direction
    type: str
    method: str | None
    changes: tuple[Change, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "conn": [self.conn_a, self.conn_b],
            "seq": [self.seq_a, self.seq_b],
            "dir": self.dir.value,
            "type": self.type,
            "method": self.method,
            "changes": [c.to_json() for c in self.changes],
        }

    def render(self) -> list[str]:
        what = f"{self.dir.value} {self.type} {self.method or ''}".rstrip()
        conns = f"conn {_opt(self.conn_a)}~{_opt(self.conn_b)}"
        if self.kind is EntryKind.ADDED:
            return [f"+ {conns} {what} (B seq {self.seq_b})"]
        if self.kind is EntryKind.REMOVED:
            return [f"- {conns} {what} (A seq {self.seq_a})"]
        if self.kind is EntryKind.MOVED:
            return [f"> {conns} {what} moved (A seq {self.seq_a}, B seq {self.seq_b})"]
        lines = [f"~ {conns} {what} (A seq {self.seq_a}, B seq {self.seq_b})"]
        lines += [
            f"    {c.pointer or '(message)'}: {_show(c.a)} -> {_show(c.b)}" for c in self.changes
        ]
        return lines


def _opt(value: int | None) -> str:
    return "-" if value is None else str(value)


def _show(value: Any, limit: int = 80) -> str:
    if value is MISSING:
        return "(absent)"
    text = orjson.dumps(value).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class DiffReport:
    """The differences between cassettes A and B."""

    entries: list[Entry] = field(default_factory=list)
    messages_a: int = 0
    messages_b: int = 0

    @property
    def equivalent(self) -> bool:
        """No message added, removed or changed (moves are allowed)."""
        return all(e.kind is EntryKind.MOVED for e in self.entries)

    def count(self, kind: EntryKind) -> int:
        return sum(e.kind is kind for e in self.entries)

    def summary(self) -> str:
        verdict = "equivalent" if self.equivalent else "different"
        return (
            f"{verdict}: A {self.messages_a} message(s), B {self.messages_b} message(s); "
            f"{self.count(EntryKind.ADDED)} added, {self.count(EntryKind.REMOVED)} removed, "
            f"{self.count(EntryKind.CHANGED)} changed, {self.count(EntryKind.MOVED)} moved"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "equivalent": self.equivalent,
            "messages": [self.messages_a, self.messages_b],
            "counts": {kind.value: self.count(kind) for kind in EntryKind},
            "entries": [e.to_json() for e in self.entries],
        }


# --- normalisation -------------------------------------------------------------------------


class Normaliser:
    """Rewrites the generated values of one connection's messages (see the module docstring).

    Feed messages in recorded order: names are given by first appearance. Applying it to
    its own output changes nothing (the names it writes are not UUIDs, dates or temp paths).
    """

    def __init__(self, ignore: Iterable[str] = ()) -> None:
        self._names: dict[str, dict[Any, str]] = {}
        self._ignore = [_pointer.check(p) for p in ignore]

    def _name(self, space: str, value: Any) -> str:
        table = self._names.setdefault(space, {})
        if value not in table:
            table[value] = f"<{space}{len(table) + 1}>"
        return table[value]

    def message(self, direction: Direction, msg: Any) -> Any:
        """The normalised copy of one parsed message sent in ``direction``."""
        out = self.value(msg)
        if isinstance(msg, dict) and "id" in msg and not isinstance(msg["id"], dict | list):
            # Requests name their id in their own direction; answers in the other one.
            requester = direction if "method" in msg else direction.reverse
            space = "id" if requester is Direction.C2S else "sid"
            out["id"] = self._name(space, id_key(msg["id"]))
        for where in self._ignore:
            with contextlib.suppress(_pointer.PointerError):  # not there in this message
                _pointer.remove(out, where)
        return out

    def value(self, value: Any) -> Any:
        """Normalise any JSON value: strings rewritten, time members dropped."""
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items() if not IGNORED_KEY.fullmatch(k)}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, str):
            return self.string(value)
        return value

    def string(self, text: str) -> str:
        text = _UUID.sub(lambda m: self._name("uuid", m[0].lower()), text)
        text = _TEMP_DIR.sub(lambda m: self._name("tmp", m[0]), text)
        text = _PORT.sub(lambda m: m[1] + self._name("port", m[2]), text)
        text = _DIGEST.sub(lambda m: self._name("digest", m[0]), text)
        text = _DATETIME.sub("<time>", text)
        return _DATE_PATH.sub("/<date>/", text)


# --- comparison ----------------------------------------------------------------------------


def diff_values(a: Any, b: Any, pointer: str = "") -> list[Change]:
    """Member-by-member differences between two JSON values (lists by index)."""
    if isinstance(a, dict) and isinstance(b, dict):
        changes = []
        for key in [*a, *(k for k in b if k not in a)]:
            sub = f"{pointer}/{_pointer.token(key)}"
            changes += diff_values(a.get(key, MISSING), b.get(key, MISSING), sub)
        return changes
    if isinstance(a, list) and isinstance(b, list):
        changes = []
        for index in range(max(len(a), len(b))):
            left = a[index] if index < len(a) else MISSING
            right = b[index] if index < len(b) else MISSING
            changes += diff_values(left, right, f"{pointer}/{index}")
        return changes
    if a is MISSING and b is MISSING:
        return []
    same = a == b and type(a) is type(b)
    return [] if same else [Change(pointer, a, b)]


@dataclass(frozen=True, slots=True)
class _Message:
    seq: int
    conn: int
    dir: Direction
    type: str
    method: str | None
    content: Any

    @property
    def key(self) -> tuple[str, str | None]:
        return self.type, self.method


def _messages(tape: Cassette, conn: int, normaliser: Normaliser) -> list[_Message]:
    out = []
    for event in tape.frames(conn):
        direction = Direction(event["dir"])
        out.append(_message(event, direction, normaliser))
    return out


def _message(event: Event, direction: Direction, normaliser: Normaliser) -> _Message:
    seq, conn = event["seq"], event["conn"]
    if event["kind"] == "binary":
        return _Message(seq, conn, direction, "binary", None, event.get("b64"))
    if "msg" in event:
        msg = event["msg"]
    else:
        parsed = parse(str(event.get("raw", "")))
        if not parsed.has_msg:
            return _Message(seq, conn, direction, "invalid", None, event.get("raw"))
        msg = parsed.msg
    kind = str(event.get("type") or "invalid")
    method = event.get("method") or event.get("response_to")
    return _Message(seq, conn, direction, kind, method, normaliser.message(direction, msg))


def _opcodes(
    a: list[tuple[str, str | None]], b: list[tuple[str, str | None]]
) -> Sequence[tuple[str, int, int, int, int]]:
    """SequenceMatcher's opcodes, made symmetric: ties are broken the same way whichever
    cassette is A (the matcher always runs with the smaller key list first)."""
    left = [f"{t}\0{m or ''}" for t, m in a]
    right = [f"{t}\0{m or ''}" for t, m in b]
    if left <= right:
        return list(SequenceMatcher(None, left, right, autojunk=False).get_opcodes())
    flipped = SequenceMatcher(None, right, left, autojunk=False).get_opcodes()
    return [(tag, j1, j2, i1, i2) for tag, i1, i2, j1, j2 in flipped]


def _align(a: list[_Message], b: list[_Message], entries: list[Entry]) -> None:
    removed: list[_Message] = []
    added: list[_Message] = []
    for tag, i1, i2, j1, j2 in _opcodes([m.key for m in a], [m.key for m in b]):
        if tag == "equal":
            for left, right in zip(a[i1:i2], b[j1:j2], strict=True):
                changes = diff_values(left.content, right.content)
                if changes:
                    entries.append(_entry(EntryKind.CHANGED, left, right, tuple(changes)))
        else:
            removed += a[i1:i2]
            added += b[j1:j2]
    # Outside the alignment: the same content elsewhere is a move; then the same key
    # (first come, first paired) is a change; what is left was removed or added.
    unpaired = []
    for left in removed:
        twin = next(
            (r for r in added if r.key == left.key and not diff_values(left.content, r.content)),
            None,
        )
        if twin is None:
            unpaired.append(left)
        else:
            added.remove(twin)
            entries.append(_entry(EntryKind.MOVED, left, twin))
    for left in unpaired:
        other = next((r for r in added if r.key == left.key), None)
        if other is None:
            entries.append(_entry(EntryKind.REMOVED, left, None))
        else:
            added.remove(other)
            found = tuple(diff_values(left.content, other.content))
            entries.append(_entry(EntryKind.CHANGED, left, other, found))
    entries += [_entry(EntryKind.ADDED, None, m) for m in added]


def _entry(
    kind: EntryKind, a: _Message | None, b: _Message | None, changes: tuple[Change, ...] = ()
) -> Entry:
    some = a or b
    assert some is not None
    return Entry(
        kind,
        a.conn if a else None,
        b.conn if b else None,
        a.seq if a else None,
        b.seq if b else None,
        some.dir,
        some.type,
        some.method,
        changes,
    )


def diff_cassettes(a: Cassette, b: Cassette, ignore: Iterable[str] = ()) -> DiffReport:
    """Compare ``a`` and ``b`` as conversations (see the module docstring)."""
    ignore = list(ignore)
    report = DiffReport()
    conns_a, conns_b = a.connections(), b.connections()
    for index in range(max(len(conns_a), len(conns_b))):
        left = _messages(a, conns_a[index], Normaliser(ignore)) if index < len(conns_a) else []
        right = _messages(b, conns_b[index], Normaliser(ignore)) if index < len(conns_b) else []
        report.messages_a += len(left)
        report.messages_b += len(right)
        entries: list[Entry] = []
        for direction in Direction:
            _align(
                [m for m in left if m.dir is direction],
                [m for m in right if m.dir is direction],
                entries,
            )
        entries.sort(key=lambda e: e.seq_a if e.seq_a is not None else e.seq_b or 0)
        report.entries += entries
    return report
