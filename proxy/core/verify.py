"""The verify planner: when to send each recorded client message to a live server.

Pure code: no sockets, no event loop, no clock. ``rpctape verify`` plays the *client* side of
a recorded connection against a live app-server, the way Pact verifies a provider against its
consumers' contracts. :class:`ClientPlan` decides, from the live server's frames, which
recorded client messages may go out now; :class:`proxy.wire.recorded_client.RecordedClientLeg`
carries its decisions out on a bridge.

The rule, per recorded client message ``k`` (in recorded order):

* Before sending ``k``, the live server must have sent what the recorded server had sent
  before ``k``, counted by key: a notification or server request by its method, a response
  or error by the id of the client request it answers (``k``'s wait). Counts, not order: the
  order between independent server streams is timing.
* An answer to a server request (an approval, ``attestation/generate``) waits only for that
  request (the n-th live request of the method, for the n-th recorded one): the server is
  waiting for it, some requests time out quickly (attestation: 100 ms), and what else the
  recorded server had sent by then is timing. Its ``id`` becomes the live request's id, byte
  for byte (server request ids come from one counter per server process and differ between
  runs); the client's own request ids are sent as recorded, since the server echoes them.
* Generated ids the client repeats (thread, turn and item ids: fresh UUIDs on every run) are
  learned from the server: each live server frame is walked beside the recorded frame of the
  same key and occurrence, and a UUID at the same place in both maps recorded -> live. Client
  messages are sent with every learned UUID replaced (:meth:`ClientPlan.learned`); nothing
  else in them changes.
* After the last client message, the plan is finished once the live server has sent
  everything the recorded one sent on the connection.

Frames that are not JSON-RPC (binary, invalid, batches) are sent as recorded and never
waited for.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .cassette import frame_of
from .jsonrpc import Message, MessageType, id_key, parse, raw_id, with_raw_id
from .recorded import Item, RecordedConnection

__all__ = ["ClientPlan", "Key", "Wait", "learn_uuids", "server_key"]

_UUID = re.compile(rb"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_UUID_STR = re.compile(_UUID.pattern.decode())


def learn_uuids(recorded: Any, live: Any, into: dict[bytes, bytes]) -> None:
    """Walk two JSON values side by side; where strings at the same place hold as many UUIDs,
    map each recorded one to the live one (first mapping wins)."""
    if isinstance(recorded, dict) and isinstance(live, dict):
        for key, value in recorded.items():
            if key in live:
                learn_uuids(value, live[key], into)
    elif isinstance(recorded, list) and isinstance(live, list):
        for left, right in zip(recorded, live, strict=False):
            learn_uuids(left, right, into)
    elif isinstance(recorded, str) and isinstance(live, str):
        old, new = _UUID_STR.findall(recorded), _UUID_STR.findall(live)
        if len(old) == len(new):
            for a, b in zip(old, new, strict=True):
                if a != b:
                    into.setdefault(a.encode(), b.encode())


_ANSWERS = frozenset({MessageType.RESPONSE, MessageType.ERROR})

Key = tuple[str, str]
"""What a server frame counts as: ``("notification", method)``, ``("request", method)`` or
``("answer", id key of the client request)``."""


def server_key(type_: MessageType, method: str | None, answered_id: str | None) -> Key | None:
    """The key a server frame is counted under, or ``None`` when it is never waited for."""
    if type_ in (MessageType.NOTIFICATION, MessageType.REQUEST) and method is not None:
        return (type_.value, method)
    if type_ in _ANSWERS and answered_id is not None:
        return ("answer", answered_id)
    return None


@dataclass(frozen=True)
class Wait:
    """What one client message (or the end of the connection) waits for."""

    need: Counter[Key]
    index: int | None
    """The recorded client item it guards; ``None``: the end of the connection."""


@dataclass
class ClientPlan:
    """Plays one recorded connection's client side; feed it the live server's frames.

    Call :meth:`start` once (the messages to send at once), then :meth:`receive` with every
    text frame the live server sends, in order; each returns the messages to send now, in
    order. :attr:`finished` turns true once every client message is sent and the server sent
    what the recording waited for at the end; :meth:`missing` says what is still awaited.
    """

    recorded: RecordedConnection
    got: Counter[Key] = field(default_factory=Counter)
    """Live server frames received so far, by key."""
    sent: int = 0
    """How many recorded client messages were sent."""
    live_requests: dict[str, list[bytes]] = field(default_factory=dict)
    """The raw ids of the live server's requests, per method, in arrival order."""
    learned: dict[bytes, bytes] = field(default_factory=dict)
    """Recorded UUID -> live UUID, learned from the server's frames."""
    progress: int = 0
    """Bumped by each frame that counts towards the wait in force, and by each send: a
    timeout measures silence, not the length of a turn."""
    _waits: list[Wait] = field(init=False, default_factory=list)
    _final: Wait = field(init=False)
    _labels: dict[Key, str] = field(init=False, default_factory=dict)
    _ordinal: dict[int, tuple[str, int]] = field(init=False, default_factory=dict)
    """Recorded server request index -> (method, n-th of that method, from 0)."""
    _recorded: dict[Key, list[Any]] = field(init=False, default_factory=dict)
    """The recorded server messages of each key, in order (to learn UUIDs from)."""

    def __post_init__(self) -> None:
        items = self.recorded.items
        seen: Counter[Key] = Counter()
        per_method: Counter[str] = Counter()
        client_ids: dict[int, str] = {}
        for item in items:
            if item.index in self.recorded.client:
                self._waits.append(self._wait_for(item, seen))
                if item.type is MessageType.REQUEST:
                    client_ids[item.index] = self._id_key(item)
                continue
            method = item.event.get("method")
            answered = client_ids.get(item.answers) if item.answers is not None else None
            key = server_key(item.type, method, answered)
            if key is None:
                continue
            seen[key] += 1
            self._recorded.setdefault(key, []).append(item.event.get("msg"))
            if key not in self._labels:
                self._labels[key] = self._label(item, key)
            if item.type is MessageType.REQUEST and method is not None:
                self._ordinal[item.index] = (method, per_method[method])
                per_method[method] += 1
        self._final = Wait(Counter(seen), None)

    @staticmethod
    def _id_key(item: Item) -> str:
        msg = item.event.get("msg")
        return id_key(msg.get("id")) if isinstance(msg, dict) else ""

    def _wait_for(self, item: Item, seen: Counter[Key]) -> Wait:
        if item.type in _ANSWERS and item.answers is not None:
            request = self.recorded.items[item.answers]
            if request.index in self._ordinal:
                method, nth = self._ordinal[request.index]
                return Wait(Counter({("request", method): nth + 1}), item.index)
        return Wait(Counter(seen), item.index)

    @staticmethod
    def _label(item: Item, key: Key) -> str:
        if key[0] == "answer":
            what = item.event.get("response_to") or "a request"
            msg = item.event.get("msg")
            shown = msg.get("id") if isinstance(msg, dict) else "?"
            return f"the answer to {what} (id {shown!r})"
        return f"{key[0]} {key[1]}"

    # -- driving --

    @property
    def finished(self) -> bool:
        """Every client message sent, and the server sent what the recording ended with."""
        return self.sent == len(self._waits) and self._met(self._final)

    def start(self) -> list[Message]:
        """The client messages to send as soon as the connection is open."""
        return self._ready()

    def receive(self, payload: bytes) -> list[Message]:
        """Count one live server text frame; return the client messages now due."""
        parsed = parse(payload)
        key = server_key(parsed.type, parsed.method, parsed.id_key)
        if key is not None:
            recorded = self._recorded.get(key, [])
            if self.got[key] < len(recorded) and parsed.has_msg:
                learn_uuids(recorded[self.got[key]], parsed.msg, self.learned)
            if self.got[key] < self.current.need.get(key, 0):
                self.progress += 1
            self.got[key] += 1
            if parsed.type is MessageType.REQUEST and parsed.method is not None:
                self.live_requests.setdefault(parsed.method, []).append(raw_id(payload) or b"null")
        return self._ready()

    def _met(self, wait: Wait) -> bool:
        return all(self.got[key] >= count for key, count in wait.need.items())

    def _ready(self) -> list[Message]:
        out: list[Message] = []
        while self.sent < len(self._waits) and self._met(self._waits[self.sent]):
            out.append(self._message(self._waits[self.sent].index))
            self.sent += 1
            self.progress += 1
        return out

    def _message(self, index: int | None) -> Message:
        assert index is not None
        item = self.recorded.items[index]
        event = item.event
        data = frame_of(event)
        if event["kind"] == "binary":
            return (False, data)
        if self.learned:
            learned = self.learned
            data = _UUID.sub(lambda m: learned.get(m[0], m[0]), data)
        if item.type in _ANSWERS and item.answers in self._ordinal:
            method, nth = self._ordinal[item.answers]
            live = self.live_requests[method][nth]
            data = with_raw_id(data, live) or data
        return (True, data)

    # -- explaining --

    @property
    def current(self) -> Wait:
        """The wait in force: the next client message's, or the end's."""
        return self._waits[self.sent] if self.sent < len(self._waits) else self._final

    def missing(self) -> list[str]:
        """What the current wait still lacks: ``notification turn/completed (0 of 1 came)``."""
        lacking = []
        for key, count in self.current.need.items():
            if self.got[key] < count:
                label = self._labels.get(key, f"{key[0]} {key[1]}")
                lacking.append(f"{label} ({self.got[key]} of {count} came)")
        return lacking

    def describe_wait(self) -> str:
        """What is waited for, and before which client message, in one line."""
        wait = self.current
        if wait.index is None:
            where = "before ending the connection (after the last client message)"
        else:
            item = self.recorded.items[wait.index]
            where = f"before client message seq {item.seq} ({item.describe()})"
        return f"{where}: still waiting for {', '.join(self.missing()) or 'nothing'}"
