"""Matchers: does a live client frame match a recorded one, and if not, why not.

Pure code. A matcher is a small named function of ``(live, recorded, rules)`` that returns
nothing when the two agree on what it checks and raises :class:`Mismatch` with the reason
otherwise (the vcrpy pattern). :func:`explain` runs the matchers that apply to a pair of
frames and collects every failure, which is what a miss message is made of.

Matching never looks at the JSON-RPC ``id`` of a request: the replay puts the live id into
the replayed response. A response from the client (to a server-initiated request) is matched
on the id of the server request it answers, which the replay sent verbatim.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from .cassette import Event, frame_of
from .errors import UsageError
from .jsonrpc import MessageType, Parsed, id_key, parse

DEFAULT_IGNORE: tuple[str, ...] = ("/trace", "/jsonrpc")
"""Pointers ignored unless told otherwise: the official client's ``trace`` and ``jsonrpc``."""

ALWAYS_IGNORED: frozenset[str] = frozenset({"/id"})
"""Never compared in a body: ``id`` is remapped (requests) or checked by :func:`answer_id`."""

VALUE_LIMIT = 40
"""Longest value shown in a difference, in characters of compact JSON."""

_JSON_RPC = frozenset(
    {MessageType.REQUEST, MessageType.NOTIFICATION, MessageType.RESPONSE, MessageType.ERROR}
)


def check_pointer(pointer: str) -> str:
    """Validate a JSON pointer (RFC 6901 section 3) given by a person; return it unchanged."""
    if pointer and not pointer.startswith("/"):
        raise UsageError(
            f"invalid JSON pointer {pointer!r}: it must start with '/', e.g. /params/cwd"
        )
    tokens = pointer.split("/")[1:]
    for token in tokens:
        # RFC 6901 section 4: "~" is only valid as "~0" or "~1".
        if "~" in token.replace("~0", "").replace("~1", ""):
            raise UsageError(f"invalid JSON pointer {pointer!r}: '~' must be written '~0'")
    return pointer


def pointer_token(key: str | int) -> str:
    """One reference token of a pointer (RFC 6901 section 3: ``~`` is ``~0``, ``/`` is ``~1``)."""
    return str(key).replace("~", "~0").replace("/", "~1")


@dataclass(frozen=True)
class Rules:
    """What matching ignores: JSON pointers into the whole message (``/params/cwd``)."""

    ignore: frozenset[str] = frozenset(DEFAULT_IGNORE)

    @classmethod
    def build(cls, ignore: Iterable[str] = (), *, defaults: bool = True) -> Rules:
        """The default pointers (unless ``defaults`` is false) plus ``ignore``, validated."""
        extra = {check_pointer(p) for p in ignore}
        return cls(frozenset(DEFAULT_IGNORE if defaults else ()) | extra)


@dataclass(frozen=True)
class Frame:
    """A client frame prepared for matching: text (parsed) or binary."""

    data: bytes
    text: bool
    parsed: Parsed
    redacted: frozenset[str] = frozenset()
    """Pointers whose recorded values are redaction markers (recorded frames only)."""

    @classmethod
    def live(cls, data: str | bytes) -> Frame:
        """A frame received from the live client: ``str`` is a text frame, ``bytes`` binary."""
        if isinstance(data, str):
            raw = data.encode()
            return cls(raw, True, parse(raw))
        return cls(data, False, _BINARY)

    @classmethod
    def recorded(cls, event: Event) -> Frame:
        """A recorded ``text`` or ``binary`` event."""
        data = frame_of(event)
        if event["kind"] == "binary":
            return cls(data, False, _BINARY)
        parsed = parse(data)
        if "msg" in event and parsed.has_msg:
            # Keep the recorded parse: it is what the recorder stored (markers included).
            msg = event["msg"]
            parsed = Parsed(msg, True, parsed.exact, parsed.type, parsed.method, parsed.id)
        return cls(data, True, parsed, frozenset(event.get("redacted", ())))

    @property
    def type(self) -> MessageType:
        """The JSON-RPC shape (``INVALID`` for binary frames)."""
        return self.parsed.type

    @property
    def structured(self) -> bool:
        """Whether it is a JSON-RPC message matched member by member (else byte for byte)."""
        return self.text and self.parsed.has_msg and self.parsed.type in _JSON_RPC

    def describe(self) -> str:
        """``request thread/start``, ``response``, ``binary frame (12 bytes)``, ..."""
        if not self.text:
            return f"binary frame ({len(self.data)} bytes)"
        kind = self.parsed.type
        if kind in (MessageType.REQUEST, MessageType.NOTIFICATION):
            return f"{kind.value} {self.parsed.method}"
        if kind in (MessageType.RESPONSE, MessageType.ERROR):
            return f"{kind.value} to id {_show(self.parsed.id)}"
        if kind is MessageType.BATCH:
            return "batch"
        return f"text frame {_show_text(self.data)}"


