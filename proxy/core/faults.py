"""Faults: named, parameterised rules that break a session on purpose (``--fault WHEN:WHAT``).

A fault names the frame it hits and what happens to it. Grammar (:data:`GRAMMAR` shows it in
every error message)::

    SPEC     = WHEN ":" WHAT
    WHEN     = METHOD [ "#" N ]
    METHOD   = 1*( ALPHA / DIGIT / "_" / "." / "/" / "$" / "-" )
    N        = 1*DIGIT                          ; 1 to 1000000000, counted per connection
    WHAT     = "error" [ "=" CODE [ ":" MESSAGE ] ]
             / "delay=" DURATION
             / "drop"
             / "disconnect" [ "=" CLOSE-CODE ]
             / "garbage"
             / "stall"
    CODE     = [ "-" ] 1*DIGIT                  ; a JSON-RPC error code, a 32-bit integer
    MESSAGE  = 1*CHAR                           ; the rest of the spec, ':' included
    DURATION = 1*DIGIT "ms" / 1*DIGIT [ "." 1*3DIGIT ] "s"   ; 1 ms to 1 hour, whole ms
    CLOSE-CODE = 1000-1003 / 1007-1014 / 3000-4999 ; what a websocket close may carry

**Which frame.** ``WHEN`` names a method. For a client request (``thread/start``) the fault
hits the server's answer to it (a response or error whose ``response_to`` is that method, as
:class:`~proxy.core.jsonrpc.Pairing` pairs them per connection); for a server notification
(``item/agentMessage/delta``) or server request (``item/commandExecution/requestApproval``),
that frame itself. Only frames from the server to the client are hit. ``#N`` hits only the
N-th such frame on each connection (1-based); without it, every one.

**What.**

- ``error``: the client gets codex's own overload error in place of the answer, with the live
  id, exactly as the app-server writes it (docs/app-server.md):
  ``{"error":{"code":-32001,"message":"Server overloaded; retry later."},"id":N}``;
  ``error=CODE`` another code (message ``rpctape fault: error CODE``), ``error=CODE:MESSAGE``
  another message. The server's answer is not sent. On a server request, rpctape answers the
  server with that error in the client's place (the client never sees the request); a
  notification cannot be answered, so ``error`` never fires on one.
- ``delay=DURATION``: holds the frame that long (and, as any delay, the frames after it going
  the same way; never the other direction).
- ``drop``: the frame is never sent (a request then waits forever, as with a lost reply).
- ``disconnect``: closes the connection just before the frame, which is not sent (close code
  1011 with the reason ``rpctape fault SPEC``; ``disconnect=CODE`` another code). Over stdio
  the client's stdout ends.
- ``garbage``: the client gets :data:`GARBAGE` (``rpctape fault: not JSON{``), a text frame
  that is not JSON, in the frame's place.
- ``stall``: the frame and everything after it on that connection are not sent to the client
  (nor anything rpctape itself would send it) until the client closes; what the client sends
  still reaches the server.

**Applied as rules.** :class:`FaultSet` holds a session's faults and makes one
:class:`FaultRule` (a :class:`~proxy.core.rules.Rule`) per fault, so every place that takes
``rules=`` takes faults. Each fault counts how often it fired over the whole session (every
connection's engine shares the set), for the unfired-fault report.

**Dry run.** :func:`plan` lists, for each fault, the recorded frames of a cassette it would hit
(connection, seq, method); :func:`render` writes that as lines; :func:`faults_command` is the
``rpctape faults`` command.

Pure code apart from :func:`faults_command`: no sockets, no event loop.
"""

from __future__ import annotations

import enum
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson

from ..errors import CassetteError, UsageError
from .cassette import Cassette, load
from .jsonrpc import Direction, MessageType, Parsed, raw_id
from .rules import Action, Decision, Engine, Rule, RuleFailure


class FaultKind(enum.StrEnum):
    """What a fault does to the frame it hits (the ``WHAT`` of a spec)."""

    ERROR = "error"
    DELAY = "delay"
    DROP = "drop"
    DISCONNECT = "disconnect"
    GARBAGE = "garbage"
    STALL = "stall"


