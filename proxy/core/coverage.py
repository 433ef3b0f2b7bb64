"""Protocol coverage: which methods of a codex schema a set of cassettes exercises.

Pure code: it takes loaded cassettes (:class:`proxy.core.cassette.Cassette`) and the
schema's method lists (:class:`SchemaMethods`) and counts, per method, what the cassettes
hold. ``rpctape coverage`` (proxy/codex/coverage_cli.py) prints the result; docs/drift.md
("rpctape coverage") documents the JSON shape of :meth:`Coverage.to_json`.

How a method is classified (:class:`Kind` says which list of the schema it belongs to):

* a request (client or server) is **answered with a result** when at least one of its
  requests got a ``result``; **only with errors** when every answer it got was an error;
  **never answered** when none of its requests got an answer on the recorded connection;
* a notification is **seen** when the cassettes hold at least one;
* a method in the cassettes that the schema does not list under its kind is **unknown**
  (a newer codex, an experimental method, a typo); it is counted apart and not in the
  schema's totals;
* a method of the schema the cassettes never send is **not exercised**.

Requests and answers are paired per connection and direction by id, in file order, as the
relay forwarded them (:class:`proxy.core.jsonrpc.Pairing`): an answer to a client request
comes from the server and the reverse.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .cassette import Cassette, Event
from .jsonrpc import Direction, MessageType, Pairing, Parsed, parse, shape

__all__ = ["Coverage", "Kind", "MethodUse", "Outcome", "SchemaMethods", "measure"]


class Kind(enum.StrEnum):
    """The four method lists of a codex schema (one per direction and message type)."""

    CLIENT_REQUEST = "client_request"
    SERVER_REQUEST = "server_request"
    CLIENT_NOTIFICATION = "client_notification"
    SERVER_NOTIFICATION = "server_notification"

    @property
    def is_request(self) -> bool:
        return self in (Kind.CLIENT_REQUEST, Kind.SERVER_REQUEST)

    @classmethod
    def of(cls, direction: Direction, type_: MessageType) -> Kind:
        """The kind of a request or notification sent in ``direction``."""
        request = type_ is MessageType.REQUEST
        if direction is Direction.C2S:
            return cls.CLIENT_REQUEST if request else cls.CLIENT_NOTIFICATION
        return cls.SERVER_REQUEST if request else cls.SERVER_NOTIFICATION


class Outcome(enum.StrEnum):
    """How a request method fared over all its recorded requests."""

    RESULT = "result"
    """At least one request got a result."""
    ERROR_ONLY = "error_only"
    """Answered, but only with errors."""
    UNANSWERED = "unanswered"
    """No request got an answer."""
    SEEN = "seen"
    """A notification (there is no answer to have)."""


@dataclass(frozen=True)
class SchemaMethods:
    """The methods one codex schema knows, per :class:`Kind` (see
    :func:`proxy.codex.schema.schema_methods`)."""

    label: str
    """How reports name the schema (``codex 0.171.0`` or its folder)."""
    methods: Mapping[Kind, frozenset[str]]

    def knows(self, kind: Kind, method: str) -> bool:
        return method in self.methods.get(kind, frozenset())


@dataclass
class MethodUse:
    """What the cassettes hold of one method of one kind."""

    kind: Kind
    method: str
    sent: int = 0
    """Requests or notifications sent."""
    results: int = 0
    errors: int = 0
    cassettes: set[str] = field(default_factory=set)
    """Names of the cassettes that send it."""

    @property
    def outcome(self) -> Outcome:
        if not self.kind.is_request:
            return Outcome.SEEN
        if self.results:
            return Outcome.RESULT
        return Outcome.ERROR_ONLY if self.errors else Outcome.UNANSWERED

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"method": self.method, "sent": self.sent}
        if self.kind.is_request:
            body |= {"results": self.results, "errors": self.errors}
        body |= {"outcome": self.outcome.value, "cassettes": sorted(self.cassettes)}
        return body


@dataclass
class Coverage:
    """The uses of every method met in the cassettes measured so far, against a schema."""

    schema: SchemaMethods
    uses: dict[tuple[Kind, str], MethodUse] = field(default_factory=dict)
    cassettes: list[str] = field(default_factory=list)

    def add(self, name: str, tape: Cassette) -> None:
        """Count the frames of ``tape`` (called ``name`` in reports); call once per cassette."""
        self.cassettes.append(name)
        pairings: dict[int, Pairing[str]] = {}
        for event in tape.frames():
            self.add_event(name, event, pairings.setdefault(event["conn"], Pairing()))

    def add_event(self, name: str, event: Event, pairing: Pairing[str]) -> None:
        """Count one ``text`` or ``binary`` event (``pairing``: its connection's)."""
        if event["kind"] != "text":
            return
        parsed = _parsed(event)
        direction = Direction(event["dir"])
        answered = pairing.observe(direction, parsed)
        if parsed.type in (MessageType.REQUEST, MessageType.NOTIFICATION):
            assert parsed.method is not None
            use = self._use(Kind.of(direction, parsed.type), parsed.method)
            use.sent += 1
            use.cassettes.add(name)
        elif parsed.type in (MessageType.RESPONSE, MessageType.ERROR) and answered is not None:
            # An answer sent in ``direction`` answers a request sent the other way.
            use = self._use(Kind.of(direction.reverse, MessageType.REQUEST), answered)
            if parsed.type is MessageType.RESPONSE:
                use.results += 1
            else:
                use.errors += 1

    def _use(self, kind: Kind, method: str) -> MethodUse:
        key = (kind, method)
        if key not in self.uses:
            self.uses[key] = MethodUse(kind, method)
        return self.uses[key]

    # --- views ---------------------------------------------------------------------------

    def known(self, kind: Kind) -> list[MethodUse]:
        """The uses of the schema's methods of ``kind``, sorted by method."""
        return sorted(
            (u for u in self.uses.values() if u.kind is kind and self.schema.knows(kind, u.method)),
            key=lambda u: u.method,
        )

    def with_outcome(self, kind: Kind, outcome: Outcome) -> list[str]:
        """The schema's methods of ``kind`` whose uses add up to ``outcome``."""
        return [u.method for u in self.known(kind) if u.outcome is outcome]

    def not_exercised(self, kind: Kind) -> list[str]:
        """The schema's methods of ``kind`` the cassettes never send."""
        seen = {u.method for u in self.known(kind)}
        return sorted(self.schema.methods.get(kind, frozenset()) - seen)

    def unknown(self) -> list[MethodUse]:
        """Uses of methods the schema does not list under their kind, by kind then method."""
        return sorted(
            (u for u in self.uses.values() if not self.schema.knows(u.kind, u.method)),
            key=lambda u: (list(Kind).index(u.kind), u.method),
        )

    def counts(self, kind: Kind) -> dict[str, int]:
        """For ``kind``: the schema's total, how many are exercised and, for requests, how
        many are answered with a result, only with errors, never answered."""
        known = self.known(kind)
        counts = {
            "schema": len(self.schema.methods.get(kind, frozenset())),
            "exercised": len(known),
        }
        if kind.is_request:
            for outcome in (Outcome.RESULT, Outcome.ERROR_ONLY, Outcome.UNANSWERED):
                counts[outcome.value] = sum(u.outcome is outcome for u in known)
        return counts

    def to_json(self) -> dict[str, Any]:
        """The report as JSON (shape documented in docs/drift.md, "rpctape coverage")."""
        body: dict[str, Any] = {"schema": self.schema.label, "cassettes": list(self.cassettes)}
        for kind in Kind:
            body[kind.value] = {
                "counts": self.counts(kind),
                "methods": [u.to_json() for u in self.known(kind)],
                "not_exercised": self.not_exercised(kind),
            }
        body["unknown"] = [{"kind": u.kind.value, **u.to_json()} for u in self.unknown()]
        return body


def _parsed(event: Event) -> Parsed:
    """The parse of a text event: its recorded ``msg`` when present, else its ``raw``."""
    if "msg" in event:
        type_, method, ident = shape(event["msg"])
        return Parsed(event["msg"], True, "raw" not in event, type_, method, ident)
    return parse(str(event.get("raw", "")))


def measure(schema: SchemaMethods, cassettes: Iterable[tuple[str, Cassette]]) -> Coverage:
    """The coverage of ``cassettes`` (``(name, cassette)`` pairs) against ``schema``."""
    coverage = Coverage(schema)
    for name, tape in cassettes:
        coverage.add(name, tape)
    return coverage
