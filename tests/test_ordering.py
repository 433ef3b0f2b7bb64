"""Unit tests of proxy.core.ordering: which thread a message concerns, and which replayed server
frame may go when, across connections; no sockets, no event loop."""

from __future__ import annotations

import functools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.ordering import Message, Order, Ordering, thread_concerns

# A rejoin, as the cassette's global seq numbers it: A on connection 1, B on connection 2.
ROWS: list[tuple[int, int, bool, Any, str | None, str]] = [
    (1, 1, True, {"id": 1, "method": "initialize", "params": {}}, None, "> request initialize"),
    (2, 1, False, {"id": 1, "result": {"userAgent": "x"}}, "initialize", "< response"),
    (3, 1, True, {"id": 2, "method": "thread/start", "params": {}}, None, "> thread/start"),
    (4, 1, False, {"id": 2, "result": {"thread": {"id": "T"}}}, "thread/start", "< response"),
    (5, 1, True, {"id": 3, "method": "turn/start", "params": {"threadId": "T"}}, None, "> turn"),
    (
        6,
        1,
        False,
        {"method": "turn/started", "params": {"threadId": "T", "turn": {"id": "U"}}},
        None,
        "< turn/started",
    ),
    (7, 1, False, {"method": "d", "params": {"turnId": "U", "delta": "1"}}, None, "< d1"),
    (8, 2, True, {"id": 1, "method": "initialize", "params": {}}, None, "> request initialize"),
    (9, 2, False, {"id": 1, "result": {"userAgent": "x"}}, "initialize", "< response"),
    (
        10,
        2,
        True,
        {"id": 2, "method": "thread/resume", "params": {"threadId": "T"}},
        None,
        "> thread/resume",
    ),
    (11, 2, False, {"id": 2, "result": {"thread": {"id": "T"}}}, "thread/resume", "< resumed"),
    (12, 2, False, {"method": "d", "params": {"threadId": "T", "delta": "2"}}, None, "< d2"),
    (13, 1, False, {"method": "d", "params": {"threadId": "T", "delta": "2"}}, None, "< d2"),
    (14, 1, False, {"method": "configWarning", "params": {"summary": "x"}}, None, "< warning"),
]


def rejoin(order: Order = Order.THREAD) -> Ordering:
    conns: dict[int, list[tuple[int, bool, Any, str | None, str]]] = {}
    for seq, conn, client, msg, response_to, description in ROWS:
        conns.setdefault(conn, []).append((seq, client, msg, response_to, description))
    return Ordering.build(conns.items(), order)


class Wakes:
    def __init__(self, ordering: Ordering, *conns: int) -> None:
        self.calls: list[int] = []
        for conn in conns:
            ordering.register(conn, functools.partial(self.calls.append, conn))


def seqs(messages: list[Message]) -> list[int]:
    return [m.seq for m in messages]


def test_thread_concerns_follow_thread_turn_and_item_ids() -> None:
    """Thread ids from thread/start results and threadId; a turn id met under a thread
    belongs to it; initialize and config warnings concern no thread."""
    concerns = thread_concerns((msg, response_to) for _, _, _, msg, response_to, _ in ROWS)
    assert [sorted(c) for c in concerns] == [
        [], [], [], ["T"], ["T"], ["T"], ["T"], [], [], ["T"], ["T"], ["T"], ["T"], [],
    ]  # fmt: skip


def test_thread_concerns_items_fork_and_unknown_ids() -> None:
    """An item id learnt under a thread is followed later; a forked thread is its own; an id
    nobody named as a thread, turn or item is nothing; two threads in one message: both."""
    messages: list[tuple[Any, str | None]] = [
        ({"method": "item/started", "params": {"threadId": "T", "item": {"id": "I"}}}, None),
        ({"method": "item/completed", "params": {"itemId": "I"}}, None),
        ({"id": 5, "result": {"thread": {"id": "F"}}}, "thread/fork"),
        ({"method": "x", "params": {"turnId": "nobody"}}, None),
        ({"method": "x", "params": {"threads": [{"threadId": "T"}, {"threadId": "F"}]}}, None),
        ({"id": 6, "result": {"data": [{"id": "T"}]}}, "model/list"),
        ("not an object", None),
    ]
    assert [sorted(c) for c in thread_concerns(messages)] == [
        ["T"], ["T"], ["F"], [], ["F", "T"], [], [],
    ]  # fmt: skip


def test_thread_order_holds_the_resume_answer_until_a_has_spoken() -> None:
    """B's initialize result never waits; B's thread/resume answer waits for A's turn/start
    and the frames A was sent about the thread before it; it is woken once, when ready."""
    ordering = rejoin()
    wakes = Wakes(ordering, 1, 2)
    assert ordering.may_send(2, 9)
    assert not ordering.may_send(2, 11)
    assert seqs(ordering.waiting_for(11)) == [4, 5, 6, 7]
    assert ordering.waiting_for(11)[1].render() == "seq 5 (> turn on recorded connection 1)"
    for seq in (1, 2, 3, 4, 5, 6):
        ordering.done(seq)
    assert (wakes.calls, seqs(ordering.waiting_for(11))) == ([], [7])
    ordering.done(7)
    assert wakes.calls == [2]
    assert ordering.may_send(2, 11)
    ordering.done(7)  # twice: nothing more
    assert wakes.calls == [2]


