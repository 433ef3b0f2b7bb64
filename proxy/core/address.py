"""Where a listener binds and where a relay connects, parsed at the edge.

Pure code: parsing a URL or a command, no socket. The listener (:mod:`proxy.wire.listener`)
binds a :class:`ListenAddress`; :func:`proxy.wire.upstream.open_upstream` opens an
:class:`Upstream`; the options model (:mod:`proxy.core.options`) validates ``--listen`` and
``--upstream`` with them.
"""

from __future__ import annotations

import enum
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import UsageError


@dataclass(frozen=True)
class ListenAddress:
    """A parsed ``--listen`` URL: ``ws://HOST:PORT`` or ``unix:///PATH`` (websocket over a
    unix socket, as the app-server's own ``--listen unix://PATH``)."""

    host: str
    port: int
    path: str | None = None

    @classmethod
    def parse(cls, url: str) -> ListenAddress:
        """Parse ``ws://HOST:PORT`` (port 0 picks a free one) or ``unix:///PATH``."""
        parts = urlsplit(url)
        if parts.scheme == "unix" and parts.path and not parts.netloc:
            return cls("localhost", 0, parts.path)
        try:
            port = parts.port
        except ValueError:
            port = None
            bad_port = True
        else:
            bad_port = False
        if parts.scheme != "ws" or not parts.hostname or port is None:
            why = " (the port must be 0 to 65535)" if bad_port else ""
            raise UsageError(
                f"--listen must look like ws://127.0.0.1:4223 or unix:///path/to.sock, "
                f"not {url!r}{why}"
            )
        return cls(parts.hostname, port)

    @property
    def is_loopback(self) -> bool:
        """Whether only this machine can connect (always true for a unix socket)."""
        if self.path is not None or self.host == "localhost":
            return True
        import ipaddress  # only a --listen with a host name asks

        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        if self.path is not None:
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}"


class Transport(enum.StrEnum):
    """How rpctape reaches the upstream (the cassette's ``transport``)."""

    WEBSOCKET = "websocket"
    UNIX = "unix"
    STDIO = "stdio"


def default_control_socket() -> Path:
    """The app-server's default control socket: ``$CODEX_HOME/app-server-control/...sock``."""
    home = Path(os.environ.get("CODEX_HOME") or Path.home() / ".codex")
    return home / "app-server-control" / "app-server-control.sock"


@dataclass(frozen=True)
class Upstream:
    """Where the relay connects: a websocket URL, a unix socket, or a command over stdio."""

    kind: Transport
    url: str
    """As recorded in the cassette: ``ws://...``, ``unix:///path``, ``stdio:codex app-server``."""
    socket: str | None = None
    command: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str | None, command: Sequence[str] = ()) -> Upstream:
        """``ws://HOST:PORT``, ``unix:///PATH``, ``unix://`` (the default control socket), or
        a command (``-- codex app-server ARGS``) spoken to over its stdin and stdout."""
        if command:
            if text:
                raise UsageError("give either --upstream or a command after --, not both")
            return cls(Transport.STDIO, "stdio:" + shlex.join(command), command=tuple(command))
        if not text:
            raise UsageError("give --upstream ws://HOST:PORT or unix://PATH, or -- COMMAND")
        parts = urlsplit(text)
        if parts.scheme == "unix" and not parts.netloc:
            path = parts.path or str(default_control_socket())
            return cls(Transport.UNIX, f"unix://{path}", socket=path)
        try:
            port = parts.port
        except ValueError:
            port = 0
        if port == 0:
            raise UsageError(f"--upstream {text!r}: the port must be a number from 1 to 65535")
        if parts.scheme in ("ws", "wss") and parts.hostname:
            return cls(Transport.WEBSOCKET, text)
        raise UsageError(
            f"--upstream must be a ws:// URL or unix://PATH (or a command after --), not {text!r}"
        )

    def url_for(self, request_path: str) -> str:
        """The URL a client's upgrade to ``request_path`` is relayed to (as recorded)."""
        if self.kind is Transport.WEBSOCKET:
            return upstream_url(self.url, request_path)
        return self.url


def upstream_url(upstream: str, request_path: str) -> str:
    """The client's path and query go upstream when the upstream URL names no path."""
    parts = urlsplit(upstream)
    if parts.path in ("", "/") and not parts.query:
        return f"{parts.scheme}://{parts.netloc}{request_path}"
    return upstream
