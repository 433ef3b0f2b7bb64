"""Matchers: does a live client frame match a recorded one, and if not, why not.

Pure code. A matcher is a small named function of ``(live, recorded, rules)`` that returns
nothing when the two agree on what it checks and raises :class:`Mismatch` with the reason
otherwise (the vcrpy pattern). :func:`explain` runs the matchers that apply to a pair of
frames and collects every failure, which is what a miss message is made of.

Matching never looks at the JSON-RPC ``id`` of a request: the replay puts the live id into
the replayed response. A response from the client (to a server-initiated request) is matched
on the id of the server request it answers, which the replay sent verbatim.

What is compared is chosen VCR-style by ``match_on``, a set of named :class:`Aspect` s of a
message. The ``codex`` preset (the default) leaves out what changes between runs and versions
without changing what the server does: ``initialize``'s ``clientInfo``, working directories
and the paths under them, and timestamps; ``exact`` compares everything (docs/replay.md).
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import orjson

from ..errors import UsageError
from . import pointer as _pointer
from .cassette import Event, frame_of
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


class Aspect(enum.Enum):
    """A named part of a client message that ``match_on`` can compare or leave out.

    Every member of a JSON-RPC message belongs to exactly one aspect (besides ``id`` and the
    ignored pointers, which are never compared); :func:`aspect_of` decides which.
    """

    METHOD = "method"
    """The method of a request or notification."""
    BODY = "body"
    """Every member no other aspect claims: params, result, error."""
    CLIENT_INFO = "clientInfo"
    """``/params/clientInfo`` of ``initialize``: the client's name, title and version."""
    CWD = "cwd"
    """A string member named ``cwd``, and any string under a recorded ``cwd`` of the same
    message that is the same path under the live one."""
    TIMESTAMPS = "timestamps"
    """A string that is an RFC 3339 date-time on both sides."""


class Preset(enum.Enum):
    """Named sets of aspects for ``match_on``."""

    CODEX = "codex"
    """The default: method and body; not clientInfo, working directories, timestamps."""
    EXACT = "exact"
    """Every aspect: everything but ``id`` and the ignored pointers (``/trace``, ``/jsonrpc``)."""

    @property
    def aspects(self) -> frozenset[Aspect]:
        """The aspects the preset compares."""
        if self is Preset.CODEX:
            return frozenset({Aspect.METHOD, Aspect.BODY})
        return frozenset(Aspect)


MatchOn = str | Iterable[str | Aspect | Preset] | Preset | Aspect
"""What a person or a caller may pass as ``match_on``: ``"codex"``, ``"exact"``,
``"method,body,cwd"``, or a sequence of such names, aspects and presets."""


def parse_match_on(value: MatchOn) -> frozenset[Aspect]:
    """The aspects named by ``value`` (presets expand); an unknown name is a :class:`UsageError`
    that lists the valid ones."""
    if isinstance(value, Preset):
        return value.aspects
    if isinstance(value, Aspect):
        return frozenset({value})
    names: Iterable[str | Aspect | Preset] = (
        [n.strip() for n in value.split(",")] if isinstance(value, str) else value
    )
    aspects: set[Aspect] = set()
    for name in names:
        if isinstance(name, Preset | Aspect):
            aspects |= parse_match_on(name)
            continue
        if name in {p.value for p in Preset}:
            aspects |= Preset(name).aspects
        elif name in {a.value for a in Aspect}:
            aspects.add(Aspect(name))
        else:
            presets = ", ".join(p.value for p in Preset)
            valid = ", ".join(a.value for a in Aspect)
            raise UsageError(
                f"invalid match_on {name!r}; valid values: a preset ({presets}) or a "
                f"comma-separated list of {valid}"
            )
    if not aspects:
        raise UsageError("match_on is empty; use exact, codex, or a list such as method,body")
    return frozenset(aspects)


@dataclass(frozen=True)
class Rules:
    """What matching compares: the aspects in ``match_on``, minus the ``ignore`` pointers
    (JSON pointers into the whole message, such as ``/params/cwd``)."""

    ignore: frozenset[str] = frozenset(DEFAULT_IGNORE)
    match_on: frozenset[Aspect] = Preset.CODEX.aspects
    cwds: tuple[tuple[str, str], ...] = ()
    """``(recorded, live)`` working directories met earlier on the connection (:meth:`learn`):
    paths under them are followed in messages that carry no ``cwd`` of their own."""

    @functools.cached_property
    def top_level_skip(self) -> frozenset[str]:
        """Top-level members never compared here: ``id``, ``method`` and ignored ones."""
        single = (_pointer.parts(p) for p in self.ignore | ALWAYS_IGNORED)
        return frozenset({"id", "method"} | {parts[0] for parts in single if len(parts) == 1})

    @functools.cached_property
    def compares_method(self) -> bool:
        """Whether ``match_on`` compares the method (asked once per match, not hashed each
        time)."""
        return Aspect.METHOD in self.match_on

    def learn(self, live: Frame, recorded: Frame) -> Rules:
        """These rules plus the working directories of ``live``, which matched ``recorded``.

        Called after each match, it lets a later message without ``cwd`` (a ``turn/start``
        naming a file under the thread's directory) follow the ``cwd`` of ``thread/start``.
        """
        if not (live.structured and recorded.structured):
            return self
        pairs = cwd_pairs(live.parsed.msg, recorded.parsed.msg)
        new = tuple(pair for pair in pairs if pair not in self.cwds)
        return replace(self, cwds=self.cwds + new) if new else self

    @classmethod
    def build(
        cls, ignore: Iterable[str] = (), *, defaults: bool = True, match_on: MatchOn = Preset.CODEX
    ) -> Rules:
        """The default pointers (unless ``defaults`` is false) plus ``ignore``, validated, and
        the aspects of ``match_on`` (see :func:`parse_match_on`)."""
        extra = {_pointer.check(p) for p in ignore}
        return cls(frozenset(DEFAULT_IGNORE if defaults else ()) | extra, parse_match_on(match_on))


