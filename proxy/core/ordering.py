"""The recorded order across connections: which replayed server frame may go now.

Pure code: no sockets, no event loop, no clock. Connections of one app-server share state
through threads, so a replayed server frame that concerns a thread waits until the messages
on *other* recorded connections that came before it in the cassette (its global ``seq``) and
concern the same thread have happened live: their client messages arrived, their server
messages were sent. Frames that concern no thread (an ``initialize`` result, a config
warning) never wait under the default :attr:`Order.THREAD`, so a client waiting for its own
``initialize`` result never deadlocks. The model is written down in docs/replay.md.

Every wait is for a message with a smaller ``seq``, so in a replay that follows the recording
nothing waits in a circle; what never comes (a client that does something else, a recorded
connection nobody opens) is given up on after the hold timeout (:meth:`Ordering.give_up`,
called by :class:`~proxy.wire.playback.RecordedLeg`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_HOLD_TIMEOUT = 10.0
"""Seconds a replayed frame is held for a message on another connection before it is sent
anyway (and the wait is reported)."""

THREAD_METHODS = frozenset({"thread/start", "thread/resume", "thread/fork"})
"""Requests whose result names a thread (``result.thread.id``)."""

ID_KEYS = frozenset({"threadId", "turnId", "itemId"})
"""Members whose string value names a thread, a turn or an item."""

OWNER_KEYS = frozenset({"thread", "turn", "item"})
"""Objects whose ``id`` names a thread, a turn or an item."""

ANY = "*"
"""The one stream of :attr:`Order.GLOBAL`: every message concerns it."""


class Order(enum.StrEnum):
    """How replayed server frames are ordered against other connections."""

    THREAD = "thread"
    """A frame concerning a thread waits for earlier messages about that thread elsewhere."""
    GLOBAL = "global"
    """Every frame waits for every earlier message on every other connection."""
    NONE = "none"
    """No order across connections: each connection is replayed on its own."""


@dataclass(frozen=True)
class Message:
    """One recorded text or binary frame, as the ordering sees it."""

    seq: int
    conn: int
    client: bool
    """Sent by the client (else by the server)."""
    threads: frozenset[str]
    """The threads it concerns (see :func:`thread_concerns`)."""
    description: str
    """``> request turn/start`` and the like, for reports."""

    def render(self) -> str:
        """``seq 31 (> request turn/start on recorded connection 1)``."""
        return f"seq {self.seq} ({self.description} on recorded connection {self.conn})"


# --- which thread a message concerns ---------------------------------------------------------


_KIND_OF = {key: key.removesuffix("Id") for key in ID_KEYS}


def _ids(value: Any, parent: str | None = None) -> list[tuple[str, str]]:
    """``(kind, id)`` for every thread, turn or item id in ``value``: ``threadId`` members
    and the like, and the ``id`` of a ``thread``, ``turn`` or ``item`` object.

    Walks with a stack, not recursive generators: it reads every message of a cassette
    when a replay starts (the order of the pairs is not part of the answer)."""
    found: list[tuple[str, str]] = []
    stack: list[tuple[Any, str | None]] = [(value, parent)]
    while stack:
        value, parent = stack.pop()
        if isinstance(value, dict):
            for key, member in value.items():
                if isinstance(member, str):
                    if key in _KIND_OF:
                        found.append((_KIND_OF[key], member))
                    elif key == "id" and parent in OWNER_KEYS:
                        found.append((parent, member))
                elif isinstance(member, dict | list):
                    stack.append((member, key))
        elif isinstance(value, list):
            for member in value:
                if isinstance(member, dict | list):
                    stack.append((member, parent))
    return found


def _body(msg: Any) -> Any:
    """What a message says besides its ``id`` and ``method``: params, result, error."""
    if not isinstance(msg, dict):
        return None
    return [msg.get("params"), msg.get("result"), msg.get("error")]


def thread_concerns(messages: Iterable[tuple[Any, str | None]]) -> list[frozenset[str]]:
    """For each ``(msg, response_to)`` (in cassette order), the threads it concerns.

    Thread ids come from the results of ``thread/start``, ``thread/resume`` and
    ``thread/fork``, from ``threadId`` members and from ``thread`` objects; a turn or item id
    met in a message that names exactly one thread belongs to that thread. A message concerns
    every thread one of its ids belongs to.
    """
    listed = [(_body(msg), response_to) for msg, response_to in messages]
    owner: dict[str, str] = {}
    every: list[list[tuple[str, str]]] = []
    for body, response_to in listed:
        found = _ids(body)
        every.append(found)
        threads = {i for kind, i in found if kind == "thread"}
        if response_to in THREAD_METHODS:
            result = body[1] if isinstance(body, list) else None
            thread = result.get("thread") if isinstance(result, dict) else None
            if isinstance(thread, dict) and isinstance(thread.get("id"), str):
                threads.add(thread["id"])
        for thread in threads:
            owner.setdefault(thread, thread)
        if len(threads) == 1:
            (thread,) = threads
            for kind, i in found:
                if kind != "thread":
                    owner.setdefault(i, thread)
    return [
        frozenset(owner[i] for _, i in found if i in owner) if found else _NOTHING
        for found in every
    ]


_NOTHING: frozenset[str] = frozenset()


# --- the order ---------------------------------------------------------------------------


class _Stream:
    """The seqs of one connection's messages about one thread, and the first not done."""

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.cursor = 0

    def first_pending(self, done: set[int]) -> int | None:
        """The smallest seq not done yet (amortised O(1): done only grows)."""
        while self.cursor < len(self.seqs) and self.seqs[self.cursor] in done:
            self.cursor += 1
        return self.seqs[self.cursor] if self.cursor < len(self.seqs) else None

    def pending_before(self, seq: int, done: set[int]) -> list[int]:
        """Every seq below ``seq`` not done yet."""
        start = self.cursor
        return [s for s in self.seqs[start:] if s < seq and s not in done]


