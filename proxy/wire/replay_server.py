"""``rpctape replay``: live client and recorded server, on the same listener and bridge as
``record``.

The :class:`~proxy.wire.listener.Listener` accepts each client (same handshake checks as
``record``); :class:`PlaybackSide` puts a :class:`~proxy.wire.playback.RecordedLeg` on the other
side of the bridge. The record modes choose the far side: ``none`` (and ``once`` with a
cassette) replays; ``once`` without a cassette and ``all`` relay to the upstream through
:class:`~proxy.wire.relay.LiveSide` into a temporary file renamed over the cassette when recording
completes; ``new_episodes`` waits for a client's first message, replays the first unused
recorded connection that matches it, and otherwise relays the connection and appends it.
:meth:`ReplayServer.serve_stdio` bridges this process's stdin/stdout (JSON Lines, the
app-server's ``stdio://`` transport) to a recorded leg the same way.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import secrets
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from websockets.frames import CloseCode
from websockets.http11 import Request

from ..core.cassette import Cassette, CassetteWriter, load, new_header
from ..core.close import Close, clip_reason
from ..core.dialect import NEUTRAL, Dialect
from ..core.jsonrpc import Direction
from ..core.matching import MatchOn, Preset
from ..core.modes import RecordMode, parse_mode
from ..core.ordering import DEFAULT_HOLD_TIMEOUT
from ..core.planner import (
    ANSWER_MISS_CLOSE_CODE,
    NO_MATCH_CLOSE_CODE,
    ConnectionReplay,
    ReplayOptions,
)
from ..core.recorder import Recorder
from ..core.redact import Redactor
from ..core.replay_report import Miss, ReplayReport
from ..core.replay_session import Handshake, ReplaySession
from ..core.rules import Rule
from ..errors import CassetteNotFound, CassetteWriteError, UpstreamError, UsageError
from .bridge import Bridge
from .legs import Leg, StdioLeg, WebSocketLeg
from .listener import (
    DEFAULT_MAX_SIZE,
    HandshakePolicy,
    ListenAddress,
    Listener,
    Refused,
    offered_subprotocols,
)
from .playback import Gate, RecordedLeg
from .relay import LiveSide, RelayOptions

log = logging.getLogger("rpctape.replay")

NO_RECORDING_STATUS = 404
"""HTTP status of an upgrade when every recorded connection was already replayed."""


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


def _log_report(replay: ConnectionReplay) -> None:
    """One line when a live connection ends (each miss was explained when it happened)."""
    report = replay.report()
    clean = not report.misses and not report.unused_client
    counts = report.render()[0].split(": ", 1)[-1]
    log.log(logging.INFO if clean else logging.WARNING, "live connection %d ended: %s",
            replay.live, counts)  # fmt: skip


def recorded_bridge(
    client: Leg,
    replay: ConnectionReplay,
    rules: Sequence[Rule],
    session: ReplaySession | None = None,
) -> Bridge:
    """A bridge from a live client leg to the recorded connection ``replay`` plays; with
    ``session``, its frames keep the recorded order across the session's connections (a
    connection that shares no thread with another has no order to keep)."""
    log.info("live connection %d replays recorded connection %d", replay.live, replay.recorded.conn)
    gate = None
    if session is not None and not session.ordering.independent(replay.recorded.conn):
        live = replay.live
        gate = Gate(
            session.ordering,
            session.options.hold_timeout,
            lambda text: session.note(live, text),
        )
    server = RecordedLeg(replay, gate)
    bridge = Bridge(replay.live, client, server, None, rules)
    server.start()
    bridge.done.add_done_callback(lambda _: _log_report(replay))
    return bridge


def handshake_of(request: Request) -> Handshake:
    """What pairing compares of an upgrade request."""
    return Handshake(
        request.path,
        tuple(request.headers.raw_items()),
        tuple(offered_subprotocols(request)),
    )


class PlaybackSide:
    """The far side of ``replay``: each client is paired with the unused recorded connection
    that fits it best, by its handshake and its first message (:meth:`ReplaySession.pair`);
    with ``live`` (``new_episodes``), a first message no recording starts with makes the
    connection relayed to the upstream and recorded instead."""

    def __init__(
        self,
        session: ReplaySession,
        rules: Sequence[Rule],
        live: LiveSide | None = None,
    ) -> None:
        self.session = session
        self.rules = tuple(rules)
        self.live = live

    async def prepare(self, request: Request) -> _PlaybackPending | _EpisodePending:
        session = self.session
        live = session.open()
        if self.live is not None:
            return _EpisodePending(self, live, request)
        miss = session.none_left(live)
        if miss is not None:
            text = miss.render()
            log.warning("%s", text)
            raise Refused(NO_RECORDING_STATUS, text + "\n")
        return _PlaybackPending(self, live, request)


async def _first_message(client: WebSocketLeg) -> str | bytes | None:
    """The client's first message (held, not consumed), or ``None`` if it closed first."""
    await client.first_message()
    if not client.held:
        return None
    is_text, payload = client.held[0]
    if is_text:
        return payload.decode()  # a text frame is valid UTF-8: the leg checked
    return payload