OVERLOAD_CODE = -32001
OVERLOAD_MESSAGE = "Server overloaded; retry later."
"""codex's overload error (docs/app-server.md), what a bare ``error`` answers."""

DISCONNECT_CODE = 1011
"""The close code of a bare ``disconnect`` (RFC 6455 7.4.1: internal error)."""

GARBAGE = b"rpctape fault: not JSON{"
"""The text frame ``garbage`` sends in the frame's place: not JSON, whatever parser reads it."""

MAX_DELAY_MS = 3_600_000
"""The longest ``delay``: one hour."""

MAX_NTH = 1_000_000_000
"""The largest ``#N``."""

ERROR_CODES = range(-(2**31), 2**31)
"""JSON-RPC error codes a fault may send: 32-bit integers."""

CLOSE_CODES = (range(1000, 1004), range(1007, 1015), range(3000, 5000))
"""Close codes ``disconnect=CODE`` may send: those RFC 6455 lets an endpoint send."""

MAX_REASON = 123
"""RFC 6455 5.5: a close reason is at most 123 bytes of UTF-8."""

WHATS = (
    "error",
    "error=CODE",
    "error=CODE:MESSAGE",
    "delay=DURATION",
    "drop",
    "disconnect",
    "disconnect=CODE",
    "garbage",
    "stall",
)
"""Every form of ``WHAT``, as error messages list them."""

GRAMMAR = """\
a fault is WHEN:WHAT
  WHEN  METHOD or METHOD#N: the frame it hits, every occurrence or only the N-th (from 1) on
        each connection: for a client request, the server's answer to it; for a server
        notification or request, that frame (METHOD: letters, digits and _ . / $ -)
  WHAT  error               codex's overload error -32001 "Server overloaded; retry later."
        error=CODE          a JSON-RPC error with this integer code
        error=CODE:MESSAGE  ... and this message
        delay=DURATION      hold the frame: 250ms, 2s, 1.5s (1ms to 1h)
        drop                never send the frame
        disconnect          close the connection just before the frame (code 1011)
        disconnect=CODE     ... with this code (1000-1003, 1007-1014, 3000-4999)
        garbage             send a frame that is not JSON in its place
        stall               send nothing more on the connection until the client closes it
  e.g.  thread/start:error  item/agentMessage/delta#2:delay=1s  initialize:disconnect"""
"""The grammar, as error messages show it (the module docstring has it formally)."""


class FaultError(UsageError):
    """A fault spec (or a :class:`Fault` built in code) is invalid.

    The message is two parts: the first line names the spec and what is wrong
    (:attr:`problem`), then :data:`GRAMMAR`.
    """

    grammar = GRAMMAR
    """What a door prints after :attr:`problem`."""

    def __init__(self, context: str, problem: str) -> None:
        self.detail = problem
        """What is wrong, without the context."""
        self.problem = f"{context}: {problem}"
        """The first line: the spec and what is wrong."""
        super().__init__(f"{self.problem}\n{GRAMMAR}")


_METHOD = re.compile(r"[A-Za-z0-9_./$-]+")
_DIGITS = re.compile(r"[0-9]{1,12}")
_CODE = re.compile(r"-?[0-9]{1,12}")
_DURATION = re.compile(r"(?P<ms>[0-9]{1,8})ms|(?P<s>[0-9]{1,8})(?:\.(?P<frac>[0-9]{1,3}))?s")


def default_message(code: int) -> str:
    """The message of ``error=CODE`` without a message."""
    return OVERLOAD_MESSAGE if code == OVERLOAD_CODE else f"rpctape fault: error {code}"


def format_duration(ms: int) -> str:
    """A duration as a spec writes it canonically: whole seconds as ``2s``, else ``250ms``."""
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def _is_close_code(code: int) -> bool:
    return any(code in allowed for allowed in CLOSE_CODES)


