"""Rewrite rules: a pure engine that decides what happens to each message.

A rule sees one parsed message and decides: forward it changed (``patch``), answer it locally
(``reply``), ``drop`` it, ``delay`` it, ``inject`` an extra message, or ``close`` the
connection. Rules come from TOML files (docs/rules.md) or are built in code (the attestation
switches, :mod:`proxy.core.attest`; the faults, :mod:`proxy.core.faults`, whose rules carry out
their own action through :meth:`Rule.apply`). No sockets here: the relay carries out a
:class:`Decision`.
"""

from __future__ import annotations

import copy
import enum
import functools
import logging
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..errors import UsageError
from . import pointer
from .jsonrpc import Direction, MessageType, Parsed, id_key
from .pointer import PointerError

log = logging.getLogger("rpctape.rules")


class Action(enum.StrEnum):
    """What a rule does to the message it matches (docs/rules.md)."""

    PATCH = "patch"
    REPLY = "reply"
    DROP = "drop"
    DELAY = "delay"
    INJECT = "inject"
    CLOSE = "close"
    FAULT = "fault"
    """A fault (:mod:`proxy.core.faults`): built in code only, never in a rules file."""


FILE_ACTIONS = tuple(a for a in Action if a is not Action.FAULT)
"""The actions a rules file may name."""


class Towards(enum.StrEnum):
    """Which peer an injected message goes to."""

    CLIENT = "client"
    SERVER = "server"

    @property
    def direction(self) -> Direction:
        """The direction the injected message travels."""
        return Direction.C2S if self is Towards.SERVER else Direction.S2C


class Position(enum.StrEnum):
    """Whether an injected message goes before or after the matched one."""

    BEFORE = "before"
    AFTER = "after"


RULE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "action"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "dir": {"enum": ["c2s", "s2c"]},
        "method": {"type": "string"},
        "response_to": {"type": "string"},
        "type": {"enum": [t.value for t in MessageType]},
        "where": {"type": "object", "propertyNames": {"pattern": "^(/.*)?$"}},
        "nth": {"type": "integer", "minimum": 1},
        "times": {"type": "integer", "minimum": 1},
        "action": {"enum": [a.value for a in FILE_ACTIONS]},
        "set": {"type": "object", "propertyNames": {"pattern": "^/"}},
        "remove": {"type": "array", "items": {"type": "string", "pattern": "^/"}},
        "result": {},
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "integer"}, "message": {"type": "string"}},
        },
        "ms": {"type": "integer", "minimum": 0},
        "to": {"enum": [t.value for t in Towards]},
        "message": {"type": "object"},
        "position": {"enum": [p.value for p in Position]},
        "code": {"type": "integer", "minimum": 1000, "maximum": 4999},
        "reason": {"type": "string", "maxLength": 123},
    },
    "allOf": [
        {
            "if": {"properties": {"action": {"const": "patch"}}},
            "then": {"anyOf": [{"required": ["set"]}, {"required": ["remove"]}]},
        },
        {
            "if": {"properties": {"action": {"const": "reply"}}},
            "then": {"oneOf": [{"required": ["result"]}, {"required": ["error"]}]},
        },
        {"if": {"properties": {"action": {"const": "delay"}}}, "then": {"required": ["ms"]}},
        {
            "if": {"properties": {"action": {"const": "inject"}}},
            "then": {"required": ["to", "message"]},
        },
    ],
}
"""JSON Schema of one ``[[rules]]`` entry of a rules file."""

AUTO_ID = "auto"
"""An injected request whose ``id`` is ``"auto"`` gets an id that no peer uses."""


class RuleError(UsageError):
    """A rules file or rule is invalid (raised at startup)."""


class RuleFailure(Exception):
    """A rule could not be applied to one message (logged; the message goes on unchanged)."""


# --- rules ------------------------------------------------------------------------------




@functools.cache
def _validator() -> Any:
    """The validator of :data:`RULE_SCHEMA`, made when the first rule is: jsonschema and
    what it imports take ~60 ms, which a replay or a recording without rules never pays."""
    import jsonschema

    return jsonschema.Draft202012Validator(RULE_SCHEMA)


