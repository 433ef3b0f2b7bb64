"""The recording relay: the one module that does websocket I/O for ``rpctape record``.

For each client upgrade it first connects to the upstream app-server; only then does it
accept the client. Two pumps per connection move whole messages: receive, record (the line
is written before anything is forwarded), send. Closing one leg closes the other with the
same code and reason; see :func:`plan_close` for the rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.connection import Connection
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from .cassette import CassetteWriter, new_header
from .errors import UsageError
from .jsonrpc import Direction
from .recorder import Recorder
from .redact import Redactor

log = logging.getLogger("rpctape.relay")

DEFAULT_MAX_SIZE = 16 * 1024 * 1024
"""The app-server's own message limit (16 MiB)."""

HEALTH_PATHS = frozenset({"/readyz", "/healthz"})

# Request headers that belong to one hop (RFC 9110 section 7.6.1) or to the websocket
# handshake of one leg (RFC 6455 section 4.1); everything else is passed upstream.
_HOP_HEADERS = frozenset(
    {
        "host",
        "connection",
        "upgrade",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "proxy-connection",
        "content-length",
        "origin",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
        "user-agent",
    }
)


@dataclass(frozen=True)
class ListenAddress:
    """A parsed ``--listen`` URL."""

    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> ListenAddress:
        """Parse ``ws://HOST:PORT``; a missing port is an error, port 0 picks a free one."""
        parts = urlsplit(url)
        if parts.scheme != "ws" or not parts.hostname or parts.port is None:
            raise UsageError(f"--listen must look like ws://127.0.0.1:4223, not {url!r}")
        return cls(parts.hostname, parts.port)

    @property
    def is_loopback(self) -> bool:
        """Whether only this machine can connect."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


@dataclass(frozen=True)
class RelayOptions:
    """Settings of one recording relay; passed in, never read from globals."""

    upstream: str
    listen: ListenAddress = field(default_factory=lambda: ListenAddress("127.0.0.1", 0))
    max_size: int = DEFAULT_MAX_SIZE
    allow_origins: frozenset[str] = frozenset()
    token: str | None = None
    """When set, clients must send ``Authorization: Bearer <token>``; it is not passed on."""
    connect_timeout: float = 10.0
    close_timeout: float = 1.0
    """How long to wait for a peer's close frame (the app-server never sends one)."""

    def __post_init__(self) -> None:
        parts = urlsplit(self.upstream)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise UsageError(f"--upstream must be a ws:// URL, not {self.upstream!r}")


@dataclass(frozen=True)
class ClosePlan:
    """What to record when one leg ends, and how to close the other leg."""

    by: str
    """``client``, ``server`` or ``proxy``: who ended the connection."""
    code: int | None
    reason: str
    forward_code: int
    forward_reason: str


_UNSENDABLE = {CloseCode.NO_STATUS_RCVD, CloseCode.ABNORMAL_CLOSURE, CloseCode.TLS_HANDSHAKE}


def plan_close(leg: str, exc: ConnectionClosed) -> ClosePlan:
    """Decide how a closed leg (``client`` or ``server``) is recorded and propagated.

    - The peer sent a close frame first: it closed; the other leg gets the same code and
      reason (a missing code, 1005, becomes 1000).
    - The proxy sent the first close frame (a message over the size limit, 1009; invalid
      UTF-8, 1007; shutdown, 1001): the proxy closed; the other leg gets the same.
    - No close frame at all (the app-server just drops TCP): the peer closed with 1006, and
      the other leg gets 1011 with a reason naming the dropped leg (RFC 6455 section 7.4.1).
    """
    rcvd, sent = exc.rcvd, exc.sent
    peer_first = rcvd is not None and (sent is None or bool(exc.rcvd_then_sent))
    if peer_first:
        assert rcvd is not None
        code = CloseCode.NORMAL_CLOSURE if rcvd.code in _UNSENDABLE else rcvd.code
        return ClosePlan(leg, rcvd.code, rcvd.reason, code, rcvd.reason)
    if sent is not None:
        code = CloseCode.INTERNAL_ERROR if sent.code in _UNSENDABLE else sent.code
        return ClosePlan("proxy", sent.code, sent.reason, code, sent.reason)
    other = "upstream" if leg == "server" else "client"
    reason = f"{other} connection dropped without a close frame"
    return ClosePlan(leg, CloseCode.ABNORMAL_CLOSURE, reason, CloseCode.INTERNAL_ERROR, reason)