class Frame(NamedTuple):
    """A client frame prepared for matching: text (parsed) or binary. (A named tuple: one is
    made per live client message and per recorded one.)"""

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
    def live_text(cls, raw: bytes) -> Frame:
        """A text frame received from the live client, as its UTF-8 bytes (checked by the
        caller): :meth:`live` of ``raw.decode()``, without decoding and encoding again."""
        return cls(raw, True, parse(raw))

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
                    f"{pointer}/{_pointer.token(key)}",
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


# --- which aspect a difference belongs to ----------------------------------------------------

CLIENT_INFO_POINTER = "/params/clientInfo"

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})")
"""RFC 3339 section 5.6 ``date-time`` (with the space separator section 5.6 allows)."""


def is_timestamp(value: Any) -> bool:
    """Whether ``value`` is a string holding an RFC 3339 date-time."""
    return isinstance(value, str) and _RFC3339.fullmatch(value) is not None


def _cwds(value: Any, pointer: str = "") -> Iterator[tuple[str, str]]:
    """``(pointer, path)`` of every string member named ``cwd`` in ``value``."""
    if isinstance(value, dict):
        for key, member in value.items():
            here = f"{pointer}/{_pointer.token(key)}"
            if key == "cwd" and isinstance(member, str):
                yield here, member
            else:
                yield from _cwds(member, here)
    elif isinstance(value, list):
        for index, member in enumerate(value):
            yield from _cwds(member, f"{pointer}/{index}")


def _at(value: Any, pointer: str) -> Any:
    """The member of ``value`` at an RFC 6901 pointer built by :func:`proxy.core.pointer.token`."""
    for key in _pointer.parts(pointer):
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return ABSENT
    return value


def cwd_pairs(got: Any, recorded: Any) -> tuple[tuple[str, str], ...]:
    """``(recorded cwd, live cwd)`` for each ``cwd`` member both messages have as a non-empty
    string at the same place, where the two differ."""
    pairs = []
    for pointer, was in _cwds(recorded):
        now = _at(got, pointer)
        if isinstance(now, str) and now != was and now and was:
            pairs.append((was, now))
    return tuple(pairs)


def _under(path: str, root: str) -> str | None:
    """The rest of ``path`` below ``root`` (``""`` for ``root`` itself), else ``None``."""
    base = root.rstrip("/")
    if path in (root, base):
        return ""
    if path.startswith(base + "/"):
        return path[len(base) :]
    return None


def _same_path_elsewhere(got: str, recorded: str, pairs: Sequence[tuple[str, str]]) -> bool:
    """Whether ``recorded`` under a recorded cwd is ``got`` under the matching live cwd."""
    for was, now in pairs:
        rest = _under(recorded, was)
        if rest is not None and _under(got, now) == rest:
            return True
    return False


def aspect_of(difference: Difference, pairs: Sequence[tuple[str, str]]) -> Aspect:
    """The aspect a member difference belongs to (``pairs`` from :func:`cwd_pairs`)."""
    pointer, got, was = difference.pointer, difference.got, difference.recorded
    if pointer == CLIENT_INFO_POINTER or pointer.startswith(CLIENT_INFO_POINTER + "/"):
        return Aspect.CLIENT_INFO
    if isinstance(got, str) and isinstance(was, str):
        if pointer.rsplit("/", 1)[-1] == "cwd" or _same_path_elsewhere(got, was, pairs):
            return Aspect.CWD
        if is_timestamp(got) and is_timestamp(was):
            return Aspect.TIMESTAMPS
    return Aspect.BODY


def member_differences(
    live: Frame, recorded: Frame, rules: Rules
) -> dict[Aspect, list[Difference]]:
    """Every member difference between two JSON-RPC frames, by aspect (``id``, ``method``, the
    ignored and the redacted pointers left out)."""
    ignore = rules.ignore | ALWAYS_IGNORED | {"/method"} | recorded.redacted
    found = differences(live.parsed.msg, recorded.parsed.msg, ignore)
    by_aspect: dict[Aspect, list[Difference]] = {}
    if found:
        pairs = cwd_pairs(live.parsed.msg, recorded.parsed.msg) + rules.cwds
        for difference in found:
            by_aspect.setdefault(aspect_of(difference, pairs), []).append(difference)
    return by_aspect


