"""Tests of proxy.core.diff and `rpctape diff`: cassettes compared as conversations."""

from __future__ import annotations

import copy
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from proxy import recording_proxy
from proxy.cli import app
from proxy.codex.appserver import AppServer, find_codex
from proxy.codex.backend import FakeBackend, Reply
from proxy.codex.client import ClientOptions, SessionClient
from proxy.core.cassette import Cassette, load, parse_lines
from proxy.core.diff import (
    IGNORED_KEY,
    MISSING,
    Change,
    Entry,
    EntryKind,
    Normaliser,
    diff_cassettes,
    diff_values,
)
from proxy.core.jsonrpc import Direction
from proxy.wire.store import cassette_files

CASSETTES = Path(__file__).resolve().parent.parent / "cassettes"
runner = CliRunner()

Frame = tuple[str, dict[str, Any]]  # (dir, msg)


def tape(*connections: list[Frame]) -> Cassette:
    """A cassette holding ``connections``, each a list of (dir, msg), with derived fields."""
    lines = [b'{"rpctape":1}']
    seq = 0
    for conn, frames in enumerate(connections, start=1):
        open_ids: dict[tuple[str, Any], str] = {}
        for direction, msg in frames:
            seq += 1
            event: dict[str, Any] = {"seq": seq, "conn": conn, "kind": "text", "dir": direction}
            if "method" in msg:
                event["type"] = "request" if "id" in msg else "notification"
                event["method"] = msg["method"]
                if "id" in msg:
                    open_ids[direction, msg["id"]] = msg["method"]
            else:
                event["type"] = "response" if "result" in msg else "error"
                other = "s2c" if direction == "c2s" else "c2s"
                answered = open_ids.get((other, msg.get("id")))
                if answered:
                    event["response_to"] = answered
            event["msg"] = msg
            lines.append(orjson.dumps(event))
    return parse_lines(b"\n".join(lines) + b"\n")


def session(thread: str, text: str = "Hi", *, first_id: int = 1) -> list[Frame]:
    """initialize, thread/start, turn/start with its notifications: like a real recording."""
    turn = str(uuid.uuid4())
    return [
        ("c2s", {"id": first_id, "method": "initialize", "params": {"clientInfo": {"name": "t"}}}),
        ("s2c", {"id": first_id, "result": {"codexHome": "/tmp/rpctape-appserver-ab12/home"}}),
        ("c2s", {"id": first_id + 1, "method": "thread/start", "params": {}}),
        ("s2c", {"id": first_id + 1, "result": {"thread": {"id": thread, "createdAt": 17}}}),
        ("c2s", {"id": first_id + 2, "method": "turn/start", "params": {"threadId": thread}}),
        ("s2c", {"id": first_id + 2, "result": {"turn": {"id": turn}}}),
        (
            "s2c",
            {
                "method": "item/completed",
                "params": {"threadId": thread, "turnId": turn, "item": {"text": text}},
                "emittedAtMs": 1795469401977,
            },
        ),
        ("s2c", {"method": "turn/completed", "params": {"turn": {"id": turn, "durationMs": 5}}}),
    ]


def test_same_session_other_ids_is_equivalent() -> None:
    """Fresh UUIDs, other request ids, temp dirs and times: still equivalent."""
    a = tape(session(str(uuid.uuid4())))
    b_frames = session(str(uuid.uuid4()), first_id=10)
    b_frames[1][1]["result"]["codexHome"] = "/tmp/rpctape-appserver-zz99/home"
    b_frames[3][1]["result"]["thread"]["createdAt"] = 99
    report = diff_cassettes(a, tape(b_frames))
    assert report.entries == []
    assert report.equivalent
    assert (report.messages_a, report.messages_b) == (8, 8)


def test_changed_field_reported_with_pointer() -> None:
    """A changed value shows as one changed message with its pointer and both values."""
    thread = str(uuid.uuid4())
    report = diff_cassettes(tape(session(thread)), tape(session(thread, "Bye")))
    assert report.entries == [
        Entry(
            EntryKind.CHANGED,
            1,
            1,
            7,
            7,
            Direction.S2C,
            "notification",
            "item/completed",
            (Change("/params/item/text", "Hi", "Bye"),),
        )
    ]
    assert not report.equivalent


