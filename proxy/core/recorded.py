"""A recorded connection, prepared for replay and verify: its frames, segments and answers.

Pure code. :func:`recorded_connections` turns a cassette's events into one
:class:`RecordedConnection` per accepted connection; the replay planner
(:mod:`proxy.core.planner`) plays the server side of one, :mod:`proxy.core.verify` the client
side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from .cassette import Cassette, Event, frame_of
from .ids import marked_id_slots
from .jsonrpc import Direction, MessageType, Pairing, id_key, id_slots, parse
from .matching import Frame

ANSWERS = frozenset({MessageType.RESPONSE, MessageType.ERROR})
"""The message types that answer a request."""

_ID_HEAD = b'{"id":'


class Item:
    """One recorded frame of a connection, with what the planner needs to know about it.

    Made once per recorded frame when a cassette is loaded, so it is small (slots) and keeps
    what a replay reads per frame ready (direction, type, the server frame's bytes, the cut
    around a reply's id) and the rest as the cassette line it came from: :attr:`event` and a
    client frame's :attr:`frame` are parsed from that line each time they are asked for (a
    client frame once when it is matched, an event when a report describes it).
    """

    __slots__ = (
        "_cut",
        "_data",
        "_event",
        "_frame",
        "_line",
        "_marked",
        "answers",
        "direction",
        "gap",
        "index",
        "name",
        "seq",
        "text",
        "type",
    )

    index: int
    direction: Direction
    type: MessageType
    gap: float
    """Seconds since the previous frame of the connection (or its ``open``) was recorded."""
    answers: int | None
    """For a response or error: the index of the request it answers (other direction)."""
    seq: int
    """The event's ``seq`` in the cassette."""
    text: bool
    """A text frame (else binary)."""

    def __init__(
        self,
        index: int,
        event: Event | None,
        direction: Direction,
        type: MessageType,
        gap: float,
        answers: int | None,
        frame: Frame | None,
        data: bytes | None,
        *,
        line: bytes | None = None,
        seq: int | None = None,
        text: bool | None = None,
        name: Any = None,
        cut: int = 0,
    ) -> None:
        """``event``, or ``line`` (whose ``orjson.loads`` is the event; then ``seq`` and
        ``text`` too); ``frame`` and ``data`` may be left to be built from it on use."""
        if event is None and line is None:
            raise ValueError("an Item needs its event or its cassette line")
        self.index = index
        self._event = event
        self._line = line
        self.direction = direction
        self.type = type
        self.gap = gap
        self.answers = answers
        self._frame = frame
        self._data = data
        self._marked = True  # not known: Frame.recorded reads the event's "redacted"
        if seq is None or text is None:
            known = self.event
            seq, text, name = known["seq"], known["kind"] == "text", _name(known, type)
        self.seq = seq
        self.text = text
        self.name = name
        """What :meth:`describe` names: the method, or the method a reply answers."""
        self._cut = cut

    def __repr__(self) -> str:
        return f"Item({self.index}, seq {self.seq}: {self.describe()})"

    @property
    def event(self) -> Event:
        """The cassette event (as the server saw it: a client frame's ``delivered`` message
        in place of the one recorded, see :meth:`_Builder.add`)."""
        if self._event is not None:
            return self._event
        assert self._line is not None
        event: Event = orjson.loads(self._line)
        return event

    @property
    def frame(self) -> Frame | None:
        """Client frames only: prepared for matching (built each time it is asked for)."""
        if self._frame is not None or self.direction is not Direction.C2S:
            return self._frame
        data = self._data
        if data is not None and self.text and not self._marked:
            # Frame.recorded of the event without parsing its line: the frame's parse is the
            # recorded message (data is orjson's writing of it), and nothing in it is marked.
            return Frame(data, True, parse(data))
        return Frame.recorded(self.event)

    @property
    def data(self) -> bytes:
        """The recorded frame's exact bytes; a server frame's are built when the cassette is
        loaded (the bytes sent as often as it is replayed; building them while streaming
        cost a quarter of the time)."""
        if self._data is not None:
            return self._data
        return frame_of(self.event)

    @property
    def id_slots(self) -> tuple[bytes, bytes] | None:
        """The frame cut around its ``id`` value, to put a live id in (a reply that begins
        with its id, what the app-server writes, is cut when loaded; others each time: a
        reply is planned once, and keeping their cut would cost more than finding it)."""
        if self._cut:
            return _ID_HEAD, self.data[self._cut :]
        event = self.event
        msg = event.get("msg")
        if "raw" not in event and isinstance(msg, dict) and "id" in msg:
            # The frame is orjson's writing of msg. Most replies begin with their id: then
            # the cut is right after it; else write msg again with a marker for the id.
            data = self.data
            cut = _id_cut(msg, data)
            if cut:
                return _ID_HEAD, data[cut:]
            return marked_id_slots(msg, data)
        return id_slots(self.data)

    def describe(self) -> str:
        """``> request thread/start``, ``< response to turn/start``, ``< binary frame``."""
        if not self.text:
            what = "binary frame"
        elif self.type in ANSWERS:
            what = f"{self.type.value} to {self.name or 'an unknown request'}"
        elif self.name is not _NO_METHOD:
            what = f"{self.type.value} {self.name}"
        else:
            what = f"{self.type.value} frame"
        return f"{self.direction.arrow} {what}"


