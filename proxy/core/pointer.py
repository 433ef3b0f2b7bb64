"""JSON Pointer (RFC 6901), in one place: parsing, escaping, reading and writing.

Parsing and escaping come from the ``jsonpointer`` library; what rpctape adds is the
behaviour its rules need (``set`` creates missing objects on the way, ``remove`` ignores a
missing member) and errors that say which pointer and which token went wrong.
"""

from __future__ import annotations

from typing import Any

from jsonpointer import JsonPointer, JsonPointerException, escape

from ..errors import UsageError


class PointerError(Exception):
    """A pointer cannot be applied to a document (a rule reports it and moves on)."""


def token(key: str | int) -> str:
    """One reference token (RFC 6901 section 3: ``~`` is ``~0``, ``/`` is ``~1``)."""
    escaped: str = escape(str(key))
    return escaped


def join(base: str, key: str | int) -> str:
    """``base`` followed by the token of ``key``."""
    return f"{base}/{escape(str(key))}"


def of(path: Any) -> str:
    """The pointer of a sequence of keys (e.g. a jsonschema error's ``absolute_path``)."""
    return "".join("/" + escape(str(key)) for key in path)


def parts(pointer: str) -> list[str]:
    """The unescaped tokens of ``pointer``; :class:`PointerError` if it is malformed."""
    try:
        return list(JsonPointer(pointer).parts)
    except JsonPointerException as exc:
        raise PointerError(f"invalid JSON pointer {pointer!r}: {exc}") from None


def check(pointer: str) -> str:
    """Validate a pointer a person gave (an option, a rule); return it unchanged."""
    if pointer and not pointer.startswith("/"):
        raise UsageError(
            f"invalid JSON pointer {pointer!r}: it must start with '/', e.g. /params/cwd"
        )
    # RFC 6901 section 4: "~" is only valid as "~0" or "~1".
    for part in pointer.split("/")[1:]:
        if "~" in part.replace("~0", "").replace("~1", ""):
            raise UsageError(f"invalid JSON pointer {pointer!r}: '~' must be written '~0'")
    return pointer


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


def _step(node: Any, part: str, pointer: str) -> Any:
    if isinstance(node, dict):
        if part not in node:
            raise KeyError(part)
        return node[part]
    if isinstance(node, list):
        if not part.isdigit() or int(part) >= len(node):
            raise KeyError(part)
        return node[int(part)]
    raise PointerError(f"{pointer}: cannot look up {part!r} in {_kind(node)}")


def resolve(doc: Any, pointer: str) -> Any:
    """The value at ``pointer``; ``KeyError`` when it does not exist."""
    node = doc
    for part in parts(pointer):
        node = _step(node, part, pointer)
    return node


def set_value(doc: Any, pointer: str, value: Any) -> None:
    """Set ``pointer`` in place, creating missing objects on the way; ``-`` appends."""
    tokens = parts(pointer)
    if not tokens:
        raise PointerError("cannot replace the whole message with a patch; use reply or inject")
    node = doc
    for part in tokens[:-1]:
        if isinstance(node, dict) and node.get(part) is None:
            node[part] = {}
        try:
            node = _step(node, part, pointer)
        except KeyError:
            raise PointerError(f"{pointer}: no member {part!r}") from None
    last = tokens[-1]
    if isinstance(node, dict):
        node[last] = value
    elif isinstance(node, list) and last == "-":
        node.append(value)
    elif isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = value
    else:
        raise PointerError(f"{pointer}: cannot set {last!r} in {_kind(node)}")


def remove(doc: Any, pointer: str) -> None:
    """Remove ``pointer`` in place; a missing member is not an error."""
    tokens = parts(pointer)
    if not tokens:
        raise PointerError("cannot remove the whole message; use drop")
    parent = doc
    try:
        for part in tokens[:-1]:
            parent = _step(parent, part, pointer)
    except KeyError:
        return
    last = tokens[-1]
    if isinstance(parent, dict):
        parent.pop(last, None)
    elif isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        del parent[int(last)]
