"""Socket-free tests of proxy.wire.bridge: two fake legs joined by a Bridge, a writer in memory.

Every action is appended to one shared journal, so the tests can assert the order of
cassette writes and sends (record first, forward after) exactly.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from proxy.core.cassette import frame_of
from proxy.core.close import clip_reason
from proxy.errors import CassetteWriteError
from proxy.wire.bridge import Bridge, write_failure_reason
from tests.fake_legs import FakeLeg, Journal, joined, written
from tests.faults import enospc


async def test_records_then_forwards_each_read() -> None:
    """One read, one write, then one send: the lines are written before the peer is sent
    anything, and they rebuild the frames byte for byte."""
    _, client, server, journal = joined()
    frames = ['{"id":1,"method":"a"}', '{ "method" : "b" }\n']
    client.receive(*frames, b"\x00\xff")
    server.receive('{"id":1,"result":{}}')
    assert [entry[0] for entry in journal] == ["write", "send", "write", "send"]
    assert journal[1] == ("send", "server", [f.encode() for f in frames] + [b"\x00\xff"])
    assert journal[3] == ("send", "client", [b'{"id":1,"result":{}}'])
    events = written(journal)
    assert [frame_of(e) for e in events] == [
        *(f.encode() for f in frames), b"\x00\xff", b'{"id":1,"result":{}}'
    ]
    assert [(e["dir"], e.get("response_to")) for e in events] == [
        ("c2s", None), ("c2s", None), ("c2s", None), ("s2c", "a")
    ]  # fmt: skip


async def test_without_recorder_messages_only_pass() -> None:
    """recorder=None (replay): messages are forwarded, nothing is written anywhere."""
    journal: Journal = []
    client, server = FakeLeg("client", journal), FakeLeg("server", journal)
    bridge = Bridge(7, client, server, None)
    bridge.start()
    client.receive("x")
    assert journal == [("send", "server", [b"x"])]
    assert not bridge.recording


async def test_patch_reply_drop_and_inject() -> None:
    """Each rule's effect reaches the right leg, recorded before it is sent."""
    rules: list[dict[str, Any]] = [
        {"name": "pin", "dir": "c2s", "method": "turn/start", "action": "patch",
         "set": {"/params/model": "m"}},
        {"name": "fake", "dir": "c2s", "method": "ask", "action": "reply",
         "result": {"ok": True}},
        {"name": "hush", "dir": "s2c", "method": "noise", "action": "drop"},
        {"name": "peek", "dir": "c2s", "method": "initialized", "action": "inject",
         "to": "server", "message": {"method": "hello", "params": {}}},
    ]  # fmt: skip
    _, client, server, journal = joined(rules)
    client.receive('{"id":1,"method":"turn/start","params":{"model":"x"}}')
    client.receive('{"id":2,"method":"ask"}')
    server.receive('{"method":"noise"}')
    client.receive('{"method":"initialized"}')
    assert journal == [
        ("write", journal[0][1]),
        ("send", "server", [b'{"id":1,"method":"turn/start","params":{"model":"m"}}']),
        ("write", journal[2][1]),
        ("send", "client", [b'{"id":2,"result":{"ok":true}}']),
        ("write", journal[4][1]),
        ("write", journal[5][1]),
        ("send", "server", [b'{"method":"initialized"}']),
        ("send", "server", [b'{"method":"hello","params":{}}']),
    ]
    patched, asked, answer, noise, initialized, hello = written(journal)
    assert patched["msg"]["params"]["model"] == "x"
    assert patched["delivered"] == {"id": 1, "method": "turn/start", "params": {"model": "m"}}
    assert patched["rules"] == [{"rule": "pin", "action": "patch"}]
    assert asked["forwarded"] is False
    assert (answer["origin"], answer["rule"], answer["dir"]) == ("rpctape", "fake", "s2c")
    assert (noise["forwarded"], noise["rules"]) == (False, [{"rule": "hush", "action": "drop"}])
    assert initialized["msg"] == {"method": "initialized"}
    assert (hello["origin"], hello["rule"], hello["dir"]) == ("rpctape", "peek", "c2s")


async def test_a_delayed_message_holds_later_ones_to_the_same_leg() -> None:
    """A delay holds its message and every later one going the same way, never the other
    direction; the order is kept (delays run on the event loop's clock)."""
    rules = [{"name": "slow", "dir": "c2s", "method": "slow", "action": "delay", "ms": 20}]
    _, client, server, journal = joined(rules)
    client.receive('{"method":"slow"}')
    client.receive('{"method":"fast"}')
    server.receive('{"method":"back"}')
    assert server.sent == []  # both held: the second may not overtake the first
    assert client.sent == [(True, b'{"method":"back"}')]
    assert [e["msg"]["method"] for e in written(journal)] == ["slow", "fast", "back"]
    assert written(journal)[0]["delay_ms"] == 20
    while len(server.sent) < 2:
        await asyncio.sleep(0.005)
    assert server.sent == [(True, b'{"method":"slow"}'), (True, b'{"method":"fast"}')]


