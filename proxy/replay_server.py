"""The replay server: the I/O shell around :mod:`proxy.replay`.

It listens on ``ws://HOST:PORT`` or a unix socket (websocket over it, as the app-server's
``--listen unix://PATH``), serves ``GET /readyz`` and ``/healthz``, and per client
connection carries out the :class:`~proxy.replay.Step` values the planner returns: a reader
task feeds client frames to the planner, a writer task sends the planned frames in order
(sleeping for the pacing delays) and closes when told. :meth:`ReplayServer.serve_stdio`
runs the same loop for one client on stdin/stdout (newline-delimited JSON, the app-server's
``stdio://`` transport) through :class:`StdioPeer`. Depending on the record mode it also
records: ``once`` (missing cassette) and ``all`` run the recording relay of
:mod:`proxy.relay` into a temporary file renamed over the cassette when recording completes;
``new_episodes`` relays a connection whose first client frame matches no unused recorded
connection to the upstream and appends it to the cassette.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import secrets
import stat
import sys
import types
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from websockets.asyncio.server import Server, ServerConnection, serve, unix_serve
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.frames import Close as CloseFrame
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from .bridge import Bridge
from .cassette import Cassette, CassetteWriter, load, new_header
from .errors import CassetteNotFound, UsageError
from .jsonrpc import Direction, Pairing, parse
from .legs import ConnectionLeg
from .modes import RecordMode, parse_mode
from .recorder import Recorder
from .redact import Redactor
from .relay import (
    DEFAULT_MAX_SIZE,
    HEALTH_PATHS,
    ListenAddress,
    RecordingRelay,
    RelayOptions,
    describe_connect_error,
    open_upstream,
    upstream_url,
)
from .replay import (
    NO_MATCH_CLOSE_CODE,
    Close,
    ConnectionReplay,
    Miss,
    Outgoing,
    ReplayOptions,
    ReplayReport,
    ReplaySession,
    Step,
    close_reason,
)
from .rules import Decision, Engine, Rule

log = logging.getLogger("rpctape.replay")

SHUTDOWN_REASON = "rpctape shutting down"


def _shorten(data: str | bytes, limit: int = 200) -> str:
    """A frame for the log: text (binary shown by size), cut at ``limit`` characters."""
    text = data if isinstance(data, str) else f"<{len(data)} bytes>"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


class Peer(Protocol):
    """The live client as the replay loop sees it: a websocket connection or a :class:`StdioPeer`.

    ``recv`` returns the next message (``str`` text, ``bytes`` binary) and raises
    :class:`~websockets.exceptions.ConnectionClosed` when there is none left (its ``sent`` is
    set when this side closed); ``send`` writes one whole message; ``close`` ends the
    connection, after which ``recv`` raises.
    """

    async def recv(self) -> str | bytes: ...

    async def send(self, message: bytes, *, text: bool | None = None) -> None: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


def _watchable(fd: int) -> bool:
    """Whether the event loop can watch ``fd``: pipes, sockets and terminals can; regular
    files and ``/dev/null`` cannot (epoll refuses them), but reading them never blocks."""
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _PipeOutput(asyncio.Protocol):
    """Flow control of the write pipe: :meth:`StdioPeer.send` waits while it is paused."""

    def __init__(self) -> None:
        self.writable = asyncio.Event()
        self.writable.set()
        self.lost = asyncio.Event()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()
        self.writable.set()


class StdioPeer:
    """One client speaking newline-delimited messages on two file descriptors (by default
    this process's stdin and stdout), behind the surface of :class:`Peer`.

    Open it with :meth:`open` in the running loop. :meth:`recv` returns each line without its
    ``\\n`` as text (``bytes`` when it is not UTF-8, which then matches only a recorded binary
    frame), empty lines and non-JSON included; a last line without newline is returned too;
    then it raises ``ConnectionClosed`` (``sent`` unset: the client ended its input). A line
    over ``max_size`` bytes ends the input as well (the websocket transport closes with 1009).
    :meth:`send` writes a message and ``\\n`` (a binary frame's bytes too: a line has no
    type). :meth:`close` stops reading, flushes, and points the output descriptor at
    ``/dev/null`` so that the client sees end of file at once while a stray write to it stays
    harmless; :meth:`abort` does the same without flushing. Pipes, sockets and terminals go
    through the event loop; regular files and ``/dev/null`` (``< requests.jsonl``) through a
    worker thread, as reading or writing them never blocks. :attr:`notes` says what a person
    should know (torn last line, overlong line) for the report.
    """

    def __init__(self, read_fd: int, write_fd: int, max_size: int) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd
        self.max_size = max_size
        self.notes: list[str] = []
        self._blocking = (os.get_blocking(read_fd), os.get_blocking(write_fd))
        self._reader = asyncio.StreamReader(limit=max_size)
        self._in: asyncio.ReadTransport | None = None
        self._in_file: BinaryIO | None = None
        self._out: asyncio.WriteTransport | None = None
        self._output = _PipeOutput()
        self._ended = False
        self._closed: CloseFrame | None = None
        self._released = False

    @classmethod
    async def open(
        cls, read_fd: int = 0, write_fd: int = 1, *, max_size: int = DEFAULT_MAX_SIZE
    ) -> StdioPeer:
        """Start reading ``read_fd`` and writing ``write_fd`` (neither is closed by the peer)."""
        loop = asyncio.get_running_loop()
        peer = cls(read_fd, write_fd, max_size)
        try:
            if _watchable(read_fd):
                protocol = asyncio.StreamReaderProtocol(peer._reader)
                pipe = open(read_fd, "rb", buffering=0, closefd=False)  # noqa: SIM115
                peer._in, _ = await loop.connect_read_pipe(lambda: protocol, pipe)
            else:
                peer._in_file = open(read_fd, "rb", closefd=False)  # noqa: SIM115
            if _watchable(write_fd):
                pipe = open(write_fd, "wb", buffering=0, closefd=False)  # noqa: SIM115
                peer._out, _ = await loop.connect_write_pipe(lambda: peer._output, pipe)
        except BaseException:
            peer.abort()
            raise
        return peer

    async def _read_line(self) -> bytes:
        """The next line with its ``\\n`` (none on a last line); ``b""`` at end of input.

        Raises :class:`ValueError` for a line over :attr:`max_size` bytes.
        """
        if self._in_file is not None:
            line: bytes = await asyncio.to_thread(self._in_file.readline, self.max_size + 1)
        else:
            try:
                line = await self._reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                line = exc.partial
            except asyncio.LimitOverrunError as exc:
                raise ValueError("line too long") from exc
        if len(line.removesuffix(b"\n")) > self.max_size:
            raise ValueError("line too long")
        return line

    async def recv(self) -> str | bytes:
        """The next line (without ``\\n``); ``ConnectionClosed`` once input ended or closed."""
        line = b""
        if not self._ended and self._closed is None:
            try:
                line = await self._read_line()
            except ValueError:
                note = (
                    f"a line from the client exceeded {self.max_size} bytes: the replay "
                    "stopped reading (the websocket transport closes with 1009)"
                )
                log.error("%s", note)
                self.notes.append(note)
        if self._closed is not None or not line:
            self._ended = True
            raise ConnectionClosed(None, self._closed)
        if line.endswith(b"\n"):
            line = line[:-1]
        else:
            self._ended = True
            self.notes.append(
                f"the client's last line ({len(line)} bytes) had no newline; "
                "it was replayed as a message"
            )
        try:
            return line.decode()
        except UnicodeDecodeError:
            return line

    async def send(self, message: str | bytes, *, text: bool | None = None) -> None:
        """Write ``message`` and ``\\n``; ``ConnectionClosed`` once closed or the pipe broke."""
        if self._closed is not None or self._output.lost.is_set():
            raise ConnectionClosed(None, self._closed)
        data = message.encode() if isinstance(message, str) else message
        if self._out is None:
            await asyncio.to_thread(_write_all, self.write_fd, data + b"\n")
            return
        self._out.write(data)
        self._out.write(b"\n")
        await self._output.writable.wait()  # backpressure: the client reads slowly
        if self._output.lost.is_set():
            raise ConnectionClosed(None, self._closed)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Stop reading, write out what is buffered, end the output (safe twice).

        ``code`` and ``reason`` (a websocket close) are only logged: a pipe just ends.
        Waits for the client to read what is buffered; see :meth:`abort`.
        """
        if self._closed is None:
            self._closed = CloseFrame(code, reason)
            if code != CloseCode.NORMAL_CLOSURE:
                log.info("closing stdio (%d %s)", code, reason)
            self._stop_reading()
        if self._out is not None and not self._output.lost.is_set():
            self._out.close()  # flushes first
            await self._output.lost.wait()
        self._release()

    def abort(self) -> None:
        """Like :meth:`close`, dropping what the client has not read yet."""
        if self._closed is None:
            self._closed = CloseFrame(CloseCode.GOING_AWAY, "")
            self._stop_reading()
        if self._out is not None and not self._output.lost.is_set():
            self._out.abort()
        self._release()

    def _stop_reading(self) -> None:
        if self._in is not None:
            self._in.close()
        self._reader.feed_eof()  # wakes a pending recv

    def _release(self) -> None:
        """Restore the descriptors' blocking mode; replace the output by /dev/null."""
        if self._released:
            return
        self._released = True
        if self._in_file is not None:
            self._in_file.close()  # not the descriptor
        for fd, blocking in zip((self.read_fd, self.write_fd), self._blocking, strict=True):
            with contextlib.suppress(OSError):
                os.set_blocking(fd, blocking)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self.write_fd)
        finally:
            os.close(devnull)


