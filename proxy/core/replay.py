"""The replay planner: what to send a live client, given a cassette and what the client sent.

Pure code: no sockets, no event loop, no clock. :class:`ReplaySession` pairs live connections
with recorded ones; a :class:`ConnectionReplay` takes each live client frame and returns a
:class:`Step` (frames to send, with pacing delays; maybe a close), and remembers what was
used for the :class:`ReplayReport`. :mod:`proxy.wire.replay_server` carries the steps out.
The semantics are written down in docs/replay.md.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import orjson

from ..errors import RpctapeError, UsageError
from .cassette import Cassette, Event, frame_of
from .jsonrpc import Direction, MessageType, id_key, id_slots, raw_id, with_raw_id
from .matching import Frame, MatchOn, Preset, Rules, Verdict, explain, matches
from .modes import MatchOrder, OnMiss, Pace, parse_mode
from .ordering import DEFAULT_HOLD_TIMEOUT, Order, Ordering

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

_ANSWERS = frozenset({MessageType.RESPONSE, MessageType.ERROR})


class ReplayMismatch(RpctapeError, AssertionError):
    """A strict replay had misses or left recorded client messages unused."""


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
        )


# --- the recording, prepared ------------------------------------------------------------------


_ID_MARK = "\x00rpctape:id\x00"
_ID_MARK_JSON = orjson.dumps(_ID_MARK)
_ID_HEAD = b'{"id":'


def _marked_id_slots(msg: dict[str, Any], data: bytes) -> tuple[bytes, bytes] | None:
    """``data`` (orjson's writing of ``msg``) cut around its ``id``: ``msg`` written again
    with a marker for the id, cut at the marker (searched in ``data`` if the marker is
    ambiguous)."""
    marked = orjson.dumps({**msg, "id": _ID_MARK})
    before, found, after = marked.partition(_ID_MARK_JSON)
    if found and not after.count(_ID_MARK_JSON):
        return before, after
    return id_slots(data)


@dataclass(frozen=True)
class Item:
    """One recorded frame of a connection, with what the planner needs to know about it."""

    index: int
    event: Event
    direction: Direction
    type: MessageType
    gap: float
    """Seconds since the previous frame of the connection (or its ``open``) was recorded."""
    answers: int | None
    """For a response or error: the index of the request it answers (other direction)."""
    frame: Frame | None
    """Client frames only: prepared for matching."""
    data: bytes
    """The recorded frame's exact bytes, built when the cassette is loaded (the bytes sent as
    often as it is replayed; building them while streaming cost a quarter of the time)."""

    @property
    def seq(self) -> int:
        """The event's ``seq`` in the cassette."""
        seq: int = self.event["seq"]
        return seq

    @property
    def id_slots(self) -> tuple[bytes, bytes] | None:
        """The frame cut around its ``id`` value, to put a live id in (found each time: a
        reply is planned once, and keeping the cut would cost more than finding it)."""
        msg = self.event.get("msg")
        if "raw" not in self.event and isinstance(msg, dict) and "id" in msg:
            # The frame is orjson's writing of msg. Most replies begin with their id: then
            # the cut is right after it; else write msg again with a marker for the id.
            data = self.data
            if next(iter(msg)) == "id":
                try:
                    head = _ID_HEAD + orjson.dumps(msg["id"])
                except TypeError:
                    pass
                else:
                    if data.startswith(head):
                        return _ID_HEAD, data[len(head) :]
            return _marked_id_slots(msg, data)
        return id_slots(self.data)

    def describe(self) -> str:
        """``> request thread/start``, ``< response to turn/start``, ``< binary frame``."""
        event = self.event
        if event["kind"] == "binary":
            what = "binary frame"
        elif self.type in _ANSWERS:
            what = f"{self.type.value} to {event.get('response_to') or 'an unknown request'}"
        elif "method" in event:
            what = f"{self.type.value} {event['method']}"
        else:
            what = f"{self.type.value} frame"
        return f"{self.direction.arrow} {what}"