_NO_METHOD = object()
"""The :attr:`Item.name` of a frame that has no ``method`` member."""


def _name(event: Event, mtype: MessageType) -> Any:
    """:attr:`Item.name` of ``event``."""
    if mtype in ANSWERS:
        return event.get("response_to")
    return event.get("method", _NO_METHOD)


def _id_cut(msg: dict[str, Any], data: bytes) -> int:
    """Where the id of ``msg`` ends in ``data`` (orjson's writing of it) when ``msg`` begins
    with its id, else 0."""
    if next(iter(msg)) == "id":
        ident = msg["id"]
        if type(ident) is int:  # orjson writes an integer as its digits
            digits = str(ident).encode()
            cut = len(_ID_HEAD) + len(digits)
            after = data[cut : cut + 1]
            if data.startswith(_ID_HEAD) and data.startswith(digits, 6) and after in (b",", b"}"):
                return cut
            return 0
        try:
            head = _ID_HEAD + orjson.dumps(msg["id"])
        except TypeError:
            return 0
        if data.startswith(head):
            return len(head)
    return 0


@dataclass
class RecordedConnection:
    """The frames of one recorded connection, split into segments.

    The *prelude* is the server frames before the first client frame; the *segment* of a
    client frame is the server frames after it up to the next client frame (consecutive
    indices, kept as ranges).
    """

    conn: int
    items: list[Item]
    client: list[int]
    prelude: Sequence[int]
    segments: dict[int, Sequence[int]]
    subprotocol: str | None
    close: Event | None
    open: Event | None = None
    """The ``open`` event (path, headers), for pairing live connections by their handshake."""

    @classmethod
    def build(cls, conn: int, events: Sequence[Event]) -> RecordedConnection:
        """Prepare one connection's events (in cassette order)."""
        builder = _Builder(conn)
        for event in events:
            builder.add(None, event)
        return builder.finish()

    @property
    def server_count(self) -> int:
        """How many server frames were recorded."""
        return len(self.items) - len(self.client)

    def first_client_frame(self) -> Frame | None:
        """The first recorded client frame (what ``new_episodes`` compares), if any."""
        return self.items[self.client[0]].frame if self.client else None


