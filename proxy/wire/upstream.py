"""The live server leg: where a client is relayed to, and how that connection is opened.

An :class:`Upstream` is a websocket URL, a unix socket (websocket over it, as
``codex app-server --listen unix://PATH``) or a command spoken to over its stdin and stdout
(one child per client). :func:`open_upstream` opens it for one client's upgrade request and
returns the server :class:`~proxy.wire.legs.Leg`, or raises :class:`~proxy.errors.UpstreamError`.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake, InvalidStatus
from websockets.http11 import Request, Response
from websockets.protocol import OPEN
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from ..core.address import Transport, Upstream, default_control_socket, upstream_url
from ..errors import UpstreamError
from .handshake import Upgrade, offered_subprotocols
from .legs import ChildLeg, Leg, WebSocketLeg

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


def client_headers(request: Upgrade, *, strip_auth: bool) -> list[tuple[str, str]]:
    """The client's end-to-end headers, passed upstream."""
    return [
        (name, value)
        for name, value in request.headers.raw_items()
        if name.lower() not in _HOP_HEADERS and not (strip_auth and name.lower() == "authorization")
    ]



def describe_connect_error(exc: BaseException) -> str:
    """What went wrong connecting, in a few words."""
    if isinstance(exc, InvalidStatus):
        return f"upstream answered HTTP {exc.response.status_code}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.errno and not isinstance(exc, socket.gaierror):
        # The system's words ("Connection refused"), not asyncio's "Connect call failed (...)".
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


async def open_upstream(
    target: Upstream,
    request: Upgrade,
    *,
    max_size: int,
    connect_timeout: float = 10.0,
    close_timeout: float = 1.0,
    strip_auth: bool = False,
) -> Leg:
    """Open ``target`` for a client's upgrade ``request``: a websocket (TCP or unix socket)
    with the client's headers and subprotocols, or a child speaking JSON Lines.

    Raises :class:`UpstreamError` naming the URL and the reason when it cannot be reached.
    """
    url = target.url_for(request.path)
    try:
        if target.kind is Transport.STDIO:
            return await ChildLeg.spawn(target.command, max_size)
        return await _open_websocket(
            target, request, max_size, connect_timeout, close_timeout, strip_auth
        )
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        raise UpstreamError(f"cannot reach upstream {url}: {describe_connect_error(exc)}") from exc


async def _open_websocket(
    target: Upstream,
    request: Upgrade,
    max_size: int,
    connect_timeout: float,
    close_timeout: float,
    strip_auth: bool,
) -> WebSocketLeg:
    if target.kind is Transport.UNIX:
        uri = parse_uri(f"ws://localhost{request.path}")
    else:
        uri = parse_uri(upstream_url(target.url, request.path))
    offered = [Subprotocol(p) for p in offered_subprotocols(request)]
    ws = ClientProtocol(uri, subprotocols=offered or None, max_size=max_size)
    leg = WebSocketLeg("server", ws, close_timeout)
    loop = asyncio.get_running_loop()
    answered: asyncio.Future[None] = loop.create_future()

    def on_response(event: Request | Response) -> None:
        if not answered.done():
            answered.set_result(None)

    leg.on_handshake = on_response
    try:
        async with asyncio.timeout(connect_timeout):
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
            for name, value in client_headers(request, strip_auth=strip_auth):
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


__all__ = [
    "Transport",
    "Upstream",
    "client_headers",
    "default_control_socket",
    "describe_connect_error",
    "open_upstream",
    "upstream_url",
]