@dataclass(frozen=True, eq=False)
class Rule:
    """One rule: a match and an action (see :data:`RULE_SCHEMA` and docs/rules.md).

    Built from a rules file (:meth:`from_dict`) or in code; either way it is checked against
    :data:`RULE_SCHEMA` when it is made. A ``reply`` sends ``error`` when it is set, else
    ``result`` (``null`` when not given).
    """

    name: str
    action: Action
    dir: Direction | None = None
    method: str | None = None
    response_to: str | None = None
    type: MessageType | None = None
    where: dict[str, Any] = field(default_factory=dict)
    nth: int | None = None
    times: int | None = None
    set: dict[str, Any] = field(default_factory=dict)
    remove: tuple[str, ...] = ()
    result: Any = None
    error: dict[str, Any] | None = None
    ms: int = 0
    to: Towards | None = None
    message: dict[str, Any] | None = None
    position: Position = Position.AFTER
    code: int = 1000
    reason: str = ""

    def __post_init__(self) -> None:
        for name, kind in (("action", Action), ("to", Towards), ("position", Position),
                           ("type", MessageType), ("dir", Direction)):  # fmt: skip
            value = getattr(self, name)
            if value is not None and not isinstance(value, kind):
                try:
                    object.__setattr__(self, name, kind(value))
                except ValueError:
                    valid = ", ".join(k.value for k in kind)
                    raise RuleError(
                        f"rule {self.name!r}: {name} {value!r} is not one of: {valid}"
                    ) from None
        object.__setattr__(self, "remove", tuple(self.remove))
        errors = sorted(_validator().iter_errors(self.as_dict()), key=lambda e: list(e.path))
        if errors:
            where = "/".join(str(p) for p in errors[0].path) or "(rule)"
            raise RuleError(f"rule {self.name!r}: {where}: {errors[0].message}")

    def as_dict(self) -> dict[str, Any]:
        """The rule as a rules-file table (what :data:`RULE_SCHEMA` describes)."""
        table: dict[str, Any] = {"name": self.name, "action": self.action.value}
        for name in ("method", "response_to", "nth", "times", "error", "message"):
            if getattr(self, name) is not None:
                table[name] = getattr(self, name)
        for name, value in (("dir", self.dir), ("type", self.type), ("to", self.to)):
            if value is not None:
                table[name] = value.value
        for name in ("where", "set"):
            if getattr(self, name):
                table[name] = getattr(self, name)
        if self.remove:
            table["remove"] = list(self.remove)
        if self.action is Action.REPLY and self.error is None:
            table["result"] = self.result
        if self.action is Action.DELAY:
            table["ms"] = self.ms
        if self.action is Action.INJECT:
            table["position"] = self.position.value
        if self.action is Action.CLOSE:
            table["code"] = self.code
            if self.reason:
                table["reason"] = self.reason
        return table

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<rules>") -> Rule:
        """Validate one rule table and build it; :class:`RuleError` names what is wrong."""
        name = data.get("name", "?")
        errors = sorted(_validator().iter_errors(data), key=lambda e: list(e.path))
        if errors:
            where = "/".join(str(p) for p in errors[0].path) or "(rule)"
            raise RuleError(f"{source}: rule {name!r}: {where}: {errors[0].message}")
        return cls(**data)

    @property
    def label(self) -> str:
        """What the cassette names this rule's action (``rules: [{"rule", "action"}]``)."""
        return self.action.value

    def apply(
        self,
        engine: Engine,
        direction: Direction,
        raw: bytes,
        parsed: Parsed,
        patched: Any,
        decision: Decision,
    ) -> Any:
        """Carry out this rule on a message (``raw``, as received) it matched: change
        ``decision``; return the patched message so far (``patched``, or a new one). Raise
        :class:`RuleFailure` when it cannot apply. Rules built in code
        (:mod:`proxy.core.faults`) override this."""
        return engine._act(self, direction, parsed, patched, decision)

    def matches(self, direction: Direction, parsed: Parsed, response_to: str | None) -> bool:
        """Whether the message fits this rule's match fields (not nth/times: see Engine)."""
        if self.dir is not None and direction is not self.dir:
            return False
        if self.method is not None and parsed.method != self.method:
            return False
        if self.response_to is not None and response_to != self.response_to:
            return False
        if self.type is not None and parsed.type is not self.type:
            return False
        for where, expected in self.where.items():
            try:
                if pointer.resolve(parsed.msg, where) != expected:
                    return False
            except (KeyError, PointerError):
                return False
        return True