class _PlaybackPending:
    """``replay``: the recording is chosen at the client's first message (or at once when
    the best fit by handshake has the server speak first)."""

    def __init__(self, side: PlaybackSide, live: int, request: Request) -> None:
        self.side = side
        self.live = live
        self.handshake = handshake_of(request)
        self.subprotocol = side.session.subprotocol(self.handshake)

    async def open(self, client: WebSocketLeg) -> Bridge | None:
        session = self.side.session
        first: str | bytes | None = None
        if not session.speaks_first(self.handshake):
            first = await _first_message(client)
            if first is None:
                session.gone_before_speaking(self.live)
                client.close(CloseCode.NORMAL_CLOSURE, "")
                return None
        claim = session.pair(self.live, self.handshake, first)
        if isinstance(claim, Miss):
            log.warning("%s", claim.render())
            reason = clip_reason(claim.render().split("\n", 1)[0])
            client.close(NO_MATCH_CLOSE_CODE, reason)
            return None
        return recorded_bridge(client, claim, self.side.rules, session)

    def abandon(self, reason: str, status: int) -> None:
        log.info("live connection %d: %s", self.live, reason)


class _EpisodePending:
    """``new_episodes``: decided at the client's first message."""

    subprotocol = None

    def __init__(self, side: PlaybackSide, live: int, request: Request) -> None:
        self.side = side
        self.live = live
        self.request = request

    async def open(self, client: WebSocketLeg) -> Bridge | None:
        side, session = self.side, self.side.session
        first = await _first_message(client)
        if first is None:
            client.close(CloseCode.NORMAL_CLOSURE, "")
            return None
        replay = session.pair_matching(self.live, handshake_of(self.request), first)
        if replay is not None:
            return recorded_bridge(client, replay, side.rules, session)
        assert side.live is not None
        recorder = side.live.recorder
        options = side.live.options
        url = options.target.url_for(self.request.path)
        conn = recorder.new_connection()
        try:
            server = await options.connect(self.request)
        except UpstreamError as exc:
            recorder.error(conn, str(exc), stage="connect", upstream=url)
            session.episode_failed(self.live, str(exc))
            log.warning("live connection %d: %s", self.live, exc)
            client.close(CloseCode.INTERNAL_ERROR, clip_reason(f"rpctape: {exc}"))
            return None
        log.info("live connection %d matches no recording: recording it as %d", self.live, conn)
        recorder.open(
            conn,
            path=self.request.path,
            headers=self.request.headers.raw_items(),
            subprotocol=None,
            upstream=url,
            transport=options.target.kind,
        )
        session.recorded_live(self.live, conn)
        return Bridge(conn, client, server, recorder, side.rules)

    def abandon(self, reason: str, status: int) -> None:
        log.info("live connection %d: %s", self.live, reason)


MISS_CLOSES = frozenset({ANSWER_MISS_CLOSE_CODE, NO_MATCH_CLOSE_CODE})


def explain_miss_closes(
    bridge: Bridge,
    replay: ConnectionReplay,
    explain: Callable[[str], None] | None,
    grace: float,
) -> list[Close]:
    """When the recorded leg closes because of a miss (4409, 4404), hand the explanation to
    ``explain`` first and end the client's side ``grace`` seconds later (a stdio client reads
    stderr in a thread that races its stdout reader). Returns the list the close goes into."""
    closes: list[Close] = []
    forward = bridge.server.on_closed

    def closed(leg: Leg) -> None:
        plan = leg.close_plan()
        if plan.code in MISS_CLOSES and not closes and plan.code is not None:
            closes.append(Close(plan.code, plan.reason))
            misses = replay.report().misses
            if explain is not None:
                explain(misses[-1].render() if misses else plan.reason)
            if forward is not None and grace > 0:
                asyncio.get_running_loop().call_later(grace, forward, leg)
                return
        if forward is not None:
            forward(leg)

    bridge.server.on_closed = closed
    return closes