class Plan(enum.Enum):
    """What the server does, decided from the record mode and whether the cassette exists."""

    REPLAY = "replay"
    """Serve recorded connections only (``none``; ``once`` with a cassette)."""
    RECORD = "record"
    """Relay everything to the upstream and record a new cassette (``all``; ``once``)."""
    EPISODES = "episodes"
    """Replay what matches, relay and append the rest (``new_episodes``)."""


def plan_for(mode: RecordMode, cassette_exists: bool) -> Plan:
    """The plan for ``mode`` given whether the cassette file exists."""
    if mode is RecordMode.NEW_EPISODES:
        return Plan.EPISODES
    if mode is RecordMode.ALL or (mode is RecordMode.ONCE and not cassette_exists):
        return Plan.RECORD
    return Plan.REPLAY


class ReplayServer:
    """Serve a cassette to live clients (and record, depending on ``record_mode``).

    Use as ``async with ReplayServer(path) as url:`` (or :func:`replay_server`); ``url`` is
    ``ws://127.0.0.1:PORT``, or ``unix:///PATH`` with ``listen="unix:///PATH"`` (the socket
    file is removed on close). ``await server.serve_stdio()`` instead serves one client on
    stdin/stdout. :attr:`report` says what was not replayed and every miss, at any
    time and finally after the block. With ``strict=True`` leaving the block raises
    :class:`~proxy.replay.ReplayMismatch` when the report is not clean (unless the block
    itself raised). A recording made by ``once`` or ``all`` replaces the cassette only when
    the block exits without an exception (see :meth:`close`).
    """

    def __init__(
        self,
        cassette: Path | str,
        *,
        record_mode: RecordMode | str = RecordMode.NONE,
        upstream: str | None = None,
        pace: str | float = "fast",
        on_miss: str = "error",
        match: str = "strict",
        ignore: Iterable[str] = (),
        strict: bool = False,
        listen: ListenAddress | str = "ws://127.0.0.1:0",
        max_size: int = DEFAULT_MAX_SIZE,
        redact: bool = True,
        redact_keys: tuple[str, ...] = (),
        connect_timeout: float = 10.0,
        close_timeout: float = 1.0,
        rules: Sequence[Rule] = (),
    ) -> None:
        self.path = Path(cassette)
        self.rules = tuple(rules)
        self.record_mode = parse_mode(RecordMode, record_mode, "record mode")
        self.options = ReplayOptions.build(pace=pace, on_miss=on_miss, match=match, ignore=ignore)
        self.strict = strict
        self.listen = ListenAddress.parse(listen) if isinstance(listen, str) else listen
        self.upstream = upstream
        if upstream is not None:
            RelayOptions(upstream)  # validates the URL
        self.max_size = max_size
        self.redactor = Redactor.build(redact_keys, enabled=redact)
        self.connect_timeout = connect_timeout
        self.close_timeout = close_timeout
        self.plan: Plan | None = None
        """What the server does; decided by :meth:`start`."""
        self.url = ""
        self.transport = "unix" if self.listen.path is not None else "websocket"
        """``websocket``, ``unix`` (websocket over a unix socket) or ``stdio``."""
        self._cassette: Cassette | None = None
        self._session: ReplaySession | None = None
        self._server: Server | None = None
        self._relay: RecordingRelay | None = None
        self._recorder: Recorder | None = None
        self._writer: CassetteWriter | None = None
        self._temp: Path | None = None
        self._final: ReplayReport | None = None
        self._socket: tuple[str, int] | None = None
        """The unix socket file bound (path, inode), removed on close."""
        self._stdio: StdioPeer | None = None
        self._stdio_ended = asyncio.Event()
        self._stdio_notes: list[str] = []

    # -- lifecycle --

    async def __aenter__(self) -> str:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        await self.close(commit=exc_type is None)
        if self.strict and exc_type is None:
            self.report.check()

    async def start(self) -> str:
        """Decide the plan, load the cassette, bind; return the ``ws://HOST:PORT`` URL."""
        plan = self._prepare()
        if plan is Plan.RECORD:
            self.url = await self._start_recording()
        else:
            self.url = await self._serve()
        log.info("%s %s on %s", plan.value, self.path, self.url)
        return self.url

    def _prepare(self) -> Plan:
        """Decide the plan from the record mode and load the cassette (once)."""
        if self.plan is not None:
            raise RuntimeError("ReplayServer is already started")
        exists = self.path.is_file()
        plan = plan_for(self.record_mode, exists)
        if plan is not Plan.REPLAY and self.upstream is None:
            raise UsageError(
                f"record mode {self.record_mode.value!r} needs an upstream to record "
                f"{self.path}" + ("" if exists else " (it does not exist yet)")
            )
        if plan is Plan.REPLAY and not exists:
            raise CassetteNotFound(
                f"no cassette at {self.path}; record mode {self.record_mode.value!r} only "
                "replays: record it first (record mode 'once' with an upstream, or rpctape record)"
            )
        if plan is not Plan.RECORD and exists:
            self._cassette = load(self.path)
            for warning in self._cassette.warnings:
                log.warning("%s", warning)
        self._session = ReplaySession(self._cassette, self.options, str(self.path))
        self.plan = plan
        return plan

    async def serve_stdio(self, stdin: int = 0, stdout: int = 1) -> ReplayReport:
        """Replay the cassette's first recorded connection to one client speaking
        newline-delimited JSON on ``stdin``/``stdout`` (the app-server's ``stdio://``
        transport) until the client ends its input; return the final report.

        Call it instead of :meth:`start`. Replies already planned when the input ends are
        still written (a client may close its output and keep reading); then the output is
        ended. A close the replay plans (``on_miss="close"``, a recording whose server
        closed) ends it at once. :meth:`close` from another task stops it. Only record mode
        ``none`` is served (there is no upstream to record from). With ``strict=True`` an
        unclean report raises :class:`~proxy.replay.ReplayMismatch`.
        """
        if self.record_mode is not RecordMode.NONE:
            raise UsageError(
                f"record mode {self.record_mode.value!r} cannot be used with stdio: replay over "
                "stdio only replays (record mode 'none'); record with rpctape record first"
            )
        self._prepare()
        self.transport = "stdio"
        self.url = "stdio://"
        session = self._session
        assert session is not None
        peer = self._stdio = await StdioPeer.open(stdin, stdout, max_size=self.max_size)
        self._stdio_notes = peer.notes
        log.info("replay %s over stdio", self.path)
        flush = True
        try:
            live = session.open()
            claim = session.claim_next(live)
            if isinstance(claim, Miss):
                log.warning("%s", claim.render())
            else:
                await self._replay(peer, claim, None, drain=True)
        except BaseException:
            flush = False  # cancelled or failed: do not wait for the client to read
            raise
        finally:
            await self._close_stdio(peer, flush=flush)
            self._stdio_ended.set()
        await self.close()
        if self.strict:
            self.report.check()
        return self.report

    async def _close_stdio(self, peer: StdioPeer, *, flush: bool) -> None:
        """End the output: flushed (waiting for the client to read), or within
        ``close_timeout`` (shutting down) and then dropped."""
        try:
            if flush:
                await peer.close()
            else:
                await asyncio.wait_for(
                    peer.close(CloseCode.GOING_AWAY, SHUTDOWN_REASON), self.close_timeout
                )
        except TimeoutError:
            log.warning("the stdio client did not read the last replies; dropped")
        finally:
            peer.abort()

    async def close(self, *, commit: bool = True) -> None:
        """Close every connection (1001), stop listening, finish the cassette; safe twice.

        ``commit`` decides what happens to a recording made by ``once`` or ``all``: renamed
        over the cassette (true) or deleted, leaving the old cassette as it was (false).
        """
        server, self._server = self._server, None
        relay, self._relay = self._relay, None
        stdio, self._stdio = self._stdio, None
        if server is not None:
            server.close(close_connections=True, code=CloseCode.GOING_AWAY, reason=SHUTDOWN_REASON)
            await server.wait_closed()
            self._remove_socket()
        if stdio is not None:
            await self._close_stdio(stdio, flush=False)
            await self._stdio_ended.wait()
        if relay is not None:
            await relay.close()
        self._finish_cassette(commit)
        if self._session is not None and self._final is None:
            self._final = self._build_report()

    @property
    def report(self) -> ReplayReport:
        """What was not replayed and every miss (final once closed)."""
        if self._final is not None:
            return self._final
        return self._build_report()

    def _build_report(self) -> ReplayReport:
        notes: list[str] = []
        if self.transport == "stdio":
            notes.append(
                "transport: stdio (newline-delimited JSON on stdin/stdout; only the first "
                "recorded connection is replayed)"
            )
            notes += [f"stdio: {note}" for note in self._stdio_notes]
        elif self.transport == "unix":
            notes.append(f"transport: websocket over the unix socket {self.listen.path}")
        if self.plan is Plan.RECORD and self._recorder is not None:
            rec = self._recorder
            notes.append(
                f"recorded {rec.connections} connection(s), {rec.frames[Direction.C2S]} "
                f"frame(s) client>server, {rec.frames[Direction.S2C]} frame(s) server>client "
                f"from {self.upstream}"
            )
        session = self._session
        if session is None:
            return ReplayReport(str(self.path), notes=tuple(notes))
        report = session.report()
        return ReplayReport(report.cassette, report.connections, tuple(notes))

    def _finish_cassette(self, commit: bool) -> None:
        writer, self._writer = self._writer, None
        temp, self._temp = self._temp, None
        if writer is not None:
            writer.close()
        if temp is not None:
            if commit:
                os.replace(temp, self.path)
                log.info("recorded %s", self.path)
            else:
                temp.unlink(missing_ok=True)
                log.warning("recording not kept; %s is unchanged", self.path)

    # -- recording everything (once, all) --

    async def _start_recording(self) -> str:
        assert self.upstream is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Beside the cassette, so that the final rename stays on one file system.
        self._temp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.recording")
        self._writer = CassetteWriter(self._temp, new_header(self.upstream))
        self._recorder = Recorder(self._writer, self.redactor)
        options = RelayOptions(
            self.upstream,
            listen=self.listen,
            max_size=self.max_size,
            connect_timeout=self.connect_timeout,
            close_timeout=self.close_timeout,
            rules=self.rules,
        )
        self._relay = RecordingRelay(options, self._recorder)
        try:
            return await self._relay.start()
        except BaseException:
            await self.close(commit=False)
            raise

    # -- replaying (none, once, new_episodes) --

    async def _serve(self) -> str:
        settings: dict[str, Any] = {
            "process_request": self._process_request,
            "select_subprotocol": self._select_subprotocol,
            "max_size": self.max_size,
            "compression": None,
            "ping_interval": None,
            "close_timeout": self.close_timeout,
            "server_header": None,
        }
        path = self.listen.path
        if path is not None:
            await _refuse_a_live_socket(path)
            self._server = await unix_serve(self._handle, path, **settings)
            self._socket = (path, os.stat(path).st_ino)
            return f"unix://{os.path.abspath(path)}"
        self._server = await serve(self._handle, self.listen.host, self.listen.port, **settings)
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"ws://{host}:{port}"

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

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path in HEALTH_PATHS and "upgrade" not in request.headers.get("Connection", "").lower():
            return connection.respond(200, "")
        return None

    def _select_subprotocol(self, connection: ServerConnection, offered: Any) -> Any:
        """The subprotocol the next recorded connection negotiated, if the client offers it."""
        assert self._session is not None
        upcoming = self._session.peek_next() if self.plan is Plan.REPLAY else None
        if upcoming is not None and upcoming.subprotocol in offered:
            return upcoming.subprotocol
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        session = self._session
        assert session is not None
        live = session.open()
        try:
            if self.plan is Plan.REPLAY:
                claim = session.claim_next(live)
                if isinstance(claim, Miss):
                    log.warning("%s", claim.render())
                    reason = close_reason("rpctape: no unused recorded connection left")
                    await ws.close(NO_MATCH_CLOSE_CODE, reason)
                    return
                await self._replay(ws, claim, None)
                return
            try:
                first = await ws.recv()
            except ConnectionClosed:
                return
            replay = session.claim_matching(live, first)
            if replay is not None:
                await self._replay(ws, replay, first)
            else:
                await self._record_episode(ws, live, first)
        except Exception:
            log.exception("live connection %d: replay error", live)

    async def _replay(
        self,
        ws: Peer,
        replay: ConnectionReplay,
        first: str | bytes | None,
        *,
        drain: bool = False,
    ) -> None:
        """Feed client frames to the planner; a writer task sends what it plans.

        When the client goes away the writer is stopped, unless ``drain``: then, if only the
        client's input ended (stdio), what is already planned is still sent first.
        """
        clog = logging.LoggerAdapter(log, {"conn": replay.live})
        clog.info(
            "live connection %d replays recorded connection %d",
            replay.live,
            replay.recorded.conn,
        )
        rules = _ReplayRules(self.rules, replay, clog) if self.rules else None
        queue: asyncio.Queue[Step | None] = asyncio.Queue()
        writer = asyncio.create_task(
            self._send_steps(ws, replay, queue, clog, rules), name=f"replay-conn{replay.live}:send"
        )
        try:
            queue.put_nowait(replay.connect())
            pending = [] if first is None else [first]
            while True:
                if pending:
                    data = pending.pop()
                else:
                    try:
                        data = await ws.recv()
                    except ConnectionClosed as exc:
                        if drain and exc.sent is None:
                            queue.put_nowait(None)  # the writer ends after what is planned
                            await writer
                        break
                if rules is None:
                    queue.put_nowait(self._receive(replay, data, clog))
                else:
                    for step in await rules.from_client(data):
                        queue.put_nowait(step)
        finally:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            report = replay.report()
            clean = not report.misses and not report.unused_client
            clog.log(
                logging.INFO if clean else logging.WARNING,
                "live connection %d ended:\n%s",
                replay.live,
                "\n".join(report.render()),
            )

    @staticmethod
    def _receive(
        replay: ConnectionReplay, data: str | bytes, clog: logging.LoggerAdapter[logging.Logger]
    ) -> Step:
        if clog.isEnabledFor(logging.DEBUG):
            clog.debug("> %s", _shorten(data))
        step = replay.receive(data)
        if step.miss is not None:
            clog.warning("%s", step.miss.render())
        return step

    @staticmethod
    async def _send_steps(
        ws: Peer,
        replay: ConnectionReplay,
        queue: asyncio.Queue[Step | None],
        clog: logging.LoggerAdapter[logging.Logger],
        rules: _ReplayRules | None,
    ) -> None:
        debug = clog.isEnabledFor(logging.DEBUG)
        try:
            while True:
                step = await queue.get()
                if step is None:
                    return
                work = list(step.send)
                while work:
                    out = work.pop(0)
                    if out.delay > 0:
                        await asyncio.sleep(out.delay)
                    data: bytes | None = out.data
                    if rules is not None and out.text and out.index is not None:
                        data, more = await rules.from_server(out)
                        work[:0] = more
                    if data is not None:
                        await ws.send(data, text=out.text)
                        if debug:
                            clog.debug("< %s", _shorten(data))
                    if out.index is not None:
                        replay.delivered(out)
                if step.close is not None:
                    await ws.close(step.close.code, step.close.reason)
                    return
                if rules is not None and rules.close is not None:
                    await ws.close(*rules.close)
                    return
        except ConnectionClosed:
            return

    # -- new episodes --

    def _episode_recorder(self) -> Recorder:
        """The recorder appending to the cassette, created (and the file opened) on first use."""
        if self._recorder is None:
            assert self.upstream is not None
            if self.path.is_file():
                self._writer = CassetteWriter.append_to(self.path)
            else:
                self._writer = CassetteWriter(self.path, new_header(self.upstream))
            after = self._cassette.events if self._cassette is not None else ()
            self._recorder = Recorder(self._writer, self.redactor, after=after)
        return self._recorder

    async def _record_episode(self, ws: ServerConnection, live: int, first: str | bytes) -> None:
        """Relay a connection no recording matches to the upstream and append it, through the
        same bridge as ``rpctape record`` (rules included)."""
        assert self.upstream is not None and self._session is not None
        request = ws.request
        assert request is not None
        recorder = self._episode_recorder()
        conn = recorder.new_connection()
        options = RelayOptions(
            self.upstream,
            max_size=self.max_size,
            rules=self.rules,
            connect_timeout=self.connect_timeout,
            close_timeout=self.close_timeout,
        )
        target = options.target
        url = upstream_url(target.url, request.path) if target.kind == "websocket" else target.url
        try:
            server = await open_upstream(options, request)
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            message = f"cannot reach upstream {url}: {describe_connect_error(exc)}"
            recorder.error(conn, message, stage="connect", upstream=url)
            self._session.episode_failed(live, message)
            log.warning("live connection %d: %s", live, message)
            await ws.close(CloseCode.INTERNAL_ERROR, close_reason(f"rpctape: {message}"))
            return
        log.info("live connection %d matches no recording: recording it as %d", live, conn)
        recorder.open(
            conn,
            path=request.path,
            headers=request.headers.raw_items(),
            subprotocol=ws.subprotocol,
            upstream=url,
            transport=target.kind,
        )
        self._session.recorded_live(live, conn)
        client = ConnectionLeg("client", ws)
        client.held = [
            (isinstance(first, str), first.encode() if isinstance(first, str) else first)
        ]
        bridge = Bridge(conn, client, server, recorder, self.rules)
        bridge.start()
        client.start()
        await bridge.wait()


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