@dataclass
class RecordedConnection:
    """The frames of one recorded connection, split into segments.

    The *prelude* is the server frames before the first client frame; the *segment* of a
    client frame is the server frames after it up to the next client frame.
    """

    conn: int
    items: list[Item]
    client: list[int]
    prelude: list[int]
    segments: dict[int, list[int]]
    subprotocol: str | None
    close: Event | None
    open: Event | None = None
    """The ``open`` event (path, headers), for pairing live connections by their handshake."""

    @classmethod
    def build(cls, conn: int, events: Sequence[Event]) -> RecordedConnection:
        """Prepare one connection's events (in cassette order)."""
        items: list[Item] = []
        client: list[int] = []
        prelude: list[int] = []
        segments: dict[int, list[int]] = {}
        open_requests: dict[Direction, dict[str, int]] = {Direction.C2S: {}, Direction.S2C: {}}
        subprotocol: str | None = None
        close: Event | None = None
        opened: Event | None = None
        last_t: float | None = None
        for event in events:
            kind = event["kind"]
            if kind == "open":
                opened = event
                subprotocol = event.get("subprotocol")
                last_t = float(event.get("t", 0.0))
                continue
            if kind == "close":
                close = event
                continue
            if kind not in ("text", "binary"):
                continue
            direction = _DIRECTIONS.get(event["dir"]) or Direction(event["dir"])
            seen = _as_the_server_saw_it(event, direction)
            if seen is None:
                continue
            event = seen
            t = float(event.get("t", 0.0))
            gap = 0.0 if last_t is None else max(0.0, t - last_t)
            last_t = t
            index = len(items)
            mtype = MessageType.INVALID
            if kind == "text":
                name = event.get("type", "invalid")
                mtype = _TYPES.get(name) or MessageType(name)
            answers = None
            msg = event.get("msg")
            if isinstance(msg, dict) and mtype is not MessageType.INVALID and "id" in msg:
                key = id_key(msg["id"])
                if mtype is MessageType.REQUEST:
                    open_requests[direction][key] = index
                elif mtype in _ANSWERS:
                    answers = open_requests[direction.reverse].pop(key, None)
            frame = Frame.recorded(event) if direction is Direction.C2S else None
            data = frame_of(event) if frame is None else frame.data
            items.append(Item(index, event, direction, mtype, gap, answers, frame, data))
            if direction is Direction.C2S:
                client.append(index)
                segments[index] = []
            elif client:
                segments[client[-1]].append(index)
            else:
                prelude.append(index)
        return cls(conn, items, client, prelude, segments, subprotocol, close, opened)

    @property
    def server_count(self) -> int:
        """How many server frames were recorded."""
        return len(self.items) - len(self.client)

    def first_client_frame(self) -> Frame | None:
        """The first recorded client frame (what ``new_episodes`` compares), if any."""
        return self.items[self.client[0]].frame if self.client else None


_DIRECTIONS = {d.value: d for d in Direction}
_TYPES = {t.value: t for t in MessageType}
"""Looked up per recorded frame when a cassette is loaded (an enum call costs ten times more);
an unknown name still goes to the enum, which raises as before."""


def _as_the_server_saw_it(event: Event, direction: Direction) -> Event | None:
    """A frame recorded under rewrite rules, as the upstream saw it (docs/replay.md).

    Client frames the rules kept from the server are skipped and patched ones are matched as
    delivered; server-bound frames rpctape sent itself stay (the server saw them). Frames
    rpctape sent to the client are skipped: replayed with the same rules, they come again.
    """
    if direction is Direction.C2S:
        if event.get("forwarded") is False:
            return None
        if "delivered" in event:
            return {k: v for k, v in event.items() if k != "raw"} | {"msg": event["delivered"]}
    elif event.get("origin") == "rpctape":
        return None
    return event


