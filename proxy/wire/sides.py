"""The far sides of a session: what stands across the bridge from each client.

:class:`LiveSide` connects each client to the live upstream (before its upgrade is answered,
so an unreachable upstream is an HTTP 502 with the reason) and records both ways.
:class:`PlaybackSide` pairs each client with the unused recorded connection that fits it best
and puts a :class:`~proxy.wire.playback.RecordedLeg` across; with a :class:`LiveSide` behind
it (``new_episodes``), a client no recording starts like is relayed and recorded instead.
Both serve listener clients (a websocket upgrade :class:`~websockets.http11.Request`) and the
one stdio client (:data:`STDIO_REQUEST`) alike.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..core.address import Upstream
from ..core.close import Close, clip_reason
from ..core.options import DEFAULT_MAX_SIZE
from ..core.planner import ANSWER_MISS_CLOSE_CODE, NO_MATCH_CLOSE_CODE, ConnectionReplay
from ..core.recorder import FrameValidator, Recorder
from ..core.replay_report import Miss
from ..core.replay_session import Handshake, ReplaySession
from ..core.rules import Rule
from ..errors import UpstreamError
from .bridge import Bridge
from .handshake import STDIO_UPGRADE, Refused, Upgrade, is_stdio, offered_subprotocols
from .legs import GOING_AWAY, INTERNAL_ERROR, NORMAL_CLOSURE, Leg, LineLeg
from .playback import Gate, RecordedLeg

log = logging.getLogger("rpctape.sides")

NO_RECORDING_STATUS = 404
"""HTTP status of an upgrade when every recorded connection was already replayed."""

STDIO_REQUEST = STDIO_UPGRADE
"""The one client of a stdio session, as the far sides see it: no path, no headers (a stdio
recording's ``open`` event has the same)."""


@dataclass(frozen=True)
class RelayOptions:
    """How a :class:`LiveSide` reaches the upstream; passed in, never read from globals."""

    upstream: str | None
    command: tuple[str, ...] = ()
    """Instead of ``upstream``: start this command per client and speak JSON Lines to it."""
    max_size: int = DEFAULT_MAX_SIZE
    strip_auth: bool = False
    """Whether the client's ``Authorization`` is rpctape's own token (not passed on)."""
    rules: tuple[Rule, ...] = ()
    """Rewrite rules applied in order to every message (see docs/rules.md)."""
    connect_timeout: float = 10.0
    close_timeout: float = 1.0
    """How long to wait for a peer to finish closing (the app-server never sends a close)."""
    target: Upstream = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", Upstream.parse(self.upstream, self.command))

    async def connect(self, request: Upgrade) -> Leg:
        """Open the upstream for ``request``; raises :class:`UpstreamError`."""
        from .upstream import open_upstream  # websockets, only when a live leg is opened

        return await open_upstream(
            self.target,
            request,
            max_size=self.max_size,
            connect_timeout=self.connect_timeout,
            close_timeout=self.close_timeout,
            strip_auth=self.strip_auth,
        )


class LiveSide:
    """The far side of ``record``: a live upstream per client, recorded by ``recorder``."""

    def __init__(self, options: RelayOptions, recorder: Recorder) -> None:
        self.options = options
        self.recorder = recorder

    async def prepare(self, request: Upgrade) -> _LivePending:
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
        self, side: LiveSide, conn: int, server: Leg, request: Upgrade, url: str
    ) -> None:
        self.side = side
        self.conn = conn
        self.server = server
        self.request = request
        self.url = url
        ws = getattr(server, "ws", None)  # a websocket leg: what the upstream accepted
        self.subprotocol = None if ws is None else ws.subprotocol

    async def open(self, client: Leg) -> Bridge:
        side, request = self.side, self.request
        side.recorder.open(
            self.conn,
            path=request.path,
            headers=request.headers.raw_items(),
            subprotocol=self.subprotocol,
            upstream=self.url,
            transport=side.options.target.kind,
            client_transport=client_transport(request),
        )
        return Bridge(self.conn, client, self.server, side.recorder, side.options.rules)

    def abandon(self, reason: str, status: int) -> None:
        self.server.close(GOING_AWAY, "client handshake failed")
        self.side.recorder.error(self.conn, reason, stage="handshake", status=status)



def _log_report(replay: ConnectionReplay) -> None:
    """One line when a live connection ends (each miss was explained when it happened)."""
    report = replay.report()
    clean = not report.misses and not report.unused_client
    counts = report.render()[0].split(": ", 1)[-1]
    log.log(logging.INFO if clean else logging.WARNING, "live connection %d ended: %s",
            replay.live, counts)  # fmt: skip


def client_transport(request: Upgrade) -> str:
    """``stdio`` for the stdio client, else ``websocket`` (what an ``open`` event says)."""
    return "stdio" if is_stdio(request) else "websocket"


def recorded_bridge(
    client: Leg,
    replay: ConnectionReplay,
    rules: Sequence[Rule],
    session: ReplaySession | None = None,
    validator: FrameValidator | None = None,
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
    server = RecordedLeg(replay, gate, reply_on_close=isinstance(client, LineLeg))
    bridge = Bridge(replay.live, client, server, None, rules, validator=validator)
    server.start()
    bridge.done.add_done_callback(lambda _: _log_report(replay))
    return bridge


def handshake_of(request: Upgrade) -> Handshake:
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
        validator: FrameValidator | None = None,
    ) -> None:
        self.session = session
        self.rules = tuple(rules)
        self.live = live
        self.validator = validator

    async def prepare(self, request: Upgrade) -> _PlaybackPending | _EpisodePending:
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


async def _first_message(client: Leg) -> str | bytes | None:
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

    def __init__(self, side: PlaybackSide, live: int, request: Upgrade) -> None:
        self.side = side
        self.live = live
        self.handshake = handshake_of(request)
        self.subprotocol = side.session.subprotocol(self.handshake)

    async def open(self, client: Leg) -> Bridge | None:
        session = self.side.session
        first: str | bytes | None = None
        if not session.speaks_first(self.handshake):
            first = await _first_message(client)
            if first is None:
                session.gone_before_speaking(self.live)
                client.close(NORMAL_CLOSURE, "")
                return None
        claim = session.pair(self.live, self.handshake, first)
        if isinstance(claim, Miss):
            log.warning("%s", claim.render())
            reason = clip_reason(claim.render().split("\n", 1)[0])
            client.close(NO_MATCH_CLOSE_CODE, reason)
            return None
        return recorded_bridge(client, claim, self.side.rules, session, self.side.validator)

    def abandon(self, reason: str, status: int) -> None:
        log.info("live connection %d: %s", self.live, reason)


class _EpisodePending:
    """``new_episodes``: decided at the client's first message."""

    subprotocol = None

    def __init__(self, side: PlaybackSide, live: int, request: Upgrade) -> None:
        self.side = side
        self.live = live
        self.request = request

    async def open(self, client: Leg) -> Bridge | None:
        side, session = self.side, self.side.session
        first = await _first_message(client)
        if first is None:
            client.close(NORMAL_CLOSURE, "")
            return None
        replay = session.pair_matching(self.live, handshake_of(self.request), first)
        if replay is not None:
            return recorded_bridge(client, replay, side.rules, session, side.validator)
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
            client.close(INTERNAL_ERROR, clip_reason(f"rpctape: {exc}"))
            return None
        log.info("live connection %d matches no recording: recording it as %d", self.live, conn)
        recorder.open(
            conn,
            path=self.request.path,
            headers=self.request.headers.raw_items(),
            subprotocol=None,
            upstream=url,
            transport=options.target.kind,
            client_transport=client_transport(self.request),
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