async def test_held_messages_of_a_closed_connection_are_noted() -> None:
    """A connection that closes while messages are held: they are recorded as not delivered."""
    rules = [{"name": "slow", "dir": "c2s", "action": "delay", "ms": 60_000}]
    _, client, server, journal = joined(rules)
    client.receive('{"method":"a"}')
    client.hang_up(1000, "bye")
    assert server.sent == [] and server.closed_with == (1000, "bye")
    kinds = [(e["kind"], e.get("message")) for e in written(journal)]
    assert kinds[-1] == ("error", "1 delayed frame(s) not delivered: closed first")


@pytest.mark.parametrize("first", ["client", "server"])
async def test_close_propagates_code_and_reason(first: str) -> None:
    """The leg that closes first is recorded with its code and reason; the other leg gets
    the same code and reason."""
    bridge, client, server, journal = joined()
    closing, other = (client, server) if first == "client" else (server, client)
    closing.hang_up(4000, "bye now")
    assert other.closed_with == (4000, "bye now")
    close = written(journal)[-1]
    assert (close["kind"], close["by"], close["code"], close["reason"]) == (
        "close", first, 4000, "bye now"
    )  # fmt: skip
    assert close["forwarded"] == {"code": 4000, "reason": "bye now"}
    await asyncio.wait_for(bridge.wait(), 1)


async def test_close_rule_closes_both_legs() -> None:
    """A close rule: the message is recorded, then the client is closed and the server too."""
    rules = [{"name": "hang up", "dir": "c2s", "method": "bye", "action": "close",
              "code": 4000, "reason": "bye"}]  # fmt: skip
    _, client, server, _ = joined(rules)
    client.receive('{"method":"bye"}')
    assert client.closed_with == (4000, "bye") and server.closed_with == (4000, "bye")


async def test_nothing_after_a_close_in_the_same_read_is_forwarded() -> None:
    """Frames that arrived with the one a close rule hit are recorded as not forwarded: the
    close takes that frame's place in the order, and nothing follows it."""
    rules = [{"name": "hang up", "dir": "s2c", "method": "bye", "action": "close",
              "code": 4000, "reason": "bye"}]  # fmt: skip
    _, client, server, journal = joined(rules)
    server.receive('{"method":"a"}', '{"method":"bye"}', '{"method":"c"}', b"\x02")
    assert client.sent == [(True, b'{"method":"a"}')]
    assert client.closed_with == (4000, "bye") and server.closed_with == (4000, "bye")
    assert [(e["kind"], e.get("forwarded")) for e in written(journal)] == [
        ("text", None),
        ("text", False),
        ("text", False),
        ("binary", False),
        ("close", {"code": 4000, "reason": "bye"}),
    ]


@pytest.mark.parametrize("rules", [[], [{"name": "p", "action": "patch", "set": {"/x": 1}}]])
async def test_write_failure_forwards_nothing_and_closes_both_legs(
    rules: list[dict[str, Any]],
) -> None:
    """The cassette fails on the second batch: that batch is not forwarded, both legs get
    1011 with a reason naming the error, later messages are dropped; the owner is told once."""
    bridge, client, server, journal = joined(rules, fail_after=1)
    told: list[CassetteWriteError] = []
    bridge.on_write_failed = lambda b, error: told.append(error)
    client.receive('{"id":1,"method":"a"}')
    client.receive('{"id":2,"method":"b"}')
    server.receive('{"id":1,"result":1}')
    reason = "rpctape: cannot write cassette memory.jsonl: No space left on device (errno 28)"
    first = b'{"id":1,"method":"a","x":1}' if rules else b'{"id":1,"method":"a"}'
    assert [entry for entry in journal if entry[0] != "write"] == [
        ("send", "server", [first]),
        ("close", "client", 1011, reason),
        ("close", "server", 1011, reason),
    ]  # fmt: skip
    assert len(written(journal)) == 1
    assert bridge.failure is not None and told == [bridge.failure]
    assert bridge.failure.errno == 28
    await asyncio.wait_for(bridge.wait(), 1)


async def test_write_failure_while_recording_a_close() -> None:
    """The close event cannot be written: no exception escapes, the other leg gets 1011."""
    bridge, client, server, _ = joined(fail_after=0)
    client.hang_up(1000, "done")
    assert bridge.failure is not None
    assert server.closed_with == (1011, write_failure_reason(bridge.failure))
    await asyncio.wait_for(bridge.wait(), 1)


def test_close_reasons_fit_a_close_frame() -> None:
    """Reasons are cut to 123 bytes of UTF-8 on a character boundary."""
    error = CassetteWriteError(Path("/x/" + "é" * 100 + ".jsonl"), enospc())
    reason = write_failure_reason(error)
    assert len(reason.encode()) <= 123 and reason.endswith("...")
    assert reason.startswith("rpctape: cannot write cassette éé")
    assert clip_reason("short") == "short"
    assert clip_reason("é" * 62) == "é" * 60 + "..."
