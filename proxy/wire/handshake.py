"""What a client's far side sees of its arrival, and the policy every listener applies.

Plain data, no websockets: a stdio session (``rpctape-codex`` replaying, ``wrap``) imports
this and never loads the websocket library. The listener (:mod:`proxy.wire.listener`) hands
the far sides each upgrade request (websockets' ``Request`` fits :class:`Upgrade`); a stdio
session hands them :data:`STDIO_UPGRADE`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from ..core.options import DEFAULT_MAX_SIZE
from ..errors import RpctapeError


class UpgradeHeaders(Protocol):
    """The headers of an upgrade request, as the far sides read them."""

    def raw_items(self) -> Iterable[tuple[str, str]]: ...

    def get_all(self, key: str) -> list[str]: ...


class Upgrade(Protocol):
    """A client's arrival: the upgrade request's path and headers."""

    @property
    def path(self) -> str: ...

    @property
    def headers(self) -> UpgradeHeaders: ...


class _NoHeaders:
    def raw_items(self) -> Iterable[tuple[str, str]]:
        return ()

    def get_all(self, key: str) -> list[str]:
        return []


@dataclass(frozen=True)
class StdioUpgrade:
    """The one client of a stdio session: no path, no headers (a stdio recording's ``open``
    event has the same)."""

    path: str = ""
    headers: _NoHeaders = field(default_factory=_NoHeaders)


STDIO_UPGRADE = StdioUpgrade()


def is_stdio(upgrade: Upgrade) -> bool:
    """Whether ``upgrade`` is the stdio client's."""
    return isinstance(upgrade, StdioUpgrade)


def offered_subprotocols(upgrade: Upgrade) -> list[str]:
    """The subprotocols a client offers, in its order."""
    return [
        p.strip()
        for value in upgrade.headers.get_all("Sec-WebSocket-Protocol")
        for p in value.split(",")
        if p.strip()
    ]


@dataclass(frozen=True)
class HandshakePolicy:
    """What every mode checks before a client is accepted; passed in, never global."""

    max_size: int = DEFAULT_MAX_SIZE
    """Largest message, either way (a larger one closes the connection with 1009)."""
    allow_origins: frozenset[str] = frozenset()
    """Origins accepted on an upgrade; any other ``Origin`` gets 403, like the app-server."""
    token: str | None = None
    """When set, clients must send ``Authorization: Bearer <token>`` (401 otherwise)."""
    handshake_timeout: float = 10.0
    """Seconds a client has to complete its upgrade request before it is dropped."""
    close_timeout: float = 1.0
    """How long to wait for a peer to finish closing (the app-server never sends a close)."""


class Refused(RpctapeError):
    """Raised by a far side to answer an upgrade with a plain HTTP status."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(body)
        self.status = status
        self.body = body