def load_rules(paths: Iterable[Path]) -> list[Rule]:
    """Read rule files (``[[rules]]`` tables) in order; fail with file, rule and problem."""
    rules: list[Rule] = []
    names: set[str] = set()
    for path in paths:
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise RuleError(f"rules file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise RuleError(f"{path}: not valid TOML: {exc}") from None
        unknown = set(data) - {"rules"}
        if unknown or not isinstance(data.get("rules", []), list):
            raise RuleError(f"{path}: expected only [[rules]] tables, found {sorted(unknown)}")
        for table in data.get("rules", []):
            rule = Rule.from_dict(table, str(path))
            if rule.name in names:
                raise RuleError(f"{path}: rule {rule.name!r}: the name is used twice")
            names.add(rule.name)
            rules.append(rule)
    return rules


# --- decisions --------------------------------------------------------------------------


@dataclass
class Decision:
    """What to do with one message. The relay records it all, then carries it out."""

    forward: bytes | None
    """The frame to forward (the original bytes if unchanged); ``None``: not forwarded."""
    changed: bool = False
    delay_ms: int = 0
    to_sender: list[tuple[str, bytes]] = field(default_factory=list)
    """Local answers ``(rule name, frame)``, sent back the way the message came."""
    before: list[tuple[str, Direction, bytes]] = field(default_factory=list)
    after: list[tuple[str, Direction, bytes]] = field(default_factory=list)
    """Injected ``(rule name, direction it travels, frame)``, before / after the message."""
    instead: list[tuple[str, bytes]] = field(default_factory=list)
    """Frames rpctape sends on ``(rule name, frame)``, the way the message was going, in its
    place (the message itself is not forwarded): a fault's error answer or garbage."""
    close: tuple[int, str] | None = None
    hidden: bool = False
    """A reply to a request rpctape injected: not forwarded."""
    applied: list[tuple[str, str]] = field(default_factory=list)
    """``(rule name, action)`` of every rule that acted, in order."""

    @property
    def untouched(self) -> bool:
        """Whether the message goes on as it came, alone and on time."""
        return not (
            self.changed
            or self.forward is None
            or self.delay_ms
            or self.to_sender
            or self.instead
            or self.before
            or self.after
            or self.close
        )


def _dumps(msg: Any) -> bytes:
    return orjson.dumps(msg)


class Engine:
    """Applies rules to the messages of one connection, in order; keeps nth/times counts.

    Also allocates ids for injected requests (never one a peer has used on this connection)
    and hides the replies to them.
    """

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = list(rules)
        self._seen: dict[Rule, int] = {}
        self._fired: dict[Rule, int] = {}
        self._peer_ids: dict[Direction, set[str]] = {Direction.C2S: set(), Direction.S2C: set()}
        self._injected: dict[Direction, set[str]] = {Direction.C2S: set(), Direction.S2C: set()}
        self._next_id = 0
        self._stalled: dict[Direction, str] = {}
        """Directions in which nothing more goes, and the rule that stalled each."""

    def stall(self, direction: Direction, rule: str) -> None:
        """From now on nothing more goes ``direction`` on this connection (a ``stall``
        fault): every later message that way is not forwarded, and rpctape sends nothing that
        way either."""
        self._stalled.setdefault(direction, rule)

    def stalled(self, direction: Direction) -> str | None:
        """The rule that stalled ``direction``, if one did."""
        return self._stalled.get(direction)

    def decide(
        self, direction: Direction, raw: bytes, parsed: Parsed, response_to: str | None
    ) -> Decision:
        """Run every rule on one message; a rule that fails is logged and skipped."""
        decision = Decision(forward=raw)
        key = parsed.id_key
        if parsed.type is MessageType.REQUEST and key is not None:
            self._peer_ids[direction].add(key)
        if parsed.type in (MessageType.RESPONSE, MessageType.ERROR) and key is not None:
            injected = self._injected[direction.reverse]
            if key in injected:
                injected.discard(key)
                decision.forward, decision.hidden = None, True
                return decision
        if self._stalled:
            stalled = self._stalled.get(direction)
            if stalled is not None:
                decision.forward = None
                decision.applied.append((stalled, "stall"))
                return decision
        if not self.rules or not parsed.has_msg:
            return decision
        patched: Any = None
        for rule in self.rules:
            if not rule.matches(direction, parsed, response_to):
                continue
            self._seen[rule] = seen = self._seen.get(rule, 0) + 1
            if rule.nth is not None and seen != rule.nth:
                continue
            if rule.times is not None and self._fired.get(rule, 0) >= rule.times:
                continue
            try:
                patched = rule.apply(self, direction, raw, parsed, patched, decision)
            except (RuleFailure, PointerError) as exc:
                what = parsed.method or parsed.type.value
                log.warning("rule %r failed on %s: %s (left unchanged)", rule.name, what, exc)
                continue
            except Exception:  # a broken rule is logged in full; the connection lives on
                what = parsed.method or parsed.type.value
                log.exception("rule %r raised on %s (left unchanged)", rule.name, what)
                continue
            self._fired[rule] = self._fired.get(rule, 0) + 1
            decision.applied.append((rule.name, rule.label))
            if decision.forward is None or decision.close is not None:
                break  # reply, drop and close end the message's journey
        if patched is not None and decision.forward is not None:
            decision.forward, decision.changed = _dumps(patched), True
        if self._stalled:
            self._mute(direction, decision)
        return decision

    def _mute(self, direction: Direction, decision: Decision) -> None:
        """Take out what rpctape would send in a stalled direction."""
        if direction.reverse in self._stalled:
            decision.to_sender.clear()
        for injected in (decision.before, decision.after):
            injected[:] = [i for i in injected if i[1] not in self._stalled]

    def _act(
        self, rule: Rule, direction: Direction, parsed: Parsed, patched: Any, decision: Decision
    ) -> Any:
        """Carry out a rules-file action (:class:`Action`) of ``rule`` on one message."""
        action, msg = rule.action, parsed.msg
        if action is Action.PATCH:
            work = copy.deepcopy(patched if patched is not None else msg)
            if not isinstance(work, dict):
                raise RuleFailure("only JSON objects can be patched")
            for where, value in rule.set.items():
                pointer.set_value(work, where, copy.deepcopy(value))
            for where in rule.remove:
                pointer.remove(work, where)
            return work
        if action is Action.REPLY:
            if parsed.type is not MessageType.REQUEST:
                raise RuleFailure(f"reply needs a request, got a {parsed.type.value}")
            answer: dict[str, Any] = {"id": parsed.id}
            if rule.error is not None:
                answer["error"] = rule.error
            else:
                answer["result"] = rule.result
            decision.to_sender.append((rule.name, _dumps(answer)))
            decision.forward = None
        elif action is Action.DROP:
            decision.forward = None
        elif action is Action.DELAY:
            decision.delay_ms += rule.ms
        elif action is Action.INJECT:
            assert rule.message is not None and rule.to is not None
            towards = rule.to.direction
            message = dict(rule.message)
            if message.get("id") == AUTO_ID:
                message["id"] = self._allocate_id(towards)
            target = decision.before if rule.position is Position.BEFORE else decision.after
            target.append((rule.name, towards, _dumps(message)))
        elif action is Action.CLOSE:
            decision.close = (rule.code, rule.reason or f"closed by rpctape rule {rule.name!r}")
            decision.forward = None
        elif action is Action.FAULT:
            raise RuleFailure("a fault rule carries out its own action (Rule.apply)")
        return patched

    def _allocate_id(self, towards: Direction) -> str:
        """An id for a request rpctape sends ``towards`` a peer, unused on this connection."""
        while True:
            self._next_id += 1
            candidate = f"rpctape-{self._next_id}"
            if id_key(candidate) not in self._peer_ids[towards]:
                self._injected[towards].add(id_key(candidate))
                return candidate