# --- the matchers ---------------------------------------------------------------------------

Matcher = Callable[[Frame, Frame, Rules], None]


def kind(live: Frame, recorded: Frame, rules: Rules) -> None:
    """Both are text or both binary, and of the same JSON-RPC shape."""
    if live.text != recorded.text or live.type is not recorded.type:
        raise Mismatch(
            "kind", f"got {_article(live.describe())}, recorded {_article(recorded.describe())}"
        )


def method(live: Frame, recorded: Frame, rules: Rules) -> None:
    """Requests and notifications: the same method (unless ``match_on`` leaves it out)."""
    if Aspect.METHOD in rules.match_on and live.parsed.method != recorded.parsed.method:
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


def members(live: Frame, recorded: Frame, rules: Rules) -> None:
    """Every member but ``id``, ``method``, the ignored pointers and the redacted ones, in the
    aspects of ``rules.match_on``; one :class:`Mismatch` per aspect that differs, named after
    it (``body``, ``clientInfo``, ``cwd``, ``timestamps``), gathered in :class:`Mismatches`."""
    if _equal_at_a_glance(live.parsed.msg, recorded.parsed.msg, rules):
        return
    found = member_differences(live, recorded, rules)
    failures = [
        _member_mismatch(aspect, found[aspect])
        for aspect in Aspect
        if aspect in found and aspect in rules.match_on
    ]
    if len(failures) == 1:
        raise failures[0]
    if failures:
        raise Mismatches(failures)


def _equal_at_a_glance(live: Any, recorded: Any, rules: Rules) -> bool:
    """Whether two messages are the same JSON apart from their top-level ``id``, ``method``
    and ignored members: compared as orjson writes them (keys sorted), so ``false`` is not
    ``0`` and ``1`` is not ``1.0`` as Python's ``==`` would have it. Then there is no
    difference to look for (the common case of a replay that goes as recorded).

    Compared member by member: the same members, each written the same. That is what
    comparing the two objects' writings (minus the skipped members) would say, without
    building the two smaller objects first."""
    if not (isinstance(live, dict) and isinstance(recorded, dict)):
        return False
    skip = rules.top_level_skip
    keys = live.keys() - skip
    if keys != recorded.keys() - skip:
        return False
    try:
        for key in keys:
            if orjson.dumps(live[key], option=_SORTED) != orjson.dumps(
                recorded[key], option=_SORTED
            ):
                return False
    except TypeError:  # orjson cannot write it (an integer past 64 bits): compare in full
        return False
    return True


def _canonical(msg: dict[str, Any], skip: frozenset[str]) -> bytes:
    """The writing :func:`_equal_at_a_glance` compares, member by member (for its tests)."""
    return orjson.dumps({k: v for k, v in msg.items() if k not in skip}, option=_SORTED)


_SORTED = orjson.OPT_SORT_KEYS


def _member_mismatch(aspect: Aspect, found: Sequence[Difference]) -> Mismatch:
    shown = "; ".join(d.render() for d in found[:4])
    more = f"; and {len(found) - 4} more" if len(found) > 4 else ""
    return Mismatch(aspect.value, shown + more, found)


class Mismatches(Mismatch):
    """Several aspects failed at once; :func:`explain` reports each as its own failure."""

    def __init__(self, failures: Sequence[Mismatch]) -> None:
        super().__init__(
            "+".join(f.matcher for f in failures),
            "; ".join(f.reason for f in failures),
            [d for f in failures for d in f.differences],
        )
        self.failures = tuple(failures)


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
        return (kind, answer_id, members)
    return (kind, method, members)


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
        except Mismatches as exc:
            failures.extend(exc.failures)
        except Mismatch as exc:
            failures.append(exc)
            if matcher is kind:
                break
    return Verdict(tuple(failures))


def matches(live: Frame, recorded: Frame, rules: Rules) -> bool:
    """Whether ``live`` matches ``recorded`` (every applicable matcher agrees).

    A request or notification that goes as recorded (same method, members equal at a glance)
    is answered without running the matchers; anything else runs them."""
    lp, rp = live.parsed, recorded.parsed
    kind_ = lp.type
    if (
        (kind_ is MessageType.REQUEST or kind_ is MessageType.NOTIFICATION)
        and kind_ is rp.type
        and live.text
        and recorded.text
        and lp.has_msg
        and rp.has_msg
        and (lp.method == rp.method or not rules.compares_method)
        and _equal_at_a_glance(lp.msg, rp.msg, rules)
    ):
        return True
    return _matches_slowly(live, recorded, rules)


def _matches_slowly(live: Frame, recorded: Frame, rules: Rules) -> bool:
    """:func:`matches` by running every applicable matcher (what the fast path must agree
    with)."""
    try:
        for matcher in matchers_for(live, recorded):
            matcher(live, recorded, rules)
    except Mismatch:
        return False
    return True


def _article(noun: str) -> str:
    """``a request ...`` / ``an error ...``."""
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"
