"""Tests of proxy.wire.legs: close plans, JSON Lines framing, child processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.jsonrpc import Message
from proxy.wire.legs import ChildLeg, ClosePlan, Leg, LineLeg, Party, plan_close
from tests.helpers import is_utf8


def test_plan_close_without_any_close_frame_from_client() -> None:
    """A client that vanishes: recorded as 1006 by the client, server leg gets 1011."""
    reason = "client connection dropped without a close frame"
    assert plan_close("client", None, None, None) == ClosePlan(
        Party.CLIENT, 1006, reason, 1011, reason
    )


class Lines(LineLeg):
    """A LineLeg that collects what it would write."""

    def __init__(self, max_size: int = 100) -> None:
        super().__init__("client", max_size)
        self.written: list[bytes] = []
        self.got: list[Message] = []
        self.closes: list[ClosePlan] = []
        self.on_messages = self._got
        self.on_closed = lambda leg: self.closes.append(leg.close_plan())

    def _got(self, leg: Leg, messages: Sequence[Message]) -> None:
        self.got.extend(messages)

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def end_output(self) -> None:
        self.output_closed = True


async def test_lines_split_across_reads() -> None:
    """Lines are messages however the bytes arrive; empty lines are messages too."""
    leg = Lines()
    for chunk in (b'{"a":', b'1}\n\n{"b":2}\nnot js', b"on\n"):
        leg.feed(chunk)
    assert leg.got == [(True, b'{"a":1}'), (True, b""), (True, b'{"b":2}'), (True, b"not json")]
    assert leg.is_open and leg.closes == []


async def test_last_line_without_newline_at_eof() -> None:
    """A final line without newline is delivered, noted, then the close is reported."""
    leg = Lines()
    leg.feed(b'{"a":1}\n{"b":')
    leg.feed_eof()
    assert leg.got == [(True, b'{"a":1}'), (True, b'{"b":')]
    assert leg.notes == [
        "the client's last line (5 bytes) had no newline; it was taken as a message"
    ]
    assert leg.closes == [ClosePlan(Party.CLIENT, None, "the client closed its input", 1000,
                                    "the client closed its input")]  # fmt: skip


async def test_overlong_line_ends_the_leg() -> None:
    """A line over max_size ends the leg's input as the proxy, 1009, with a note; lines
    before it are delivered, and what is sent to the peer still goes out."""
    leg = Lines(max_size=10)
    leg.feed(b"ok\n0123456789ABC\nlater\n")
    assert leg.got == [(True, b"ok")] and not leg.output_closed
    assert leg.notes == ["a line from the client exceeded 10 bytes: reading stopped"]
    assert leg.closes == [ClosePlan(Party.PROXY, 1009, "line too long", 1009, "line too long")]
    leg.feed(b"\n")
    assert leg.got == [(True, b"ok")]


async def test_send_writes_lines() -> None:
    """Each message goes out as one line, text or binary alike."""
    leg = Lines()
    assert leg.send([(True, b'{"a":1}'), (False, b"\x00")])
    assert leg.written == [b'{"a":1}\n\x00\n']
    leg.close(1000, "bye")
    assert not leg.send([(True, b"{}")])


CHILD = r"""
import signal, sys
signal.signal(signal.SIGTERM, lambda *_: (print("got TERM", flush=True), sys.exit(15)))
for line in sys.stdin:
    if line.strip() == "exit7":
        sys.exit(7)
    if line.strip() == "partial":
        sys.stdout.write('{"half":'); sys.stdout.flush(); sys.exit(3)
    sys.stdout.write(line); sys.stdout.flush()