def _is_text(text: str) -> bool:
    """Whether ``text`` can be sent as UTF-8 (no lone surrogates)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class Fault:
    """One fault: the frame it hits (``when``, ``nth``) and what it does (``what`` and its
    parameters). Build it with :func:`parse_fault`, or in code (checked the same way).

    Parameters left ``None`` take their defaults: ``error`` gets ``code`` -32001 and the
    matching :func:`default_message`; ``disconnect`` gets ``code`` 1011. ``ms`` is the
    ``delay`` in milliseconds.
    """

    when: str
    what: FaultKind
    nth: int | None = None
    code: int | None = None
    message: str | None = None
    ms: int | None = None

    def __post_init__(self) -> None:
        try:
            what = FaultKind(self.what)
        except ValueError:
            raise FaultError(f"fault {self.when!r}", _unknown(str(self.what))) from None
        object.__setattr__(self, "what", what)
        context = f"fault {self.when!r} ({what})"
        problem = _when_problem(self.when, self.nth)
        if problem is not None:
            raise FaultError(context, problem)
        if what is FaultKind.ERROR:
            code = OVERLOAD_CODE if self.code is None else self.code
            object.__setattr__(self, "code", code)
            if self.message is None:
                object.__setattr__(self, "message", default_message(code))
            problem = _error_problem(code, self.message)
        elif what is FaultKind.DISCONNECT:
            code = DISCONNECT_CODE if self.code is None else self.code
            object.__setattr__(self, "code", code)
            problem = _close_problem(code)
        elif self.code is not None:
            problem = f"{what} takes no code"
        if problem is None and what is not FaultKind.ERROR and self.message is not None:
            problem = f"{what} takes no message"
        if problem is None and what is FaultKind.DELAY:
            problem = _delay_problem(self.ms)
        elif problem is None and self.ms is not None:
            problem = f"{what} takes no duration"
        if problem is not None:
            raise FaultError(context, problem)

    @property
    def spec(self) -> str:
        """The canonical spec: ``parse_fault(f.spec) == f``."""
        when = self.when if self.nth is None else f"{self.when}#{self.nth}"
        return f"{when}:{self._what_text()}"

    def __str__(self) -> str:
        return self.spec

    def _what_text(self) -> str:
        what = self.what
        if what is FaultKind.ERROR:
            assert self.code is not None
            if self.message == default_message(self.code):
                return "error" if self.code == OVERLOAD_CODE else f"error={self.code}"
            return f"error={self.code}:{self.message}"
        if what is FaultKind.DELAY:
            assert self.ms is not None
            return f"delay={format_duration(self.ms)}"
        if what is FaultKind.DISCONNECT and self.code != DISCONNECT_CODE:
            return f"disconnect={self.code}"
        return what.value

    @property
    def rule_name(self) -> str:
        """The name of its rule, as logs and the cassette's ``rules`` show it."""
        return f"fault {self.spec}"

    @property
    def close_reason(self) -> str:
        """The reason a ``disconnect`` closes with (at most 123 bytes)."""
        return _clip(f"rpctape {self.rule_name}", MAX_REASON)

    def error_frame(self, id_text: bytes) -> bytes:
        """The error answer ``error`` sends, with ``id_text`` (the id as its sender wrote
        it), member order as codex writes it: ``{"error":{"code":..,"message":..},"id":..}``."""
        error = orjson.dumps({"code": self.code, "message": self.message})
        return b"".join((b'{"error":', error, b',"id":', id_text, b"}"))

    def hits(self, direction: Direction, mtype: MessageType, method: str | None,
             response_to: str | None) -> bool:  # fmt: skip
        """Whether a frame is one this fault names (any occurrence; ``nth`` is counted by
        the caller): a server notification or request of the method, or the server's answer
        to a client request of that method."""
        if direction is not Direction.S2C:
            return False
        if mtype is MessageType.NOTIFICATION or mtype is MessageType.REQUEST:
            return method == self.when
        if mtype is MessageType.RESPONSE or mtype is MessageType.ERROR:
            return response_to == self.when
        return False

    def applies_to(self, mtype: MessageType) -> bool:
        """Whether it can act on a frame of this type (``error`` cannot answer a
        notification)."""
        return not (self.what is FaultKind.ERROR and mtype is MessageType.NOTIFICATION)