def _client_headers(request: Request, *, strip_auth: bool) -> list[tuple[str, str]]:
    return [
        (name, value)
        for name, value in request.headers.raw_items()
        if name.lower() not in _HOP_HEADERS and not (strip_auth and name.lower() == "authorization")
    ]


def _upstream_url(upstream: str, request_path: str) -> str:
    """The client's path and query go upstream when the upstream URL names no path."""
    parts = urlsplit(upstream)
    if parts.path in ("", "/") and not parts.query:
        return f"{parts.scheme}://{parts.netloc}{request_path}"
    return upstream


class _Bridge:
    """One client connection and its upstream connection."""

    def __init__(
        self,
        conn: int,
        client: ServerConnection,
        upstream: ClientConnection,
        recorder: Recorder,
    ) -> None:
        self.conn = conn
        self.client = client
        self.upstream = upstream
        self.recorder = recorder
        self.log = logging.LoggerAdapter(log, {"conn": conn})

    async def run(self) -> None:
        """Pump both ways until one leg closes, then close the other and record how."""
        pumps = {
            asyncio.create_task(
                self._pump(self.client, self.upstream, Direction.C2S), name=f"conn{self.conn}:c2s"
            ),
            asyncio.create_task(
                self._pump(self.upstream, self.client, Direction.S2C), name=f"conn{self.conn}:s2c"
            ),
        }
        try:
            done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            leg, exc = next(iter(done)).result()
            plan = plan_close(leg, exc)
            other = self.upstream if leg == "client" else self.client
            self.recorder.close(
                self.conn,
                by=plan.by,
                code=plan.code,
                reason=plan.reason,
                leg=leg,
                forwarded={"code": plan.forward_code, "reason": plan.forward_reason},
            )
            self.log.info(
                "conn %d closed by %s (%s %s)", self.conn, plan.by, plan.code, plan.reason
            )
            await other.close(plan.forward_code, plan.forward_reason)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            await self.upstream.close()

    async def _pump(
        self, src: Connection, dst: Connection, direction: Direction
    ) -> tuple[str, ConnectionClosed]:
        """Move messages from ``src`` to ``dst``; return the leg that closed and why."""
        src_leg = "client" if direction is Direction.C2S else "server"
        dst_leg = "server" if direction is Direction.C2S else "client"
        recorder, conn = self.recorder, self.conn
        debug = self.log.isEnabledFor(logging.DEBUG)
        while True:
            try:
                data = await src.recv()
            except ConnectionClosed as exc:
                return src_leg, exc
            if isinstance(data, str):
                event = recorder.text(conn, direction, data)
            else:
                event = recorder.binary(conn, direction, data)
            if debug:
                self.log.debug("%s %s", direction.arrow, _shorten(data))
            try:
                await dst.send(data)
            except ConnectionClosed as exc:
                recorder.error(
                    conn,
                    f"frame seq {event['seq']} was recorded but not delivered: "
                    f"the {dst_leg} connection had closed",
                    undelivered_seq=event["seq"],
                )
                return dst_leg, exc

    async def shutdown(self) -> None:
        """Close the client leg as going away; :meth:`run` then closes the server leg."""
        await self.client.close(CloseCode.GOING_AWAY, "rpctape shutting down")


def _shorten(data: str | bytes, limit: int = 200) -> str:
    text = data if isinstance(data, str) else f"<{len(data)} bytes binary>"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