class ReplayServer:
    """Serve a cassette to live clients (and record, depending on ``record_mode``).

    Use as ``async with ReplayServer(path) as url:`` (or :func:`replay_server`); ``url`` is
    ``ws://127.0.0.1:PORT``, or ``unix:///PATH`` with ``listen="unix:///PATH"`` (the socket
    file is removed on close). ``await server.serve_stdio()`` instead serves one client on
    stdin/stdout. :attr:`report` says what was not replayed and every miss, at any
    time and finally after the block. With ``strict=True`` leaving the block raises
    :class:`~proxy.core.replay.ReplayMismatch` when the report is not clean (unless the block
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
        match_on: MatchOn = Preset.CODEX,
        allow_playback_repeats: bool = False,
        order: str = "thread",
        hold_timeout: float = DEFAULT_HOLD_TIMEOUT,
        strict: bool = False,
        listen: ListenAddress | str = "ws://127.0.0.1:0",
        max_size: int = DEFAULT_MAX_SIZE,
        redact: bool = True,
        redact_keys: tuple[str, ...] = (),
        redact_values: tuple[str, ...] = (),
        connect_timeout: float = 10.0,
        close_timeout: float = 1.0,
        handshake_timeout: float = 10.0,
        allow_origins: Iterable[str] = (),
        token: str | None = None,
        rules: Sequence[Rule] = (),
        after_load: Callable[[], None] | None = None,
        dialect: Dialect = NEUTRAL,
    ) -> None:
        self.path = Path(cassette)
        self.rules = tuple(rules)
        self.after_load = after_load
        """Called once the cassette is loaded and planned, before the first client (the
        commands freeze what is loaded out of the garbage collector's walks)."""
        self.record_mode = parse_mode(RecordMode, record_mode, "record mode")
        self.options = ReplayOptions.build(
            pace=pace,
            on_miss=on_miss,
            match=match,
            ignore=ignore,
            match_on=match_on,
            allow_playback_repeats=allow_playback_repeats,
            order=order,
            hold_timeout=hold_timeout,
            dialect=dialect,
        )
        self.strict = strict
        self.listen = ListenAddress.parse(listen) if isinstance(listen, str) else listen
        self.upstream = upstream
        if upstream is not None:
            RelayOptions(upstream)  # validates the URL
        self.max_size = max_size
        self.redactor = Redactor.build(redact_keys, enabled=redact, values=redact_values)
        self.connect_timeout = connect_timeout
        self.close_timeout = close_timeout
        self.policy = HandshakePolicy(
            max_size, frozenset(allow_origins), token, handshake_timeout, close_timeout
        )
        self.plan: Plan | None = None
        """What the server does; decided by :meth:`start`."""
        self.url = ""
        self.transport = "unix" if self.listen.path is not None else "websocket"
        """``websocket``, ``unix`` (websocket over a unix socket) or ``stdio``."""
        self._cassette: Cassette | None = None
        self._session: ReplaySession | None = None
        self._listener: Listener | None = None
        self._recorder: Recorder | None = None
        self._writer: CassetteWriter | None = None
        self._temp: Path | None = None
        self._final: ReplayReport | None = None
        self._stdio: StdioLeg | None = None
        self._stdio_stop = asyncio.Event()
        self._stdio_ended = asyncio.Event()
        self._stdio_notes: list[str] = []
        self.failure: CassetteWriteError | None = None
        """Set when the cassette being recorded (``once``, ``all``, ``new_episodes``) could not
        be written: those clients were closed with 1011, later ones got 503."""

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
        assert self._session is not None
        if plan is Plan.RECORD:
            far: LiveSide | PlaybackSide = LiveSide(self._relay_options(), self._new_recording())
        elif plan is Plan.EPISODES:
            live = LiveSide(self._relay_options(), self._episode_recorder())
            far = PlaybackSide(self._session, self.rules, live)
        else:
            far = PlaybackSide(self._session, self.rules)
        self._listener = Listener(self.listen, self.policy, far)
        try:
            self.url = await self._listener.start()
        except BaseException:
            self._listener = None
            await self.close(commit=False)
            raise
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
        if self.after_load is not None:
            self.after_load()
        return plan

    def _relay_options(self) -> RelayOptions:
        return RelayOptions(
            self.upstream,
            listen=self.listen,
            max_size=self.max_size,
            connect_timeout=self.connect_timeout,
            close_timeout=self.close_timeout,
            rules=self.rules,
        )

    stdio_close: Close | None = None
    """Set by :meth:`serve_stdio` when the replay ended the session on a miss (4409, 4404)."""

    async def serve_stdio(
        self,
        stdin: int = 0,
        stdout: int = 1,
        *,
        explain: Callable[[str], None] | None = None,
        explain_grace: float = 0.0,
    ) -> ReplayReport:
        """Replay the cassette's first recorded connection to one client speaking
        newline-delimited JSON on ``stdin``/``stdout`` (the app-server's ``stdio://``
        transport) until the client ends its input; return the final report.

        Call it instead of :meth:`start`. Replies already planned when the input ends are
        still written (a client may close its output and keep reading); then the output is
        ended. A close the replay plans (``on_miss="close"``, a recording whose server
        closed) ends it at once. A close because of a miss (a client answer that differs,
        4409; a request with ``on_miss="close"``, 4404) is kept in :attr:`stdio_close`, and
        ``explain`` is called with the miss explanation ``explain_grace`` seconds before the
        output ends (the stand-in writes it on stderr: a client reading stderr in another
        thread, as the official SDK does, then has it when stdout ends).
        :meth:`close` from another task stops it. Only record mode ``none`` is served (there
        is no upstream to record from; ``rpctape-codex`` records stdio sessions). With
        ``strict=True`` an unclean report raises :class:`~proxy.core.replay.ReplayMismatch`.
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
        client = self._stdio = await StdioLeg.open(self.max_size, stdin, stdout)
        self._stdio_notes = client.notes
        log.info("replay %s over stdio", self.path)
        try:
            claim = session.claim_next(session.open())
            if isinstance(claim, Miss):
                log.warning("%s", claim.render())
            else:
                bridge = recorded_bridge(client, claim, self.rules)
                closes = explain_miss_closes(bridge, claim, explain, explain_grace)
                bridge.start()
                stop = asyncio.ensure_future(self._stdio_stop.wait())
                waits: list[asyncio.Future[Any]] = [bridge.server.lost, stop]
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stop.cancel()
                if not bridge.server.lost.done():  # stopped from outside: drop what is left
                    bridge.shutdown()
                elif closes and explain_grace > 0:
                    await asyncio.sleep(explain_grace)  # the output ends after the reason
                self.stdio_close = closes[0] if closes else None
            client.close(CloseCode.NORMAL_CLOSURE, "replay ended")
            try:
                await asyncio.wait_for(asyncio.shield(client.lost), self.close_timeout)
            except TimeoutError:
                log.warning("the stdio client did not read the last replies; dropped")
        finally:
            client.abort()
            self._stdio_ended.set()
        await self.close()
        if self.strict:
            self.report.check()
        return self.report

    async def close(self, *, commit: bool = True) -> None:
        """Close every connection (1001), stop listening, finish the cassette; safe twice.

        ``commit`` decides what happens to a recording made by ``once`` or ``all``: renamed
        over the cassette (true) or deleted, leaving the old cassette as it was (false).
        """
        listener, self._listener = self._listener, None
        stdio, self._stdio = self._stdio, None
        if listener is not None:
            await listener.close()
            if listener.failure is not None:
                self.failure = listener.failure
                commit = False  # a recording that lost frames never replaces the cassette
        if stdio is not None:
            self._stdio_stop.set()
            await self._stdio_ended.wait()
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

    # -- cassettes written (once, all, new_episodes) --

    def _new_recording(self) -> Recorder:
        """A recorder into a temporary file beside the cassette (renamed over it on close)."""
        assert self.upstream is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Beside the cassette, so that the final rename stays on one file system.
        self._temp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.recording")
        self._writer = CassetteWriter(self._temp, new_header(self.upstream))
        self._recorder = Recorder(self._writer, self.redactor)
        return self._recorder

    def _episode_recorder(self) -> Recorder:
        """A recorder appending to the cassette (new_episodes)."""
        assert self.upstream is not None
        if self.path.is_file():
            self._writer = CassetteWriter.append_to(self.path)
        else:
            self._writer = CassetteWriter(self.path, new_header(self.upstream))
        after = self._cassette.events if self._cassette is not None else ()
        self._recorder = Recorder(self._writer, self.redactor, after=after)
        return self._recorder

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


def replay_server(cassette: Path | str, **options: Any) -> ReplayServer:
    """A :class:`ReplayServer` for ``async with replay_server(path, **options) as url:``.

    It binds 127.0.0.1 on a free port unless ``listen`` says otherwise; keep the returned
    object to read its :attr:`~ReplayServer.report` after the block.
    """
    return ReplayServer(cassette, **options)