class Ordering:
    """Decides whether a replayed server frame may be sent, given what happened live.

    Build it once per replay session from every recorded message (:meth:`build`). A
    connection's player calls :meth:`may_send` before sending a server frame; when the answer
    is no, the player's ``wake`` callback (:meth:`register`) is called once a later
    :meth:`done` may have changed it. Call :meth:`done` when a recorded client message
    arrived live (it matched) and when a recorded server frame was sent; :meth:`ended` when a
    live connection ends; :meth:`give_up` when a hold timed out.
    """

    def __init__(self, messages: Sequence[Message], order: Order = Order.THREAD) -> None:
        self.order = order
        self.messages = {m.seq: m for m in messages}
        self._streams: dict[int, dict[str, _Stream]] = {}
        for message in sorted(messages, key=lambda m: m.seq):
            for key in self._keys(message):
                self._streams.setdefault(message.conn, {}).setdefault(key, _Stream())
                self._streams[message.conn][key].seqs.append(message.seq)
        self._done: set[int] = set()
        self._wake: dict[int, Callable[[], None]] = {}
        self._blocked: dict[int, int] = {}
        """Connection -> the seq it was told to hold."""

    @classmethod
    def build(
        cls,
        connections: Iterable[tuple[int, Sequence[tuple[int, bool, Any, str | None, str]]]],
        order: Order = Order.THREAD,
    ) -> Ordering:
        """From ``(conn, [(seq, is_client, msg, response_to, description), ...])``."""
        flat = [(conn, *m) for conn, items in connections for m in items]
        flat.sort(key=lambda m: m[1])
        # With one connection nothing waits for another: the concerns are not needed (and
        # reading every message for them is most of a replay's start).
        concerns = (
            [frozenset[str]()] * len(flat)
            if order is Order.NONE or len({m[0] for m in flat}) < 2
            else thread_concerns((msg, response_to) for _, _, _, msg, response_to, _ in flat)
        )
        messages = [
            Message(seq, conn, is_client, threads, description)
            for (conn, seq, is_client, _, _, description), threads in zip(
                flat, concerns, strict=True
            )
        ]
        return cls(messages, order)

    def _keys(self, message: Message) -> frozenset[str]:
        if self.order is Order.GLOBAL:
            return frozenset({ANY})
        if self.order is Order.THREAD:
            return message.threads
        return frozenset()

    # -- questions --

    def independent(self, conn: int) -> bool:
        """Whether recorded connection ``conn`` shares no thread (under :attr:`Order.GLOBAL`:
        no messages at all) with another connection: then none of its frames ever waits for
        another connection, and no other connection's frame waits for it, so its player can
        skip the ordering altogether."""
        mine = self._streams.get(conn, {}).keys()
        return not any(
            mine & streams.keys() for other, streams in self._streams.items() if other != conn
        )

    def waiting_for(self, seq: int) -> list[Message]:
        """The messages on other connections server frame ``seq`` still waits for, by seq."""
        message = self.messages.get(seq)
        if message is None or message.client:
            return []
        keys = self._keys(message)
        pending: set[int] = set()
        for conn, streams in self._streams.items():
            if conn == message.conn:
                continue
            for key in keys:
                stream = streams.get(key)
                if stream is not None:
                    pending.update(stream.pending_before(seq, self._done))
        return [self.messages[s] for s in sorted(pending)]

    def _ready(self, message: Message) -> bool:
        for conn, streams in self._streams.items():
            if conn == message.conn:
                continue
            for key in self._keys(message):
                stream = streams.get(key)
                if stream is None:
                    continue
                first = stream.first_pending(self._done)
                if first is not None and first < message.seq:
                    return False
        return True

    def may_send(self, conn: int, seq: int | None) -> bool:
        """Whether server frame ``seq`` of recorded connection ``conn`` may be sent now.

        ``None`` (rpctape's own reply to a miss) always may. When not, ``conn``'s wake
        callback is called once something it waits for is done.
        """
        message = None if seq is None else self.messages.get(seq)
        if message is None or self._ready(message):
            self._blocked.pop(conn, None)
            return True
        self._blocked[conn] = message.seq
        return False

    # -- what happened --

    def register(self, conn: int, wake: Callable[[], None]) -> None:
        """Call ``wake()`` when recorded connection ``conn`` may send a frame it held."""
        self._wake[conn] = wake

    def done(self, seq: int) -> None:
        """Recorded message ``seq`` happened live (a client message arrived, a server frame
        was sent); wake the connections that may now go on."""
        if seq in self._done or seq not in self.messages:
            return
        self._done.add(seq)
        self._recheck()

    def ended(self, conn: int) -> list[Message]:
        """Live connection replaying ``conn`` ended: nothing more of it will happen, so no one
        waits for it. Returns what was still to happen (for the report)."""
        self._wake.pop(conn, None)
        self._blocked.pop(conn, None)
        left = [m for m in self.messages.values() if m.conn == conn and m.seq not in self._done]
        self._done.update(m.seq for m in left)
        if left:
            self._recheck()
        return left

    def give_up(self, seq: int) -> list[Message]:
        """Server frame ``seq`` was held too long: stop waiting for what it waits for (every
        later frame stops waiting for those too). A recorded connection no live connection
        replays (none :meth:`register` ed it) is given up whole: nothing of it will happen.
        Returns what ``seq`` waited for."""
        missing = self.waiting_for(seq)
        self._done.update(m.seq for m in missing)
        for conn in {m.conn for m in missing} - self._wake.keys():
            self._done.update(m.seq for m in self.messages.values() if m.conn == conn)
        if missing:
            self._recheck()
        return missing

    def _recheck(self) -> None:
        for conn, seq in list(self._blocked.items()):
            if self._ready(self.messages[seq]):
                del self._blocked[conn]
                wake = self._wake.get(conn)
                if wake is not None:
                    wake()