class RecordingRelay:
    """A websocket listener that relays each client to the upstream and records both ways.

    Use as ``async with RecordingRelay(options, recorder) as relay:``; ``relay.url`` is the
    address clients connect to. Leaving the block closes every connection cleanly.
    """

    def __init__(self, options: RelayOptions, recorder: Recorder) -> None:
        self.options = options
        self.recorder = recorder
        self._server: Server | None = None
        self._pending: dict[ServerConnection, tuple[int, ClientConnection, str]] = {}
        self._bridges: set[_Bridge] = set()
        self.url = ""

    async def __aenter__(self) -> RecordingRelay:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> str:
        """Bind the listener and return its ``ws://HOST:PORT`` URL."""
        opts = self.options
        self._server = await serve(
            self._handle,
            opts.listen.host,
            opts.listen.port,
            process_request=self._process_request,
            process_response=self._process_response,
            select_subprotocol=self._select_subprotocol,
            max_size=opts.max_size,
            compression=None,
            ping_interval=None,
            close_timeout=opts.close_timeout,
            server_header=None,
        )
        host, port = self._server.sockets[0].getsockname()[:2]
        self.url = f"ws://{host}:{port}"
        return self.url

    async def close(self) -> None:
        """Stop accepting, close every connection cleanly, wait for them; safe twice."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close(close_connections=False)
        await asyncio.gather(*(b.shutdown() for b in list(self._bridges)), return_exceptions=True)
        await server.wait_closed()
        for _, upstream, _ in self._pending.values():
            await upstream.close()
        self._pending.clear()

    def _select_subprotocol(
        self, connection: ServerConnection, offered: Any
    ) -> Any:  # websockets types this as Subprotocol | None
        pending = self._pending.get(connection)
        return pending[1].subprotocol if pending else None

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        path = urlsplit(request.path).path
        if path in HEALTH_PATHS and "upgrade" not in request.headers.get("Connection", "").lower():
            return connection.respond(200, "")
        origin = request.headers.get("Origin")
        if origin is not None and origin not in self.options.allow_origins:
            return connection.respond(
                403,
                f"rpctape: websocket upgrade with Origin {origin!r} refused, as the app-server "
                "refuses any Origin; pass --allow-origin ORIGIN to accept it\n",
            )
        if self.options.token is not None and not _bearer_ok(request, self.options.token):
            return connection.respond(
                401, "rpctape: missing or wrong 'Authorization: Bearer <token>'\n"
            )
        return await self._connect_upstream(connection, request)

    async def _connect_upstream(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        opts = self.options
        conn = self.recorder.new_connection()
        url = _upstream_url(opts.upstream, request.path)
        headers = _client_headers(request, strip_auth=opts.token is not None)
        offered = [
            p.strip()
            for value in request.headers.get_all("Sec-WebSocket-Protocol")
            for p in value.split(",")
            if p.strip()
        ]
        try:
            upstream = await connect(
                url,
                additional_headers=Headers(headers),
                subprotocols=offered or None,  # type: ignore[arg-type]
                user_agent_header=request.headers.get("User-Agent"),
                max_size=opts.max_size,
                compression=None,
                ping_interval=None,
                open_timeout=opts.connect_timeout,
                close_timeout=opts.close_timeout,
            )
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            reason = _describe_connect_error(exc)
            self.recorder.error(
                conn,
                f"cannot reach upstream {url}: {reason}",
                stage="connect",
                status=502,
                path=request.path,
                headers=self.recorder.redactor.redact_headers(request.headers.raw_items()),
                upstream=url,
            )
            log.warning("conn %d: cannot reach upstream %s: %s", conn, url, reason)
            return connection.respond(502, f"rpctape: cannot reach upstream {url}: {reason}\n")
        self._pending[connection] = (conn, upstream, url)
        return None

    async def _process_response(
        self, connection: ServerConnection, request: Request, response: Response
    ) -> None:
        if response.status_code != 101 and connection in self._pending:
            conn, upstream, _ = self._pending.pop(connection)
            self.recorder.error(
                conn,
                f"client handshake failed with HTTP {response.status_code}",
                stage="handshake",
                status=response.status_code,
            )
            await upstream.close()

    async def _handle(self, connection: ServerConnection) -> None:
        conn, upstream, url = self._pending.pop(connection)
        request = connection.request
        assert request is not None
        self.recorder.open(
            conn,
            path=request.path,
            headers=request.headers.raw_items(),
            subprotocol=connection.subprotocol,
            upstream=url,
        )
        bridge = _Bridge(conn, connection, upstream, self.recorder)
        self._bridges.add(bridge)
        try:
            await bridge.run()
        except Exception:
            log.exception("conn %d: relay error", conn)
            self.recorder.error(conn, "internal relay error; see the rpctape log")
        finally:
            self._bridges.discard(bridge)


def _bearer_ok(request: Request, token: str) -> bool:
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


def _describe_connect_error(exc: BaseException) -> str:
    if isinstance(exc, InvalidStatus):
        return f"upstream answered HTTP {exc.response.status_code}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


@contextlib.asynccontextmanager
async def recording_proxy(
    upstream: str,
    cassette: Path | str,
    *,
    overwrite: bool = False,
    redact: bool = True,
    redact_keys: tuple[str, ...] = (),
    meta: dict[str, Any] | None = None,
    **options: Any,
) -> AsyncIterator[str]:
    """Run a recording relay in-process on 127.0.0.1 (a free port); yield its ws URL.

    ``options`` are :class:`RelayOptions` fields. The cassette is closed on exit.
    """
    writer = CassetteWriter(Path(cassette), new_header(upstream, meta=meta), overwrite=overwrite)
    recorder = Recorder(writer, Redactor.build(redact_keys, enabled=redact))
    try:
        async with RecordingRelay(RelayOptions(upstream, **options), recorder) as relay:
            yield relay.url
    finally:
        writer.close()
