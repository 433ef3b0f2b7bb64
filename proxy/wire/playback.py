"""The recorded server leg: one recorded connection, played back as if it were the app-server.

:class:`RecordedLeg` is a :class:`~proxy.wire.legs.Leg` like a websocket or a child process, so
replay is a bridge between a live client leg and this leg, with the same listener, rules and
close handling as ``record``. What it sends and when is decided by the pure planner
(:class:`~proxy.core.planner.ConnectionReplay`): each message the bridge hands it is matched, and
the planned server frames are delivered in order, after their pacing delays, in batches.
With a :class:`Gate`, a frame is also held until the messages of other connections it
waits for (:mod:`proxy.core.ordering`) have happened, for at most the gate's hold timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..core.close import Close
from ..core.jsonrpc import Message
from ..core.matching import Frame
from ..core.ordering import Ordering
from ..core.planner import ConnectionReplay, Outgoing, Step
from .legs import NORMAL_CLOSURE, ClosePlan, Leg, Party

log = logging.getLogger("rpctape.replay")


@dataclass(frozen=True)
class Gate:
    """The recorded order across connections, as one recorded leg takes part in it."""

    ordering: Ordering
    hold_timeout: float
    """Seconds a frame is held before it is sent anyway."""
    note: Callable[[str], None]
    """Adds a line to this connection's part of the report."""


class RecordedLeg(Leg):
    """The server side of a recorded connection (``replay``).

    Messages sent to it (the live client's) are matched by ``replay``; the frames it plans
    come out of :meth:`~proxy.wire.legs.Leg.deliver` like a live server's. Backpressure from the
    client pauses it. It closes as the recorded server closed, or when the bridge closes it:
    then what is already planned is still delivered while the client can take it (a stdio
    client that ended its input may still read). With a ``gate``, each frame also waits for
    its turn in the recorded order across connections; its pacing delay counts from then.
    """

    def __init__(
        self, replay: ConnectionReplay, gate: Gate | None = None, *, reply_on_close: bool = False
    ) -> None:
        super().__init__("server")
        self.replay = replay
        self.gate = gate
        self.reply_on_close = reply_on_close
        """Send the error reply of a miss that closes the connection before the close (a
        stdio client, whose transport carries no close reason)."""
        self._hold: tuple[int, asyncio.TimerHandle] | None = None
        """The seq of the frame held for another connection, and its timeout."""
        self._wake: asyncio.Handle | None = None
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
        if self.gate is not None:
            self.gate.ordering.register(self.replay.recorded.conn, self._woken)
        self._take(self.replay.connect())

    # -- what the bridge calls --

    @property
    def is_open(self) -> bool:
        return not self._input_done and self._plan is None

    def send(self, messages: Sequence[Message]) -> bool:
        if not self.is_open:
            return False
        for is_text, payload in messages:
            if is_text:
                try:
                    payload.decode()  # a websocket leg checked it; a stdio line may not be UTF-8
                except UnicodeDecodeError:
                    frame = Frame.live(payload)  # then only a binary frame matches
                else:
                    frame = Frame.live_text(payload)
            else:
                frame = Frame.live(payload)
            step = self.replay.receive_frame(frame)
            if step.matched is not None and self.gate is not None:
                self.gate.ordering.done(self.replay.recorded.items[step.matched].seq)
            self._take(step)
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
        return ClosePlan(Party.SERVER, None, reason, NORMAL_CLOSURE, reason)

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
            if step.reply is not None and self.reply_on_close:
                self._queue.append(step.reply)
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
        queue, gate, replay = self._queue, self.gate, self.replay
        batch: list[Message] = []
        # Once per replayed frame: kept to local lookups; the cross-connection order only
        # when there is a gate (a recorded connection that shares no thread has none).
        while queue and not self._paused and self._plan is None:
            head = queue[0]
            if isinstance(head, Close):
                queue.popleft()
                self._due = None
                self.deliver(batch)
                self._finish(head)
                return
            if gate is not None and not self._may_go(head):
                break
            if head.delay > 0:
                loop = asyncio.get_running_loop()
                now = loop.time()
                if self._due is None:
                    self._due = now + head.delay
                if now < self._due:
                    self.deliver(batch)
                    self._timer = loop.call_at(self._due, self._pump)
                    return
            queue.popleft()
            self._due = None
            batch.append((head.text, head.data))
            replay.delivered(head)
            if gate is not None and head.item is not None:
                gate.ordering.done(self._seq(head))
            if len(batch) >= 256:  # let the client's backpressure act between batches
                self.deliver(batch)
                batch = []
        self.deliver(batch)

    # -- the order across connections --

    def _seq(self, out: Outgoing) -> int:
        assert out.item is not None
        return self.replay.recorded.items[out.item].seq

    def _may_go(self, head: Outgoing) -> bool:
        """Whether ``head`` may be sent now; if not, wait (bounded) to be woken."""
        gate = self.gate
        if gate is None or head.item is None:
            return True
        seq = self._seq(head)
        if gate.ordering.may_send(self.replay.recorded.conn, seq):
            self._stop_holding()
            return True
        if self._hold is None or self._hold[0] != seq:
            self._stop_holding()
            loop = asyncio.get_running_loop()
            timer = loop.call_later(gate.hold_timeout, self._hold_expired, seq)
            self._hold = (seq, timer)
        return False

    def _stop_holding(self) -> None:
        if self._hold is not None:
            self._hold[1].cancel()
            self._hold = None

    def _woken(self) -> None:
        """What the held frame waited for happened (called by the ordering)."""
        if self._wake is None and self._plan is None:
            # Not now: the frame that woke us may not be out of the other leg's batch yet.
            self._wake = asyncio.get_running_loop().call_soon(self._pump_woken)

    def _pump_woken(self) -> None:
        self._wake = None
        self._pump()

    def _hold_expired(self, seq: int) -> None:
        """A held frame waited ``hold_timeout`` in vain: report what for, then send it."""
        self._hold = None
        gate = self.gate
        assert gate is not None
        missing = gate.ordering.give_up(seq)
        if missing:
            item = next(i for i in self.replay.recorded.items if i.seq == seq)
            text = (
                f"held seq {seq} ({item.describe()}) {gate.hold_timeout:g} s for "
                + ", ".join(m.render() for m in missing[:3])
                + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
                + ", which did not happen; sent it anyway"
            )
            self.log.warning("%s", text)
            gate.note(text)
        self._pump()

    def _finish(self, close: Close | None) -> None:
        """Close as the recording did (``close``), or end after the client left."""
        if close is not None:
            self._plan = ClosePlan(Party.SERVER, close.code, close.reason, close.code, close.reason)
        elif self._plan is None:
            reason = "replay ended"
            self._plan = ClosePlan(Party.CLIENT, None, reason, NORMAL_CLOSURE, reason)
        self._input_done = True
        self._queue.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._stop_holding()
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        if self.gate is not None:
            self.gate.ordering.ended(self.replay.recorded.conn)
        self.report_closed()
        self._set_lost()
