"""The recording relay: the one module that does websocket I/O for ``rpctape record``.

Each TCP connection is an :class:`asyncio.Protocol` driving websockets' Sans-I/O state machine
(``ServerProtocol`` towards the client, ``ClientProtocol`` towards the upstream), so the relay
sees whole messages as soon as they are parsed and every message that one read brought in at
once. For each client upgrade it first connects to the upstream; only then does it accept the
client. Messages that arrived together are recorded with one write, then forwarded with one
write: a frame's line is always in the cassette before the frame is forwarded. Closing one leg
closes the other with the same code and reason; see :func:`proxy.legs.plan_close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import os
import shlex
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake, InvalidStatus
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.protocol import OPEN
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from .bridge import Bridge
from .cassette import CassetteWriter, new_header
from .errors import UsageError
from .legs import ChildLeg, Leg, WebSocketLeg
from .recorder import Recorder
from .redact import Redactor
from .rules import Rule

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
    }
)

Message = tuple[bool, bytes]
"""One whole websocket message: ``(is_text, payload)``."""


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
        if parts.scheme != "ws" or not parts.hostname or parts.port is None:
            raise UsageError(
                f"--listen must look like ws://127.0.0.1:4223 or unix:///path/to.sock, not {url!r}"
            )
        return cls(parts.hostname, parts.port)

    @property
    def is_loopback(self) -> bool:
        """Whether only this machine can connect (always true for a unix socket)."""
        if self.path is not None or self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def default_control_socket() -> Path:
    """The app-server's default control socket: ``$CODEX_HOME/app-server-control/...sock``."""
    home = Path(os.environ.get("CODEX_HOME") or Path.home() / ".codex")
    return home / "app-server-control" / "app-server-control.sock"


@dataclass(frozen=True)
class Upstream:
    """Where the relay connects: a websocket URL, a unix socket, or a command over stdio."""

    kind: str
    """``websocket``, ``unix`` or ``stdio`` (also the cassette's ``transport``)."""
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
            return cls("stdio", "stdio:" + shlex.join(command), command=tuple(command))
        if not text:
            raise UsageError("give --upstream ws://HOST:PORT or unix://PATH, or -- COMMAND")
        parts = urlsplit(text)
        if parts.scheme == "unix" and not parts.netloc:
            path = parts.path or str(default_control_socket())
            return cls("unix", f"unix://{path}", socket=path)
        if parts.scheme in ("ws", "wss") and parts.hostname:
            return cls("websocket", text)
        raise UsageError(
            f"--upstream must be a ws:// URL or unix://PATH (or a command after --), not {text!r}"
        )


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
    target: Upstream = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", Upstream.parse(self.upstream, self.command))


def client_headers(request: Request, *, strip_auth: bool) -> list[tuple[str, str]]:
    return [
        (name, value)
        for name, value in request.headers.raw_items()
        if name.lower() not in _HOP_HEADERS and not (strip_auth and name.lower() == "authorization")
    ]


def upstream_url(upstream: str, request_path: str) -> str:
    """The client's path and query go upstream when the upstream URL names no path."""
    parts = urlsplit(upstream)
    if parts.path in ("", "/") and not parts.query:
        return f"{parts.scheme}://{parts.netloc}{request_path}"
    return upstream