def _clip(text: str, limit: int) -> str:
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[: limit - 3].decode("utf-8", errors="ignore") + "..."


def _unknown(word: str) -> str:
    return f"unknown fault {word!r}; valid: {', '.join(WHATS)}"


def _when_problem(method: str, nth: int | None) -> str | None:
    if not isinstance(method, str) or not method:
        return "no method before ':'"
    if not _METHOD.fullmatch(method):
        return f"method {method!r} may only hold letters, digits and _ . / $ -"
    if nth is not None and (isinstance(nth, bool) or not 1 <= nth <= MAX_NTH):
        return f"#{nth}: N counts occurrences from 1 to {MAX_NTH}"
    return None


def _error_problem(code: int, message: str | None) -> str | None:
    if isinstance(code, bool) or code not in ERROR_CODES:
        return f"error code {code} is not a 32-bit integer"
    if not isinstance(message, str) or not message:
        return "error=CODE:MESSAGE needs a message after ':'"
    if not _is_text(message):
        return f"error message {message!r} is not valid text (a lone surrogate)"
    return None


def _close_problem(code: int) -> str | None:
    if isinstance(code, bool) or not _is_close_code(code):
        return f"close code {code} cannot be sent; use 1000-1003, 1007-1014 or 3000-4999"
    return None


def _delay_problem(ms: int | None) -> str | None:
    if ms is None or isinstance(ms, bool) or not 1 <= ms <= MAX_DELAY_MS:
        return f"delay of {ms} ms: a delay is 1ms to 1 hour"
    return None


def parse_duration(text: str) -> int:
    """``250ms``, ``2s`` or ``1.5s`` in milliseconds (1 ms to 1 hour); ``ValueError`` with
    the reason otherwise."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"duration {text!r}: write 250ms, 2s or 1.5s")
    if match["ms"] is not None:
        ms = int(match["ms"])
    else:
        ms = int(match["s"]) * 1000 + int((match["frac"] or "0").ljust(3, "0"))
    if not 1 <= ms <= MAX_DELAY_MS:
        raise ValueError(f"duration {text!r}: a delay is 1ms to 1 hour")
    return ms


def parse_fault(spec: str) -> Fault:
    """Parse ``WHEN:WHAT`` (see :data:`GRAMMAR`); :class:`FaultError` names the wrong part."""
    context = f"--fault {spec!r}"
    when, sep, what = spec.partition(":")
    if not sep:
        raise FaultError(context, "missing ':' between WHEN and WHAT")
    method, hash_, n = when.partition("#")
    nth: int | None = None
    if hash_:
        if not _DIGITS.fullmatch(n):
            raise FaultError(context, f"'#{n}': N is a whole number from 1")
        nth = int(n)
    problem = _when_problem(method, nth)
    if problem is not None:
        raise FaultError(context, problem)
    name, eq, value = what.partition("=")
    try:
        kind = FaultKind(name)
    except ValueError:
        raise FaultError(context, _unknown(what)) from None
    code: int | None = None
    message: str | None = None
    ms: int | None = None
    if kind is FaultKind.ERROR and eq:
        code_text, colon, message_text = value.partition(":")
        if not _CODE.fullmatch(code_text):
            raise FaultError(context, f"error code {code_text!r} is not an integer")
        code = int(code_text)
        if colon:
            if not message_text:
                raise FaultError(context, "error=CODE:MESSAGE needs a message after ':'")
            message = message_text
    elif kind is FaultKind.DELAY:
        if not eq:
            raise FaultError(context, "delay needs a duration: delay=250ms or delay=2s")
        try:
            ms = parse_duration(value)
        except ValueError as exc:
            raise FaultError(context, str(exc)) from None
    elif kind is FaultKind.DISCONNECT and eq:
        if not _DIGITS.fullmatch(value):
            raise FaultError(context, f"close code {value!r} is not a whole number")
        code = int(value)
    elif eq:
        raise FaultError(context, f"{kind} takes no value: {what!r}")
    try:
        return Fault(method, kind, nth, code, message, ms)
    except FaultError as exc:
        raise FaultError(context, exc.detail) from None


# --- applied as rules ----------------------------------------------------------------------

_ANSWERS = (MessageType.RESPONSE, MessageType.ERROR)


@dataclass(frozen=True, eq=False)
class FaultRule(Rule):
    """The rule that carries out one fault of a :class:`FaultSet` (``action`` is
    :attr:`~proxy.core.rules.Action.FAULT`; the cassette names the fault's kind)."""

    fault: Fault = field(kw_only=True)
    owner: FaultSet = field(kw_only=True, repr=False)

    def __post_init__(self) -> None:
        pass  # no rules-file table to check: the fault was checked when it was made

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "action": self.action.value, "fault": self.fault.spec}

    @property
    def label(self) -> str:
        return self.fault.what.value

    def matches(self, direction: Direction, parsed: Parsed, response_to: str | None) -> bool:
        return self.fault.hits(direction, parsed.type, parsed.method, response_to)

    def apply(
        self,
        engine: Engine,
        direction: Direction,
        raw: bytes,
        parsed: Parsed,
        patched: Any,
        decision: Decision,
    ) -> Any:
        fault, kind = self.fault, self.fault.what
        if kind is FaultKind.ERROR:
            id_text = raw_id(raw) or orjson.dumps(parsed.id)
            if parsed.type in _ANSWERS:  # the server's answer: the error goes in its place
                decision.instead.append((self.name, fault.error_frame(id_text)))
            elif parsed.type is MessageType.REQUEST:  # answer the server as the client
                decision.to_sender.append((self.name, fault.error_frame(id_text)))
            else:
                raise RuleFailure(f"error needs a request or an answer, got a {parsed.type}")
            decision.forward = None
        elif kind is FaultKind.DELAY:
            assert fault.ms is not None
            decision.delay_ms += fault.ms
        elif kind is FaultKind.DROP:
            decision.forward = None
        elif kind is FaultKind.DISCONNECT:
            assert fault.code is not None
            decision.close = (fault.code, fault.close_reason)
            decision.forward = None
        elif kind is FaultKind.GARBAGE:
            decision.instead.append((self.name, GARBAGE))
            decision.forward = None
        elif kind is FaultKind.STALL:
            engine.stall(direction, self.name)
            decision.forward = None
        self.owner.note_fired(fault)
        return patched


