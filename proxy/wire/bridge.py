"""The bridge: joins a client leg and a server leg, records every message, applies rules.

Transport-agnostic: legs (:mod:`proxy.wire.legs`) move whole messages over websockets or JSON
Lines; the bridge records what one read brought in with one write, then forwards it, so a
frame's cassette line is always written before the frame is forwarded.

When the cassette cannot be written (:class:`~proxy.errors.CassetteWriteError`: disk full, I/O
error, file removed or read-only), the batch whose write failed is not forwarded, nothing is
forwarded after it, and both legs are closed with 1011 and a reason naming the error
(:meth:`Bridge.fail`); ``on_write_failed`` tells the owner (the listener, ``wrap``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

from ..core.close import clip_reason
from ..core.jsonrpc import Direction, Message, MessageType, parse
from ..core.recorder import FrameValidator, Recorder
from ..core.rules import Decision, Engine, Rule
from ..errors import CassetteWriteError
from .legs import GOING_AWAY, INTERNAL_ERROR, ChildLeg, Leg

log = logging.getLogger("rpctape.bridge")

_ANSWERS = (MessageType.RESPONSE, MessageType.ERROR)


def write_failure_reason(error: CassetteWriteError) -> str:
    """The close reason sent to both legs when the cassette cannot be written (<= 123 bytes).

    Names the cassette's file name and the operating system's error, e.g. ``rpctape: cannot
    write cassette c.jsonl: No space left on device (errno 28)``.
    """
    name = getattr(error.path, "name", None) or str(error.path)
    cause = error.cause
    why = cause.strerror or str(cause) or type(cause).__name__
    return clip_reason(f"rpctape: cannot write cassette {name}: {why} (errno {error.errno})")


class Bridge:
    """One client connection and its upstream connection, once both are open."""

    def __init__(
        self,
        conn: int,
        client: Leg,
        server: Leg,
        recorder: Recorder | None,
        rules: Sequence[Rule] = (),
        *,
        validator: FrameValidator | None = None,
    ) -> None:
        self.conn = conn
        self.client = client
        self.server = server
        self.recording = recorder is not None
        """Whether messages go to a cassette (record) or only through (replay)."""
        if recorder is None:  # still numbers and pairs messages for the rules and the log
            recorder = Recorder(None, validator=validator)
            recorder.watch(conn)
        self.observed = self.recording or recorder.validator is not None
        """Whether each frame goes through the recorder: it is written, or checked against
        a schema (an observer: the frame is forwarded as it came either way)."""
        self.recorder = recorder
        self.engine = Engine(rules) if rules else None
        self.closed = False
        self.failure: CassetteWriteError | None = None
        """Set when the cassette could not be written: nothing is forwarded any more."""
        self.on_write_failed: Callable[[Bridge, CassetteWriteError], None] | None = None
        """Called once, after :meth:`fail` closed both legs (the listener closes the other
        connections recording to the same cassette and refuses new ones)."""
        self.explain_failure: Callable[[str], None] | None = None
        """Called with the error's one-line explanation before :meth:`fail` closes the legs
        (a stdio door writes it on stderr before its stdout ends)."""
        self._held: dict[Leg, list[tuple[float, Message]]] = {client: [], server: []}
        self._timers: dict[Leg, asyncio.TimerHandle] = {}
        self._nothing_held = asyncio.Event()
        self._nothing_held.set()
        client.peer, server.peer = server, client
        self.done = asyncio.gather(client.lost, server.lost)
        """Resolved when both TCP connections are gone."""
        for leg in (client, server):
            leg.on_messages = self._relay
            leg.on_closed = self._leg_closed
            if isinstance(leg, ChildLeg):
                leg.exited.add_done_callback(functools.partial(self._child_exited, leg))
        self._closed_leg: Leg | None = None

    def start(self) -> None:
        """Deliver what either leg received before the bridge existed."""
        for leg in (self.server, self.client):
            held, leg.held = leg.held, []
            if held:
                self._relay(leg, held)
            leg.report_closed()

    async def wait(self) -> None:
        """Until both TCP connections are gone."""
        await self.done

    def _relay(self, leg: Leg, messages: list[Message]) -> None:
        if self.failure is not None:
            return  # cannot be recorded, so not forwarded: both legs are closing
        direction = Direction.C2S if leg is self.client else Direction.S2C
        if log.isEnabledFor(logging.DEBUG):
            for _, payload in messages:
                log.debug("conn %d %s %s", self.conn, direction.arrow, _shorten(payload))
        assert leg.peer is not None
        if self.engine is None and not self._held[leg.peer]:
            if not self.observed:
                leg.peer.send(messages)
                return
            try:
                events = self.recorder.record_frames(self.conn, direction, messages)
            except CassetteWriteError as error:
                self.fail(error)
                return
            if not leg.peer.send(messages):
                self._undelivered(leg.peer, [e["seq"] for e in events])
            return
        self._relay_with_rules(leg, direction, messages)

    def _relay_with_rules(self, leg: Leg, direction: Direction, messages: list[Message]) -> None:
        """Decide every message with the rule engine, record it all, then carry it out.

        After a message whose decision closes the connection, the rest of the batch is
        recorded as not forwarded: the close comes where that message would have gone.
        """
        rec, conn, peer, engine = self.recorder, self.conn, leg.peer, self.engine
        assert peer is not None
        lines: list[bytes] = []
        sends: list[tuple[Leg, Message, int, int]] = []  # leg, message, delay, seq
        close: tuple[int, str] | None = None
        for is_text, payload in messages:
            if not is_text or engine is None or close is not None:
                stalled = engine.stalled(direction) if engine is not None else None
                if close is not None:
                    extra: dict[str, Any] = {"forwarded": False}
                elif stalled is not None:
                    extra = {"rules": [{"rule": stalled, "action": "stall"}], "forwarded": False}
                else:
                    extra = {}
                event, line = (
                    rec.text_line(
                        conn, direction, payload, *rec.inspect(conn, direction, payload), extra
                    )
                    if is_text
                    else rec.binary_line(conn, direction, payload, extra)
                )
                lines.append(line)
                if not extra:
                    sends.append((peer, (is_text, payload), 0, event["seq"]))
                continue
            parsed, response_to = rec.inspect(conn, direction, payload)
            decision = engine.decide(direction, payload, parsed, response_to)
            delay = decision.delay_ms
            for name, towards, frame in decision.before:
                sends.append(self._synthesize(lines, name, towards, frame, delay))
            event, line = rec.text_line(
                conn, direction, payload, parsed, response_to, _annotations(decision)
            )
            lines.append(line)
            if decision.forward is not None:
                sends.append((peer, (True, decision.forward), delay, event["seq"]))
            for name, frame in decision.instead:
                sends.append(self._synthesize(lines, name, direction, frame, delay, response_to))
            for name, frame in decision.to_sender:
                sends.append(self._synthesize(lines, name, direction.reverse, frame, delay))
            for name, towards, frame in decision.after:
                sends.append(self._synthesize(lines, name, towards, frame, delay))
            close = close or decision.close
        try:
            rec.write(lines)
        except CassetteWriteError as error:
            self.fail(error)
            return
        for target, message, delay, seq in sends:
            self._send(target, message, delay, seq)
        if close is not None:
            self.client.close(*close)

    def _synthesize(
        self,
        lines: list[bytes],
        rule: str,
        towards: Direction,
        frame: bytes,
        delay: int,
        answers: str | None = None,
    ) -> tuple[Leg, Message, int, int]:
        """Record a message rpctape itself sends; return what :meth:`_send` needs.

        ``answers``: the method a response or error sent in place of another answers (that
        message's pairing already took the request)."""
        rec = self.recorder
        parsed, response_to = rec.inspect(self.conn, towards, frame)
        if answers is not None and parsed.type in _ANSWERS:
            response_to = answers
        extra = {"origin": "rpctape", "rule": rule}
        event, line = rec.text_line(self.conn, towards, frame, parsed, response_to, extra)
        lines.append(line)
        target = self.server if towards is Direction.C2S else self.client
        return target, (True, frame), delay, event["seq"]

    def _send(self, leg: Leg, message: Message, delay_ms: int, seq: int) -> None:
        """Send now, or after ``delay_ms``; a held message holds later ones to the same leg."""
        held = self._held[leg]
        if not held and not delay_ms:
            if not leg.send([message]):
                self._undelivered(leg, [seq])
            return
        loop = asyncio.get_running_loop()
        held.append((loop.time() + delay_ms / 1000, message))
        self._nothing_held.clear()
        if leg not in self._timers:
            self._schedule(leg)

    def _schedule(self, leg: Leg) -> None:
        due = self._held[leg][0][0]
        self._timers[leg] = asyncio.get_running_loop().call_at(due, self._release, leg)

    def _release(self, leg: Leg) -> None:
        del self._timers[leg]
        held, now, ready = self._held[leg], asyncio.get_running_loop().time(), []
        while held and held[0][0] <= now:
            ready.append(held.pop(0)[1])
        if ready and not leg.send(ready):
            self._note(f"{len(ready)} delayed frame(s) not delivered: {leg.name} closed")
        if held:
            self._schedule(leg)
        elif not any(self._held.values()):
            self._nothing_held.set()

    async def held_sent(self) -> None:
        """Until no delayed frame is held any more (each sent, or dropped with its leg)."""
        await self._nothing_held.wait()

    def _undelivered(self, leg: Leg, seqs: list[int]) -> None:
        self._note(
            f"frames seq {seqs[0]}..{seqs[-1]} were recorded but not delivered: "
            f"the {leg.name} connection had closed",
            undelivered_seq=seqs,
        )

    def _note(self, message: str, **fields: Any) -> None:
        """Record an ``error`` event; a failed cassette fails the bridge instead of raising."""
        if self.failure is not None:
            return
        if not self.recording:  # a replay writes no cassette: the log says it
            log.info("conn %d: %s", self.conn, message)
            return
        try:
            self.recorder.error(self.conn, message, **fields)
        except CassetteWriteError as error:
            self.fail(error)

    def _leg_closed(self, leg: Leg) -> None:
        if self.closed:
            return
        self.closed = True
        self._closed_leg = leg
        self._record_close(leg)
        plan = leg.close_plan()
        # A line client that ended its input still reads its output: the frames delayed
        # towards it still go, as the replay still sends what it planned (docs/replay.md).
        self._drop_held("closed first", keep=leg if leg.can_receive else None)
        assert leg.peer is not None
        if self.failure is None:
            leg.peer.close(plan.forward_code, plan.forward_reason)

    def _drop_held(self, why: str, keep: Leg | None = None) -> None:
        """Drop the delayed frames (but those held for ``keep``)."""
        held = 0
        for leg, queue in self._held.items():
            if leg is keep:
                continue
            timer = self._timers.pop(leg, None)
            if timer is not None:
                timer.cancel()
            held += len(queue)
            queue.clear()
        if not any(self._held.values()):
            self._nothing_held.set()
        if held:
            self._note(f"{held} delayed frame(s) not delivered: {why}")

    def _child_exited(self, child: ChildLeg, _: object = None) -> None:
        """A child that exits after the other leg closed: its exit is recorded too."""
        if self.closed and self._closed_leg is not child:
            self._record_close(child)

    def _record_close(self, leg: Leg) -> None:
        plan = leg.close_plan()
        log.info("conn %d closed by %s (%s %s)", self.conn, plan.by, plan.code, plan.reason)
        if self.failure is not None or not self.recording:
            return  # the cassette takes no more lines, or there is none
        try:
            for note in getattr(leg, "notes", ()):
                self.recorder.error(self.conn, note, leg=leg.name)
            extra = {} if plan.exit_code is None else {"exit_code": plan.exit_code}
            self.recorder.close(
                self.conn,
                by=plan.by,
                code=plan.code,
                reason=plan.reason,
                leg=leg.name,
                forwarded={"code": plan.forward_code, "reason": plan.forward_reason},
                **extra,
            )
        except CassetteWriteError as error:
            self.fail(error)

    def fail(self, error: CassetteWriteError) -> None:
        """The cassette cannot be written: forward nothing more, close both legs with 1011
        and a reason naming the error (:func:`write_failure_reason`); safe to call twice.

        Called by the bridge itself when a write raises, and by the owner for the other
        connections recording to the same cassette.
        """
        if self.failure is not None:
            return
        self.failure = error
        reason = write_failure_reason(error)
        if self.explain_failure is not None:
            self.explain_failure(f"rpctape: error: {error}")
        log.info("conn %d: %s; closing both legs with 1011", self.conn, error)
        self._drop_held("the cassette cannot be written")
        self.closed = True
        for leg in (self.client, self.server):
            leg.close(INTERNAL_ERROR, reason)
        if self.on_write_failed is not None:
            self.on_write_failed(self, error)

    def shutdown(self) -> None:
        """Close the client leg as going away; the server leg follows."""
        self.client.close(GOING_AWAY, "rpctape shutting down")

    def abort(self) -> None:
        """Drop both legs at once (a shutdown that did not finish in time)."""
        for leg in (self.client, self.server):
            leg.abort()


def _annotations(decision: Decision) -> dict[str, Any]:
    """What the cassette says about a message the rules touched (docs/rules.md)."""
    if decision.untouched and not decision.hidden:
        return {}
    extra: dict[str, Any] = {}
    if decision.applied:
        extra["rules"] = [{"rule": name, "action": action} for name, action in decision.applied]
    if decision.hidden:
        extra["hidden"] = True
    if decision.forward is None:
        extra["forwarded"] = False
    elif decision.changed:
        delivered = parse(decision.forward)  # never raises; no msg for what orjson cannot hold
        if delivered.has_msg:
            extra["delivered"] = delivered.msg
    if decision.delay_ms:
        extra["delay_ms"] = decision.delay_ms
    return extra


def _shorten(data: bytes, limit: int = 200) -> str:
    text = data[:limit].decode(errors="replace")
    return text if len(data) <= limit else f"{text}... ({len(data)} bytes)"
