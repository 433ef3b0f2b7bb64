"""The recording relay: the one module that does websocket I/O for ``rpctape record``.

Each TCP connection is an :class:`asyncio.Protocol` driving websockets' Sans-I/O state machine
(``ServerProtocol`` towards the client, ``ClientProtocol`` towards the upstream), so the relay
sees whole messages as soon as they are parsed and every message that one read brought in at
once. For each client upgrade it first connects to the upstream; only then does it accept the
client. Messages that arrived together are recorded with one write, then forwarded with one
write: a frame's line is always in the cassette before the frame is forwarded. Closing one leg
closes the other with the same code and reason; see :func:`plan_close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake, InvalidStatus
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import OPEN, Protocol
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from .cassette import CassetteWriter, new_header
from .errors import UsageError
from .jsonrpc import Direction
from .recorder import Recorder
from .redact import Redactor
from .rules import Decision, Engine, Rule

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
    rules: tuple[Rule, ...] = ()
    """Rewrite rules applied in order to every message (see docs/rules.md)."""
    connect_timeout: float = 10.0
    close_timeout: float = 1.0
    """How long to wait for a peer to finish closing (the app-server never sends a close)."""

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


def plan_close(
    leg: str, rcvd: Close | None, sent: Close | None, rcvd_then_sent: bool | None
) -> ClosePlan:
    """Decide how a closed leg (``client`` or ``server``) is recorded and propagated.

    - The peer sent a close frame first: it closed; the other leg gets the same code and
      reason (a missing code, 1005, becomes 1000).
    - The proxy sent the first close frame (a message over the size limit, 1009; invalid
      UTF-8, 1007; shutdown, 1001): the proxy closed; the other leg gets the same.
    - No close frame at all (the app-server just drops TCP): the peer closed with 1006, and
      the other leg gets 1011 with a reason naming the dropped leg (RFC 6455 section 7.4.1).
    """
    if rcvd is not None and (sent is None or bool(rcvd_then_sent)):
        code = CloseCode.NORMAL_CLOSURE if rcvd.code in _UNSENDABLE else rcvd.code
        return ClosePlan(leg, rcvd.code, rcvd.reason, code, rcvd.reason)
    if sent is not None:
        code = CloseCode.INTERNAL_ERROR if sent.code in _UNSENDABLE else sent.code
        return ClosePlan("proxy", sent.code, sent.reason, code, sent.reason)
    other = "upstream" if leg == "server" else "client"
    reason = f"{other} connection dropped without a close frame"
    return ClosePlan(leg, CloseCode.ABNORMAL_CLOSURE, reason, CloseCode.INTERNAL_ERROR, reason)


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


class _Leg(asyncio.Protocol):
    """One TCP connection carrying websocket frames through a Sans-I/O protocol.

    It assembles whole messages and hands every message one read produced to
    ``on_messages`` in one call; it reports the first time the websocket leaves the OPEN
    state through ``on_closed``. Before a handler is attached, messages are held.
    """

    def __init__(self, name: str, ws: Protocol, close_timeout: float) -> None:
        self.name = name
        self.ws = ws
        self.close_timeout = close_timeout
        self.transport: asyncio.Transport | None = None
        self.peer: _Leg | None = None
        self.on_messages: Callable[[_Leg, list[Message]], None] | None = None
        self.on_closed: Callable[[_Leg], None] | None = None
        self.on_handshake: Callable[[Request | Response], None] | None = None
        self.held: list[Message] = []
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._fragments: list[bytes] = []
        self._fragment_is_text = False
        self._closed_reported = False
        self._abort_handle: asyncio.TimerHandle | None = None

    # asyncio.Protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        self._process()

    def eof_received(self) -> None:
        self.ws.receive_eof()
        self._process()

    def connection_lost(self, exc: Exception | None) -> None:
        self.ws.receive_eof()  # idempotent; the state becomes CLOSED
        self._process()
        if self._abort_handle is not None:
            self._abort_handle.cancel()
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        # Backpressure: stop reading the peer while our write buffer is full.
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    # Processing

    def _process(self) -> None:
        messages: list[Message] = []
        for event in self.ws.events_received():
            if isinstance(event, Frame):
                message = self._assemble(event)
                if message is not None:
                    messages.append(message)
            elif self.on_handshake is not None:
                self.on_handshake(event)
        if messages and self.ws.state is OPEN:
            messages = self._check_utf8(messages)
        self.flush()
        if messages:
            if self.on_messages is None:
                self.held.extend(messages)
            else:
                self.on_messages(self, messages)
        self._check_closed()

    def _assemble(self, frame: Frame) -> Message | None:
        opcode, data = frame.opcode, bytes(frame.data)  # bytes(b) is b: no copy
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if frame.fin:
                return (opcode is Opcode.TEXT, data)
            self._fragments = [data]
            self._fragment_is_text = opcode is Opcode.TEXT
        elif opcode is Opcode.CONT:
            self._fragments.append(data)
            if frame.fin:
                data, self._fragments = b"".join(self._fragments), []
                return (self._fragment_is_text, data)
        return None  # ping, pong (answered by the protocol) and close (seen via state)

    def _check_utf8(self, messages: list[Message]) -> list[Message]:
        for index, (is_text, payload) in enumerate(messages):
            if is_text:
                try:
                    payload.decode()
                except UnicodeDecodeError:
                    # RFC 6455 section 8.1: fail the connection on invalid UTF-8 text.
                    self.ws.fail(CloseCode.INVALID_DATA, "invalid UTF-8 in a text message")
                    return messages[:index]
        return messages

    def _check_closed(self) -> None:
        if self.ws.state is OPEN:
            return
        if self.ws.close_expected() and self._abort_handle is None and self.transport:
            self._abort_handle = asyncio.get_running_loop().call_later(
                self.close_timeout, self.transport.abort
            )
        # Only a bridged leg reports (on_closed is set when both legs are open).
        if self.on_closed is not None and not self._closed_reported:
            self._closed_reported = True
            self.on_closed(self)

    def flush(self) -> None:
        """Write what the protocol has queued; an empty chunk means half-close (EOF)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            self.ws.data_to_send()
            return
        chunks = self.ws.data_to_send()
        data = b"".join(chunks)
        if data:
            transport.write(data)
        if b"" in chunks:
            if transport.can_write_eof():
                transport.write_eof()
            else:
                transport.close()

    def send(self, messages: Sequence[Message]) -> bool:
        """Queue and write whole messages; ``False`` if this leg is no longer open."""
        if self.ws.state is not OPEN:
            return False
        for is_text, payload in messages:
            if is_text:
                self.ws.send_text(payload)
            else:
                self.ws.send_binary(payload)
        self.flush()
        return True

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake if the websocket is still open."""
        if self.ws.state is OPEN:
            self.ws.send_close(code, reason)
            self.flush()
            self._check_closed()
        elif self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class _Bridge:
    """One client connection and its upstream connection, once both are open."""

    def __init__(
        self,
        conn: int,
        client: _Leg,
        server: _Leg,
        recorder: Recorder,
        rules: Sequence[Rule] = (),
    ) -> None:
        self.conn = conn
        self.client = client
        self.server = server
        self.recorder = recorder
        self.engine = Engine(rules) if rules else None
        self.closed = False
        self._held: dict[_Leg, list[tuple[float, Message]]] = {client: [], server: []}
        self._timers: dict[_Leg, asyncio.TimerHandle] = {}
        client.peer, server.peer = server, client
        self.done = asyncio.gather(client.lost, server.lost)
        """Resolved when both TCP connections are gone."""
        for leg in (client, server):
            leg.on_messages = self._relay
            leg.on_closed = self._leg_closed

    def start(self) -> None:
        """Deliver what either leg received before the bridge existed."""
        for leg in (self.server, self.client):
            held, leg.held = leg.held, []
            if held:
                self._relay(leg, held)
            leg._check_closed()

    async def wait(self) -> None:
        """Until both TCP connections are gone."""
        await self.done

    def _relay(self, leg: _Leg, messages: list[Message]) -> None:
        direction = Direction.C2S if leg is self.client else Direction.S2C
        if log.isEnabledFor(logging.DEBUG):
            for _, payload in messages:
                log.debug("conn %d %s %s", self.conn, direction.arrow, _shorten(payload))
        assert leg.peer is not None
        if self.engine is None and not self._held[leg.peer]:
            events = self.recorder.record_frames(self.conn, direction, messages)
            if not leg.peer.send(messages):
                self._undelivered(leg.peer, [e["seq"] for e in events])
            return
        self._relay_with_rules(leg, direction, messages)

    def _relay_with_rules(self, leg: _Leg, direction: Direction, messages: list[Message]) -> None:
        """Decide every message with the rule engine, record it all, then carry it out."""
        rec, conn, peer = self.recorder, self.conn, leg.peer
        assert peer is not None
        lines: list[bytes] = []
        sends: list[tuple[_Leg, Message, int, int]] = []  # leg, message, delay, seq
        close: tuple[int, str] | None = None
        for is_text, payload in messages:
            if not is_text or self.engine is None:
                event, line = (
                    rec.text_line(conn, direction, payload, *rec.inspect(conn, direction, payload))
                    if is_text
                    else rec.binary_line(conn, direction, payload)
                )
                lines.append(line)
                sends.append((peer, (is_text, payload), 0, event["seq"]))
                continue
            parsed, response_to = rec.inspect(conn, direction, payload)
            decision = self.engine.decide(direction, payload, parsed, response_to)
            delay = decision.delay_ms
            for name, towards, frame in decision.before:
                sends.append(self._synthesize(lines, name, towards, frame, delay))
            event, line = rec.text_line(
                conn, direction, payload, parsed, response_to, _annotations(decision)
            )
            lines.append(line)
            if decision.forward is not None:
                sends.append((peer, (True, decision.forward), delay, event["seq"]))
            for name, frame in decision.to_sender:
                sends.append(self._synthesize(lines, name, direction.reverse, frame, delay))
            for name, towards, frame in decision.after:
                sends.append(self._synthesize(lines, name, towards, frame, delay))
            close = close or decision.close
        rec.write(lines)
        for target, message, delay, seq in sends:
            self._send(target, message, delay, seq)
        if close is not None:
            self.client.close(*close)

    def _synthesize(
        self, lines: list[bytes], rule: str, towards: Direction, frame: bytes, delay: int
    ) -> tuple[_Leg, Message, int, int]:
        """Record a message rpctape itself sends; return what :meth:`_send` needs."""
        rec = self.recorder
        parsed, response_to = rec.inspect(self.conn, towards, frame)
        extra = {"origin": "rpctape", "rule": rule}
        event, line = rec.text_line(self.conn, towards, frame, parsed, response_to, extra)
        lines.append(line)
        target = self.server if towards is Direction.C2S else self.client
        return target, (True, frame), delay, event["seq"]

    def _send(self, leg: _Leg, message: Message, delay_ms: int, seq: int) -> None:
        """Send now, or after ``delay_ms``; a held message holds later ones to the same leg."""
        held = self._held[leg]
        if not held and not delay_ms:
            if not leg.send([message]):
                self._undelivered(leg, [seq])
            return
        held.append((time.monotonic() + delay_ms / 1000, message))
        if leg not in self._timers:
            self._schedule(leg)

    def _schedule(self, leg: _Leg) -> None:
        due = self._held[leg][0][0]
        loop = asyncio.get_running_loop()
        self._timers[leg] = loop.call_later(max(0.0, due - time.monotonic()), self._release, leg)

    def _release(self, leg: _Leg) -> None:
        del self._timers[leg]
        held, now, ready = self._held[leg], time.monotonic(), []
        while held and held[0][0] <= now:
            ready.append(held.pop(0)[1])
        if ready and not leg.send(ready):
            self.recorder.error(
                self.conn, f"{len(ready)} delayed frame(s) not delivered: {leg.name} closed"
            )
        if held:
            self._schedule(leg)

    def _undelivered(self, leg: _Leg, seqs: list[int]) -> None:
        self.recorder.error(
            self.conn,
            f"frames seq {seqs[0]}..{seqs[-1]} were recorded but not delivered: "
            f"the {leg.name} connection had closed",
            undelivered_seq=seqs,
        )

    def _leg_closed(self, leg: _Leg) -> None:
        if self.closed:
            return
        self.closed = True
        ws = leg.ws
        plan = plan_close(leg.name, ws.close_rcvd, ws.close_sent, ws.close_rcvd_then_sent)
        self.recorder.close(
            self.conn,
            by=plan.by,
            code=plan.code,
            reason=plan.reason,
            leg=leg.name,
            forwarded={"code": plan.forward_code, "reason": plan.forward_reason},
        )
        log.info("conn %d closed by %s (%s %s)", self.conn, plan.by, plan.code, plan.reason)
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        held = sum(len(queue) for queue in self._held.values())
        if held:
            self.recorder.error(self.conn, f"{held} delayed frame(s) not delivered: closed first")
        assert leg.peer is not None
        leg.peer.close(plan.forward_code, plan.forward_reason)

    def shutdown(self) -> None:
        """Close the client leg as going away; the server leg follows."""
        self.client.close(CloseCode.GOING_AWAY, "rpctape shutting down")


def _annotations(decision: Decision) -> dict[str, Any]:
    """What the cassette says about a message the rules touched (docs/rules.md)."""
    if decision.untouched and not decision.hidden:
        return {}
    extra: dict[str, Any] = {}
    if decision.applied:
        extra["rules"] = [{"rule": name, "action": action} for name, action in decision.applied]
    if decision.hidden:
        extra["hidden"] = True
    if decision.forward is None:
        extra["forwarded"] = False
    elif decision.changed:
        extra["delivered"] = orjson.loads(decision.forward)
    if decision.delay_ms:
        extra["delay_ms"] = decision.delay_ms
    return extra


def _shorten(data: bytes, limit: int = 200) -> str:
    text = data[:limit].decode(errors="replace")
    return text if len(data) <= limit else f"{text}... ({len(data)} bytes)"


class RecordingRelay:
    """A websocket listener that relays each client to the upstream and records both ways.

    Use as ``async with RecordingRelay(options, recorder) as relay:``; ``relay.url`` is the
    address clients connect to. Leaving the block closes every connection cleanly.
    """

    def __init__(self, options: RelayOptions, recorder: Recorder) -> None:
        self.options = options
        self.recorder = recorder
        self._server: asyncio.Server | None = None
        self._bridges: set[_Bridge] = set()
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
        for task in list(self._handshakes):
            task.cancel()
        await asyncio.gather(*self._handshakes, return_exceptions=True)
        bridges = list(self._bridges)
        for bridge in bridges:
            bridge.shutdown()
        await asyncio.gather(*(b.wait() for b in bridges), return_exceptions=True)
        await server.wait_closed()

    def _new_client(self) -> _Leg:
        ws = ServerProtocol(max_size=self.options.max_size)
        leg = _Leg("client", ws, self.options.close_timeout)

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

    async def _handshake(self, client: _Leg, ws: ServerProtocol, request: Request) -> None:
        refusal = self._refuse(request)
        if refusal is not None:
            _respond(client, ws, ws.reject(*refusal))
            return
        conn = self.recorder.new_connection()
        url = upstream_url(self.options.upstream, request.path)
        try:
            server = await self._connect_upstream(url, request)
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
        chosen = server.ws.subprotocol if isinstance(server.ws, ClientProtocol) else None
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
        )
        bridge = _Bridge(conn, client, server, self.recorder, self.options.rules)
        self._bridges.add(bridge)
        bridge.done.add_done_callback(lambda _: self._bridges.discard(bridge))
        ws.send_response(response)
        client.flush()
        bridge.start()
        assert client.transport is not None
        client.transport.resume_reading()

    async def _connect_upstream(self, url: str, request: Request) -> _Leg:
        """Open the upstream websocket with the client's headers and subprotocols."""
        opts = self.options
        uri = parse_uri(url)
        offered = [
            Subprotocol(p.strip())
            for value in request.headers.get_all("Sec-WebSocket-Protocol")
            for p in value.split(",")
            if p.strip()
        ]
        ws = ClientProtocol(uri, subprotocols=offered or None, max_size=opts.max_size)
        leg = _Leg("server", ws, opts.close_timeout)
        answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_response(event: Request | Response) -> None:
            if not answered.done():
                answered.set_result(None)

        leg.on_handshake = on_response
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(opts.connect_timeout):
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


def _respond(leg: _Leg, ws: ServerProtocol, response: Response) -> None:
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


__all__ = [
    "DEFAULT_MAX_SIZE",
    "ClosePlan",
    "ListenAddress",
    "RecordingRelay",
    "RelayOptions",
    "plan_close",
    "recording_proxy",
]