class RecordingRelay:
    """A websocket listener that relays each client to the upstream and records both ways.

    Use as ``async with RecordingRelay(options, recorder) as relay:``; ``relay.url`` is the
    address clients connect to. Leaving the block closes every connection cleanly.
    """

    def __init__(self, options: RelayOptions, recorder: Recorder) -> None:
        self.options = options
        self.recorder = recorder
        self._server: asyncio.Server | None = None
        self._bridges: set[Bridge] = set()
        self._handshakes: set[asyncio.Task[None]] = set()
        self.url = ""

    async def __aenter__(self) -> RecordingRelay:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> str:
        """Bind the listener and return its ``ws://HOST:PORT`` URL."""
        loop = asyncio.get_running_loop()
        listen = self.options.listen
        if listen.path is not None:
            self._server = await loop.create_unix_server(self._new_client, listen.path)
            self.url = f"unix://{listen.path}"
            return self.url
        self._server = await loop.create_server(self._new_client, listen.host, listen.port)
        host, port = self._server.sockets[0].getsockname()[:2]
        self.url = f"ws://{host}:{port}"
        return self.url

    async def close(self) -> None:
        """Stop accepting, close every connection cleanly, wait for them; safe twice."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        if self.options.listen.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.options.listen.path)
        for task in list(self._handshakes):
            task.cancel()
        await asyncio.gather(*self._handshakes, return_exceptions=True)
        bridges = list(self._bridges)
        for bridge in bridges:
            bridge.shutdown()
        await asyncio.gather(*(b.wait() for b in bridges), return_exceptions=True)
        await server.wait_closed()

    def _new_client(self) -> WebSocketLeg:
        ws = ServerProtocol(max_size=self.options.max_size)
        leg = WebSocketLeg("client", ws, self.options.close_timeout)

        def on_request(event: Request | Response) -> None:
            if isinstance(event, Request) and leg.transport is not None:
                leg.transport.pause_reading()  # nothing to read until the upgrade is decided
                task = asyncio.create_task(
                    self._handshake(leg, ws, event), name=f"handshake {event.path}"
                )
                self._handshakes.add(task)
                task.add_done_callback(self._handshakes.discard)

        leg.on_handshake = on_request
        return leg

    def _refuse(self, request: Request) -> tuple[int, str] | None:
        """Health checks, Origin and token checks: an HTTP answer, or None to go on."""
        path = urlsplit(request.path).path
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if path in HEALTH_PATHS and not upgrade:
            return 200, ""
        origin = request.headers.get("Origin")
        if origin is not None and origin not in self.options.allow_origins:
            return 403, (
                f"rpctape: websocket upgrade with Origin {origin!r} refused, as the app-server "
                "refuses any Origin; pass --allow-origin ORIGIN to accept it\n"
            )
        if self.options.token is not None and not _bearer_ok(request, self.options.token):
            return 401, "rpctape: missing or wrong 'Authorization: Bearer <token>'\n"
        return None

    async def _handshake(self, client: WebSocketLeg, ws: ServerProtocol, request: Request) -> None:
        refusal = self._refuse(request)
        if refusal is not None:
            _respond(client, ws, ws.reject(*refusal))
            return
        conn = self.recorder.new_connection()
        target = self.options.target
        url = upstream_url(target.url, request.path) if target.kind == "websocket" else target.url
        try:
            server = await open_upstream(self.options, request)
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            reason = describe_connect_error(exc)
            message = f"cannot reach upstream {url}: {reason}"
            self.recorder.error(
                conn,
                message,
                stage="connect",
                status=502,
                path=request.path,
                headers=self.recorder.redactor.redact_headers(request.headers.raw_items()),
                upstream=url,
            )
            log.warning("conn %d: %s", conn, message)
            _respond(client, ws, ws.reject(502, f"rpctape: {message}\n"))
            return
        chosen = server.ws.subprotocol if isinstance(server, WebSocketLeg) else None
        ws.select_subprotocol = lambda offered: chosen  # type: ignore[method-assign,assignment]
        response = ws.accept(request)
        gone = client.transport is None or client.transport.is_closing()
        if response.status_code != 101 or gone:
            self.recorder.error(
                conn,
                "client went away during the handshake"
                if gone
                else f"client handshake failed with HTTP {response.status_code}",
                stage="handshake",
                status=response.status_code,
            )
            server.close(CloseCode.GOING_AWAY, "client handshake failed")
            _respond(client, ws, response)
            return
        self.recorder.open(
            conn,
            path=request.path,
            headers=request.headers.raw_items(),
            subprotocol=chosen,
            upstream=url,
            transport=target.kind,
        )
        bridge = Bridge(conn, client, server, self.recorder, self.options.rules)
        self._bridges.add(bridge)
        bridge.done.add_done_callback(lambda _: self._bridges.discard(bridge))
        ws.send_response(response)
        client.flush()
        bridge.start()
        assert client.transport is not None
        client.transport.resume_reading()


async def open_upstream(opts: RelayOptions, request: Request) -> Leg:
    """Open the upstream of ``opts`` for a client's upgrade ``request``: a websocket (TCP or
    unix socket) with the client's headers and subprotocols, or a child speaking JSON Lines."""
    target = opts.target
    if target.kind == "stdio":
        return await ChildLeg.spawn(target.command, opts.max_size)
    if target.kind == "unix":
        uri = parse_uri(f"ws://localhost{request.path}")
    else:
        uri = parse_uri(upstream_url(target.url, request.path))
    offered = [
        Subprotocol(p.strip())
        for value in request.headers.get_all("Sec-WebSocket-Protocol")
        for p in value.split(",")
        if p.strip()
    ]
    ws = ClientProtocol(uri, subprotocols=offered or None, max_size=opts.max_size)
    leg = WebSocketLeg("server", ws, opts.close_timeout)
    answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_response(event: Request | Response) -> None:
        if not answered.done():
            answered.set_result(None)

    leg.on_handshake = on_response
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(opts.connect_timeout):
            if target.socket is not None:
                await loop.create_unix_connection(lambda: leg, target.socket)
            else:
                await loop.create_connection(
                    lambda: leg,
                    uri.host,
                    uri.port,
                    ssl=ssl.create_default_context() if uri.secure else None,
                )
            upgrade = ws.connect()
            for name, value in client_headers(request, strip_auth=opts.token is not None):
                upgrade.headers[name] = value
            ws.send_request(upgrade)
            leg.flush()
            await asyncio.wait({answered, leg.lost}, return_when=asyncio.FIRST_COMPLETED)
        if ws.handshake_exc is not None or ws.state is not OPEN:
            raise ws.handshake_exc or InvalidHandshake("upstream closed during the handshake")
    except BaseException:
        if leg.transport is not None:
            leg.transport.abort()
        raise
    return leg


def _respond(leg: WebSocketLeg, ws: ServerProtocol, response: Response) -> None:
    """Send a plain HTTP answer to an upgrade request and close the connection."""
    ws.send_response(response)
    leg.flush()
    if leg.transport is not None:
        leg.transport.close()


def _bearer_ok(request: Request, token: str) -> bool:
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


def describe_connect_error(exc: BaseException) -> str:
    if isinstance(exc, InvalidStatus):
        return f"upstream answered HTTP {exc.response.status_code}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


@contextlib.asynccontextmanager
async def recording_proxy(
    upstream: str | None,
    cassette: Path | str,
    *,
    overwrite: bool = False,
    redact: bool = True,
    redact_keys: tuple[str, ...] = (),
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
    recorder = Recorder(writer, Redactor.build(redact_keys, enabled=redact))
    try:
        async with RecordingRelay(relay_options, recorder) as relay:
            yield relay.url
    finally:
        writer.close()


__all__ = [
    "DEFAULT_MAX_SIZE",
    "ListenAddress",
    "RecordingRelay",
    "RelayOptions",
    "recording_proxy",
]