class _ReplayRules:
    """Rewrite rules in replay: on live client frames before matching, on recorded server
    frames before sending. Local replies to the (replayed) server are fed to the planner as
    if the client had sent them; see docs/replay.md."""

    def __init__(
        self,
        rules: Sequence[Rule],
        replay: ConnectionReplay,
        clog: logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self.engine = Engine(rules)
        self.pairing = Pairing()
        self.replay = replay
        self.clog = clog
        self.close: tuple[int, str] | None = None

    def _decide(self, direction: Direction, raw: bytes) -> Decision:
        parsed = parse(raw)
        return self.engine.decide(direction, raw, parsed, self.pairing.observe(direction, parsed))

    def _to_planner(self, frame: bytes) -> list[Outgoing]:
        step = ReplayServer._receive(self.replay, frame.decode(), self.clog)
        return list(step.send)

    async def from_client(self, data: str | bytes) -> list[Step]:
        """Steps for one live client frame (matched after the rules acted)."""
        if not isinstance(data, str):
            return [ReplayServer._receive(self.replay, data, self.clog)]
        decision = self._decide(Direction.C2S, data.encode())
        if decision.delay_ms:
            await asyncio.sleep(decision.delay_ms / 1000)  # holds later client frames only
        out: list[Outgoing] = []
        steps: list[Step] = []
        for _, towards, frame in decision.before:
            out += self._to_planner(frame) if towards is Direction.C2S else [_own(frame)]
        if decision.forward is not None:
            step = ReplayServer._receive(self.replay, decision.forward.decode(), self.clog)
            steps.append(Step(tuple(out) + step.send, step.close, step.miss))
            out = []
        out += [_own(frame) for _, frame in decision.to_sender]
        for _, towards, frame in decision.after:
            out += self._to_planner(frame) if towards is Direction.C2S else [_own(frame)]
        if out:
            steps.append(Step(tuple(out)))
        if decision.close is not None:
            self.close = decision.close
            steps.append(Step(close=Close(*decision.close)))
        return steps

    async def from_server(self, out: Outgoing) -> tuple[bytes | None, list[Outgoing]]:
        """What to send for one recorded server frame, and what the rules add after it."""
        decision = self._decide(Direction.S2C, out.data)
        if decision.delay_ms:
            await asyncio.sleep(decision.delay_ms / 1000)  # holds later server frames only
        more: list[Outgoing] = []
        for _, towards, frame in decision.before + decision.after:
            more += self._to_planner(frame) if towards is Direction.C2S else [_own(frame)]
        for _, frame in decision.to_sender:  # answered "to the server": the planner
            more += self._to_planner(frame)
        if decision.close is not None:
            self.close = decision.close
        return decision.forward, more


def _own(frame: bytes) -> Outgoing:
    """A frame rpctape itself sends to the client (not a recorded one)."""
    return Outgoing(frame, True)


def replay_server(cassette: Path | str, **options: Any) -> ReplayServer:
    """A :class:`ReplayServer` for ``async with replay_server(path, **options) as url:``.

    It binds 127.0.0.1 on a free port unless ``listen`` says otherwise; keep the returned
    object to read its :attr:`~ReplayServer.report` after the block.
    """
    return ReplayServer(cassette, **options)


class _CallableModule(types.ModuleType):
    """This module, callable: ``proxy.replay_server`` names both it and :func:`replay_server`
    (Python binds a submodule on its package once imported), so calling either works."""

    def __call__(self, cassette: Path | str, **options: Any) -> ReplayServer:
        return replay_server(cassette, **options)


sys.modules[__name__].__class__ = _CallableModule