"""


async def child(max_size: int = 1 << 20) -> tuple[ChildLeg, list[Message], list[ClosePlan]]:
    leg = await ChildLeg.spawn([sys.executable, "-c", CHILD], max_size, grace=1.0)
    got: list[Message] = []
    closes: list[ClosePlan] = []
    leg.on_messages = lambda _, m: got.extend(m)
    leg.on_closed = lambda le: closes.append(le.close_plan())
    return leg, got, closes


async def test_child_echo_and_exit_code() -> None:
    """Lines go to the child and back; its exit is reported with the code."""
    leg, got, closes = await child()
    assert leg.send([(True, b'{"x":1}')])
    leg.write(b"exit7\n")
    assert await asyncio.wait_for(leg.exited, 10) == 7
    await asyncio.wait_for(leg.lost, 10)
    assert got == [(True, b'{"x":1}')]
    assert closes == [ClosePlan(Party.SERVER, None, "app-server exited with code 7", 1011,
                                "app-server exited with code 7", 7)]  # fmt: skip


async def test_child_dying_mid_message() -> None:
    """A child that dies in the middle of a line: the half line is kept and noted."""
    leg, got, closes = await child()
    leg.write(b"partial\n")
    await asyncio.wait_for(leg.lost, 10)
    assert got == [(True, b'{"half":')]
    assert leg.notes[0].startswith("the server's last line (8 bytes) had no newline")
    assert closes[0].exit_code == 3 and closes[0].by == "server"


async def test_closing_stops_the_child() -> None:
    """Closing the leg closes the child's stdin; it ends, no process is left."""
    leg, _, closes = await child()
    pid = leg.pid
    leg.close(1000, "client left")
    assert await asyncio.wait_for(leg.exited, 10) == 0
    await asyncio.wait_for(leg.lost, 10)
    assert (closes[0].by, closes[0].exit_code) == ("proxy", None)  # reported at once
    assert leg.close_plan().exit_code == 0  # and the exit code once known
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_signal_reaches_the_child() -> None:
    """signal() delivers to the child (its process group)."""
    leg, got, _ = await child()
    leg.send([(True, b"ready")])
    while not got:
        await asyncio.sleep(0.01)
    leg.signal(signal.SIGTERM)
    assert await asyncio.wait_for(leg.exited, 10) == 15
    await asyncio.wait_for(leg.lost, 10)
    assert got == [(True, b"ready"), (True, b"got TERM")]


async def test_a_line_that_is_not_utf8_is_a_binary_message() -> None:
    """A line that is not UTF-8 cannot be a text message: it is delivered as binary."""
    leg = Lines()
    leg.feed(b'{"a":"\xc3\xa9"}\n\xff\xfe\n')
    leg.feed(b"\xc3")
    leg.feed_eof()
    assert leg.got == [(True, b'{"a":"\xc3\xa9"}'), (False, b"\xff\xfe"), (False, b"\xc3")]


STALL = Path(__file__).resolve().parent.parent / "bench" / "stall.py"


async def test_stalled_readers_bound_memory_on_stdio_and_child() -> None:
    """bench/stall.py, small: 64 MiB offered to `rpctape wrap` (both ways) and to
    `rpctape record -- COMMAND` whose reader has stalled. The source is held back and the
    proxy's peak RSS grows by far less than what was offered (a memory bound, not a timing)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(STALL), "--mib", "64", "--quiet", "0.5", "--json",
        "--case", "wrap:c2s", "--case", "wrap:s2c", "--case", "child:c2s",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 100)
    assert proc.returncode == 0, err.decode()
    cases = json.loads(out)
    assert [(c["transport"], c["direction"]) for c in cases] == [
        ("wrap", "c2s"), ("wrap", "s2c"), ("child", "c2s")
    ]  # fmt: skip
    for case in cases:
        assert case["blocked"] and case["accepted"] < 16 * 1024 * 1024, case
        assert case["peak_rss"] - case["baseline_rss"] < 24 * 1024 * 1024, case


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=8),
    cuts=st.lists(st.integers(0, 400), max_size=10),
    last=st.binary(max_size=20).map(lambda b: b.replace(b"\n", b"")),
)
def test_lines_are_the_same_however_the_reads_cut_them(
    lines: list[bytes], cuts: list[int], last: bytes
) -> None:
    """Whatever the read boundaries, the messages are the lines, then the unterminated tail."""
    stream = b"".join(line + b"\n" for line in lines) + last

    async def feed() -> Lines:
        leg = Lines(max_size=1000)
        start = 0
        for cut in sorted(min(c, len(stream)) for c in cuts):
            leg.feed(stream[start:cut])
            start = cut
        leg.feed(stream[start:])
        leg.feed_eof()
        return leg

    leg = asyncio.run(feed())
    expected = [*lines, last] if last else lines
    assert [payload for _, payload in leg.got] == expected
    assert [is_text for is_text, _ in leg.got] == [is_utf8(p) for p in expected]



async def test_overlong_line_across_reads_ends_the_leg() -> None:
    """A line that passes max_size before its newline arrives ends the leg at that read."""
    leg = Lines(max_size=10)
    leg.feed(b"ok\n012345")
    leg.feed(b"6789")
    assert leg.closes == []
    leg.feed(b"A")
    assert leg.got == [(True, b"ok")]
    assert leg.closes == [ClosePlan(Party.PROXY, 1009, "line too long", 1009, "line too long")]