class FaultSet:
    """The faults of one session, their rules, and how often each fired.

    Give :attr:`rules` to the bridge with the other rules (every connection's engine shares
    them, so the counts are per session); after the session, :meth:`unfired` and
    :meth:`report_lines` say which never fired. Everything runs on one event loop: no locks.
    """

    def __init__(self, faults: Iterable[Fault] = ()) -> None:
        self.faults = tuple(faults)
        self.closed: tuple[int, str] | None = None
        """The code and reason of the first ``disconnect`` that fired (a stdio door exits
        non-zero when it is set)."""
        self._fired: dict[Fault, int] = {}
        for fault in self.faults:
            if fault in self._fired:
                raise FaultError(f"--fault {fault.spec!r}", "given twice")
            self._fired[fault] = 0
        self.rules: tuple[Rule, ...] = tuple(
            FaultRule(fault.rule_name, Action.FAULT, nth=fault.nth, fault=fault, owner=self)
            for fault in self.faults
        )
        """One rule per fault, in order: what goes to ``rules=``."""

    @classmethod
    def parse(cls, specs: Iterable[str]) -> FaultSet:
        """The set of ``--fault`` specs; :class:`FaultError` for the first bad one."""
        return cls(parse_fault(spec) for spec in specs)

    def __len__(self) -> int:
        return len(self.faults)

    def note_fired(self, fault: Fault) -> None:
        """Count one firing of ``fault`` (its rule calls this)."""
        self._fired[fault] += 1
        if fault.what is FaultKind.DISCONNECT and self.closed is None:
            assert fault.code is not None
            self.closed = (fault.code, fault.close_reason)

    def fired(self, fault: Fault) -> int:
        """How often ``fault`` fired so far (``KeyError`` if it is not in the set)."""
        return self._fired[fault]

    def unfired(self) -> list[Fault]:
        """The faults that never fired, in order."""
        return [fault for fault in self.faults if not self._fired[fault]]

    def report_lines(self) -> list[str]:
        """One line per fault that never fired, for stderr and the reports."""
        return [f"rpctape: fault {fault.spec} never fired" for fault in self.unfired()]

    def summary(self) -> list[dict[str, Any]]:
        """``[{"fault": SPEC, "fired": N}, ...]``, for ``RPCTAPE_REPORT`` and the fixture."""
        return [{"fault": fault.spec, "fired": self._fired[fault]} for fault in self.faults]


