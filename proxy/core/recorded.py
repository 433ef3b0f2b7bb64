"""A recorded connection, prepared for replay and verify: its frames, segments and answers.

Pure code. :func:`recorded_connections` turns a cassette's events into one
:class:`RecordedConnection` per accepted connection; the replay planner
(:mod:`proxy.core.planner`) plays the server side of one, :mod:`proxy.core.verify` the client
side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from .cassette import Cassette, Event, frame_of
from .ids import marked_id_slots
from .jsonrpc import Direction, MessageType, id_key, id_slots
from .matching import Frame

ANSWERS = frozenset({MessageType.RESPONSE, MessageType.ERROR})
"""The message types that answer a request."""

_ID_HEAD = b'{"id":'


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
            return marked_id_slots(msg, data)
        return id_slots(self.data)

    def describe(self) -> str:
        """``> request thread/start``, ``< response to turn/start``, ``< binary frame``."""
        event = self.event
        if event["kind"] == "binary":
            what = "binary frame"
        elif self.type in ANSWERS:
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
                elif mtype in ANSWERS:
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

