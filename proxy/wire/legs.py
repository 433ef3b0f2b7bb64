"""Legs: one side of a relayed connection, moving whole messages.

A leg hands every message one read produced to ``on_messages`` in one call, reports the
first time it stops being open through ``on_closed``, and says how it closed
(:meth:`Leg.close_plan`). :class:`~proxy.wire.ws_legs.WebSocketLeg` drives websockets' Sans-I/O
protocol over a TCP or unix connection (its own module, imported when first used).
:class:`LineLeg` speaks newline-delimited JSON (the app-server's
stdio transport): :class:`ChildLeg` to a child process's stdin and stdout, :class:`StdioLeg`
on this process's own; :class:`~proxy.wire.playback.RecordedLeg` plays a recorded server. The
bridge (:mod:`proxy.wire.bridge`) joins two legs of any kinds.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import enum
import logging
import os
import signal
import stat
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from ..core.jsonrpc import Message

if TYPE_CHECKING:  # imported on first use (__getattr__): a leg without a websocket, such as
    # the stand-in's stdio and recorded legs, does not load websockets (~20 ms)
    from .ws_legs import WebSocketLeg as WebSocketLeg
    from .ws_legs import plan_close as plan_close

log = logging.getLogger("rpctape.legs")

NORMAL_CLOSURE = 1000
GOING_AWAY = 1001
MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011
"""Close codes (RFC 6455 section 7.4.1; websockets' ``CloseCode``) the legs plan with."""


def __getattr__(name: str) -> Any:
    """:class:`~proxy.wire.ws_legs.WebSocketLeg` and :func:`~proxy.wire.ws_legs.plan_close`,
    imported with websockets when first asked for."""
    if name in ("WebSocketLeg", "plan_close"):
        from . import ws_legs

        return getattr(ws_legs, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Party(enum.StrEnum):
    """Who ended a connection (a close event's ``by``)."""

    CLIENT = "client"
    SERVER = "server"
    PROXY = "proxy"


@dataclass(frozen=True)
class ClosePlan:
    """What to record when one leg ends, and how to close the other leg."""

    by: Party
    """Who ended the connection."""
    code: int | None
    reason: str
    forward_code: int
    forward_reason: str
    exit_code: int | None = None
    """For a child process: its exit status (negative: killed by that signal)."""


class Leg:
    """What the bridge needs of one side; subclasses do the I/O."""

    def __init__(self, name: str) -> None:
        self.name = name
        """``client`` or ``server``."""
        self.peer: Leg | None = None
        self.on_messages: Callable[[Leg, list[Message]], None] | None = None
        self.on_closed: Callable[[Leg], None] | None = None
        self.held: list[Message] = []
        """Messages received before a handler was attached."""
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Resolved when the leg's I/O is completely finished."""
        self._closed_reported = False
        self._arrived = asyncio.Event()

    async def first_message(self) -> None:
        """Until a message is held (no handler attached yet) or the leg stopped being open."""
        while not self.held and self.is_open:
            self._arrived.clear()
            await self._arrived.wait()

    @property
    def is_open(self) -> bool:
        """Whether messages can still be sent."""
        raise NotImplementedError

    @property
    def can_receive(self) -> bool:
        """Whether messages sent now still reach the peer (a line peer that ended its input
        may still read its output)."""
        return self.is_open

    def send(self, messages: Sequence[Message]) -> bool:
        """Write whole messages; ``False`` if this leg is no longer open."""
        raise NotImplementedError

    def close(self, code: int, reason: str) -> None:
        """Close this leg (a websocket close handshake, or end of input for a line peer)."""
        raise NotImplementedError

    def close_plan(self) -> ClosePlan:
        """How this leg closed: who, code and reason, and what the other leg gets."""
        raise NotImplementedError

    def abort(self) -> None:
        """Drop the connection at once (a close that did not finish in time)."""
        self.close(INTERNAL_ERROR, "aborted")

    def pause_writing(self) -> None:
        """Our write buffer is full (asyncio's flow control, for every transport of a leg):
        stop reading the peer until it drains. This bounds memory on every path."""
        if self.peer is not None:
            self.peer.pause_reading()

    def resume_writing(self) -> None:
        """Our write buffer drained below its low-water mark: read the peer again."""
        if self.peer is not None:
            self.peer.resume_reading()

    def pause_reading(self) -> None:
        """Stop reading (backpressure from the peer)."""

    def resume_reading(self) -> None:
        """Read again."""

    def deliver(self, messages: list[Message]) -> None:
        """Hand messages to the handler, or hold them until there is one."""
        if not messages:
            return
        if self.on_messages is None:
            self.held.extend(messages)
            self._arrived.set()
        else:
            self.on_messages(self, messages)

    def report_closed(self) -> None:
        """Tell the handler, once, that this leg is no longer open."""
        if not self.is_open:
            self._arrived.set()
        if not self.is_open and self.on_closed is not None and not self._closed_reported:
            self._closed_reported = True
            self.on_closed(self)

    def _set_lost(self) -> None:
        self._arrived.set()
        if not self.lost.done():
            self.lost.set_result(None)
        if self.peer is not None:
            self.peer.resume_reading()


def _is_utf8(line: bytes) -> bool:
    if line.isascii():
        return True
    try:
        line.decode()
    except UnicodeDecodeError:
        return False
    return True


class LineLeg(Leg):
    """Newline-delimited messages (JSON Lines) over a byte stream each way.

    Every complete line is one text message (without its ``\\n``), or a binary message when
    it is not UTF-8 (recorded as ``binary``, sent to a websocket as a binary frame); a line
    longer than ``max_size`` ends the leg. At end of input a final line without newline is still
    delivered, and noted in :attr:`notes`. Subclasses provide the I/O.
    """

    def __init__(self, name: str, max_size: int) -> None:
        super().__init__(name)
        self.max_size = max_size
        self._pending: list[bytes] = []
        """The start of a line not yet complete, as it arrived (joined once, when it ends)."""
        self._pending_size = 0
        self.input_done = False
        """The peer's output (our input) reached its end."""
        self.output_closed = False
        self.closed_by_proxy: tuple[int, str] | None = None
        self.notes: list[str] = []
        """Things a person should know (torn last line, overlong line), for the cassette."""

    @property
    def is_open(self) -> bool:
        return not self.input_done and not self.output_closed

    @property
    def can_receive(self) -> bool:
        return not self.output_closed

    def feed(self, data: bytes) -> None:
        """Split received bytes into lines and deliver the complete ones.

        Each read is searched once, and a line that spans reads is joined once when its
        newline arrives: a 10 MiB line costs one copy, not one per read.
        """
        if self.input_done or not data:
            return
        newline = data.find(b"\n")
        if newline < 0:
            self._pending.append(data)
            self._pending_size += len(data)
            if self._pending_size > self.max_size:
                self._overlong()
            return
        lines = data.split(b"\n")
        tail = lines.pop()
        if self._pending:
            self._pending.append(lines[0])
            lines[0] = b"".join(self._pending)
        self._pending = [tail] if tail else []
        self._pending_size = len(tail)
        limit = self.max_size
        whole = next((i for i, line in enumerate(lines) if len(line) > limit), len(lines))
        self.deliver([(_is_utf8(line), line) for line in lines[:whole]])
        if whole < len(lines) or len(tail) > limit:
            self._overlong()

    def feed_eof(self) -> None:
        """The input ended: deliver a last line without newline, then report the close."""
        if self.input_done:
            return
        if self._pending:
            tail = b"".join(self._pending)
            self._pending, self._pending_size = [], 0
            self.notes.append(
                f"the {self.name}'s last line ({len(tail)} bytes) had no newline; "
                "it was taken as a message"
            )
            self.deliver([(_is_utf8(tail), tail)])
        self.input_done = True
        self.report_closed()

    def _overlong(self) -> None:
        """A line over ``max_size``: stop reading (what is sent to the peer still goes out;
        a websocket would close with 1009)."""
        self.notes.append(
            f"a line from the {self.name} exceeded {self.max_size} bytes: reading stopped"
        )
        self._pending, self._pending_size = [], 0
        self.closed_by_proxy = (MESSAGE_TOO_BIG, "line too long")
        self.input_done = True
        self.report_closed()

    def send(self, messages: Sequence[Message]) -> bool:
        if self.output_closed:
            return False
        # A binary websocket frame has no JSONL form: its bytes go out as a line as well.
        self.write(b"".join(payload + b"\n" for _, payload in messages))
        return True

    def close(self, code: int, reason: str) -> None:
        if self.closed_by_proxy is None and not self.input_done:
            self.closed_by_proxy = (code, reason)
        self.end_output()
        self.report_closed()

    def write(self, data: bytes) -> None:
        """Write to the peer's input."""
        raise NotImplementedError

    def end_output(self) -> None:
        """Close the peer's input (it sees end of file)."""
        raise NotImplementedError

    def close_plan(self) -> ClosePlan:
        if self.closed_by_proxy is not None:
            code, reason = self.closed_by_proxy
            return ClosePlan(Party.PROXY, code, reason, code, reason)
        reason = f"the {self.name} closed its {'output' if self.name == 'server' else 'input'}"
        return ClosePlan(Party(self.name), None, reason, NORMAL_CLOSURE, reason)


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when rpctape dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ChildLeg(LineLeg, asyncio.SubprocessProtocol):
    """A child process (e.g. ``codex app-server``) spoken to over its stdin and stdout.

    Its stderr is passed through. Closing the leg closes the child's stdin; a child still
    running ``grace`` seconds later gets SIGTERM, then SIGKILL.
    """

    def __init__(self, command: Sequence[str], max_size: int, grace: float = 3.0) -> None:
        super().__init__("server", max_size)
        self.command = list(command)
        self.grace = grace
        self.transport: asyncio.SubprocessTransport | None = None
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._stdin: asyncio.WriteTransport | None = None
        self._stdout: asyncio.ReadTransport | None = None
        self._stdout_done = False
        self._killer: asyncio.Task[None] | None = None

    @classmethod
    async def spawn(
        cls,
        command: Sequence[str],
        max_size: int,
        *,
        grace: float = 3.0,
        new_session: bool = True,
        env: dict[str, str] | None = None,
    ) -> ChildLeg:
        """Start ``command`` with piped stdin/stdout and inherited stderr."""
        leg = cls(command, max_size, grace)
        loop = asyncio.get_running_loop()
        await loop.subprocess_exec(
            lambda: leg,
            *leg.command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,
            start_new_session=new_session,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            env=env,
        )
        return leg

    @property
    def pid(self) -> int:
        """The child's process id."""
        assert self.transport is not None
        return self.transport.get_pid()

    # asyncio.SubprocessProtocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Casts, not isinstance: uvloop's transports do not derive from asyncio's classes.
        self.transport = cast(asyncio.SubprocessTransport, transport)
        self._stdin = cast(asyncio.WriteTransport, self.transport.get_pipe_transport(0))
        self._stdout = cast(asyncio.ReadTransport, self.transport.get_pipe_transport(1))

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 1:
            self.feed(data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            self._stdout_done = True
            self._maybe_finished()

    def process_exited(self) -> None:
        assert self.transport is not None
        code = self.transport.get_returncode()
        if not self.exited.done():
            self.exited.set_result(code if code is not None else -1)
        self._maybe_finished()

    def _maybe_finished(self) -> None:
        # Report the close once both the output ended and the exit status is known, so the
        # cassette names the exit code.
        if self._stdout_done and self.exited.done():
            try:
                self.feed_eof()
            finally:  # whatever a handler raised, the leg is finished: waiters must wake
                if self._killer is not None:
                    self._killer.cancel()
                if self.transport is not None:
                    self.transport.close()
                self._set_lost()

    def _overlong(self) -> None:
        super()._overlong()
        self.end_output()  # the child is stopped: its output can no longer be relayed

    def pause_reading(self) -> None:
        if self._stdout is not None and not self._stdout.is_closing():
            self._stdout.pause_reading()

    def resume_reading(self) -> None:
        if self._stdout is not None and not self._stdout.is_closing():
            self._stdout.resume_reading()

    def report_closed(self) -> None:
        # Only once the child has exited (or we closed it): then the plan has the exit code.
        if self.exited.done() or self.output_closed:
            super().report_closed()

    @property
    def is_open(self) -> bool:
        return not self.exited.done() and not self.output_closed and not self.input_done

    # Output

    def write(self, data: bytes) -> None:
        if self._stdin is not None and not self._stdin.is_closing():
            self._stdin.write(data)

    def end_output(self) -> None:
        if self.output_closed:
            return
        self.output_closed = True
        if self._stdin is not None and not self._stdin.is_closing():
            self._stdin.close()
        if not self.exited.done() and self._killer is None:
            self._killer = asyncio.get_running_loop().create_task(
                self._stop_later(), name=f"stop child {self.command[0]}"
            )

    async def _stop_later(self) -> None:
        """After stdin closed: SIGTERM after ``grace`` seconds, SIGKILL after as many more."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.exited), self.grace)
                return
            self.signal(sig)

    def abort(self) -> None:
        """Close the child's stdin and kill it (SIGKILL)."""
        self.end_output()
        self.signal(signal.SIGKILL)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the child (its whole process group when it has its own session)."""
        if self.transport is None or self.exited.done():
            return
        pid = self.transport.get_pid()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)

    def close_plan(self) -> ClosePlan:
        code = self.exited.result() if self.exited.done() else None
        if self.closed_by_proxy is not None:
            forward, reason = self.closed_by_proxy
            return ClosePlan(Party.PROXY, forward, reason, forward, reason, code)
        if code is None:
            reason = "app-server closed its output"
        elif code >= 0:
            reason = f"app-server exited with code {code}"
        else:
            reason = f"app-server killed by signal {-code}"
        forward = NORMAL_CLOSURE if code == 0 else INTERNAL_ERROR
        return ClosePlan(Party.SERVER, None, reason, forward, reason, code)


def _pollable(fd: int) -> bool:
    """Whether the event loop can watch ``fd`` (a pipe, a socket, a terminal); a regular
    file or a device such as /dev/null is read in a thread and written directly."""
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)


class StdioLeg(LineLeg):
    """This process's own stdin (read) and stdout (written), as the client leg of ``wrap``.

    Pipes, sockets and terminals go through asyncio's pipe transports; a regular file (shell
    redirection) or a device such as /dev/null is read in a worker thread and written
    directly.
    """

    def __init__(self, max_size: int) -> None:
        super().__init__("client", max_size)
        self._reader: asyncio.ReadTransport | None = None
        self._writer: asyncio.WriteTransport | None = None
        self._file_out: int | None = None
        self._file_reader: asyncio.Task[None] | None = None
        self._file_readable = asyncio.Event()
        self._file_readable.set()
        self._originals: tuple[int, int] | None = None
        self._blocking = (True, True)

    @classmethod
    async def open(cls, max_size: int, read_fd: int = 0, write_fd: int = 1) -> StdioLeg:
        """Attach to ``read_fd`` and ``write_fd`` (this process's stdin and stdout by
        default); the leg works on duplicates, so the originals stay open."""
        leg = cls(max_size)
        leg._originals = (read_fd, write_fd)
        leg._blocking = (os.get_blocking(read_fd), os.get_blocking(write_fd))
        loop = asyncio.get_running_loop()
        owner = leg

        class _Read(asyncio.Protocol):
            def data_received(self, data: bytes) -> None:
                owner.feed(data)

            def eof_received(self) -> bool:
                owner.feed_eof()
                return False

            def connection_lost(self, exc: Exception | None) -> None:
                owner.feed_eof()

        class _Write(asyncio.Protocol):
            def pause_writing(self) -> None:
                owner.pause_writing()  # our stdout is full: the client reads slowly

            def resume_writing(self) -> None:
                owner.resume_writing()

            def connection_lost(self, exc: Exception | None) -> None:
                owner.output_closed = True
                owner.report_closed()
                owner._set_lost()

        stdin_fd, stdout_fd = os.dup(read_fd), os.dup(write_fd)
        if not _pollable(stdin_fd):
            leg._file_reader = loop.create_task(leg._read_file(stdin_fd), name="wrap stdin")
        else:
            pipe = os.fdopen(stdin_fd, "rb", buffering=0)
            leg._reader, _ = await loop.connect_read_pipe(_Read, pipe)
        if not _pollable(stdout_fd):
            leg._file_out = stdout_fd
        else:
            pipe = os.fdopen(stdout_fd, "wb", buffering=0)
            leg._writer, _ = await loop.connect_write_pipe(_Write, pipe)
        return leg

    async def _read_file(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            while data := await loop.run_in_executor(None, os.read, fd, 1 << 16):
                self.feed(data)
                await self._file_readable.wait()  # paused by backpressure
        finally:
            os.close(fd)
            self.feed_eof()

    def pause_reading(self) -> None:
        self._file_readable.clear()
        if self._reader is not None and not self._reader.is_closing():
            self._reader.pause_reading()

    def resume_reading(self) -> None:
        self._file_readable.set()
        if self._reader is not None and not self._reader.is_closing():
            self._reader.resume_reading()

    def write(self, data: bytes) -> None:
        if self._file_out is not None:
            view = memoryview(data)
            while view:
                view = view[os.write(self._file_out, view) :]
        elif self._writer is not None and not self._writer.is_closing():
            self._writer.write(data)

    def end_output(self) -> None:
        if self.output_closed:
            return
        self.output_closed = True
        if self._writer is not None:
            self._writer.close()
        if self._file_out is not None:
            os.close(self._file_out)
            self._file_out = None
        if self._reader is not None:
            self._reader.close()
        if self._file_reader is not None:
            self._file_reader.cancel()
        if self._writer is None:
            self._set_lost()  # else once the pipe has taken what is buffered

    def _set_lost(self) -> None:
        super()._set_lost()
        self._release()

    def _release(self) -> None:
        """Restore the descriptors' blocking mode (shared with our duplicates) and point the
        output descriptor at /dev/null, so the client sees end of file even though this
        process still holds the descriptor, and a stray write to it stays harmless."""
        originals, self._originals = self._originals, None
        if originals is None:
            return
        for fd, blocking in zip(originals, self._blocking, strict=True):
            with contextlib.suppress(OSError):
                os.set_blocking(fd, blocking)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, originals[1])
        finally:
            os.close(devnull)

    def abort(self) -> None:
        """End the output at once, dropping what the client has not read."""
        self.end_output()
        if self._writer is not None and not self.lost.done():
            self._writer.abort()
        self._set_lost()
