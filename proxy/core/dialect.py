"""The hook through which a protocol's own conventions reach the protocol-neutral core.

Pure code. The replay core knows JSON-RPC, not codex. Where a replay does better by knowing
the protocol (which client a connection is; how to end a conversation the recording cannot
go on with), it asks its :class:`Dialect`. :data:`NEUTRAL` knows nothing; codex's own is
``proxy.codex.dialect.CODEX``, which every door of rpctape passes in.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .cassette import Event
from .matching import Frame


class Dialect:
    """A protocol's conventions, as the replay core asks for them (subclass and override)."""

    name = "neutral"

    def client_name(self, frame: Frame | None) -> Any:
        """The name a client gives itself in ``frame`` (its first message), or ``None``.

        Called when a live connection is paired with a recording: the same name is preferred
        even when matching ignores it."""
        return None

    def failed_turn(self, pending: Iterable[Event], message: str) -> bytes | None:
        """The frame that tells the client its work in flight failed with ``message``, made
        from ``pending`` (the recorded server events not sent yet, in order), or ``None``.

        Sent before the replay closes a conversation the recording cannot go on with, so a
        client that hides close reasons still shows ``message``."""
        return None


NEUTRAL = Dialect()
"""The dialect that knows no protocol: no client names, no failed turns."""
