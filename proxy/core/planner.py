"""The replay planner: what to send a live client, given a cassette and what the client sent.

Pure code: no sockets, no event loop, no clock. A :class:`ConnectionReplay` takes each live
client frame and returns a
:class:`Step` (frames to send, with pacing delays; maybe a close), and remembers what was
used for the :class:`ReplayReport`. :mod:`proxy.wire.playback` carries the steps out.
The semantics are written down in docs/replay.md.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from ..errors import UsageError
from .close import Close, clip_reason
from .dialect import NEUTRAL, Dialect
from .ids import LiveId
from .jsonrpc import Direction, MessageType
from .matching import Frame, MatchOn, Preset, Rules, Verdict, explain, matches
from .modes import MatchOrder, OnMiss, Pace, parse_mode
from .ordering import DEFAULT_HOLD_TIMEOUT, Order
from .recorded import ANSWERS, Item, RecordedConnection
from .replay_report import Candidate, ConnectionReport, Miss, Unused

NO_MATCH_CODE = -32099
"""JSON-RPC error code of rpctape's reply to a request that matches no recording.

In the range JSON-RPC 2.0 section 5.1 reserves for implementation-defined server errors
(-32000 to -32099), at the end away from the app-server's own -32001 (overloaded)."""

NO_MATCH_CLOSE_CODE = 4404
"""Websocket close code when a request matches nothing and ``on_miss`` is ``close``, or no
recorded connection is left (RFC 6455 section 7.4.2: 4000-4999 are for private use)."""

ANSWER_MISS_CLOSE_CODE = 4409
"""Websocket close code when the client's answer to a recorded server request (an approval,
``attestation/generate``) matches nothing: the recorded server would have gone on differently,
so the conversation ends at once instead of waiting (RFC 6455 section 7.4.2, private use)."""

CANDIDATES_SHOWN = 3
"""How many recorded candidates a miss message names."""

@dataclass(frozen=True)
class ReplayOptions:
    """How live messages are matched and answered; passed in, never read from globals."""

    pace: Pace = field(default_factory=Pace)
    on_miss: OnMiss = OnMiss.ERROR
    match: MatchOrder = MatchOrder.STRICT
    rules: Rules = field(default_factory=Rules)
    allow_playback_repeats: bool = False
    """VCR's option: a recorded exchange may answer again once it was used (docs/replay.md)."""
    order: Order = Order.THREAD
    """How replayed frames are ordered against other connections (:mod:`proxy.core.ordering`)."""
    hold_timeout: float = DEFAULT_HOLD_TIMEOUT
    """Seconds a frame is held for another connection before it is sent anyway."""
    dialect: Dialect = NEUTRAL
    """The protocol's conventions (:mod:`proxy.core.dialect`); the doors pass codex's."""

    @classmethod
    def build(
        cls,
        *,
        pace: str | float | Pace = "fast",
        on_miss: str | OnMiss = OnMiss.ERROR,
        match: str | MatchOrder = MatchOrder.STRICT,
        ignore: Iterable[str] = (),
        match_on: MatchOn = Preset.CODEX,
        allow_playback_repeats: bool = False,
        order: str | Order = Order.THREAD,
        hold_timeout: float = DEFAULT_HOLD_TIMEOUT,
        dialect: Dialect = NEUTRAL,
    ) -> ReplayOptions:
        """Options from what a person typed; raises :class:`UsageError` listing valid values.

        ``match_on`` names what is compared (:func:`~proxy.core.matching.parse_match_on`): the
        ``codex`` preset, ``exact``, or aspects such as ``"method,body,cwd"``. ``order`` is
        ``thread``, ``global`` or ``none`` (docs/replay.md); ``hold_timeout`` is in seconds."""
        if isinstance(hold_timeout, bool) or not (
            isinstance(hold_timeout, int | float) and 0 < hold_timeout < float("inf")
        ):
            raise UsageError(
                f"invalid hold timeout {hold_timeout!r}; give a number of seconds above 0"
            )
        return cls(
            Pace.parse(pace),
            parse_mode(OnMiss, on_miss, "on-miss action"),
            parse_mode(MatchOrder, match, "match order"),
            Rules.build(ignore, match_on=match_on),
            allow_playback_repeats,
            parse_mode(Order, order, "order"),
            float(hold_timeout),
            dialect,
        )



# --- what the planner decides -------------------------------------------------------------


