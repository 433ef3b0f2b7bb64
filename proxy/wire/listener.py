"""The listener: one websocket listener and one opening handshake for every mode.

``rpctape record`` and ``rpctape replay`` (and every record mode) accept clients here, so
health checks, the ``Origin`` and token checks, the handshake timeout and the size limits
cannot differ between them. Each accepted TCP or unix connection is a client
:class:`~proxy.wire.legs.WebSocketLeg`; what stands on the other side of the bridge is decided by
a :class:`FarSide` (a live upstream, a recorded connection, or one of them chosen by what the
client says first), which hands back a started :class:`~proxy.wire.bridge.Bridge`.

When the cassette cannot be written, every connection recording to it is closed with 1011
and the reason, and every later upgrade (and ``/readyz``) is answered 503 with the reason:
:attr:`Listener.failure` says why, :attr:`Listener.failed` is set (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import os
import stat
from collections.abc import Sequence
from typing import Protocol
from urllib.parse import urlsplit

from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from ..core.address import ListenAddress
from ..core.options import DEFAULT_MAX_SIZE
from ..errors import CassetteWriteError, UsageError
from .bridge import Bridge, write_failure_reason
from .handshake import HandshakePolicy, Refused
from .legs import WebSocketLeg

log = logging.getLogger("rpctape.listener")

HEALTH_PATHS = frozenset({"/readyz", "/healthz"})
"""Plain GETs answered 200 with an empty body, as the app-server does."""

SINGLE_HEADERS = ("Host", "Origin", "Authorization", "Upgrade", "Sec-WebSocket-Key",
                  "Sec-WebSocket-Version")  # fmt: skip
"""Request headers that must appear at most once: two of them make the upgrade a 400."""

SHUTDOWN_REASON = "rpctape shutting down"


class Pending(Protocol):
    """A client's far side, prepared before its upgrade is answered."""

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol to accept (what the upstream or the recording chose), or ``None``."""

    async def open(self, client: WebSocketLeg) -> Bridge | None:
        """After the 101: join ``client`` to the far side; ``None`` if the client is gone.

        May wait for the client's first message (it is held in ``client.held``).
        """

    def abandon(self, reason: str, status: int) -> None:
        """The client went away or its upgrade failed before the 101."""


class FarSide(Protocol):
    """What a mode puts on the other side of each client (docs/architecture.md)."""

    async def prepare(self, request: Request) -> Pending:
        """For an upgrade ``request`` that passed the checks; raise :class:`Refused` to say no."""


class Listener:
    """Accepts websocket clients on TCP or a unix socket and bridges each to a far side.

    Use as ``async with Listener(address, policy, far) as listener:``; ``listener.url`` is
    ``ws://HOST:PORT`` or ``unix:///PATH``. Leaving the block stops accepting, closes every
    connection as going away (1001) and waits for them.
    """

    def __init__(self, address: ListenAddress, policy: HandshakePolicy, far: FarSide) -> None:
        self.address = address
        self.policy = policy
        self.far = far
        self.url = ""
        self.bridges: set[Bridge] = set()
        """The connections being relayed now."""
        self.failure: CassetteWriteError | None = None
        """Why the cassette cannot be written, once it cannot: upgrades then get 503."""
        self.failed = asyncio.Event()
        """Set when :attr:`failure` is."""
        self._server: asyncio.Server | None = None
        self._socket: tuple[str, int] | None = None
        self._handshakes: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Listener:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> str:
        """Bind and return the URL clients connect to."""
        loop = asyncio.get_running_loop()
        path = self.address.path
        if path is not None:
            await _refuse_a_live_socket(path)
            self._server = await loop.create_unix_server(self._new_client, path)
            self._socket = (path, os.stat(path).st_ino)
            self.url = f"unix://{os.path.abspath(path)}"
            return self.url
        self._server = await loop.create_server(
            self._new_client, self.address.host, self.address.port
        )
        host, port = self._server.sockets[0].getsockname()[:2]
        self.url = f"ws://{host}:{port}"
        return self.url

    async def close(self) -> None:
        """Stop accepting, close every connection (1001), wait for them; safe twice.

        Bounded: connections still open ``close_timeout`` + 0.25 seconds later are dropped
        (a child process killed), so a signal ends ``rpctape`` promptly even when a peer has
        stopped reading (the close frame waits behind what it did not read).
        """
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        self._remove_socket()
        for task in list(self._handshakes):
            task.cancel()
        await asyncio.gather(*self._handshakes, return_exceptions=True)
        bridges = list(self.bridges)
        for bridge in bridges:
            bridge.shutdown()
        waits = [asyncio.ensure_future(b.wait()) for b in bridges]
        if waits:
            _, late = await asyncio.wait(waits, timeout=self.policy.close_timeout + 0.25)
            if late:
                log.warning("%d connection(s) did not close in time: dropped", len(late))
                for bridge in bridges:
                    bridge.abort()
                await asyncio.wait(late, timeout=0.5)
            for wait in waits:
                wait.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        await server.wait_closed()

    def write_failed(self, error: CassetteWriteError) -> None:
        """The cassette cannot be written: close every connection recording to it (1011)
        and answer later upgrades 503; the first error is kept in :attr:`failure`."""
        if self.failure is None:
            self.failure = error
            self.failed.set()
            log.info("%s: closing every recording connection, refusing new ones", error)
        for bridge in list(self.bridges):
            if bridge.recording:
                bridge.fail(error)

    def _bridge_failed(self, bridge: Bridge, error: CassetteWriteError) -> None:
        self.write_failed(error)

    def _remove_socket(self) -> None:
        """Remove the unix socket file bound, unless another server has replaced it since."""
        bound, self._socket = self._socket, None
        if bound is None:
            return
        path, inode = bound
        with contextlib.suppress(FileNotFoundError):
            st = os.stat(path)
            if stat.S_ISSOCK(st.st_mode) and st.st_ino == inode:
                os.unlink(path)

    # -- one client --

    def _new_client(self) -> WebSocketLeg:
        ws = ServerProtocol(max_size=self.policy.max_size)
        leg = WebSocketLeg("client", ws, self.policy.close_timeout)
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.policy.handshake_timeout, self._handshake_expired, leg)
        leg.handshake_timer = timer

        def on_request(event: Request | Response) -> None:
            if isinstance(event, Request) and leg.transport is not None:
                leg.transport.pause_reading()  # nothing to read until the upgrade is decided
                task = asyncio.create_task(
                    self._handshake(leg, ws, event), name=f"handshake {event.path}"
                )
                self._handshakes.add(task)
                task.add_done_callback(functools.partial(self._handshake_done, leg))

        leg.on_handshake = on_request
        return leg

    def _handshake_done(self, leg: WebSocketLeg, task: asyncio.Task[None]) -> None:
        """A handshake that raised is a bug: logged in full, the client dropped."""
        self._handshakes.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        log.error("handshake failed", exc_info=task.exception())
        if leg.transport is not None:
            leg.transport.abort()

    def _handshake_expired(self, leg: WebSocketLeg) -> None:
        """The client did not finish (or we did not answer) its upgrade in time."""
        if leg.transport is not None and not leg.transport.is_closing() and not leg.is_open:
            log.info("handshake timed out after %.1f s", self.policy.handshake_timeout)
            leg.transport.abort()

    def _check(self, request: Request) -> tuple[int, str] | None:
        """Health checks, duplicate headers, Origin and token, a failed cassette: an HTTP
        answer, or None."""
        for name in SINGLE_HEADERS:
            if len(request.headers.get_all(name)) > 1:
                return 400, f"rpctape: the upgrade request has more than one {name} header\n"
        path = urlsplit(request.path).path
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if path in HEALTH_PATHS and not upgrade:
            if path == "/readyz" and self.failure is not None:
                return 503, f"rpctape: {self.failure}\n"
            return 200, ""
        origin = request.headers.get("Origin")
        if origin is not None and origin not in self.policy.allow_origins:
            return 403, (
                f"rpctape: websocket upgrade with Origin {origin!r} refused, as the app-server "
                "refuses any Origin; pass --allow-origin ORIGIN to accept it\n"
            )
        token = self.policy.token
        if token is not None:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return 401, "rpctape: missing or wrong 'Authorization: Bearer <token>'\n"
        if self.failure is not None:
            return 503, f"rpctape: {self.failure}\n"
        return None

    async def _handshake(self, client: WebSocketLeg, ws: ServerProtocol, request: Request) -> None:
        answer = self._check(request)
        if answer is not None:
            _respond(client, ws, ws.reject(*answer))
            return
        try:
            pending = await self.far.prepare(request)
        except Refused as refused:
            _respond(client, ws, ws.reject(refused.status, refused.body))
            return
        except CassetteWriteError as error:  # e.g. recording why the upstream refused
            self.write_failed(error)
            _respond(client, ws, ws.reject(503, f"rpctape: {error}\n"))
            return
        chosen = None if pending.subprotocol is None else Subprotocol(pending.subprotocol)
        ws.select_subprotocol = lambda offered: chosen  # type: ignore[method-assign,assignment]
        response = ws.accept(request)
        gone = client.transport is None or client.transport.is_closing()
        if response.status_code != 101 or gone:
            pending.abandon(
                "client went away during the handshake"
                if gone
                else f"client handshake failed with HTTP {response.status_code}",
                response.status_code,
            )
            _respond(client, ws, response)
            return
        ws.send_response(response)
        client.flush()
        client.handshake_done()
        assert client.transport is not None
        client.transport.resume_reading()
        try:
            bridge = await pending.open(client)
        except asyncio.CancelledError:
            client.close(CloseCode.GOING_AWAY, SHUTDOWN_REASON)
            raise
        except CassetteWriteError as error:  # the open event could not be written
            client.close(CloseCode.INTERNAL_ERROR, write_failure_reason(error))
            with contextlib.suppress(CassetteWriteError):
                pending.abandon(str(error), 503)
            self.write_failed(error)
            return
        if bridge is None:
            return
        self.bridges.add(bridge)
        bridge.done.add_done_callback(lambda _: self.bridges.discard(bridge))
        if bridge.recording:
            bridge.on_write_failed = self._bridge_failed
            if self.failure is not None:  # failed while this client was being opened
                bridge.fail(self.failure)
                return
        bridge.start()


def _respond(leg: WebSocketLeg, ws: ServerProtocol, response: Response) -> None:
    """Send a plain HTTP answer to an upgrade request and close the connection."""
    ws.send_response(response)
    leg.flush()
    leg.handshake_done()
    if leg.transport is not None:
        leg.transport.close()


async def _refuse_a_live_socket(path: str) -> None:
    """Refuse to listen where a server is listening; a stale socket file (nobody accepts)
    is left for the event loop to replace, a file of another kind makes binding fail."""
    try:
        is_socket = stat.S_ISSOCK(os.stat(path).st_mode)
    except FileNotFoundError:
        return
    if not is_socket:
        raise UsageError(f"--listen unix://{path}: the path exists and is not a socket")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), 1.0)
    except (OSError, TimeoutError):
        return
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    raise UsageError(
        f"--listen unix://{path}: a server is already listening there; stop it or pick another path"
    )


__all__: Sequence[str] = (
    "DEFAULT_MAX_SIZE",
    "HEALTH_PATHS",
    "FarSide",
    "HandshakePolicy",
    "ListenAddress",
    "Listener",
    "Pending",
    "Refused",
)