def recorded_connections(cassette: Cassette) -> list[RecordedConnection]:
    """Every connection of ``cassette`` that was accepted (has an ``open`` event), in order."""
    by_conn: dict[int, list[Event]] = {}
    for event in cassette.events:
        by_conn.setdefault(event["conn"], []).append(event)
    return [
        RecordedConnection.build(conn, events)
        for conn, events in by_conn.items()
        if any(e["kind"] == "open" for e in events)
    ]


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


@dataclass(frozen=True)
class Close:
    """Close the live connection with this code and reason."""

    code: int
    reason: str


@dataclass(frozen=True)
class Candidate:
    """A recorded client message named in a miss message, and why it did not match."""

    seq: int
    description: str
    note: str

    def render(self) -> str:
        """``seq 7 request thread/start, next in order: /params/cwd: got ..., recorded ...``."""
        return f"seq {self.seq} {self.description}: {self.note}"


@dataclass(frozen=True)
class Miss:
    """A live client frame that matched nothing, or a connection with no recording left."""

    live_connection: int
    recorded_connection: int | None
    message: int
    """The live client message's number on its connection (from 1; 0 for the connection)."""
    description: str
    candidates: tuple[Candidate, ...] = ()
    note: str = ""

    def render(self) -> str:
        """The explanation a person reads: in the error reply, the log and the report."""
        where = f"live connection {self.live_connection}"
        if self.recorded_connection is not None:
            where += f", recorded connection {self.recorded_connection}"
        if self.message:
            where += f", client message {self.message}"
        lines = [f"rpctape: no recorded match for {self.description} ({where})"]
        if self.note:
            lines.append(self.note)
        if self.candidates:
            lines.append("closest recorded client messages:")
            lines.extend(f"- {c.render()}" for c in self.candidates)
        return "\n".join(lines)


class Step(NamedTuple):
    """What the I/O shell does after a live client frame (or on connect)."""

    send: tuple[Outgoing, ...] = ()
    close: Close | None = None
    miss: Miss | None = None
    matched: int | None = None
    """The recorded client item the live frame matched (for the cross-connection order)."""


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