class Outgoing(NamedTuple):
    """One frame to send to the live client, after waiting ``delay`` seconds.

    A named tuple, not a frozen dataclass: one is made per replayed frame, and a tuple is
    built four times faster."""

    data: bytes
    text: bool
    delay: float = 0.0
    item: int | None = None
    """The recorded item it replays (``None`` for rpctape's own miss reply)."""




class Step(NamedTuple):
    """What the I/O shell does after a live client frame (or on connect)."""

    send: tuple[Outgoing, ...] = ()
    close: Close | None = None
    miss: Miss | None = None
    matched: int | None = None
    """The recorded client item the live frame matched (for the cross-connection order)."""
    reply: Outgoing | None = None
    """With a close because of a request's miss: the error reply that says why, for a
    client whose transport has no close reason (stdio: it is sent, then the output ends)."""


def error_reply(request_id: Any, miss: Miss) -> bytes:
    """The JSON-RPC error reply to a request that matched nothing."""
    data = {
        "rpctape": "no-match",
        "candidates": [
            {"seq": c.seq, "description": c.description, "note": c.note} for c in miss.candidates
        ],
    }
    return orjson.dumps(
        {"id": request_id, "error": {"code": NO_MATCH_CODE, "message": miss.render(), "data": data}}
    )




# --- one live connection ----------------------------------------------------------------------


class _Answer(enum.Enum):
    """Why a recorded client response is not a candidate yet."""

    OK = "ok"
    UNSENT = "unsent"