class _Builder:
    """Builds one :class:`RecordedConnection` from its events, fed one at a time."""

    def __init__(self, conn: int) -> None:
        self.conn = conn
        self.items: list[Item] = []
        self.client: list[int] = []
        self.pairing: Pairing[int] = Pairing()
        """Requests paired with their answers by item index (``jsonrpc.Pairing``)."""
        self.subprotocol: str | None = None
        self.close: Event | None = None
        self.opened: Event | None = None
        self.last_t: float | None = None
        self.names: dict[str, str] = {}

    def add(self, line: bytes | None, event: Event) -> None:
        """One event of the connection, in cassette order (``line``: the cassette line whose
        ``orjson.loads`` is ``event``, if there is one).

        Runs once per recorded frame when a replay starts: plain lookups, no enum calls."""
        kind = event["kind"]
        if kind != "text" and kind != "binary":
            if kind == "open":
                self.opened = event
                self.subprotocol = event.get("subprotocol")
                self.last_t = float(event.get("t", 0.0))
            elif kind == "close":
                self.close = event
            return
        direction = _DIRECTIONS.get(event["dir"]) or Direction(event["dir"])
        client = direction is Direction.C2S
        # A frame recorded under rewrite rules, as the upstream saw it (docs/replay.md):
        # client frames the rules kept from the server are skipped and patched ones are
        # matched as delivered; server-bound frames rpctape sent itself stay (the server saw
        # them). Frames rpctape sent to the client are skipped: replayed with the same rules,
        # they come again.
        if client:
            if event.get("forwarded") is False:
                return
            if "delivered" in event:
                event = {k: v for k, v in event.items() if k != "raw"} | {"msg": event["delivered"]}
                line = None
        elif event.get("origin") == "rpctape":
            return
        t = float(event.get("t", 0.0))
        last_t = self.last_t
        gap = 0.0 if last_t is None or t <= last_t else t - last_t
        self.last_t = t
        items = self.items
        index = len(items)
        text = kind == "text"
        mtype = MessageType.INVALID
        if text:
            type_name = event.get("type", "invalid")
            mtype = _TYPES.get(type_name) or MessageType(type_name)
        answers = None
        msg: Any = event.get("msg")
        if mtype is not MessageType.INVALID and isinstance(msg, dict) and "id" in msg:
            key = id_key(msg["id"])
            if mtype is MessageType.REQUEST:
                self.pairing.opened(direction, key, index)
            elif mtype in ANSWERS:
                answers = self.pairing.answered(direction, key)
        name = event.get("response_to") if mtype in ANSWERS else event.get("method", _NO_METHOD)
        if type(name) is str:  # one string per method name, not one per frame
            name = self.names.setdefault(name, name)
        item = _new_item(Item)
        item.index, item.direction, item.type, item.gap, item.answers = (
            index, direction, mtype, gap, answers
        )  # fmt: skip
        item.seq, item.text, item.name, item._cut = event["seq"], text, name, 0
        item._line, item._event = line, None if line is not None else event
        if client:
            # Matching parses the frame when it is a candidate (Item.frame): keeping every
            # client frame parsed would hold the whole recording in memory as objects.
            frame = None if line is not None else Frame.recorded(event)
            item._frame = frame
            item._data = _frame_bytes(event) if frame is None else frame.data
            item._marked = "redacted" in event
            self.client.append(index)
        else:
            item._frame, item._marked = None, "redacted" in event
            item._data = data = _frame_bytes(event)
            if answers is not None and "raw" not in event:  # then msg is a dict with an id
                item._cut = _id_cut(msg, data)
        items.append(item)

    def finish(self) -> RecordedConnection:
        """The connection, with its segments: the server frames after each client frame."""
        client = self.client
        count = len(self.items)
        bounds = [*client, count]
        segments: dict[int, Sequence[int]] = {
            index: range(index + 1, bounds[n + 1]) for n, index in enumerate(client)
        }
        prelude = range(bounds[0])
        return RecordedConnection(
            self.conn,
            self.items,
            client,
            prelude,
            segments,
            self.subprotocol,
            self.close,
            self.opened,
        )


_DIRECTIONS = {d.value: d for d in Direction}
_new_item = object.__new__
_TYPES = {t.value: t for t in MessageType}
"""Looked up per recorded frame when a cassette is loaded (an enum call costs ten times more);
an unknown name still goes to the enum, which raises as before."""


def _frame_bytes(event: Event) -> bytes:
    """:func:`frame_of`, as a bytes object of exactly its size: the bytes ``orjson.dumps``
    returns keep a buffer of several kB, which held for every recorded frame was most of a
    replay's memory (orjson 3.13)."""
    if event["kind"] == "text" and "raw" not in event and "msg" in event:
        return orjson.dumps(event["msg"], option=orjson.OPT_APPEND_NEWLINE)[:-1]
    return frame_of(event)


def recorded_connections(cassette: Cassette) -> list[RecordedConnection]:
    """Every connection of ``cassette`` that was accepted (has an ``open`` event), in order.

    One pass over the cassette's lines, each parsed once and not kept (:meth:`Item.event`
    parses it again when asked)."""
    builders: dict[int, _Builder] = {}
    for line, event in cassette.entries():
        conn = event["conn"]
        builder = builders.get(conn)
        if builder is None:
            builder = builders[conn] = _Builder(conn)
        builder.add(line, event)
    return [b.finish() for b in builders.values() if b.opened is not None]