def close_reason(text: str, limit: int = 123) -> str:
    """A close reason within RFC 6455's 123 bytes (section 5.5: control frame payloads)."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[: limit - 3].decode("utf-8", errors="ignore") + "..."


# --- the report -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Unused:
    """A recorded frame that was not replayed (client: never matched; server: never sent)."""

    seq: int
    description: str


@dataclass(frozen=True)
class ConnectionReport:
    """What happened on one live connection (or to one recorded connection never used)."""

    live: int | None
    """The live connection number, from 1; ``None`` for a recorded connection never used."""
    recorded: int | None
    """The recorded connection replayed, or (``recorded_live``) the one appended."""
    recorded_live: bool = False
    """True when the connection was relayed to the upstream and recorded, not replayed."""
    client: tuple[int, int] = (0, 0)
    """Recorded client messages matched, of how many."""
    server: tuple[int, int] = (0, 0)
    """Recorded server messages sent, of how many."""
    unused_client: tuple[Unused, ...] = ()
    unused_server: tuple[Unused, ...] = ()
    misses: tuple[Miss, ...] = ()
    notes: tuple[str, ...] = ()
    """How the recording was chosen, frames held too long for another connection."""

    def render(self) -> list[str]:
        """Lines of the report for this connection."""
        if self.recorded_live:
            return [
                f"live connection {self.live}: relayed to the upstream and recorded as "
                f"connection {self.recorded}"
            ]
        if self.live is None:
            head = f"recorded connection {self.recorded}: never replayed"
        elif self.recorded is None:
            head = f"live connection {self.live}: no recorded connection"
        else:
            head = f"live connection {self.live} = recorded connection {self.recorded}"
        lines = [
            f"{head}: {self.client[0]} of {self.client[1]} client message(s) matched, "
            f"{self.server[0]} of {self.server[1]} server message(s) sent"
        ]
        lines += [f"  note: {note}" for note in self.notes]
        lines += [f"  not replayed: seq {u.seq} {u.description}" for u in self.unused_client]
        lines += [f"  not sent: seq {u.seq} {u.description}" for u in self.unused_server]
        for miss in self.misses:
            text = miss.render().replace("\n", "\n    ")
            lines.append(f"  miss: {text}")
        return lines


@dataclass(frozen=True)
class ReplayReport:
    """What was not replayed and every miss, per connection; rendered for people."""

    cassette: str
    connections: tuple[ConnectionReport, ...] = ()
    notes: tuple[str, ...] = ()
    """Lines printed after the summary (e.g. what was recorded instead of replayed)."""

    @property
    def misses(self) -> tuple[Miss, ...]:
        """Every miss, in connection order."""
        return tuple(m for c in self.connections for m in c.misses)

    @property
    def unused_client(self) -> tuple[Unused, ...]:
        """Every recorded client message that was never matched."""
        return tuple(u for c in self.connections for u in c.unused_client)

    @property
    def clean(self) -> bool:
        """No miss and no unused recorded client message (what ``--strict`` requires)."""
        return not self.misses and not self.unused_client

    def render(self) -> str:
        """The report as text, a summary line first."""
        live = sum(1 for c in self.connections if c.live is not None)
        recorded = sum(1 for c in self.connections if c.recorded_live)
        unused_server = sum(len(c.unused_server) for c in self.connections)
        head = (
            f"rpctape replay report for {self.cassette}: {live} live connection(s)"
            + (f" ({recorded} recorded live)" if recorded else "")
            + f", {len(self.misses)} miss(es), {len(self.unused_client)} recorded client "
            f"message(s) not replayed, {unused_server} recorded server message(s) not sent"
        )
        lines = [head, *self.notes]
        for conn in self.connections:
            lines.extend(conn.render())
        return "\n".join(lines)

    def check(self) -> None:
        """Raise :class:`ReplayMismatch` with the rendered report unless :attr:`clean`."""
        if not self.clean:
            raise ReplayMismatch(self.render())


class LiveId(NamedTuple):
    """The id of a live client request: its value and its text exactly as the client sent it.

    A replayed reply carries the text verbatim (``2**70`` stays an integer, ``"a\\u00e9"``
    keeps its escape), spliced in place of the recorded id so every other byte is kept. (A
    named tuple: one is made per live request.)
    """

    value: Any
    text: bytes | None
    """The id's JSON text as sent (``None`` if it could not be located)."""

    @classmethod
    def of(cls, frame: Frame) -> LiveId:
        """The id of a live request frame."""
        if frame.parsed.exact:  # the frame is orjson's writing of msg, so is the id in it
            return cls(frame.parsed.id, orjson.dumps(frame.parsed.id))
        return cls(frame.parsed.id, raw_id(frame.data))

    def put_into(
        self, data: bytes, msg: Any = None, slots: tuple[bytes, bytes] | None = None
    ) -> bytes:
        """``data`` (a reply) with this id in place of its own (``slots``: ``data`` already cut
        around its id by :func:`~proxy.core.jsonrpc.id_slots`)."""
        if self.text is not None:
            if slots is not None:
                return b"".join((slots[0], self.text, slots[1]))
            spliced = with_raw_id(data, self.text)
            if spliced is not None:
                return spliced
        if isinstance(msg, dict) and id_key(msg.get("id")) != id_key(self.value):
            with contextlib.suppress(TypeError):  # a value orjson cannot write: keep data
                return orjson.dumps({**msg, "id": self.value})  # key order kept
        return data


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
            assert item.frame is not None
            if self._answer_state(item) is _Answer.OK and matches(
                frame, item.frame, self.options.rules
            ):
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
            assert item.frame is not None
            segment = self.recorded.segments[index]
            if (
                item.type is MessageType.REQUEST
                and not any(self.recorded.items[i].type is MessageType.REQUEST for i in segment)
                and matches(frame, item.frame, self.options.rules)
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
            answers_it = item.type in _ANSWERS and item.answers == index
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
            event = item.event
            data = item.data
            if item.answers is not None:  # a response or an error (RecordedConnection.build)
                live_id = live_ids.get(item.answers)
                if live_id is None:
                    self._deferred.append(index)
                    continue
                data = live_id.put_into(data, event.get("msg"), item.id_slots)
            planned.add(index)
            delay = 0.0 if pace is None else pace.delay(item.gap)
            out.append(Outgoing(data, event["kind"] == "text", delay, index))
        return out

    def _outgoing(self, item: Item, live_id: LiveId | None) -> Outgoing:
        event = item.event
        data = item.data
        if live_id is not None:
            data = live_id.put_into(data, event.get("msg"), item.id_slots)
        delay = self.options.pace.delay(item.gap)
        return Outgoing(data, event["kind"] == "text", delay, item.index)

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
        if frame.type in _ANSWERS:
            # The recorded server went on after the recorded answer; after another answer
            # it would not have: end the conversation now rather than let the client wait.
            if miss.candidates:
                best = miss.candidates[0]
                what = best.description.removesuffix(", next in order")
                reason = close_reason(f"rpctape: {what}: {best.note}")
            else:
                reason = close_reason(f"rpctape: no recorded match for {frame.describe()}")
            failed = self._fail_turn(f"{reason} (rpctape replay: the recording ends here)")
            return Step(send=failed, close=Close(ANSWER_MISS_CLOSE_CODE, reason), miss=miss)
        if frame.type is not MessageType.REQUEST:
            return Step(miss=miss)
        if self.options.on_miss is OnMiss.CLOSE:
            reason = close_reason(f"rpctape: no recorded match for {frame.describe()}")
            return Step(close=Close(NO_MATCH_CLOSE_CODE, reason), miss=miss)
        data = error_reply(None, miss)
        reply = Outgoing(LiveId.of(frame).put_into(data, orjson.loads(data)), True)
        return Step(send=(reply,), miss=miss)

    def _fail_turn(self, message: str) -> tuple[Outgoing, ...]:
        """The turn in flight ended as failed, with ``message`` as its error: the recorded
        ``turn/completed`` not sent yet, with ``status: "failed"`` and no items (the recorded
        ones never happened in this conversation). Codex clients show a failed
        turn's message to their user; a closed connection some report with no reason at all
        (codex-app-server-sdk). Nothing when no recorded ``turn/completed`` is left to send."""
        for item in self.recorded.items:
            if (
                item.index in self._planned
                or item.direction is not Direction.S2C
                or item.event.get("method") != "turn/completed"
            ):
                continue
            msg = item.event.get("msg")
            if not isinstance(msg, dict):
                return ()
            params = msg.get("params")
            if not isinstance(params, dict) or not isinstance(params.get("turn"), dict):
                return ()
            turn = params["turn"]
            failed = turn | {"status": "failed", "error": {"message": message}}
            if "items" in turn:  # what the recording did after this point never happened
                failed["items"] = []
            data = orjson.dumps({**msg, "params": {**params, "turn": failed}})
            return (Outgoing(data, True),)
        return ()

    def _closest(self, frame: Frame) -> tuple[Candidate, ...]:
        strict = self.options.match is MatchOrder.STRICT
        nxt = self._next_client()
        scored: list[tuple[tuple[int, int, int, int, int], Candidate]] = []
        for index in self.recorded.client:
            item = self.recorded.items[index]
            assert item.frame is not None
            verdict = explain(frame, item.frame, self.options.rules)
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


# --- the whole cassette -----------------------------------------------------------------------


VARYING_HEADERS = frozenset(
    {"host", "sec-websocket-key", "authorization", "cookie", "content-length", "date"}
)
"""Upgrade headers that change from run to run (a port, a nonce, a secret): not compared
when a live connection is paired with a recorded one."""


@dataclass(frozen=True)
class Handshake:
    """What a live client's upgrade request says, for pairing it with a recording."""

    path: str = "/"
    headers: tuple[tuple[str, str], ...] = ()
    subprotocols: tuple[str, ...] = ()
    """The subprotocols the client offers, in its order."""


def _header_map(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        if key not in VARYING_HEADERS:
            out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def _client_name(frame: Frame | None) -> Any:
    """``initialize``'s ``params.clientInfo.name`` (``None`` for anything else)."""
    if frame is None or not frame.structured or frame.parsed.method != "initialize":
        return None
    msg = frame.parsed.msg
    params = msg.get("params") if isinstance(msg, dict) else None
    info = params.get("clientInfo") if isinstance(params, dict) else None
    return info.get("name") if isinstance(info, dict) else None


@dataclass(frozen=True)
class Fit:
    """How well one unused recorded connection fits a live one; smaller is better."""

    conn: int
    first: int
    """0 when the first client messages match under the session's rules (or none is known
    yet), else 1."""
    client_name: int
    """0 when ``initialize``'s ``clientInfo.name`` is the same (a preference even when
    ``match_on`` ignores clientInfo), else 1."""
    path: int
    """0 when the upgrade paths are the same, else 1."""
    headers: int
    """How many upgrade headers differ (``VARYING_HEADERS`` left out)."""
    differences: int
    """Matcher failures and member differences of the first client messages."""
    why: str = ""
    """What differs, for the report."""

    @property
    def key(self) -> tuple[int, int, int, int, int]:
        """The rank without the tie-breaker (the recorded connection number)."""
        return (self.first, self.client_name, self.path, self.headers, self.differences)


def fit(
    recorded: RecordedConnection, handshake: Handshake, first: Frame | None, rules: Rules
) -> Fit:
    """Score ``recorded`` for a live connection that sent ``handshake`` then ``first``."""
    open_event = recorded.open or {}
    why: list[str] = []
    path = 0 if open_event.get("path", "/") == handshake.path else 1
    if path:
        why.append(f"path: got {handshake.path!r}, recorded {open_event.get('path')!r}")
    raw = open_event.get("headers") or {}
    pairs = raw.items() if isinstance(raw, dict) else ()
    got, was = _header_map(handshake.headers), _header_map(pairs)
    differing = sorted(k for k in got.keys() | was.keys() if got.get(k) != was.get(k))
    if differing:
        why.append(f"header(s) differ: {', '.join(differing)}")
    first_miss = differences = name = 0
    recorded_first = recorded.first_client_frame()
    if first is not None:
        if recorded_first is None:
            first_miss, differences = 1, 1
            why.append("the recorded connection has no client messages")
        else:
            verdict = explain(first, recorded_first, rules)
            first_miss = 0 if verdict.matched else 1
            differences = len(verdict.failures) + len(verdict.differences)
            if not verdict.matched:  # the miss of that message explains the difference
                why.append("first client message differs (see its miss)")
            if _client_name(first) != _client_name(recorded_first):
                name = 1
                if verdict.matched:
                    why.append(
                        f"clientInfo.name: got {_client_name(first)!r}, recorded "
                        f"{_client_name(recorded_first)!r}"
                    )
    return Fit(recorded.conn, first_miss, name, path, len(differing), differences, "; ".join(why))


class ReplaySession:
    """Pairs live connections with recorded ones, keeps the order across them, gathers the
    report.

    One per replay server. Each live connection gets a number from :meth:`open`, then
    :meth:`pair` (by its handshake and first message: the best unused recording), or
    :meth:`claim_next` (the next unused recorded connection), :meth:`claim_matching`
    (``new_episodes``: the first unused one whose first client frame matches), or
    :meth:`recorded_live` (it was relayed and recorded instead). :attr:`ordering` keeps the
    recorded order across connections (:mod:`proxy.core.ordering`).
    """

    def __init__(self, cassette: Cassette | None, options: ReplayOptions, name: str) -> None:
        self.options = options
        self.name = name
        self.recorded = recorded_connections(cassette) if cassette is not None else []
        # One recorded connection has no order across connections to keep: its player never
        # asks (Ordering.independent), so its messages are not listed for it.
        ordered = self.recorded if len(self.recorded) > 1 else []
        self.ordering = Ordering.build(
            (
                (
                    r.conn,
                    [
                        (
                            item.seq,
                            item.direction is Direction.C2S,
                            item.event.get("msg"),
                            item.event.get("response_to"),
                            item.describe(),
                        )
                        for item in r.items
                    ],
                )
                for r in ordered
            ),
            options.order,
        )
        self._claimed: set[int] = set()
        self._live = 0
        self._connections: dict[int, ConnectionReplay | ConnectionReport] = {}
        self._notes: dict[int, list[str]] = {}

    def open(self) -> int:
        """Number a new live connection (from 1)."""
        self._live += 1
        return self._live

    def note(self, live: int, text: str) -> None:
        """Add a line to live connection ``live``'s part of the report."""
        self._notes.setdefault(live, []).append(text)

    def _claim(self, live: int, recorded: RecordedConnection) -> ConnectionReplay:
        self._claimed.add(recorded.conn)
        replay = ConnectionReplay(live, recorded, self.options)
        self._connections[live] = replay
        return replay

    def unused(self) -> list[RecordedConnection]:
        """The recorded connections not replayed yet, in cassette order."""
        left = [r for r in self.recorded if r.conn not in self._claimed]
        if not left and self.options.allow_playback_repeats:
            return list(self.recorded)  # allow_playback_repeats: every recording answers again
        return left

    def none_left(self, live: int) -> Miss | None:
        """The miss of there being no unused recorded connection (recorded in the report)."""
        if self.unused():
            return None
        miss = Miss(
            live,
            None,
            0,
            "a new connection",
            note=f"all {len(self.recorded)} recorded connection(s) of {self.name} were "
            "already replayed",
        )
        self._connections[live] = ConnectionReport(live, None, misses=(miss,))
        return miss

    def claim_next(self, live: int) -> ConnectionReplay | Miss:
        """The next unused recorded connection, or the miss of there being none left."""
        for recorded in self.recorded:
            if recorded.conn not in self._claimed:
                return self._claim(live, recorded)
        miss = self.none_left(live)
        assert miss is not None
        return miss

    def subprotocol(self, handshake: Handshake) -> str | None:
        """The subprotocol to accept before the recording is chosen: the first one an unused
        recording negotiated that the client offers."""
        for recorded in self.unused():
            if recorded.subprotocol is not None and recorded.subprotocol in handshake.subprotocols:
                return recorded.subprotocol
        return None

    def fits(self, handshake: Handshake, first: str | bytes | None) -> list[Fit]:
        """Every unused recording scored for this live connection, best first."""
        frame = None if first is None else Frame.live(first)
        scored = [fit(r, handshake, frame, self.options.rules) for r in self.unused()]
        return sorted(scored, key=lambda f: (f.key, f.conn))

    def speaks_first(self, handshake: Handshake) -> bool:
        """Whether the recording the handshake alone would choose has server frames before
        its first client frame: then it is chosen at once (a client waiting for them would
        never speak first)."""
        fits = self.fits(handshake, None)
        if not fits:
            return False
        best = next(r for r in self.recorded if r.conn == fits[0].conn)
        return bool(best.prelude)

    def pair(
        self, live: int, handshake: Handshake, first: str | bytes | None
    ) -> ConnectionReplay | Miss:
        """Choose the best unused recording for a live connection by its ``handshake`` and
        ``first`` message (``None`` when deciding before it).

        Best means, in this order: its first client message matches, the same
        ``clientInfo.name``, the same path, fewer differing headers, fewer differences, then
        the lowest recorded connection number. A tie, or a choice whose first message does
        not match, is noted in the report (the mismatch itself is then an ordinary miss of
        that connection, answered per ``on_miss``).
        """
        fits = self.fits(handshake, first)
        if not fits:
            miss = self.none_left(live)
            assert miss is not None
            return miss
        best = fits[0]
        tied = [f.conn for f in fits if f.key == best.key]
        if len(tied) > 1:
            self.note(
                live,
                f"recorded connections {', '.join(map(str, tied))} fit equally; chose "
                f"{best.conn}, the first",
            )
        if best.first:
            self.note(
                live,
                "no unused recorded connection starts with this client message; replaying "
                f"the closest, recorded connection {best.conn} ({best.why})",
            )
        elif best.client_name or best.path:
            self.note(live, f"chose recorded connection {best.conn} despite: {best.why}")
        recorded = next(r for r in self.recorded if r.conn == best.conn)
        return self._claim(live, recorded)

    def pair_matching(
        self, live: int, handshake: Handshake, first: str | bytes
    ) -> ConnectionReplay | None:
        """``new_episodes``: the best unused recording (as :meth:`pair` ranks them) among those
        whose first client message matches ``first``; ``None`` if none does."""
        fits = [f for f in self.fits(handshake, first) if not f.first]
        if not fits:
            return None
        tied = [f.conn for f in fits if f.key == fits[0].key]
        if len(tied) > 1:
            self.note(
                live,
                f"recorded connections {', '.join(map(str, tied))} fit equally; chose "
                f"{fits[0].conn}, the first",
            )
        recorded = next(r for r in self.recorded if r.conn == fits[0].conn)
        return self._claim(live, recorded)

    def gone_before_speaking(self, live: int) -> None:
        """Live connection ``live`` closed before its first message: no recording was used."""
        self._connections[live] = ConnectionReport(live, None)
        self.note(live, "closed before its first message; no recorded connection was used")

    def claim_matching(self, live: int, first: str | bytes) -> ConnectionReplay | None:
        """The first unused recorded connection whose first client frame matches ``first``."""
        frame = Frame.live(first)
        for recorded in self.recorded:
            candidate = recorded.first_client_frame()
            if (
                recorded.conn not in self._claimed
                and candidate is not None
                and matches(frame, candidate, self.options.rules)
            ):
                return self._claim(live, recorded)
        return None

    def recorded_live(self, live: int, conn: int) -> None:
        """Live connection ``live`` was relayed to the upstream and recorded as ``conn``."""
        self._connections[live] = ConnectionReport(live, conn, recorded_live=True)

    def episode_failed(self, live: int, message: str) -> None:
        """Live connection ``live`` matched no recording and could not be recorded either."""
        miss = Miss(live, None, 0, "a new connection", note=message)
        self._connections[live] = ConnectionReport(live, None, misses=(miss,))

    def report(self) -> ReplayReport:
        """Every live connection so far, then every recorded connection never replayed."""
        reports: list[ConnectionReport] = []
        for live in sorted(self._connections):
            entry = self._connections[live]
            report = entry.report() if isinstance(entry, ConnectionReplay) else entry
            notes = tuple(self._notes.get(live, ()))
            reports.append(replace(report, notes=report.notes + notes) if notes else report)
        for recorded in self.recorded:
            if recorded.conn in self._claimed:
                continue
            reports.append(
                ConnectionReport(
                    None,
                    recorded.conn,
                    client=(0, len(recorded.client)),
                    server=(0, recorded.server_count),
                    unused_client=tuple(
                        Unused(recorded.items[i].seq, recorded.items[i].describe())
                        for i in recorded.client
                    ),
                )
            )
        return ReplayReport(self.name, tuple(reports))
