"""Redaction: keep secrets out of cassettes, never out of the wire.

Pure code. A JSON member is a secret when its key, normalised (lower case, ``_`` and ``-``
removed), is exactly one of the configured keys: ``access_token`` and ``accessToken`` are
secrets, ``tokenUsage`` is not. A secret value other than ``null`` is replaced by
``"<redacted:xxxxxxxx>"``, the first 8 hex digits of its SHA-256, so equal secrets stay
recognisably equal.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

DEFAULT_KEYS: frozenset[str] = frozenset(
    {
        "token",
        "accesstoken",
        "refreshtoken",
        "idtoken",
        "authtoken",
        "bearertoken",
        "sessiontoken",
        "apikey",
        "openaiapikey",
        "xapikey",
        "secret",
        "clientsecret",
        "privatekey",
        "password",
        "passwd",
        "authorization",
        "proxyauthorization",
        "cookie",
        "setcookie",
    }
)
"""Normalised keys (and header names) redacted by default; documented in docs/cassette-format.md."""


_FOLD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")


def normalise_key(key: str) -> str:
    """Lower-case ``key`` and drop ``_`` and ``-``: ``Access-Token`` becomes ``accesstoken``."""
    return key.lower().replace("_", "").replace("-", "")


_MARKER = re.compile(r"<redacted:[0-9a-f]{8}>")
"""What :func:`marker` returns: such a value is already redacted."""


def _is_marker(value: Any) -> bool:
    return isinstance(value, str) and _MARKER.fullmatch(value) is not None


def marker(value: Any) -> str:
    """The replacement for a secret: ``<redacted:`` + 8 hex digits of its SHA-256 + ``>``."""
    data = value.encode() if isinstance(value, str) else orjson.dumps(value)
    return f"<redacted:{hashlib.sha256(data).hexdigest()[:8]}>"


def _pointer_token(key: str | int) -> str:
    # RFC 6901 section 3: "~" is written "~0" and "/" is written "~1".
    return str(key).replace("~", "~0").replace("/", "~1")


@dataclass(frozen=True)
class Redactor:
    """Replaces secret members and headers; ``enabled=False`` records everything."""

    keys: frozenset[str] = DEFAULT_KEYS
    enabled: bool = True
    _probe: re.Pattern[bytes] = field(init=False, repr=False, compare=False)
    _quick: re.Pattern[bytes] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        sep = "[-_]*"
        alternatives = "|".join(
            sep.join(re.escape(ch) for ch in key) for key in sorted(self.keys) if key
        )
        # A cheap scan of the raw frame: a key that normalises to a secret looks like
        # "<letters with - or _ between>" followed by a colon. Escapes force the full walk.
        pattern = rf'"{sep}(?:{alternatives}){sep}"\s*:|\\u' if alternatives else r"(?!x)x"
        object.__setattr__(self, "_probe", re.compile(pattern.encode(), re.IGNORECASE))
        # A cheaper first pass: fold ASCII case, drop "-" and "_", and look for any key at
        # all. A key that contains another key ("accesstoken" holds "token") adds nothing.
        quick = None
        if all(key.isascii() for key in self.keys):
            anchors = sorted(
                k for k in self.keys if k and not any(o != k and o in k for o in self.keys)
            )
            quick = re.compile(b"|".join([*(re.escape(a.encode()) for a in anchors), rb"\\u"]))
        object.__setattr__(self, "_quick", quick)

    @classmethod
    def build(cls, extra_keys: Iterable[str] = (), *, enabled: bool = True) -> Redactor:
        """The default key list plus ``extra_keys`` (normalised for you)."""
        return cls(DEFAULT_KEYS | {normalise_key(k) for k in extra_keys}, enabled)

    def is_secret(self, key: str) -> bool:
        """Whether a member or header named ``key`` is redacted."""
        return self.enabled and normalise_key(key) in self.keys

    def might_redact(self, raw: bytes) -> bool:
        """Fast pre-check on a raw frame: ``False`` means :meth:`redact_json` changes nothing."""
        if not self.enabled:
            return False
        if self._quick is not None and self._quick.search(raw.translate(_FOLD, b"-_")) is None:
            return False
        return self._probe.search(raw) is not None

    def redact_json(self, msg: Any) -> tuple[Any, list[str]]:
        """Return ``msg`` with secrets replaced, and the JSON pointers that were replaced.

        The input is not modified; unchanged subtrees are shared with the result.
        """
        if not self.enabled:
            return msg, []
        pointers: list[str] = []
        return self._walk(msg, "", pointers), pointers

    def _walk(self, node: Any, path: str, pointers: list[str]) -> Any:
        if isinstance(node, dict):
            out: dict[str, Any] | None = None
            for key, value in node.items():
                here = f"{path}/{_pointer_token(key)}"
                if value is not None and normalise_key(key) in self.keys:
                    # A marker is kept as it is: redacting twice changes nothing.
                    new = value if _is_marker(value) else marker(value)
                    pointers.append(here)
                else:
                    new = self._walk(value, here, pointers)
                if new is not value:
                    out = dict(node) if out is None else out
                    out[key] = new
            return node if out is None else out
        if isinstance(node, list):
            items: list[Any] | None = None
            for index, value in enumerate(node):
                new = self._walk(value, f"{path}/{index}", pointers)
                if new is not value:
                    items = list(node) if items is None else items
                    items[index] = new
            return node if items is None else items
        return node

    def redact_headers(self, headers: Iterable[tuple[str, str]]) -> dict[str, str]:
        """Headers as a dict (repeated names joined with ``, ``), secret values replaced."""
        out: dict[str, str] = {}
        for name, value in headers:
            shown = marker(value) if self.is_secret(name) and not _is_marker(value) else value
            out[name] = f"{out[name]}, {shown}" if name in out else shown
        return out