_BINARY = Parsed(None, False, False, MessageType.INVALID, None, None)


@dataclass(frozen=True)
class Difference:
    """One member that differs: where, and the two values (``absent`` when missing)."""

    pointer: str
    got: Any
    recorded: Any

    def render(self) -> str:
        """``/params/cwd: got "/tmp/a", recorded "/home/x"``."""
        return f"{self.pointer or '(whole message)'}: got {_show(self.got)}, recorded " + _show(
            self.recorded
        )


@dataclass(frozen=True)
class _Absent:
    def __repr__(self) -> str:
        return "(absent)"


ABSENT: Any = _Absent()
"""Stands for a member one side does not have."""


class Mismatch(Exception):
    """Raised by a matcher: which matcher, why, and the members that differ."""

    def __init__(self, matcher: str, reason: str, differences: Sequence[Difference] = ()) -> None:
        super().__init__(reason)
        self.matcher = matcher
        self.reason = reason
        self.differences = tuple(differences)


def _show(value: Any, limit: int = VALUE_LIMIT) -> str:
    """Compact JSON of ``value``, shortened to ``limit`` characters with ``...``."""
    if value is ABSENT:
        return "(absent)"
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show_text(data: bytes, limit: int = VALUE_LIMIT) -> str:
    text = data.decode("utf-8", errors="replace")
    shown = text if len(text) <= limit - 2 else text[: limit - 5] + "..."
    return repr(shown)


# --- comparing JSON values ----------------------------------------------------------------


