"""The thread rejoin scenario (two clients, one thread), shared by tests and
scripts/record_cassettes.py.

Client A initializes, starts a thread and a turn whose answer streams slowly; while it
streams, client B opens a second connection, initializes and resumes A's thread with
``thread/resume``, then receives the rest of the turn. :class:`Peer` is a minimal client
that writes everything it sends and receives into one :class:`Log` shared by both clients,
so a test can check the order of events across the two connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from proxy import recording_proxy
from proxy.codex.appserver import AppServer
from proxy.codex.backend import FakeBackend, Reply
from proxy.core.cassette import Cassette

DELTAS = 10
"""Text deltas the turn streams."""
DELTA_DELAY = 0.1
"""Seconds between two deltas when recording."""
REPLY = " ".join(f"part{n}" for n in range(1, DELTAS + 1))
"""The assistant's answer: one word per delta."""
DELTAS_BEFORE_B = 3
"""A's deltas received before B joins, when recording."""
WAIT = 30.0
"""Longest wait for one message in the scenario."""

DELTA = "item/agentMessage/delta"


@dataclass(frozen=True)
class Entry:
    """One message sent (``>``) or received (``<``) by peer ``who``."""

    who: str
    arrow: str
    msg: dict[str, Any]

    @property
    def label(self) -> str:
        """``A > turn/start``, ``B < thread/resume`` (a response), ``A < delta part3``."""
        msg = self.msg
        if msg.get("method") == DELTA:
            what = f"delta{msg['params']['delta'].rstrip()}"
        else:
            what = str(msg.get("method") or msg.get("response_to") or "response")
        return f"{self.who} {self.arrow} {what}"


@dataclass
class Log:
    """Everything both peers sent and received, in the order it happened."""

    entries: list[Entry] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def add(self, entry: Entry) -> None:
        async with self.changed:
            self.entries.append(entry)
            self.changed.notify_all()

    def labels(self, keep: Callable[[Entry], bool] = lambda e: True) -> list[str]:
        return [e.label for e in self.entries if keep(e)]

    def deltas(self) -> list[str]:
        """``A part1``, ``B part4``, ...: the deltas received, by whom, in order."""
        return [
            f"{e.who} {e.msg['params']['delta'].strip()}"
            for e in self.entries
            if e.arrow == "<" and e.msg.get("method") == DELTA
        ]


class Peer:
    """One client connection writing into a shared :class:`Log` (named ``A`` or ``B``)."""

    def __init__(self, name: str, log: Log) -> None:
        self.name = name
        self.log = log
        self.ws: ClientConnection | None = None
        self._ids = itertools.count(1)
        self._methods: dict[int, str] = {}
        self._reader: asyncio.Task[None] | None = None

    async def connect(self, url: str) -> None:
        self.ws = await connect(url, max_size=None)
        self._reader = asyncio.create_task(self._read(), name=f"peer {self.name}")

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def _read(self) -> None:
        assert self.ws is not None
        with contextlib.suppress(ConnectionClosed):
            async for frame in self.ws:
                msg = orjson.loads(frame)
                if "id" in msg and "method" not in msg:
                    msg = {**msg, "response_to": self._methods.get(msg["id"])}
                await self.log.add(Entry(self.name, "<", msg))

    async def send(self, method: str, params: Any = None, *, request: bool = True) -> int:
        """Send a request (or a notification); return its id (0 for a notification)."""
        assert self.ws is not None
        msg: dict[str, Any] = {"method": method}
        n = 0
        if request:
            n = next(self._ids)
            self._methods[n] = method
            msg = {"id": n, **msg}
        if params is not None:
            msg["params"] = params
        await self.log.add(Entry(self.name, ">", msg))
        await self.ws.send(orjson.dumps(msg).decode())
        return n

    async def until(self, test: Callable[[dict[str, Any]], bool], count: int = 1) -> None:
        """Until ``count`` messages received by this peer pass ``test``."""

        def seen() -> bool:
            got = [e for e in self.log.entries if e.who == self.name and e.arrow == "<"]
            return sum(1 for e in got if test(e.msg)) >= count

        async with self.log.changed:
            await asyncio.wait_for(self.log.changed.wait_for(seen), WAIT)

    async def call(self, method: str, params: Any = None) -> dict[str, Any]:
        """Send a request and return its response."""
        n = await self.send(method, params)
        await self.until(lambda m: m.get("id") == n and "method" not in m)
        return next(
            e.msg
            for e in self.log.entries
            if e.who == self.name and e.arrow == "<" and e.msg.get("id") == n
        )

    async def initialize(self) -> None:
        await self.call(
            "initialize", {"clientInfo": {"name": f"rejoin-{self.name.lower()}", "version": "1"}}
        )
        await self.send("initialized", request=False)

    async def start_thread(self) -> str:
        thread_id: str = (await self.call("thread/start", {}))["result"]["thread"]["id"]
        return thread_id

    async def start_turn(self, thread_id: str) -> int:
        params = {"threadId": thread_id, "input": [{"type": "text", "text": "Stream slowly."}]}
        return await self.send("turn/start", params)

    async def resume(self, thread_id: str) -> int:
        return await self.send("thread/resume", {"threadId": thread_id})

    async def turn_completed(self) -> None:
        await self.until(lambda m: m.get("method") == "turn/completed")