def test_thread_order_holds_a_delta_until_b_resumed() -> None:
    """A's second delta waits for B's resume (client) and B's frames before it (server); a
    frame about no thread (A's config warning) after it does not wait for B at all."""
    ordering = rejoin()
    wakes = Wakes(ordering, 1, 2)
    assert seqs(ordering.waiting_for(13)) == [10, 11, 12]
    assert ordering.may_send(1, 14)
    assert not ordering.may_send(1, 13)
    for seq in (10, 11):
        ordering.done(seq)
    assert wakes.calls == []
    ordering.done(12)
    assert wakes.calls == [1]


def test_global_order_holds_even_initialize() -> None:
    """order=global: B's initialize result waits for everything A did before it."""
    ordering = rejoin(Order.GLOBAL)
    assert seqs(ordering.waiting_for(9)) == [1, 2, 3, 4, 5, 6, 7]
    assert not ordering.may_send(2, 9)
    assert seqs(ordering.waiting_for(14)) == [8, 9, 10, 11, 12]


def test_order_none_never_holds() -> None:
    """order=none: every frame may go at once."""
    ordering = rejoin(Order.NONE)
    assert all(ordering.may_send(conn, seq) for seq, conn, client, *_ in ROWS if not client)
    assert ordering.waiting_for(11) == []


def test_client_frames_and_unknown_seqs_never_wait() -> None:
    """Only recorded server frames are held; rpctape's own replies (no seq) never are."""
    ordering = rejoin()
    assert ordering.waiting_for(10) == []
    assert ordering.may_send(2, None)
    assert ordering.may_send(2, 999)


def test_give_up_reports_and_stops_waiting_for_those() -> None:
    """A hold that timed out gives up on what it waited for; later frames do not wait for it
    again, and what is given up is returned for the report."""
    ordering = rejoin()
    wakes = Wakes(ordering, 2)
    ordering.done(4)
    assert not ordering.may_send(2, 11)
    missing = ordering.give_up(11)
    assert [m.render() for m in missing] == [
        "seq 5 (> turn on recorded connection 1)",
        "seq 6 (< turn/started on recorded connection 1)",
        "seq 7 (< d1 on recorded connection 1)",
    ]
    assert wakes.calls == [2]
    assert ordering.may_send(2, 11)
    assert ordering.may_send(2, 12)
    assert ordering.give_up(12) == []


def test_give_up_on_a_connection_nobody_replays_gives_it_up_whole() -> None:
    """A never connected: once B's resume answer gave up on it, B's later frames do not
    wait for A's later messages either (each would wait a hold timeout otherwise)."""
    ordering = rejoin()
    Wakes(ordering, 2)
    assert seqs(ordering.give_up(11)) == [4, 5, 6, 7]
    assert ordering.may_send(2, 12)
    assert ordering.ended(1) == []


def test_give_up_on_a_live_connection_gives_up_only_what_was_waited_for() -> None:
    """A is live (registered) but did something else: only the messages waited for are
    given up; a later frame still waits for A's later ones."""
    ordering = rejoin()
    Wakes(ordering, 1, 2)
    assert seqs(ordering.give_up(11)) == [4, 5, 6, 7]
    assert ordering.may_send(2, 12)
    assert seqs(ordering.ended(1)) == [1, 2, 3, 13, 14]


def test_a_connection_that_ended_is_not_waited_for() -> None:
    """When A's live connection ends, B stops waiting for what A never did."""
    ordering = rejoin()
    wakes = Wakes(ordering, 1, 2)
    assert not ordering.may_send(2, 11)
    left = ordering.ended(1)
    assert seqs(left) == [1, 2, 3, 4, 5, 6, 7, 13, 14]
    assert wakes.calls == [2]
    assert ordering.ended(1) == []


@st.composite
def cassettes(draw: st.DrawFn) -> list[Message]:
    """Random interleavings of a few connections, each message about a few threads."""
    count = draw(st.integers(1, 25))
    return [
        Message(
            seq,
            draw(st.integers(1, 3)),
            draw(st.booleans()),
            frozenset(draw(st.sets(st.sampled_from("TUV"), max_size=2))),
            "m",
        )
        for seq in range(1, count + 1)
    ]


@settings(max_examples=60, deadline=None)
@given(cassettes(), st.sampled_from(list(Order)))
def test_a_faithful_replay_is_never_held(messages: list[Message], order: Order) -> None:
    """Messages happening in recorded order never find a server frame held, and a frame is
    held exactly while an earlier message of another connection that it concerns is not done."""
    ordering = Ordering(messages, order)
    for message in messages:
        if not message.client:
            assert ordering.may_send(message.conn, message.seq)
        ordering.done(message.seq)
    fresh = Ordering(messages, order)
    for message in messages:
        if message.client:
            continue
        expected = [
            m.seq
            for m in messages
            if m.seq < message.seq
            and m.conn != message.conn
            and (
                order is Order.GLOBAL
                or (order is Order.THREAD and bool(m.threads & message.threads))
            )
        ]
        assert seqs(fresh.waiting_for(message.seq)) == expected
        assert fresh.may_send(message.conn, message.seq) is (not expected)