def test_inserted_notification_is_one_addition() -> None:
    """One extra notification is one `added`, not everything after it changed."""
    thread = str(uuid.uuid4())
    b = session(thread)
    b.insert(4, ("s2c", {"method": "warning", "params": {"message": "careful"}}))
    report = diff_cassettes(tape(session(thread)), tape(b))
    assert [(e.kind, e.method, e.seq_a, e.seq_b) for e in report.entries] == [
        (EntryKind.ADDED, "warning", None, 5)
    ]
    reverse = diff_cassettes(tape(b), tape(session(thread)))
    assert [(e.kind, e.method, e.seq_a, e.seq_b) for e in reverse.entries] == [
        (EntryKind.REMOVED, "warning", 5, None)
    ]


def test_response_aligned_by_the_method_it_answers() -> None:
    """A different result for turn/start is a change of the turn/start response."""
    thread = str(uuid.uuid4())
    b = session(thread)
    b[5][1]["result"]["turn"]["status"] = "inProgress"
    (entry,) = diff_cassettes(tape(session(thread)), tape(b)).entries
    assert (entry.type, entry.method, entry.changes) == (
        "response",
        "turn/start",
        (Change("/result/turn/status", MISSING, "inProgress"),),
    )


def test_reordered_notification_is_moved_and_equivalent() -> None:
    """A notification at another place among the server's messages: one move (here the
    alignment keeps the notification and moves the response it overtook), still equivalent."""
    thread = str(uuid.uuid4())
    a = session(thread)
    a.insert(3, ("s2c", {"method": "thread/started", "params": {"threadId": "x"}}))
    b = session(thread)
    b.insert(5, ("s2c", {"method": "thread/started", "params": {"threadId": "x"}}))
    report = diff_cassettes(tape(a), tape(b))
    assert [(e.kind, e.type, e.method, e.seq_a, e.seq_b) for e in report.entries] == [
        (EntryKind.MOVED, "response", "thread/start", 5, 4)
    ]
    assert report.equivalent


def test_unaligned_same_method_is_a_change() -> None:
    """A notification both sides have, at other places and with other content: one change."""
    started = ("s2c", {"method": "thread/started", "params": {}})
    status = ("s2c", {"method": "thread/status/changed", "params": {}})
    a = tape([("s2c", {"method": "warning", "params": {"n": 1}}), started, status])
    b = tape([started, status, ("s2c", {"method": "warning", "params": {"n": 2}})])
    assert diff_cassettes(a, b).entries == [
        Entry(
            EntryKind.CHANGED,
            1,
            1,
            1,
            3,
            Direction.S2C,
            "notification",
            "warning",
            (Change("/params/n", 1, 2),),
        )
    ]


def test_ignore_pointer() -> None:
    """--ignore drops a member from every message before comparing."""
    thread = str(uuid.uuid4())
    changed = diff_cassettes(tape(session(thread)), tape(session(thread, "Bye")), ["/params/item"])
    assert changed.equivalent


def test_extra_connection_all_added() -> None:
    """A connection only B has: each of its messages is added."""
    thread = str(uuid.uuid4())
    report = diff_cassettes(tape(session(thread)), tape(session(thread), session(thread)[:2]))
    assert [(e.kind, e.conn_a, e.conn_b, e.method) for e in report.entries] == [
        (EntryKind.ADDED, None, 2, "initialize"),
        (EntryKind.ADDED, None, 2, "initialize"),
    ]


def test_normaliser_names_by_first_appearance() -> None:
    """UUIDs, ids, temp dirs, ports, digests, dates; time members dropped."""
    u1, u2 = str(uuid.uuid4()), "01a20a50-df7d-7b90-8056-a002d7e164dd"  # v4, v7
    norm = Normaliser()
    msg = {
        "id": "req-7",
        "method": "x",
        "params": {
            "a": u1,
            "b": f"path/{u2}/{u1.upper()}",
            "home": "/tmp/rpctape-appserver-q1/home",
            "url": "http://127.0.0.1:44999/v1",
            "v": "sha256:" + "ab" * 32,
            "f": "sessions/2026/11/23/rollout-2026-11-23T21-30-01-x.jsonl",
            "startedAtMs": 1,
            "updatedAt": 2,
            "durationMs": 3,
            "processId": "4242",
            "format": "kept",
        },
    }
    assert norm.message(Direction.C2S, msg) == {
        "id": "<id1>",
        "method": "x",
        "params": {
            "a": "<uuid1>",
            "b": "path/<uuid2>/<uuid1>",
            "home": "<tmp1>/home",
            "url": "http://127.0.0.1:<port1>/v1",
            "v": "<digest1>",
            "f": "sessions/<date>/rollout-<time>-x.jsonl",
            "format": "kept",
        },
    }
    assert norm.message(Direction.S2C, {"id": "req-7", "result": u2}) == {
        "id": "<id1>",
        "result": "<uuid2>",
    }
    assert norm.message(Direction.S2C, {"id": "req-7", "method": "y"})["id"] == "<sid1>"