class ConnectionReplay:
    """Replays one recorded connection to one live connection.

    Call :meth:`connect` once when the client is connected, then :meth:`receive` for every
    frame it sends, in order; carry out each returned :class:`Step` in order, calling
    :meth:`delivered` after each frame actually sent. :meth:`report` says what was used.
    """

    def __init__(self, live: int, recorded: RecordedConnection, options: ReplayOptions) -> None:
        self.live = live
        self.recorded = recorded
        self.options = options
        self.received = 0
        """Live client frames received so far."""
        self._matched: dict[int, int] = {}
        """Recorded client item index -> the live message number it matched."""
        self._live_ids: dict[int, LiveId] = {}
        """Recorded client request index -> the live request's id."""
        self._planned: set[int] = set()
        self._delivered: set[int] = set()
        self._deferred: list[int] = []
        self._misses: list[Miss] = []
        self._closing = False
        close = recorded.close
        self._closes = close is not None and close.get("by") == "server"
        """Whether the recorded server closed (else :meth:`_maybe_close` never closes)."""
        self._strict = options.match is MatchOrder.STRICT
        self._cursor = 0
        self.repeats = 0
        """Live requests answered again by an already used recording (allow_playback_repeats)."""

    # -- events from the I/O shell --

    def connect(self) -> Step:
        """The recorded server frames before the first client frame."""
        send = self._plan(self.recorded.prelude)
        return Step(tuple(send), self._maybe_close())

    def receive(self, data: str | bytes) -> Step:
        """A live client frame (``str`` text, ``bytes`` binary): match it, plan the reply."""
        return self.receive_frame(Frame.live(data))

    def receive_frame(self, frame: Frame) -> Step:
        """:meth:`receive` for a frame already prepared (:meth:`Frame.live_text`: the bytes of
        a text frame as they came, not decoded and encoded again)."""
        self.received += 1
        for index in self._candidates():
            item = self.recorded.items[index]
            if self._answer_state(item) is not _Answer.OK:
                continue
            recorded = item.frame  # parsed from the cassette line each time: ask once
            assert recorded is not None
            if matches(frame, recorded, self.options.rules):
                return self._on_match(index, frame)
        if self.options.allow_playback_repeats:
            repeat = self._repeatable(frame)
            if repeat is not None:
                return self._on_repeat(repeat, frame)
        return self._on_miss(frame)

    def delivered(self, out: Outgoing) -> None:
        """``out`` was sent to the client."""
        if out.item is not None:
            self._delivered.add(out.item)

    # -- matching --

    def _next_client(self) -> int | None:
        """The first recorded client message not matched yet (amortised O(1))."""
        client = self.recorded.client
        while self._cursor < len(client) and client[self._cursor] in self._matched:
            self._cursor += 1
        return client[self._cursor] if self._cursor < len(client) else None

    def _candidates(self) -> list[int]:
        if self._strict:
            nxt = self._next_client()
            return [] if nxt is None else [nxt]
        return [i for i in self.recorded.client if i not in self._matched]

    def _answer_state(self, item: Item) -> _Answer:
        """A recorded client response is a candidate only once its server request was sent."""
        # Only a response or an error answers something (RecordedConnection.build).
        if item.answers is not None and item.answers not in self._planned:
            return _Answer.UNSENT
        return _Answer.OK

    def _on_match(self, index: int, frame: Frame) -> Step:
        self._matched[index] = self.received
        if frame.type is MessageType.REQUEST:
            self._live_ids[index] = LiveId.of(frame)
        waiting, self._deferred = self._deferred, []
        send = self._plan([*waiting, *self.recorded.segments[index]])
        return Step(tuple(send), self._maybe_close(), matched=index)

    def _repeatable(self, frame: Frame) -> int | None:
        """The most recent used recorded request that matches ``frame`` and whose answer
        holds no server request (those cannot be answered twice), for a repeat."""
        if frame.type is not MessageType.REQUEST:
            return None
        for index in sorted(self._matched, reverse=True):
            item = self.recorded.items[index]
            segment = self.recorded.segments[index]
            if (
                item.type is MessageType.REQUEST
                and not any(self.recorded.items[i].type is MessageType.REQUEST for i in segment)
                and matches(frame, _client_frame(item), self.options.rules)
            ):
                return index
        return None

    def _on_repeat(self, index: int, frame: Frame) -> Step:
        """Answer ``frame`` again with the segment of recorded request ``index``."""
        self.repeats += 1
        live_id = LiveId.of(frame)
        send: list[Outgoing] = []
        for i in self.recorded.segments[index]:
            item = self.recorded.items[i]
            answers_it = item.type in ANSWERS and item.answers == index
            send.append(self._outgoing(item, live_id if answers_it else None))
        return Step(tuple(send))

    def _plan(self, indices: Iterable[int]) -> list[Outgoing]:
        """Outgoing frames for recorded server items; responses wait for their request.

        Once per replayed frame: kept to plain lookups (a whole streamed turn is planned at
        once)."""
        out: list[Outgoing] = []
        items, live_ids, planned = self.recorded.items, self._live_ids, self._planned
        pace = None if self.options.pace.factor is None else self.options.pace
        for index in indices:
            item = items[index]
            data = item.data
            if item.answers is not None:  # a response or an error (RecordedConnection.build)
                live_id = live_ids.get(item.answers)
                if live_id is None:
                    self._deferred.append(index)
                    continue
                data = _with_live_id(item, live_id)
            planned.add(index)
            delay = 0.0 if pace is None else pace.delay(item.gap)
            out.append(Outgoing(data, item.text, delay, index))
        return out

    def _outgoing(self, item: Item, live_id: LiveId | None) -> Outgoing:
        data = item.data if live_id is None else _with_live_id(item, live_id)
        delay = self.options.pace.delay(item.gap)
        return Outgoing(data, item.text, delay, item.index)

    def _maybe_close(self) -> Close | None:
        """Once everything is replayed, close as the recorded server did (if it did)."""
        close = self.recorded.close
        if (
            not self._closes
            or self._closing
            or close is None
            or close.get("by") != "server"
            or len(self._matched) < len(self.recorded.client)
            or self._deferred
            or len(self._planned) < self.recorded.server_count
        ):
            return None
        self._closing = True
        forwarded = close.get("forwarded") or {}
        return Close(int(forwarded.get("code", 1000)), str(forwarded.get("reason", "")))

    # -- misses --

    def _on_miss(self, frame: Frame) -> Step:
        miss = Miss(
            self.live,
            self.recorded.conn,
            self.received,
            frame.describe(),
            self._closest(frame),
            "" if self.recorded.client else "the recorded connection has no client messages",
        )
        self._misses.append(miss)
        if frame.type in ANSWERS:
            # The recorded server went on after the recorded answer; after another answer
            # it would not have: end the conversation now rather than let the client wait.
            if miss.candidates:
                best = miss.candidates[0]
                what = best.description.removesuffix(", next in order")
                reason = clip_reason(f"rpctape: {what}: {best.note}")
            else:
                reason = clip_reason(f"rpctape: no recorded match for {frame.describe()}")
            failed = self._fail_turn(f"{reason} (rpctape replay: the recording ends here)")
            return Step(send=failed, close=Close(ANSWER_MISS_CLOSE_CODE, reason), miss=miss)
        if frame.type is not MessageType.REQUEST:
            return Step(miss=miss)
        data = error_reply(None, miss)
        reply = Outgoing(LiveId.of(frame).put_into(data, orjson.loads(data)), True)
        if self.options.on_miss is OnMiss.CLOSE:
            reason = clip_reason(f"rpctape: no recorded match for {frame.describe()}")
            return Step(close=Close(NO_MATCH_CLOSE_CODE, reason), miss=miss, reply=reply)
        return Step(send=(reply,), miss=miss)

    def _fail_turn(self, message: str) -> tuple[Outgoing, ...]:
        """The dialect's frame ending the work in flight as failed with ``message``
        (:meth:`~proxy.core.dialect.Dialect.failed_turn`), if it has one."""
        items, planned = self.recorded.items, self._planned
        pending = (
            item.event
            for item in items
            if item.index not in planned and item.direction is Direction.S2C
        )
        data = self.options.dialect.failed_turn(pending, message)
        return () if data is None else (Outgoing(data, True),)

    def _closest(self, frame: Frame) -> tuple[Candidate, ...]:
        strict = self.options.match is MatchOrder.STRICT
        nxt = self._next_client()
        scored: list[tuple[tuple[int, int, int, int, int], Candidate]] = []
        for index in self.recorded.client:
            item = self.recorded.items[index]
            verdict = explain(frame, _client_frame(item), self.options.rules)
            used = index in self._matched
            note = self._note(index, item, verdict, used, strict and index == nxt, nxt)
            failed = {f.matcher for f in verdict.failures}
            distance = 2 if "kind" in failed else 1 if "method" in failed else 0
            weight = len(verdict.differences) + len(verdict.failures)
            key = (
                0 if strict and index == nxt else 1,
                distance,
                1 if used else 0,
                weight,
                index,
            )
            described = item.describe().removeprefix("> ")
            if strict and index == nxt:
                described += ", next in order"
            scored.append((key, Candidate(item.seq, described, note)))
        scored.sort(key=lambda pair: pair[0])
        useful = [(key, c) for key, c in scored if c.note.startswith("already replayed") is False
                  or c.note.endswith("; matches")]  # fmt: skip
        # An already replayed message that does not match either is noise, unless nothing else.
        return tuple(c for _, c in (useful or scored)[:CANDIDATES_SHOWN])

    def _note(
        self, index: int, item: Item, verdict: Verdict, used: bool, is_next: bool, nxt: int | None
    ) -> str:
        if used:
            how = "matches" if verdict.matched else verdict.render()
            return f"already replayed (to client message {self._matched[index]}); {how}"
        if self._answer_state(item) is _Answer.UNSENT:
            assert item.answers is not None
            request = self.recorded.items[item.answers]
            return f"answers server request seq {request.seq}, which has not been sent yet; " + (
                "matches otherwise" if verdict.matched else verdict.render()
            )
        if verdict.matched:
            if nxt is not None and not is_next:
                expected = self.recorded.items[nxt]
                return (
                    f"matches, but strict order expects seq {expected.seq} "
                    f"({expected.describe().removeprefix('> ')}) next; "
                    "match any-order allows it"
                )
            return "matches"
        return verdict.render()

    # -- the report --

    def report(self) -> ConnectionReport:
        """What was matched, sent, left unused, and missed so far."""
        rec = self.recorded
        unused_client = tuple(
            Unused(rec.items[i].seq, rec.items[i].describe())
            for i in rec.client
            if i not in self._matched
        )
        unused_server = tuple(
            Unused(item.seq, item.describe())
            for item in rec.items
            if item.direction is Direction.S2C and item.index not in self._delivered
        )
        server_sent = sum(1 for i in self._delivered if rec.items[i].direction is Direction.S2C)
        return ConnectionReport(
            self.live,
            rec.conn,
            client=(len(self._matched), len(rec.client)),
            server=(server_sent, rec.server_count),
            unused_client=unused_client,
            unused_server=unused_server,
            misses=tuple(self._misses),
        )



def _with_live_id(item: Item, live_id: LiveId) -> bytes:
    """``item``'s reply carrying the live request's id (:meth:`LiveId.put_into`); the
    recorded message is parsed only when the reply cannot simply be cut around its id."""
    slots = item.id_slots
    if live_id.text is not None and slots is not None:
        return b"".join((slots[0], live_id.text, slots[1]))
    return live_id.put_into(item.data, item.event.get("msg"), slots)


def _client_frame(item: Item) -> Frame:
    """A recorded client frame, prepared for matching (parsed from its line: ask once)."""
    frame = item.frame
    assert frame is not None
    return frame
