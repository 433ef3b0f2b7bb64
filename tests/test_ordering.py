"""Unit tests of proxy.core.ordering: which thread a message concerns, and which replayed server
frame may go when, across connections; no sockets, no event loop."""

from __future__ import annotations

import functools
from typing import Any

from hypothesis import example, given, settings
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


# --- what the ordering may skip -------------------------------------------------------------


def _ids_recursively(value: Any, parent: str | None = None) -> list[tuple[str, str]]:
    """The recursive walk thread_concerns used before its stack (the oracle)."""
    found: list[tuple[str, str]] = []
    if isinstance(value, dict):
        for key, member in value.items():
            if isinstance(member, str):
                if key in {"threadId", "turnId", "itemId"}:
                    found.append((key.removesuffix("Id"), member))
                elif key == "id" and parent in {"thread", "turn", "item"}:
                    found.append((parent, member))
            else:
                found += _ids_recursively(member, key)
    elif isinstance(value, list):
        for member in value:
            found += _ids_recursively(member, parent)
    return found


def _concerns_recursively(messages: list[tuple[Any, str | None]]) -> list[frozenset[str]]:
    """thread_concerns as it was written before (the oracle)."""
    bodies = [
        [m.get("params"), m.get("result"), m.get("error")] if isinstance(m, dict) else None
        for m, _ in messages
    ]
    owner: dict[str, str] = {}
    for body, (_, response_to) in zip(bodies, messages, strict=True):
        found = _ids_recursively(body)
        threads = {i for kind, i in found if kind == "thread"}
        if response_to in {"thread/start", "thread/resume", "thread/fork"}:
            result = body[1] if isinstance(body, list) else None
            thread = result.get("thread") if isinstance(result, dict) else None
            if isinstance(thread, dict) and isinstance(thread.get("id"), str):
                threads.add(thread["id"])
        for thread in threads:
            owner.setdefault(thread, thread)
        if len(threads) == 1:
            (only,) = threads
            for kind, i in found:
                if kind != "thread":
                    owner.setdefault(i, only)
    return [frozenset(owner[i] for _, i in _ids_recursively(b) if i in owner) for b in bodies]


_IDS = st.sampled_from(["T", "U", "V", "I"])
_KEYS = st.sampled_from(["threadId", "turnId", "itemId", "id", "thread", "turn", "item", "x"])
_BODIES = st.recursive(
    _IDS | st.integers(0, 2) | st.none(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(
            st.fixed_dictionaries(
                {},
                optional={"id": st.integers(0, 3), "params": _BODIES, "result": _BODIES},
            ),
            st.sampled_from([None, "thread/start", "thread/fork", "turn/start"]),
        ),
        max_size=12,
    )
)
@example([({"params": {"thread": [{"id": "T"}], "turn": {"id": "U"}}}, None)])
def test_thread_concerns_walk_agrees_with_the_recursive_one(
    messages: list[tuple[Any, str | None]],
) -> None:
    """The stack walk finds the threads the recursive walk found, for any nesting of thread,
    turn and item ids (a list inside a thread object keeps the object as its parent)."""
    assert thread_concerns(messages) == _concerns_recursively(messages)
    nested = [({"params": {"thread": [{"id": "T"}], "turn": {"id": "U"}}}, None)]
    assert thread_concerns(nested) == [frozenset({"T"})]


@settings(max_examples=100, deadline=None)
@given(cassettes(), st.sampled_from(list(Order)))
def test_an_independent_connection_never_waits_nor_is_waited_for(
    messages: list[Message], order: Order
) -> None:
    """independent(conn) exactly when no message of another connection shares a stream with
    it; then, before anything happened, none of its frames waits and no other frame waits for
    one of its messages: its player may skip the ordering."""
    ordering = Ordering(messages, order)
    for conn in {m.conn for m in messages}:
        shares = any(
            m.conn == conn
            and o.conn != conn
            and (order is Order.GLOBAL or (order is Order.THREAD and bool(m.threads & o.threads)))
            for m in messages
            for o in messages
        )
        assert ordering.independent(conn) is not shares
        if ordering.independent(conn):
            for m in messages:
                waited = seqs(ordering.waiting_for(m.seq))
                if m.conn == conn:
                    assert waited == []
                else:
                    assert not {o.seq for o in messages if o.conn == conn} & set(waited)


def test_independent_examples() -> None:
    """In the rejoin both connections share thread T; a third that only warns shares nothing;
    under order global every connection with messages shares; one connection alone never
    builds the concerns."""
    assert not rejoin().independent(1) and not rejoin().independent(2)
    lone = Ordering.build(
        [
            (1, [(1, False, {"method": "d", "params": {"threadId": "T"}}, None, "< d")]),
            (2, [(2, False, {"method": "d", "params": {"threadId": "T"}}, None, "< d")]),
            (3, [(3, False, {"method": "w", "params": {"summary": "x"}}, None, "< w")]),
        ]
    )
    assert [lone.independent(c) for c in (1, 2, 3)] == [False, False, True]
    assert not rejoin(Order.GLOBAL).independent(1)
    assert rejoin(Order.NONE).independent(1)
    alone = Ordering.build(
        [(1, [(1, False, {"method": "d", "params": {"threadId": "T"}}, None, "< d")])]
    )
    assert alone.messages[1].threads == frozenset() and alone.independent(1)