# --- dry run ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    """A recorded frame a fault would hit."""

    conn: int
    seq: int
    type: MessageType
    method: str
    """The frame's method, or for an answer the method of the request it answers."""

    def render(self) -> str:
        """``connection 1 seq 8: < response to thread/start``."""
        what = f"{self.type} to" if self.type in _ANSWERS else str(self.type)
        return f"connection {self.conn} seq {self.seq}: < {what} {self.method}"


@dataclass(frozen=True)
class FaultHits:
    """The recorded frames one fault would hit, in cassette order."""

    fault: Fault
    hits: tuple[Hit, ...]
    cannot: int = 0
    """Frames it names but cannot act on (``error`` on a notification)."""

    def render(self) -> list[str]:
        """A head line, then one line per frame."""
        if not self.hits:
            why = ""
            if self.cannot:
                why = f" (it names {self.cannot} notification(s); error cannot answer one)"
            return [f"fault {self.fault.spec} hits no recorded frame{why}"]
        count = len(self.hits)
        head = f"fault {self.fault.spec} hits {count} recorded frame{'s' if count > 1 else ''}:"
        return [head, *(f"  {hit.render()}" for hit in self.hits)]


def plan(cassette: Cassette, faults: Iterable[Fault]) -> list[FaultHits]:
    """For each fault, the recorded frames a replay of ``cassette`` would let it hit.

    Frames are the server's as the replay sends them (rpctape's own recorded messages are
    not replayed); ``#N`` counts per recorded connection. Each fault is planned on its own:
    a ``disconnect`` or ``stall`` that would end a connection early does not take hits
    from the others.
    """
    frames = [
        event
        for event in cassette.frames()
        if event["kind"] == "text" and event["dir"] == "s2c" and event.get("origin") != "rpctape"
    ]
    result: list[FaultHits] = []
    for fault in faults:
        seen: dict[int, int] = {}
        hits: list[Hit] = []
        cannot = 0
        for event in frames:
            mtype = MessageType(event["type"])
            method, answers = event.get("method"), event.get("response_to")
            if not fault.hits(Direction.S2C, mtype, method, answers):
                continue
            conn = event["conn"]
            seen[conn] = seen.get(conn, 0) + 1
            if fault.nth is not None and seen[conn] != fault.nth:
                continue
            if fault.applies_to(mtype):
                hits.append(Hit(conn, event["seq"], mtype, fault.when))
            else:
                cannot += 1
        result.append(FaultHits(fault, tuple(hits), cannot))
    return result


def render(planned: Sequence[FaultHits]) -> str:
    """The dry run's output: each fault's lines (:meth:`FaultHits.render`)."""
    return "".join(f"{line}\n" for hits in planned for line in hits.render())


def faults_command(
    cassette_path: Path | str,
    specs: Sequence[str],
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """``rpctape faults CASSETTE --fault SPEC ...``: print the dry run; return the exit status.

    0 when every fault hits at least one recorded frame, 1 when one hits none, 2 for bad
    usage (no fault, a bad spec: the problem then the grammar on stderr) or a cassette that
    cannot be read.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        if not specs:
            raise UsageError("give at least one --fault SPEC")
        faults = FaultSet.parse(specs)
        planned = plan(load(cassette_path), faults.faults)
    except FaultError as exc:
        print(f"rpctape: error: {exc.problem}\n{GRAMMAR}", file=err)
        return 2
    except (UsageError, CassetteError) as exc:
        print(f"rpctape: error: {exc}", file=err)
        return 2
    out.write(render(planned))
    return 0 if all(hits.hits for hits in planned) else 1
