"""Rewrite rules: a pure engine that decides what happens to each message.

A rule sees one parsed message and decides: forward it changed (``patch``), answer it locally
(``reply``), ``drop`` it, ``delay`` it, ``inject`` an extra message, or ``close`` the
connection. Rules come from TOML files (docs/rules.md) or are built in code (the attestation
switches, :mod:`proxy.attest`). No sockets here: the relay carries out a :class:`Decision`.
"""

from __future__ import annotations

import copy
import logging
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import orjson

from .errors import UsageError
from .jsonrpc import Direction, MessageType, Parsed, id_key

log = logging.getLogger("rpctape.rules")

ACTIONS = ("patch", "reply", "drop", "delay", "inject", "close")

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
        "action": {"enum": list(ACTIONS)},
        "set": {"type": "object", "propertyNames": {"pattern": "^/"}},
        "remove": {"type": "array", "items": {"type": "string", "pattern": "^/"}},
        "result": {},
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "integer"}, "message": {"type": "string"}},
        },
        "ms": {"type": "integer", "minimum": 0},
        "to": {"enum": ["client", "server"]},
        "message": {"type": "object"},
        "position": {"enum": ["before", "after"]},
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


# --- JSON pointers (RFC 6901) -----------------------------------------------------------


def _tokens(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise RuleFailure(f"JSON pointer {pointer!r} must start with '/'")
    # RFC 6901 section 4: unescape "~1" then "~0".
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def _kind(node: Any) -> str:
    """A JSON value's kind, for messages: 'an object', 'a number', ..."""
    if isinstance(node, dict):
        return "an object"
    if isinstance(node, list):
        return "an array"
    if isinstance(node, str):
        return "a string"
    if isinstance(node, bool):
        return "a boolean"
    return "null" if node is None else "a number"


def _step(node: Any, token: str, pointer: str) -> Any:
    if isinstance(node, dict):
        if token not in node:
            raise KeyError(token)
        return node[token]
    if isinstance(node, list):
        if not token.isdigit() or int(token) >= len(node):
            raise KeyError(token)
        return node[int(token)]
    raise RuleFailure(f"{pointer}: cannot look up {token!r} in {_kind(node)}")


def resolve(doc: Any, pointer: str) -> Any:
    """The value at ``pointer``; raises ``KeyError`` when it does not exist."""
    node = doc
    for token in _tokens(pointer):
        node = _step(node, token, pointer)
    return node


def set_pointer(doc: Any, pointer: str, value: Any) -> None:
    """Set ``pointer`` in place, creating missing objects on the way; ``-`` appends."""
    tokens = _tokens(pointer)
    if not tokens:
        raise RuleFailure("cannot replace the whole message with a patch; use reply or inject")
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict) and node.get(token) is None:
            node[token] = {}
        try:
            node = _step(node, token, pointer)
        except KeyError:
            raise RuleFailure(f"{pointer}: no member {token!r}") from None
    last = tokens[-1]
    if isinstance(node, dict):
        node[last] = value
    elif isinstance(node, list) and last == "-":
        node.append(value)
    elif isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = value
    else:
        raise RuleFailure(f"{pointer}: cannot set {last!r} in {_kind(node)}")


def remove_pointer(doc: Any, pointer: str) -> None:
    """Remove ``pointer`` in place; a missing member is not an error."""
    tokens = _tokens(pointer)
    if not tokens:
        raise RuleFailure("cannot remove the whole message; use drop")
    parent = doc
    try:
        for token in tokens[:-1]:
            parent = _step(parent, token, pointer)
    except KeyError:
        return
    last = tokens[-1]
    if isinstance(parent, dict):
        parent.pop(last, None)
    elif isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        del parent[int(last)]