def _same(a: Any, b: Any) -> bool:
    """JSON equality: booleans are not numbers, ``1`` equals ``1.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def differences(
    got: Any, recorded: Any, ignore: frozenset[str], pointer: str = ""
) -> list[Difference]:
    """Every member that differs between two JSON values, skipping pointers in ``ignore``.

    Objects are compared member by member (recorded order, then members only ``got`` has),
    arrays element by element; any other disagreement is reported at the pointer where it is.
    """
    if pointer in ignore:
        return []
    if isinstance(got, dict) and isinstance(recorded, dict):
        out: list[Difference] = []
        keys = list(recorded) + [k for k in got if k not in recorded]
        for key in keys:
            out.extend(
                differences(
                    got.get(key, ABSENT),
                    recorded.get(key, ABSENT),
                    ignore,
                    f"{pointer}/{pointer_token(key)}",
                )
            )
        return out
    if isinstance(got, list) and isinstance(recorded, list):
        out = []
        for index in range(max(len(got), len(recorded))):
            out.extend(
                differences(
                    got[index] if index < len(got) else ABSENT,
                    recorded[index] if index < len(recorded) else ABSENT,
                    ignore,
                    f"{pointer}/{index}",
                )
            )
        return out
    if got is ABSENT and recorded is ABSENT:
        return []
    if got is ABSENT or recorded is ABSENT or not _same(got, recorded):
        return [Difference(pointer, got, recorded)]
    return []


# --- the matchers ---------------------------------------------------------------------------

Matcher = Callable[[Frame, Frame, Rules], None]


def kind(live: Frame, recorded: Frame, rules: Rules) -> None:
    """Both are text or both binary, and of the same JSON-RPC shape."""
    if live.text != recorded.text or live.type is not recorded.type:
        raise Mismatch(
            "kind", f"got {_article(live.describe())}, recorded {_article(recorded.describe())}"
        )


def method(live: Frame, recorded: Frame, rules: Rules) -> None:
    """Requests and notifications: the same method."""
    if live.parsed.method != recorded.parsed.method:
        raise Mismatch(
            "method",
            f"method differs: got {_show(live.parsed.method)}, recorded "
            f"{_show(recorded.parsed.method)}",
        )


def answer_id(live: Frame, recorded: Frame, rules: Rules) -> None:
    """Responses and errors: they answer the same server request (the same id)."""
    if id_key(live.parsed.id) != id_key(recorded.parsed.id):
        raise Mismatch(
            "answer_id",
            f"answers another server request: got id {_show(live.parsed.id)}, recorded id "
            f"{_show(recorded.parsed.id)}",
        )


def body(live: Frame, recorded: Frame, rules: Rules) -> None:
    """Every member but ``id``, ``method``, the ignored pointers and the redacted ones."""
    ignore = rules.ignore | ALWAYS_IGNORED | {"/method"} | recorded.redacted
    found = differences(live.parsed.msg, recorded.parsed.msg, ignore)
    if found:
        shown = "; ".join(d.render() for d in found[:4])
        more = f"; and {len(found) - 4} more" if len(found) > 4 else ""
        raise Mismatch("body", shown + more, found)


def exact(live: Frame, recorded: Frame, rules: Rules) -> None:
    """Frames that are not JSON-RPC messages (non-JSON, batches, binary): byte for byte.

    A recorded frame replaced whole by a redaction marker (pointer ``""``) matches any text.
    """
    if "" in recorded.redacted and live.text and recorded.text:
        return
    if live.data != recorded.data:
        raise Mismatch(
            "exact",
            f"bytes differ: got {_show_text(live.data)}, recorded {_show_text(recorded.data)}",
        )


def matchers_for(live: Frame, recorded: Frame) -> tuple[Matcher, ...]:
    """The matchers that decide whether ``live`` matches ``recorded``, in order."""
    if not (live.structured and recorded.structured):
        return (kind, exact)
    if recorded.type in (MessageType.RESPONSE, MessageType.ERROR):
        return (kind, answer_id, body)
    return (kind, method, body)


@dataclass(frozen=True)
class Verdict:
    """The outcome of comparing a live frame with one recorded frame."""

    failures: tuple[Mismatch, ...] = field(default_factory=tuple)

    @property
    def matched(self) -> bool:
        """Whether every matcher agreed."""
        return not self.failures

    @property
    def differences(self) -> tuple[Difference, ...]:
        """Every member difference the failed matchers found."""
        return tuple(d for m in self.failures for d in m.differences)

    def render(self) -> str:
        """The failures' reasons joined with ``; `` (empty when matched)."""
        return "; ".join(m.reason for m in self.failures)


def explain(live: Frame, recorded: Frame, rules: Rules) -> Verdict:
    """Run every applicable matcher and collect the failures.

    A ``kind`` failure stops there: comparing a request's members with a binary frame's
    bytes says nothing useful.
    """
    failures: list[Mismatch] = []
    for matcher in matchers_for(live, recorded):
        try:
            matcher(live, recorded, rules)
        except Mismatch as exc:
            failures.append(exc)
            if matcher is kind:
                break
    return Verdict(tuple(failures))


def matches(live: Frame, recorded: Frame, rules: Rules) -> bool:
    """Whether ``live`` matches ``recorded`` (every applicable matcher agrees)."""
    try:
        for matcher in matchers_for(live, recorded):
            matcher(live, recorded, rules)
    except Mismatch:
        return False
    return True


def _article(noun: str) -> str:
    """``a request ...`` / ``an error ...``."""
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"
