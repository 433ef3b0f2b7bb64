"""The recorded server leg: one recorded connection, played back as if it were the app-server.

:class:`RecordedLeg` is a :class:`~proxy.legs.Leg` like a websocket or a child process, so
replay is a bridge between a live client leg and this leg, with the same listener, rules and
close handling as ``record``. What it sends and when is decided by the pure planner
(:class:`~proxy.replay.ConnectionReplay`): each message the bridge hands it is matched, and
the planned server frames are delivered in order, after their pacing delays, in batches.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence

from websockets.frames import CloseCode

from .legs import ClosePlan, Leg, Message
from .replay import Close, ConnectionReplay, Outgoing, Step

log = logging.getLogger("rpctape.replay")


class RecordedLeg(Leg):
    """The server side of a recorded connection (``replay``).

    Messages sent to it (the live client's) are matched by ``replay``; the frames it plans
    come out of :meth:`~proxy.legs.Leg.deliver` like a live server's. Backpressure from the
    client pauses it. It closes as the recorded server closed, or when the bridge closes it:
    then what is already planned is still delivered while the client can take it (a stdio
    client that ended its input may still read).
    """

    def __init__(self, replay: ConnectionReplay) -> None:
        super().__init__("server")
        self.replay = replay
        self.log = logging.LoggerAdapter(log, {"conn": replay.live})
        self._queue: deque[Outgoing | Close] = deque()
        self._due: float | None = None
        """When the frame at the head of the queue is due (loop time), once known."""
        self._timer: asyncio.TimerHandle | None = None
        self._paused = False
        self._pumping = False
        self._again = False
        self._input_done = False
        self._plan: ClosePlan | None = None

    def start(self) -> None:
        """Plan what the recorded server sent before the client's first message."""
        self._take(self.replay.connect())

    # -- what the bridge calls --

    @property
    def is_open(self) -> bool:
        return not self._input_done and self._plan is None

    def send(self, messages: Sequence[Message]) -> bool:
        if not self.is_open:
            return False
        for is_text, payload in messages:
            data: str | bytes = payload
            if is_text:
                try:
                    data = payload.decode()
                except UnicodeDecodeError:
                    data = payload  # a stdio line that is not UTF-8: only a binary frame matches
            self._take(self.replay.receive(data))
        return True

    def close(self, code: int, reason: str) -> None:
        """The client is gone (or its input ended): finish what it can still receive."""
        if self._input_done:
            return
        self._input_done = True
        if self.peer is None or not self.peer.can_receive:
            self._queue.clear()
        self._pump()

    def close_plan(self) -> ClosePlan:
        if self._plan is not None:
            return self._plan
        reason = "replay ended"
        return ClosePlan("server", None, reason, CloseCode.NORMAL_CLOSURE, reason)

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            asyncio.get_running_loop().call_soon(self._pump)

    # -- playing --

    def _take(self, step: Step) -> None:
        if step.miss is not None:
            self.log.warning("%s", step.miss.render())
        self._queue.extend(step.send)
        if step.close is not None:
            self._queue.append(step.close)
        self._pump()

    def _pump(self) -> None:
        """Deliver every due frame in one batch; wait for the next delay or a resume."""
        if self._pumping:
            self._again = True  # a frame delivered now made the bridge send us more
            return
        self._pumping = True
        try:
            self._again = True
            while self._again:
                self._again = False
                self._run()
        finally:
            self._pumping = False
        if self._input_done and not self._queue and self._plan is None:
            self._finish(None)

    def _run(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        loop = asyncio.get_running_loop()
        batch: list[Message] = []
        while self._queue and not self._paused and self._plan is None:
            head = self._queue[0]
            if isinstance(head, Outgoing) and head.delay > 0:
                now = loop.time()
                if self._due is None:
                    self._due = now + head.delay
                if now < self._due:
                    self.deliver(batch)
                    self._timer = loop.call_at(self._due, self._pump)
                    return
            self._queue.popleft()
            self._due = None
            if isinstance(head, Close):
                self.deliver(batch)
                self._finish(head)
                return
            batch.append((head.text, head.data))
            self.replay.delivered(head)
            if len(batch) >= 256:  # let the client's backpressure act between batches
                self.deliver(batch)
                batch = []
        self.deliver(batch)

    def _finish(self, close: Close | None) -> None:
        """Close as the recording did (``close``), or end after the client left."""
        if close is not None:
            self._plan = ClosePlan("server", close.code, close.reason, close.code, close.reason)
        elif self._plan is None:
            reason = "replay ended"
            self._plan = ClosePlan("client", None, reason, CloseCode.NORMAL_CLOSURE, reason)
        self._input_done = True
        self._queue.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.report_closed()
        self._set_lost()
