"""The websocket leg: one TCP or unix connection carrying websocket frames.

:class:`WebSocketLeg` drives websockets' Sans-I/O protocol; :func:`plan_close` decides how a
closed websocket leg is recorded and propagated. Kept apart from :mod:`proxy.wire.legs` so that
legs without a websocket (stdio, a child process, a recording) do not import websockets;
``proxy.wire.legs`` still offers both names.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import cast

from websockets.exceptions import SecurityError
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import CONNECTING, OPEN, Protocol
from websockets.server import ServerProtocol

from ..core.jsonrpc import Message
from .legs import ClosePlan, Leg, Party

log = logging.getLogger("rpctape.legs")


_UNSENDABLE = {CloseCode.NO_STATUS_RCVD, CloseCode.ABNORMAL_CLOSURE, CloseCode.TLS_HANDSHAKE}


def plan_close(
    leg: str, rcvd: Close | None, sent: Close | None, rcvd_then_sent: bool | None
) -> ClosePlan:
    """Decide how a closed websocket leg (``client`` or ``server``) is recorded and propagated.

    - The peer sent a close frame first: it closed; the other leg gets the same code and
      reason (a missing code, 1005, becomes 1000).
    - The proxy sent the first close frame (a message over the size limit, 1009; invalid
      UTF-8, 1007; shutdown, 1001): the proxy closed; the other leg gets the same.
    - No close frame at all (the app-server just drops TCP): the peer closed with 1006, and
      the other leg gets 1011 with a reason naming the dropped leg (RFC 6455 section 7.4.1).
    """
    if rcvd is not None and (sent is None or bool(rcvd_then_sent)):
        code = CloseCode.NORMAL_CLOSURE if rcvd.code in _UNSENDABLE else rcvd.code
        return ClosePlan(Party(leg), rcvd.code, rcvd.reason, code, rcvd.reason)
    if sent is not None:
        code = CloseCode.INTERNAL_ERROR if sent.code in _UNSENDABLE else sent.code
        return ClosePlan(Party.PROXY, sent.code, sent.reason, code, sent.reason)
    other = "upstream" if leg == "server" else "client"
    reason = f"{other} connection dropped without a close frame"
    return ClosePlan(
        Party(leg), CloseCode.ABNORMAL_CLOSURE, reason, CloseCode.INTERNAL_ERROR, reason
    )


def _too_large(exc: BaseException) -> bool:
    """Whether a failed handshake was refused for its size (a line or the headers)."""
    return isinstance(exc, SecurityError) or isinstance(exc.__cause__, SecurityError)


class WebSocketLeg(Leg, asyncio.Protocol):
    """One TCP or unix connection carrying websocket frames through a Sans-I/O protocol."""

    def __init__(self, name: str, ws: Protocol, close_timeout: float) -> None:
        super().__init__(name)
        self.ws = ws
        self.close_timeout = close_timeout
        self.transport: asyncio.Transport | None = None
        self.on_handshake: Callable[[Request | Response], None] | None = None
        self._fragments: list[bytes] = []
        self._fragment_is_text = False
        self._abort_handle: asyncio.TimerHandle | None = None
        self.handshake_timer: asyncio.TimerHandle | None = None
        """Drops the connection if the opening handshake is not done in time (listener)."""

    def handshake_done(self) -> None:
        """The opening handshake is answered: stop its timer."""
        if self.handshake_timer is not None:
            self.handshake_timer.cancel()
            self.handshake_timer = None

    # asyncio.Protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not isinstance: uvloop's transports do not derive from asyncio's classes.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        self._process()

    def eof_received(self) -> None:
        self.ws.receive_eof()
        self._process()

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self.ws.receive_eof()  # idempotent; the state becomes CLOSED
            self._process()
        finally:  # whatever a handler raised, the leg is finished: waiters must wake
            if self._abort_handle is not None:
                self._abort_handle.cancel()
            self.handshake_done()
            self._set_lost()

    def pause_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    # Processing

    @property
    def is_open(self) -> bool:
        return self.ws.state is OPEN

    def _process(self) -> None:
        messages: list[Message] = []
        for event in self.ws.events_received():
            if isinstance(event, Frame):
                if event.fin and event.opcode is Opcode.TEXT:  # nearly every frame: inline
                    messages.append((True, bytes(event.data)))  # bytes(b) is b: no copy
                    continue
                message = self._assemble(event)
                if message is not None:
                    messages.append(message)
            elif self.on_handshake is not None:
                self.on_handshake(event)
        if messages and self.ws.state is OPEN:
            messages = self._check_utf8(messages)
        if self.ws.handshake_exc is not None and self.ws.state is CONNECTING:
            self._unparsed(self.ws.handshake_exc)
        else:
            self.flush()
        self.deliver(messages)
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
            if is_text and not payload.isascii():  # ASCII is UTF-8
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
        self.report_closed()

    def _unparsed(self, exc: Exception) -> None:
        """An upgrade request (or response) websockets could not parse: nothing more will
        come on this connection. Answer what websockets queued (414 or 431 from websockets
        17) and close; a request over the size limits gets 431 whichever websockets (16 only
        closes)."""
        data = b"".join(self.ws.data_to_send())
        if not data and isinstance(self.ws, ServerProtocol) and _too_large(exc):
            body = f"rpctape: the upgrade request is too large ({exc.__cause__ or exc})\n"
            data = (
                "HTTP/1.1 431 Request Header Fields Too Large\r\n"
                "Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\n"
                f"Content-Length: {len(body.encode())}\r\n\r\n{body}"
            ).encode()
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if data:
                transport.write(data)
            transport.close()

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
        if self.ws.state is OPEN:
            self.ws.send_close(code, reason)
            self.flush()
            self._check_closed()
        elif self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def close_plan(self) -> ClosePlan:
        ws = self.ws
        return plan_close(self.name, ws.close_rcvd, ws.close_sent, ws.close_rcvd_then_sent)