def is_delta(msg: dict[str, Any]) -> bool:
    return msg.get("method") == DELTA


async def rejoin(url: str, log: Log, *, b_opens_first: bool = False) -> None:
    """The scenario as recorded: B joins after A has seen ``DELTAS_BEFORE_B`` deltas. With
    ``b_opens_first``, B's websocket is opened before A's (it speaks only later)."""
    a, b = Peer("A", log), Peer("B", log)
    try:
        if b_opens_first:
            await b.connect(url)
        await a.connect(url)
        await a.initialize()
        thread_id = await a.start_thread()
        await a.start_turn(thread_id)
        await a.until(is_delta, DELTAS_BEFORE_B)
        if not b_opens_first:
            await b.connect(url)
        await b.initialize()
        await b.resume(thread_id)
        await b.turn_completed()
        await a.turn_completed()
    finally:
        await b.close()
        await a.close()


async def rejoin_at_once(url: str, log: Log, pause: float = 0.3) -> None:
    """B resumes A's thread as soon as it has its id, before A starts the turn. ``pause``
    seconds pass before A's ``turn/start``: long enough for an answer that is not held to
    show up first in the log (the tests assert on the order, not on time)."""
    a, b = Peer("A", log), Peer("B", log)
    try:
        await a.connect(url)
        await a.initialize()
        thread_id = await a.start_thread()
        await b.connect(url)
        await b.initialize()
        await b.resume(thread_id)
        await asyncio.sleep(pause)
        await a.start_turn(thread_id)
        await b.turn_completed()
        await a.turn_completed()
    finally:
        await b.close()
        await a.close()


async def record_rejoin(codex: Path, cassette: Path, meta: dict[str, Any] | None = None) -> Log:
    """Record :func:`rejoin` from the real app-server and a backend streaming
    ``DELTAS`` deltas ``DELTA_DELAY`` apart, through the recording proxy, into ``cassette``."""
    log = Log()
    async with (
        FakeBackend(deltas=DELTAS, delta_delay=DELTA_DELAY) as backend,
        AppServer(backend.url, codex) as server,
    ):
        backend.script(Reply.text(REPLY))
        async with recording_proxy(server.url, cassette, meta=meta) as url:
            await rejoin(url, log)
    return log


def recorded_deltas(tape: Cassette) -> list[str]:
    """``A part1``, ...: the deltas of the cassette in recorded order, by client name."""
    names: dict[int, str] = {}
    out: list[str] = []
    for event in tape.frames():
        msg = event.get("msg")
        if not isinstance(msg, dict):
            continue
        if msg.get("method") == "initialize":
            names[event["conn"]] = msg["params"]["clientInfo"]["name"].removeprefix("rejoin-")
        if msg.get("method") == DELTA and event["dir"] == "s2c":
            out.append(f"{names[event['conn']].upper()} {msg['params']['delta'].strip()}")
    return out
