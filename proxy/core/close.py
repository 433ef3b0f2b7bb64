"""A close of a websocket connection, and its reason clipped to what RFC 6455 allows.

Pure code. The planner decides closes (:class:`Close`), the bridge and the listener send
them; every reason goes through :func:`clip_reason` on its way out.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_CLOSE_REASON = 123
"""RFC 6455 section 5.5: a close frame's payload is at most 125 bytes, 2 of them the code."""


@dataclass(frozen=True)
class Close:
    """Close the live connection with this code and reason."""

    code: int
    reason: str


def clip_reason(text: str, limit: int = MAX_CLOSE_REASON) -> str:
    """``text`` cut to ``limit`` bytes of UTF-8 (on a character boundary, ending in ``...``)."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[: limit - 3].decode("utf-8", errors="ignore") + "..."