@pytest.mark.parametrize(
    ("key", "ignored"),
    [
        ("t", True),
        ("emittedAtMs", True),
        ("createdAt", True),
        ("sectionEnteredAt", True),
        ("completed_at", True),
        ("last_refresh_at", True),
        ("durationMs", True),
        ("turnDurationMs", True),
        ("processId", True),
        ("At", False),
        ("format", False),
        ("threadId", False),
        ("tokenUsage", False),
        ("timeoutMs", False),
    ],
)
def test_ignored_keys(key: str, ignored: bool) -> None:
    """The documented list of time and duration keys, and near misses that are compared."""
    assert bool(IGNORED_KEY.fullmatch(key)) is ignored


def test_diff_values_lists_and_types() -> None:
    """Lists compare by index; 1 and 1.0 and True differ by type."""
    assert diff_values([1, 2], [1, 2, 3]) == [Change("/2", MISSING, 3)]
    assert diff_values({"a/b": 1}, {"a/b": 1.0}) == [Change("/a~1b", 1, 1.0)]
    assert diff_values({"x": 1}, {"x": True}) == [Change("/x", 1, True)]
    assert diff_values({"x": {"y": None}}, {"x": {"y": None}}) == []


def test_cli_json_and_exit_codes(tmp_path: Path) -> None:
    """--json gives the entries; exit 1 when different, 0 when equivalent."""
    thread = str(uuid.uuid4())
    paths = []
    for name, text in (("a", "Hi"), ("b", "Bye")):
        path = tmp_path / f"{name}.jsonl"
        events = tape(session(thread, text)).events
        path.write_bytes(b'{"rpctape":1}\n' + b"".join(orjson.dumps(e) + b"\n" for e in events))
        paths.append(str(path))
    result = runner.invoke(app, ["diff", *paths, "--json"])
    assert result.exit_code == 1
    assert orjson.loads(result.stdout) == {
        "equivalent": False,
        "messages": [8, 8],
        "counts": {"added": 0, "removed": 0, "changed": 1, "moved": 0},
        "entries": [
            {
                "kind": "changed",
                "conn": [1, 1],
                "seq": [7, 7],
                "dir": "s2c",
                "type": "notification",
                "method": "item/completed",
                "changes": [{"pointer": "/params/item/text", "a": "Hi", "b": "Bye"}],
            }
        ],
    }
    plain = runner.invoke(app, ["diff", *paths])
    assert plain.stdout.splitlines() == [
        "~ conn 1~1 s2c notification item/completed (A seq 7, B seq 7)",
        '    /params/item/text: "Hi" -> "Bye"',
        f"{paths[0]} ~ {paths[1]}: different: A 8 message(s), B 8 message(s); "
        "0 added, 0 removed, 1 changed, 0 moved",
    ]
    same = runner.invoke(app, ["diff", paths[0], paths[0], "--ignore", "/params/item"])
    assert same.exit_code == 0
    bad = runner.invoke(app, ["diff", paths[0], paths[1], "--ignore", "params"])
    assert (bad.exit_code, bad.stderr) == (
        2,
        "rpctape: error: invalid JSON pointer 'params': it must start with '/', e.g. /params/cwd\n",
    )


def test_shipped_cassettes_equal_themselves() -> None:
    """Every shipped cassette is equivalent to itself, with no entry at all."""
    for path in cassette_files([CASSETTES], recursive=False):
        assert diff_cassettes(load(path), load(path)).entries == [], path


