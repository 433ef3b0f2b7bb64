"""Where a listener binds: ``ws://HOST:PORT`` or ``unix:///PATH``, parsed at the edge.

Pure code: parsing a URL, no socket. The listener (:mod:`proxy.wire.listener`) binds what
this describes; the options model (:mod:`proxy.core.options`) validates ``--listen`` with it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
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
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        if self.path is not None:
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}"
