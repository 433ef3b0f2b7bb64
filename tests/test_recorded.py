"""Unit tests of proxy.core.recorded: what is kept of a recorded frame, and what is rebuilt
from its cassette line, equals what the event itself says."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from proxy.core.cassette import Event, frame_of, load, parse_lines
from proxy.core.ids import marked_id_slots
from proxy.core.jsonrpc import MessageType, id_slots
from proxy.core.matching import Frame
from proxy.core.recorded import ANSWERS, Item, recorded_connections

CASSETTES = sorted(Path(__file__).resolve().parent.parent.joinpath("cassettes").rglob("*.jsonl"))


def described(item: Item, event: Event) -> str:
    """What ``describe`` said when it read the event."""
    if event["kind"] == "binary":
        what = "binary frame"
    elif item.type in ANSWERS:
        what = f"{item.type.value} to {event.get('response_to') or 'an unknown request'}"
    elif "method" in event:
        what = f"{item.type.value} {event['method']}"
    else:
        what = f"{item.type.value} frame"
    return f"{item.direction.arrow} {what}"


def cut(event: Event, data: bytes) -> tuple[bytes, bytes] | None:
    """The id slots as they were found from the event each time."""
    msg = event.get("msg")
    if "raw" not in event and isinstance(msg, dict) and "id" in msg:
        if next(iter(msg)) == "id":
            head = b'{"id":' + orjson.dumps(msg["id"])
            if data.startswith(head):
                return b'{"id":', data[len(head) :]
        return marked_id_slots(msg, data)
    return id_slots(data)


@pytest.mark.parametrize("path", CASSETTES, ids=lambda p: p.name)
def test_items_agree_with_their_events(path: Path) -> None:
    """For every frame of the shipped cassettes: seq, kind, bytes, the matching frame, the
    description and the id slots are what the event gives."""
    tape = load(path)
    for recorded in recorded_connections(tape):
        for item in recorded.items:
            event = item.event
            assert item.seq == event["seq"]
            assert item.text is (event["kind"] == "text")
            assert item.data == frame_of(event)
            assert item.describe() == described(item, event)
            if item.frame is not None:
                assert item.frame == Frame.recorded(event)
            if item.type in ANSWERS:
                assert item.id_slots == cut(event, item.data)


def test_lines_stay_lines_through_a_replay_preparation() -> None:
    """Preparing the replay reads the lines one at a time: the cassette keeps them as bytes;
    a repaired event is kept parsed, as repaired."""
    data = (
        b'{"rpctape":1}\n'
        b'{"seq":1,"t":0,"conn":1,"kind":"open","path":"/"}\n'
        b'{"seq":2,"t":0.1,"conn":1,"kind":"text","dir":"c2s","type":"request",'
        b'"method":"a","msg":{"id":7,"method":"a"}}\n'
        b'{"seq":3,"t":"late","conn":1,"kind":"text","dir":"s2c","type":"response",'
        b'"response_to":"a","msg":{"id":7,"result":{}}}\n'
    )
    tape = parse_lines(data)
    (recorded,) = recorded_connections(tape)
    assert tape._events is None
    request, response = recorded.items
    assert request.frame == Frame.recorded(request.event)
    assert response.type is MessageType.RESPONSE and response.answers == 0
    assert response.event["t"] == 0.1  # repaired when read (the warning says so)
    assert response.id_slots == (b'{"id":', b',"result":{}}')
    assert tape.events[2]["t"] == 0.1 and tape._lines is None