# --- properties ----------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.sampled_from(["x", "/tmp/rpctape-q/a", "127.0.0.1:80", "2026-01-02T03:04:05Z"])
    | st.uuids().map(str),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b", "createdAt", "id", "t"]), inner, max_size=3)
    ),
    max_leaves=8,
)
methods = st.sampled_from(["a/x", "b/y", "turn/start"])


@st.composite
def conversations(draw: st.DrawFn) -> list[Frame]:
    """Requests with their answers and notifications in both directions."""
    frames: list[Frame] = []
    for number in range(draw(st.integers(0, 6))):
        direction = draw(st.sampled_from(["c2s", "s2c"]))
        other = "s2c" if direction == "c2s" else "c2s"
        method, params = draw(methods), draw(json_values)
        if draw(st.booleans()):
            frames.append((direction, {"id": number, "method": method, "params": params}))
            frames.append((other, {"id": number, "result": draw(json_values)}))
        else:
            frames.append((direction, {"method": method, "params": params}))
    return frames


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(conversations(), min_size=1, max_size=2))
def test_diff_with_itself_is_empty(connections: list[list[Frame]]) -> None:
    """diff(A, A) has no entry."""
    cassette = tape(*connections)
    assert diff_cassettes(cassette, cassette).entries == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conversations(), conversations())
def test_diff_counts_are_symmetric(a: list[Frame], b: list[Frame]) -> None:
    """diff(B, A) swaps added and removed; changed and moved counts stay."""
    forward = diff_cassettes(tape(a), tape(b))
    backward = diff_cassettes(tape(b), tape(a))
    assert forward.count(EntryKind.ADDED) == backward.count(EntryKind.REMOVED)
    assert forward.count(EntryKind.REMOVED) == backward.count(EntryKind.ADDED)
    assert forward.count(EntryKind.CHANGED) == backward.count(EntryKind.CHANGED)
    assert forward.count(EntryKind.MOVED) == backward.count(EntryKind.MOVED)
    assert forward.equivalent == backward.equivalent


@settings(max_examples=60, deadline=None)
@given(conversations())
def test_normalisation_is_idempotent(frames: list[Frame]) -> None:
    """Normalising normalised messages changes nothing."""
    first, second = Normaliser(), Normaliser()
    once = [first.message(Direction(d), copy.deepcopy(m)) for d, m in frames]
    twice = [second.message(Direction(d), m) for (d, _), m in zip(frames, once, strict=True)]
    assert twice == once


# --- end to end ----------------------------------------------------------------------------


async def _record(path: Path, reply: str) -> None:
    """One scripted session (initialize, thread, one streamed turn) through the recorder."""
    async with FakeBackend() as backend, AppServer(backend.url, find_codex()) as server:
        backend.script(Reply.text(reply))
        async with (
            recording_proxy(server.url, path) as url,
            SessionClient(url, ClientOptions(string_ids=True)) as client,
        ):
            await client.initialize()
            thread_id = await client.start_thread()
            await client.run_turn(thread_id, "Say hello.")


@pytest.mark.e2e
async def test_two_recordings_of_one_session_are_equivalent(tmp_path: Path) -> None:
    """Two real recordings of the same session are equivalent; another reply (same number of
    words, so the same number of deltas) is a change of the messages that carry its text."""
    first, second, third = tmp_path / "1.jsonl", tmp_path / "2.jsonl", tmp_path / "3.jsonl"
    await _record(first, "Hello there.")
    await _record(second, "Hello there.")
    await _record(third, "Howdy there.")
    same = diff_cassettes(load(first), load(second))
    assert [e for e in same.entries if e.kind is not EntryKind.MOVED] == []
    changed = diff_cassettes(load(first), load(third))
    pointers = {
        (e.method, c.pointer, c.a, c.b)
        for e in changed.entries
        if e.kind is EntryKind.CHANGED
        for c in e.changes
    }
    assert pointers == {
        ("item/agentMessage/delta", "/params/delta", "Hello ", "Howdy "),
        ("item/completed", "/params/item/text", "Hello there.", "Howdy there."),
        ("turn/completed", "/params/turn/items/0/text", "Hello there.", "Howdy there."),
    }
    assert {e.kind for e in changed.entries} <= {EntryKind.CHANGED, EntryKind.MOVED}