# --- rules ------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Rule:
    """One rule: a match and an action (see :data:`RULE_SCHEMA` and docs/rules.md)."""

    name: str
    action: str
    dir: Direction | None = None
    method: str | None = None
    response_to: str | None = None
    type: str | None = None
    where: dict[str, Any] = field(default_factory=dict)
    nth: int | None = None
    times: int | None = None
    set: dict[str, Any] = field(default_factory=dict)
    remove: tuple[str, ...] = ()
    result: Any = None
    error: dict[str, Any] | None = None
    ms: int = 0
    to: str | None = None
    message: dict[str, Any] | None = None
    position: str = "after"
    code: int = 1000
    reason: str = ""
    has_result: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<rules>") -> Rule:
        """Validate one rule table and build it; :class:`RuleError` names what is wrong."""
        name = data.get("name", "?")
        errors = sorted(
            jsonschema.Draft202012Validator(RULE_SCHEMA).iter_errors(data),
            key=lambda e: list(e.path),
        )
        if errors:
            where = "/".join(str(p) for p in errors[0].path) or "(rule)"
            raise RuleError(f"{source}: rule {name!r}: {where}: {errors[0].message}")
        fields = dict(data)
        if "dir" in fields:
            fields["dir"] = Direction(fields["dir"])
        fields["remove"] = tuple(fields.get("remove", ()))
        fields["has_result"] = "result" in data
        return cls(**fields)

    def matches(self, direction: Direction, parsed: Parsed, response_to: str | None) -> bool:
        """Whether the message fits this rule's match fields (not nth/times: see Engine)."""
        if self.dir is not None and direction is not self.dir:
            return False
        if self.method is not None and parsed.method != self.method:
            return False
        if self.response_to is not None and response_to != self.response_to:
            return False
        if self.type is not None and parsed.type.value != self.type:
            return False
        for pointer, expected in self.where.items():
            try:
                if resolve(parsed.msg, pointer) != expected:
                    return False
            except (KeyError, RuleFailure):
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
        if not self.rules or not parsed.has_msg:
            return decision
        msg = parsed.msg
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
                patched = self._act(rule, direction, msg, patched, parsed, decision)
            except RuleFailure as exc:
                what = parsed.method or parsed.type.value
                log.warning("rule %r failed on %s: %s (left unchanged)", rule.name, what, exc)
                continue
            self._fired[rule] = self._fired.get(rule, 0) + 1
            decision.applied.append((rule.name, rule.action))
            if decision.forward is None or decision.close is not None:
                break  # reply, drop and close end the message's journey
        if patched is not None and decision.forward is not None:
            decision.forward, decision.changed = _dumps(patched), True
        return decision

    def _act(
        self,
        rule: Rule,
        direction: Direction,
        msg: Any,
        patched: Any,
        parsed: Parsed,
        decision: Decision,
    ) -> Any:
        action = rule.action
        if action == "patch":
            work = copy.deepcopy(patched if patched is not None else msg)
            if not isinstance(work, dict):
                raise RuleFailure("only JSON objects can be patched")
            for pointer, value in rule.set.items():
                set_pointer(work, pointer, copy.deepcopy(value))
            for pointer in rule.remove:
                remove_pointer(work, pointer)
            return work
        if action == "reply":
            if parsed.type is not MessageType.REQUEST:
                raise RuleFailure(f"reply needs a request, got a {parsed.type.value}")
            answer: dict[str, Any] = {"id": parsed.id}
            if rule.has_result:
                answer["result"] = rule.result
            else:
                answer["error"] = rule.error
            decision.to_sender.append((rule.name, _dumps(answer)))
            decision.forward = None
        elif action == "drop":
            decision.forward = None
        elif action == "delay":
            decision.delay_ms += rule.ms
        elif action == "inject":
            assert rule.message is not None and rule.to is not None
            towards = Direction.C2S if rule.to == "server" else Direction.S2C
            message = dict(rule.message)
            if message.get("id") == AUTO_ID:
                message["id"] = self._allocate_id(towards)
            target = decision.before if rule.position == "before" else decision.after
            target.append((rule.name, towards, _dumps(message)))
        elif action == "close":
            decision.close = (rule.code, rule.reason or f"closed by rpctape rule {rule.name!r}")
            decision.forward = None
        return patched

    def _allocate_id(self, towards: Direction) -> str:
        """An id for a request rpctape sends ``towards`` a peer, unused on this connection."""
        while True:
            self._next_id += 1
            candidate = f"rpctape-{self._next_id}"
            if id_key(candidate) not in self._peer_ids[towards]:
                self._injected[towards].add(id_key(candidate))
                return candidate
