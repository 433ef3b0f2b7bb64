"""``rpctape record``: live client and live server, recorded both ways.

The :class:`~proxy.wire.listener.Listener` accepts each client; :class:`LiveSide` is its far side:
for each upgrade it first connects to the upstream (:func:`~proxy.wire.upstream.open_upstream`)
and only then lets the listener accept the client, so a client of an unreachable upstream
gets HTTP 502 with the reason. The :class:`~proxy.wire.bridge.Bridge` records every message
before forwarding it and applies the rules.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.frames import CloseCode
from websockets.http11 import Request

from ..core.cassette import CassetteWriter, new_header
from ..core.recorder import Recorder
from ..core.redact import Redactor
from ..core.rules import Rule
from ..errors import UpstreamError
from .bridge import Bridge
from .legs import Leg, WebSocketLeg
from .listener import DEFAULT_MAX_SIZE, HandshakePolicy, ListenAddress, Listener, Refused
from .upstream import Upstream, open_upstream

log = logging.getLogger("rpctape.relay")


@dataclass(frozen=True)
class RelayOptions:
    """Settings of one recording relay; passed in, never read from globals."""

    upstream: str | None
    listen: ListenAddress = field(default_factory=lambda: ListenAddress("127.0.0.1", 0))
    max_size: int = DEFAULT_MAX_SIZE
    allow_origins: frozenset[str] = frozenset()
    token: str | None = None
    """When set, clients must send ``Authorization: Bearer <token>``; it is not passed on."""
    rules: tuple[Rule, ...] = ()
    """Rewrite rules applied in order to every message (see docs/rules.md)."""
    command: tuple[str, ...] = ()
    """Instead of ``upstream``: start this command per client and speak JSON Lines to it."""
    connect_timeout: float = 10.0
    close_timeout: float = 1.0
    """How long to wait for a peer to finish closing (the app-server never sends a close)."""
    handshake_timeout: float = 10.0
    """Seconds a client has to complete its upgrade request."""
    target: Upstream = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", Upstream.parse(self.upstream, self.command))

    @property
    def policy(self) -> HandshakePolicy:
        """The listener's checks."""
        return HandshakePolicy(
            self.max_size,
            self.allow_origins,
            self.token,
            self.handshake_timeout,
            self.close_timeout,
        )

    async def connect(self, request: Request) -> Leg:
        """Open the upstream for ``request``; raises :class:`UpstreamError`."""
        return await open_upstream(
            self.target,
            request,
            max_size=self.max_size,
            connect_timeout=self.connect_timeout,
            close_timeout=self.close_timeout,
            strip_auth=self.token is not None,
        )


class LiveSide:
    """The far side of ``record``: a live upstream per client, recorded by ``recorder``."""

    def __init__(self, options: RelayOptions, recorder: Recorder) -> None:
        self.options = options
        self.recorder = recorder

    async def prepare(self, request: Request) -> _LivePending:
        """Connect upstream before the client is accepted (502 when it cannot be reached)."""
        conn = self.recorder.new_connection()
        url = self.options.target.url_for(request.path)
        try:
            server = await self.options.connect(request)
        except UpstreamError as exc:
            self.recorder.error(
                conn,
                str(exc),
                stage="connect",
                status=502,
                path=request.path,
                headers=self.recorder.redactor.redact_headers(request.headers.raw_items()),
                upstream=url,
            )
            log.warning("conn %d: %s", conn, exc)
            raise Refused(502, f"rpctape: {exc}\n") from None
        return _LivePending(self, conn, server, request, url)


class _LivePending:
    def __init__(
        self, side: LiveSide, conn: int, server: Leg, request: Request, url: str
    ) -> None:
        self.side = side
        self.conn = conn
        self.server = server
        self.request = request
        self.url = url
        self.subprotocol = server.ws.subprotocol if isinstance(server, WebSocketLeg) else None

    async def open(self, client: WebSocketLeg) -> Bridge:
        side, request = self.side, self.request
        side.recorder.open(
            self.conn,
            path=request.path,
            headers=request.headers.raw_items(),
            subprotocol=self.subprotocol,
            upstream=self.url,
            transport=side.options.target.kind,
        )
        return Bridge(self.conn, client, self.server, side.recorder, side.options.rules)

    def abandon(self, reason: str, status: int) -> None:
        self.server.close(CloseCode.GOING_AWAY, "client handshake failed")
        self.side.recorder.error(self.conn, reason, stage="handshake", status=status)


class RecordingRelay(Listener):
    """A listener that relays each client to the upstream and records both ways.

    Use as ``async with RecordingRelay(options, recorder) as relay:``; ``relay.url`` is the
    address clients connect to. Leaving the block closes every connection cleanly.
    """

    def __init__(self, options: RelayOptions, recorder: Recorder) -> None:
        super().__init__(options.listen, options.policy, LiveSide(options, recorder))
        self.options = options
        self.recorder = recorder


@contextlib.asynccontextmanager
async def recording_proxy(
    upstream: str | None,
    cassette: Path | str,
    *,
    overwrite: bool = False,
    redact: bool = True,
    redact_keys: tuple[str, ...] = (),
    redact_values: tuple[str, ...] = (),
    meta: dict[str, Any] | None = None,
    **options: Any,
) -> AsyncIterator[str]:
    """Run a recording relay in-process on 127.0.0.1 (a free port); yield its ws URL.

    ``options`` are :class:`RelayOptions` fields (``command=(...)`` instead of an upstream
    URL starts that command per client). The cassette is closed on exit.
    """
    relay_options = RelayOptions(upstream, **options)
    target = relay_options.target
    header = new_header(target.url, transport=target.kind, meta=meta)
    writer = CassetteWriter(Path(cassette), header, overwrite=overwrite)
    recorder = Recorder(writer, Redactor.build(redact_keys, enabled=redact, values=redact_values))
    try:
        async with RecordingRelay(relay_options, recorder) as relay:
            yield relay.url
    finally:
        writer.close()


__all__ = [
    "DEFAULT_MAX_SIZE",
    "ListenAddress",
    "LiveSide",
    "RecordingRelay",
    "RelayOptions",
    "recording_proxy",
]
