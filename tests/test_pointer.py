"""Unit and property tests of proxy.core.pointer (RFC 6901 in one place)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.core import pointer
from proxy.core.pointer import PointerError
from proxy.errors import UsageError


def test_resolve_set_remove() -> None:
    """Resolve, set (creating objects, replacing nulls, appending) and remove."""
    doc: dict[str, Any] = {"a/b": {"m~n": [1, 2]}, "p": {"caps": None}}
    assert pointer.resolve(doc, "/a~1b/m~0n/1") == 2
    with pytest.raises(KeyError):
        pointer.resolve(doc, "/nope")
    pointer.set_value(doc, "/p/caps/requestAttestation", True)
    pointer.set_value(doc, "/x/y", 1)
    pointer.set_value(doc, "/a~1b/m~0n/-", 3)
    pointer.remove(doc, "/a~1b/m~0n/0")
    pointer.remove(doc, "/missing/member")
    assert doc == {
        "a/b": {"m~n": [2, 3]},
        "p": {"caps": {"requestAttestation": True}},
        "x": {"y": 1},
    }


def test_errors_name_the_pointer() -> None:
    """Malformed pointers and impossible steps say which pointer and why."""
    with pytest.raises(PointerError, match="invalid JSON pointer 'x'"):
        pointer.parts("x")
    with pytest.raises(PointerError, match=r"/a/b: cannot look up 'b' in a number"):
        pointer.resolve({"a": 1}, "/a/b")
    with pytest.raises(PointerError, match="cannot replace the whole message"):
        pointer.set_value({}, "", 1)
    with pytest.raises(UsageError, match="must start with '/'"):
        pointer.check("params/cwd")
    with pytest.raises(UsageError, match="'~' must be written '~0'"):
        pointer.check("/a~2")
    assert pointer.check("/a~0b~1c") == "/a~0b~1c"


keys = st.text(max_size=8)


@given(st.lists(keys, max_size=5))
def test_of_and_parts_are_inverse(path: list[str]) -> None:
    """Law: the pointer built from any keys parses back to exactly those keys."""
    assert pointer.parts(pointer.of(path)) == path
    built = ""
    for key in path:
        built = pointer.join(built, key)
    assert built == pointer.of(path)


@given(st.lists(keys, min_size=1, max_size=4), st.integers())
def test_set_then_resolve(path: list[str], value: int) -> None:
    """Law: after set_value at any pointer, resolve gives the value back."""
    doc: dict[str, Any] = {}
    where = pointer.of(path)
    pointer.set_value(doc, where, value)
    assert pointer.resolve(doc, where) == value
