"""Unit tests of proxy.core.matching: the named matchers and what they say when they fail."""

from __future__ import annotations

import base64
import json
from datetime import UTC, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.matching import (
    ABSENT,
    DEFAULT_IGNORE,
    Aspect,
    Difference,
    Frame,
    Preset,
    Rules,
    _canonical,
    _equal_at_a_glance,
    _matches_slowly,
    cwd_pairs,
    differences,
    explain,
    matches,
    parse_match_on,
)
from proxy.core.planner import ReplayOptions
from proxy.errors import UsageError
from tests.frames import json_texts


def recorded(msg: Any = None, *, raw: str | None = None, **fields: Any) -> Frame:
    """A recorded c2s text event, as the recorder writes it."""
    event: dict[str, Any] = {"seq": 1, "t": 0.0, "conn": 1, "kind": "text", "dir": "c2s"}
    if msg is not None:
        event["msg"] = msg
    if raw is not None:
        event["raw"] = raw
    event.update(fields)
    return Frame.recorded(event)


def live(msg: Any) -> Frame:
    return Frame.live(orjson.dumps(msg).decode())


RULES = Rules.build()
EXACT = Rules.build(match_on="exact")


def test_request_matches_whatever_its_id_and_trace() -> None:
    """Ids of any type and the official client's trace and jsonrpc members are ignored."""
    rec = recorded({"id": 1, "method": "model/list", "params": {}})
    got = live(
        {"jsonrpc": "2.0", "id": "9b2c", "method": "model/list", "params": {}, "trace": {"t": 1}}
    )
    assert matches(got, rec, RULES)
    assert explain(got, rec, RULES).failures == ()


def test_default_ignore_pointers() -> None:
    """The defaults are exactly /trace and /jsonrpc."""
    assert DEFAULT_IGNORE == ("/trace", "/jsonrpc")
    assert Rules.build().ignore == frozenset({"/trace", "/jsonrpc"})


def test_params_difference_is_named_with_shortened_values() -> None:
    """A differing member is reported by pointer with both values, long ones shortened."""
    rec = recorded({"id": 1, "method": "thread/start", "params": {"cwd": "/home/x" * 10}})
    got = live({"id": 1, "method": "thread/start", "params": {"cwd": "/tmp/a"}})
    verdict = explain(got, rec, EXACT)
    assert not verdict.matched
    assert verdict.render() == (
        '/params/cwd: got "/tmp/a", recorded "/home/x/home/x/home/x/home/x/home/x/...'
    )
    assert [f.matcher for f in verdict.failures] == ["cwd"]


def test_ignore_pointer_makes_it_match() -> None:
    """--ignore /params/cwd makes a differing cwd irrelevant under exact; the rest still counts."""
    rec = recorded({"id": 1, "method": "thread/start", "params": {"cwd": "/a", "x": 1}})
    got = live({"id": 1, "method": "thread/start", "params": {"cwd": "/b", "x": 1}})
    assert not matches(got, rec, EXACT)
    rules = Rules.build(["/params/cwd"], match_on="exact")
    assert matches(got, rec, rules)
    worse = live({"id": 1, "method": "thread/start", "params": {"cwd": "/b", "x": 2}})
    assert explain(worse, rec, rules).render() == "/params/x: got 2, recorded 1"


def test_method_and_missing_members() -> None:
    """Method differences and members present on one side only are all reported."""
    rec = recorded({"id": 1, "method": "turn/start", "params": {"threadId": "t", "input": []}})
    got = live({"id": 1, "method": "thread/start", "params": {"extra": True}})
    assert explain(got, rec, RULES).render() == (
        'method differs: got "thread/start", recorded "turn/start"; '
        '/params/threadId: got (absent), recorded "t"; '
        "/params/input: got (absent), recorded []; "
        "/params/extra: got true, recorded (absent)"
    )


def test_more_than_four_differences_are_counted() -> None:
    """Only four differences are spelled out; the rest are counted."""
    rec = recorded({"id": 1, "method": "m", "params": {k: 0 for k in "abcdef"}})
    got = live({"id": 1, "method": "m", "params": {k: 1 for k in "abcdef"}})
    text = explain(got, rec, RULES).render()
    assert text.endswith("/params/d: got 1, recorded 0; and 2 more")


def test_kind_mismatch_stops_there() -> None:
    """A notification never matches a request of the same method."""
    rec = recorded({"id": 1, "method": "initialized"})
    got = live({"method": "initialized"})
    verdict = explain(got, rec, RULES)
    assert verdict.render() == "got a notification initialized, recorded a request initialized"
    assert [f.matcher for f in verdict.failures] == ["kind"]


def test_response_matched_on_the_server_request_it_answers() -> None:
    """A client response must carry the recorded server request id and the same result."""
    rec = recorded({"id": 0, "result": {"decision": "accept"}})
    assert matches(live({"id": 0, "result": {"decision": "accept"}}), rec, RULES)
    assert explain(live({"id": 1, "result": {"decision": "accept"}}), rec, RULES).render() == (
        "answers another server request: got id 1, recorded id 0"
    )
    assert explain(live({"id": 0, "result": {"decision": "decline"}}), rec, RULES).render() == (
        '/result/decision: got "decline", recorded "accept"'
    )
    assert not matches(live({"id": "0", "result": {"decision": "accept"}}), rec, RULES)


def test_redacted_pointer_matches_any_value() -> None:
    """A member the recorder redacted matches whatever secret the live client sends."""
    rec = recorded(
        {"id": 0, "result": {"token": "<redacted:0123abcd>"}}, redacted=["/result/token"]
    )
    assert matches(live({"id": 0, "result": {"token": "v1.fresh"}}), rec, RULES)
    assert not matches(live({"id": 0, "result": {"token": "v1", "x": 1}}), rec, RULES)


def test_non_json_batch_and_binary_frames_match_byte_for_byte() -> None:
    """Frames that are not JSON-RPC messages must be identical, bytes and frame type."""
    assert matches(Frame.live("not json"), recorded(raw="not json"), RULES)
    assert explain(Frame.live("not JSON"), recorded(raw="not json"), RULES).render() == (
        "bytes differ: got 'not JSON', recorded 'not json'"
    )
    batch = '[{"id":1,"method":"a"}]'
    assert matches(Frame.live(batch), recorded(orjson.loads(batch)), RULES)
    assert not matches(Frame.live('[{"id":2,"method":"a"}]'), recorded(orjson.loads(batch)), RULES)
    event: dict[str, Any] = {"seq": 1, "conn": 1, "kind": "binary", "dir": "c2s", "b64": "AAE="}
    assert matches(Frame.live(b"\x00\x01"), Frame.recorded(event), RULES)
    assert explain(Frame.live("\x00\x01"), Frame.recorded(event), RULES).render() == (
        "got a text frame '\\x00\\x01', recorded a binary frame (2 bytes)"
    )
    assert base64.b64decode(event["b64"]) == b"\x00\x01"


def test_whitespace_does_not_matter_for_json_rpc() -> None:
    """JSON-RPC messages are compared as JSON, not as text."""
    rec = recorded({"id": 1, "method": "m", "params": {"a": 1}})
    assert matches(Frame.live('{ "method" : "m", "params": {"a": 1.0}, "id": 7 }'), rec, RULES)


def test_booleans_are_not_numbers() -> None:
    """true and 1 differ, as they do in JSON."""
    assert differences(True, 1, frozenset()) == [Difference("", True, 1)]
    assert differences([1, 2], [1], frozenset()) == [Difference("/1", 2, ABSENT)]


def test_pointer_escapes() -> None:
    """Keys holding / and ~ are escaped in pointers (RFC 6901)."""
    assert differences({"a/b": 1, "c~d": 1}, {"a/b": 2, "c~d": 1}, frozenset()) == [
        Difference("/a~1b", 1, 2)
    ]
    assert differences({"a/b": 1}, {"a/b": 2}, frozenset({"/a~1b"})) == []


@pytest.mark.parametrize("pointer", ["params/cwd", "/a~2b"])
def test_invalid_pointer_is_a_usage_error(pointer: str) -> None:
    """A pointer without a leading slash or with a bad escape is refused, with an example."""
    with pytest.raises(UsageError, match="invalid JSON pointer"):
        Rules.build([pointer])


# --- match_on: the codex default and exact ------------------------------------------------------


def initialize(client: dict[str, Any], **capabilities: Any) -> dict[str, Any]:
    """An ``initialize`` request as the SDKs send it."""
    params: dict[str, Any] = {"clientInfo": client}
    if capabilities:
        params["capabilities"] = capabilities
    return {"id": 1, "method": "initialize", "params": params}


OFFICIAL = {"name": "codex_python_sdk", "title": "Codex Python SDK", "version": "0.163.0"}
OTHER = {"name": "codex-app-server-sdk", "version": "0.4.1"}


def test_presets_and_the_default() -> None:
    """codex (the default) compares method and body; exact compares every aspect."""
    assert Rules().match_on == Rules.build().match_on == frozenset({Aspect.METHOD, Aspect.BODY})
    assert Rules.build(match_on="exact").match_on == frozenset(Aspect)
    assert ReplayOptions.build().rules == Rules.build()
    assert ReplayOptions.build(match_on="exact").rules.match_on == frozenset(Aspect)
    assert [a.value for a in Aspect] == ["method", "body", "clientInfo", "cwd", "timestamps"]


def test_match_on_names_and_lists() -> None:
    """A comma-separated list, a sequence, presets inside a list, enum members."""
    assert parse_match_on("method, body,cwd") == {Aspect.METHOD, Aspect.BODY, Aspect.CWD}
    assert parse_match_on(["codex", "clientInfo"]) == {
        Aspect.METHOD,
        Aspect.BODY,
        Aspect.CLIENT_INFO,
    }
    assert parse_match_on([Aspect.TIMESTAMPS, Preset.CODEX]) == {
        Aspect.METHOD,
        Aspect.BODY,
        Aspect.TIMESTAMPS,
    }
    assert parse_match_on(Preset.EXACT) == frozenset(Aspect)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "method,bdy",
            "invalid match_on 'bdy'; valid values: a preset (codex, exact) or a comma-separated "
            "list of method, body, clientInfo, cwd, timestamps",
        ),
        ([], "match_on is empty; use exact, codex, or a list such as method,body"),
    ],
)
def test_bad_match_on_is_a_usage_error(value: Any, message: str) -> None:
    """A typo fails with the valid values; an empty list is refused."""
    with pytest.raises(UsageError) as caught:
        Rules.build(match_on=value)
    assert str(caught.value) == message


def test_codex_default_ignores_client_info_but_not_capabilities() -> None:
    """Another SDK, or the same SDK upgraded, matches; a capability the server acts on does not."""
    rec = recorded(initialize(OFFICIAL, experimentalApi=True))
    assert matches(live(initialize(OTHER, experimentalApi=True)), rec, RULES)
    assert matches(
        live(initialize({**OFFICIAL, "version": "0.170.0"}, experimentalApi=True)), rec, RULES
    )
    verdict = explain(live(initialize(OTHER, experimentalApi=False)), rec, RULES)
    assert verdict.render() == "/params/capabilities/experimentalApi: got false, recorded true"
    assert [f.matcher for f in verdict.failures] == ["body"]


def test_exact_names_client_info_separately_from_the_body() -> None:
    """Under exact each aspect that differs is its own named failure, body first."""
    rec = recorded(initialize(OFFICIAL, experimentalApi=True))
    verdict = explain(live(initialize(OTHER, experimentalApi=False)), rec, EXACT)
    assert [f.matcher for f in verdict.failures] == ["body", "clientInfo"]
    assert verdict.render() == (
        "/params/capabilities/experimentalApi: got false, recorded true; "
        '/params/clientInfo/name: got "codex-app-server-sdk", recorded "codex_python_sdk"; '
        '/params/clientInfo/title: got (absent), recorded "Codex Python SDK"; '
        '/params/clientInfo/version: got "0.4.1", recorded "0.163.0"'
    )
    only_client = Rules.build(match_on="method,body,clientInfo")
    assert not matches(live(initialize(OTHER, experimentalApi=True)), rec, only_client)


def thread_start(cwd: str, *roots: str) -> dict[str, Any]:
    """A ``thread/start`` with a working directory and writable roots."""
    return {
        "id": "u-1",
        "method": "thread/start",
        "params": {
            "cwd": cwd,
            "sandboxPolicy": {"type": "workspaceWrite", "writableRoots": list(roots)},
        },
    }


def test_codex_default_follows_the_working_directory() -> None:
    """A per-run cwd (pytest's tmp_path) matches, and so does the same path under it."""
    rec = recorded(thread_start("/tmp/pytest-1/test_a0", "/tmp/pytest-1/test_a0/out", "/opt/x"))
    same = live(thread_start("/tmp/pytest-9/test_a0", "/tmp/pytest-9/test_a0/out", "/opt/x"))
    assert matches(same, rec, RULES)
    assert not matches(same, rec, EXACT)
    moved = live(thread_start("/tmp/pytest-9/test_a0", "/tmp/pytest-9/test_a0/in", "/opt/x"))
    verdict = explain(moved, rec, RULES)
    assert verdict.render() == (
        '/params/sandboxPolicy/writableRoots/0: got "/tmp/pytest-9/test_a0/in", recorded '
        '"/tmp/pytest-1/test_a0/out"'
    )
    assert [f.matcher for f in verdict.failures] == ["body"]
    outside = live(thread_start("/tmp/pytest-9/test_a0", "/tmp/pytest-9/test_a0/out", "/opt/y"))
    assert explain(outside, rec, RULES).render() == (
        '/params/sandboxPolicy/writableRoots/1: got "/opt/y", recorded "/opt/x"'
    )


def test_cwd_prefix_stops_at_a_path_separator() -> None:
    """/tmp/a is not under /tmp/ab: a sibling with a longer name is not rewritten."""
    rec = recorded(thread_start("/tmp/a", "/tmp/ab/x"))
    assert not matches(live(thread_start("/tmp/b", "/tmp/bb/x")), rec, RULES)
    assert matches(
        live(thread_start("/tmp/b/", "/tmp/b/x")),
        recorded(thread_start("/tmp/a", "/tmp/a/x")),
        RULES,
    )
    assert cwd_pairs(thread_start("/tmp/b", "/r")["params"], thread_start("/tmp/a")["params"]) == (
        ("/tmp/a", "/tmp/b"),
    )


def test_learned_working_directories_reach_later_messages() -> None:
    """After thread/start matched, Rules.learn lets a turn/start without cwd name a file under
    the thread's directory; without it the path is compared as it is."""
    rec_start = recorded(thread_start("/tmp/pytest-1/t0"))
    live_start = live(thread_start("/tmp/pytest-9/t0"))
    learned = RULES.learn(live_start, rec_start)
    assert learned.cwds == (("/tmp/pytest-1/t0", "/tmp/pytest-9/t0"),)
    assert learned.learn(live_start, rec_start) is learned
    assert RULES.learn(live_start, recorded(thread_start("/tmp/pytest-9/t0"))) is RULES

    def turn(path: str) -> dict[str, Any]:
        image = {"type": "localImage", "path": path}
        return {"id": 2, "method": "turn/start", "params": {"threadId": "t", "input": [image]}}

    rec_turn = recorded(turn("/tmp/pytest-1/t0/cat.png"))
    assert matches(live(turn("/tmp/pytest-9/t0/cat.png")), rec_turn, learned)
    assert explain(live(turn("/tmp/pytest-9/t0/cat.png")), rec_turn, RULES).render() == (
        '/params/input/0/path: got "/tmp/pytest-9/t0/cat.png", recorded "/tmp/pytest-1/t0/cat.png"'
    )
    assert not matches(live(turn("/tmp/pytest-9/t0/dog.png")), rec_turn, learned)


def test_a_missing_cwd_is_not_a_working_directory_change() -> None:
    """Dropping cwd (the server then uses its own) is a body difference, not a cwd one."""
    rec = recorded(thread_start("/tmp/a"))
    got = thread_start("/tmp/a")
    del got["params"]["cwd"]
    verdict = explain(live(got), rec, RULES)
    assert verdict.render() == '/params/cwd: got (absent), recorded "/tmp/a"'
    assert [f.matcher for f in verdict.failures] == ["body"]


def test_timestamps_match_any_timestamp() -> None:
    """RFC 3339 date-times match each other under codex; a date alone is not a timestamp."""

    def request(value: str) -> dict[str, Any]:
        return {"id": 1, "method": "m", "params": {"at": value}}

    rec = recorded(request("2026-01-01T10:00:00Z"))
    assert matches(live(request("2026-12-01T00:35:12.123456+01:00")), rec, RULES)
    assert explain(live(request("2026-12-01T00:35:12Z")), rec, EXACT).failures[0].matcher == (
        "timestamps"
    )
    assert explain(live(request("2026-12-01")), rec, RULES).render() == (
        '/params/at: got "2026-12-01", recorded "2026-01-01T10:00:00Z"'
    )


def test_match_on_without_method() -> None:
    """Leaving method out of match_on matches a request of another method with the same body."""
    rules = Rules.build(match_on="body")
    rec = recorded({"id": 1, "method": "a", "params": {"x": 1}})
    assert matches(live({"id": 2, "method": "b", "params": {"x": 1}}), rec, rules)
    assert not matches(live({"id": 2, "method": "b", "params": {"x": 2}}), rec, rules)
    assert not matches(live({"method": "a", "params": {"x": 1}}), rec, rules)  # kind still counts


# --- properties ---------------------------------------------------------------------------------

_KEYS = st.text(alphabet="abcdefxyz_/~", min_size=1, max_size=6).filter(
    lambda k: k not in {"cwd", "clientInfo", "id", "method", "jsonrpc", "trace"}
)
_PLAIN = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-1000, 1000),
    st.text(alphabet="abc xyz-:.", max_size=8),
)
_JSON = st.recursive(
    _PLAIN,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=3),
    max_leaves=12,
)
_ASPECTS = st.sets(st.sampled_from(list(Aspect)), min_size=1)
_PATH = st.lists(
    st.text(alphabet="abcdef0123456789_-", min_size=1, max_size=6), min_size=1, max_size=3
).map(lambda parts: "/" + "/".join(parts))
_ZONES = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
_TIMESTAMP = st.datetimes(timezones=st.sampled_from(_ZONES)).map(lambda d: d.isoformat())


def _message(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    if kind == "request":
        return {"id": 3, "method": "thread/start", "params": params}
    if kind == "notification":
        return {"method": "initialized", "params": params}
    return {"id": 3, "result": params}


@settings(max_examples=150)
@given(
    kind=st.sampled_from(["request", "notification", "response"]),
    params=st.dictionaries(_KEYS, _JSON, max_size=4),
    aspects=_ASPECTS,
)
def test_a_frame_always_matches_itself(
    kind: str, params: dict[str, Any], aspects: set[Aspect]
) -> None:
    """Whatever match_on says, a recorded frame matches the same frame sent live."""
    msg = _message(kind, params)
    assert matches(live(msg), recorded(msg), Rules.build(match_on=aspects))


@st.composite
def _codex_pairs(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """A recorded message and a live one that differ only where the codex preset looks away:
    clientInfo, the cwd and paths under it, timestamps."""
    body = draw(st.dictionaries(_KEYS, _JSON, max_size=3))
    rec_cwd, live_cwd = draw(_PATH), draw(_PATH)
    subpaths = draw(st.lists(_PATH, max_size=3))
    rec_stamps = draw(st.lists(_TIMESTAMP, max_size=2))
    live_stamps = [draw(_TIMESTAMP) for _ in rec_stamps]

    def params(cwd: str, client: dict[str, Any], stamps: list[str]) -> dict[str, Any]:
        return {
            **body,
            "clientInfo": client,
            "cwd": cwd,
            "roots": [cwd + sub for sub in subpaths],
            "stamps": stamps,
        }

    client = st.fixed_dictionaries(
        {"name": st.text(max_size=8), "version": st.text(max_size=8)},
        optional={"title": st.text(max_size=8)},
    )
    return (
        _message("request", params(rec_cwd, draw(client), rec_stamps)),
        _message("request", params(live_cwd, draw(client), live_stamps)),
    )


@settings(max_examples=150)
@given(pair=_codex_pairs())
def test_codex_default_never_misses_on_what_it_ignores(
    pair: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    """Changing only clientInfo, the cwd (with the paths under it) and timestamps never misses."""
    rec, got = pair
    assert explain(live(got), recorded(rec), RULES).failures == ()


def _leaves(value: Any, pointer: str = "") -> list[str]:
    """Pointers to every scalar (or empty container) in ``value``."""
    if isinstance(value, dict) and value:
        return [
            leaf
            for key, member in value.items()
            for leaf in _leaves(member, f"{pointer}/{key.replace('~', '~0').replace('/', '~1')}")
        ]
    if isinstance(value, list) and value:
        return [
            leaf for i, member in enumerate(value) for leaf in _leaves(member, f"{pointer}/{i}")
        ]
    return [pointer]


def _keys(pointer: str) -> list[str]:
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer.split("/")[1:]]


def _get(value: Any, keys: list[str]) -> Any:
    for key in keys:
        value = value[int(key)] if isinstance(value, list) else value[key]
    return value


def _set(value: Any, keys: list[str], new: Any) -> Any:
    """A copy of ``value`` with the member at ``keys`` (which may be a new object member) set."""
    if not keys:
        return new
    head, rest = keys[0], keys[1:]
    if isinstance(value, list):
        copy = list(value)
        copy[int(head)] = _set(copy[int(head)], rest, new)
        return copy
    return {**value, head: _set(value.get(head), rest, new)}


@settings(max_examples=150)
@given(pair=_codex_pairs(), data=st.data(), aspects=_ASPECTS)
def test_changing_a_compared_member_always_misses(
    pair: tuple[dict[str, Any], dict[str, Any]], data: st.DataObject, aspects: set[Aspect]
) -> None:
    """Changing (or adding) one member outside clientInfo, cwd and timestamps misses under every
    match_on that compares the body, and the miss names exactly that member."""
    rec, _ = pair
    ignored = {"clientInfo", "cwd", "roots", "stamps"}
    leaves = [p for p in _leaves(rec["params"]) if _keys(p)[0] not in ignored]
    pointer = data.draw(st.sampled_from(leaves)) if leaves else "/NEW"
    keys = _keys(pointer)
    old = _get(rec["params"], keys) if leaves else ABSENT
    new = data.draw(_PLAIN.filter(lambda v: old is ABSENT or orjson.dumps(v) != orjson.dumps(old)))
    got = {**rec, "params": _set(rec["params"], keys, new)}
    verdict = explain(live(got), recorded(rec), Rules.build(match_on=aspects | {Aspect.BODY}))
    assert [f.matcher for f in verdict.failures] == ["body"]
    assert [d.pointer for d in verdict.differences] == ["/params" + pointer]


# --- the fast paths agree with the matchers -------------------------------------------------

_NUMBERS = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([0.0, -0.0, 1.0, 2.5, 2**64, 2**70, True, False]),
)
_VALUES = st.recursive(
    _PLAIN | _NUMBERS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b", "c", "n"]), inner, max_size=3)
    ),
    max_leaves=10,
)


def _canonically_equal(a: dict[str, Any], b: dict[str, Any], skip: frozenset[str]) -> bool:
    """What _equal_at_a_glance said before it compared member by member (the oracle)."""
    try:
        return _canonical(a, skip) == _canonical(b, skip)
    except TypeError:
        return False


def _reordered(value: Any) -> Any:
    """``value`` with the members of every object in reverse order."""
    if isinstance(value, dict):
        return {k: _reordered(v) for k, v in reversed(list(value.items()))}
    if isinstance(value, list):
        return [_reordered(v) for v in value]
    return value


@st.composite
def _similar_messages(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two messages that are often equal, or differ in one member, its type, or key order."""
    members = st.dictionaries(
        st.sampled_from(["params", "result", "trace", "jsonrpc", "x"]), _VALUES, max_size=3
    )
    a: dict[str, Any] = {"id": draw(_PLAIN), "method": "m", **draw(members)}
    b = dict(a)
    how = draw(st.sampled_from(["same", "reordered", "changed", "added", "removed", "id"]))
    if how == "reordered":
        b = _reordered(a)
    elif how == "changed" and len(a) > 2:
        key = draw(st.sampled_from(sorted(a)))
        b[key] = draw(_VALUES)
    elif how == "added":
        b[draw(st.sampled_from(["params", "result", "y"]))] = draw(_VALUES)
    elif how == "removed":
        b.pop(draw(st.sampled_from(sorted(a))))
    elif how == "id":
        b["id"] = draw(_VALUES)
    return a, b


@settings(max_examples=300)
@given(pair=_similar_messages(), rules=st.sampled_from([RULES, EXACT, Rules.build(["/x"])]))
def test_equal_at_a_glance_member_by_member_is_the_canonical_comparison(
    pair: tuple[dict[str, Any], dict[str, Any]], rules: Rules
) -> None:
    """Comparing member by member says what comparing the two sorted writings said, for
    equal, reordered, retyped (1 and 1.0, false and 0, -0.0) and unwritable (2**70) values."""
    a, b = pair
    skip = rules.top_level_skip
    assert _equal_at_a_glance(a, b, rules) is _canonically_equal(a, b, skip)
    assert _equal_at_a_glance(b, a, rules) is _canonically_equal(b, a, skip)


def test_equal_at_a_glance_examples() -> None:
    """Key order and skipped members do not count; a number's type and a boolean do."""
    msg = {"id": 1, "method": "m", "params": {"a": 1, "b": [True]}}
    assert _equal_at_a_glance(msg, {"params": {"b": [True], "a": 1}, "trace": {}, "id": "x"}, RULES)
    assert not _equal_at_a_glance(msg, {"params": {"a": 1.0, "b": [True]}}, RULES)
    assert not _equal_at_a_glance(msg, {"params": {"a": 1, "b": [1]}}, RULES)
    assert not _equal_at_a_glance(msg, {"params": {"a": 1, "b": [True]}, "x": None}, RULES)
    assert not _equal_at_a_glance({"params": 2**70}, {"params": 2**70}, RULES)  # unwritable


def _recorded_frame(msg: Any, kind: str = "text") -> Frame:
    """A recorded frame as the recorder stores it: msg if orjson writes it, else raw text."""
    if kind == "binary":
        return recorded(kind="binary", b64=base64.b64encode(json.dumps(msg).encode()).decode())
    try:
        orjson.dumps(msg)
    except TypeError:
        return recorded(raw=json.dumps(msg))
    return recorded(msg)


@st.composite
def _frame_pairs(draw: st.DrawFn) -> tuple[Frame, Frame]:
    """A live and a recorded frame: requests, notifications, responses, binary, non-JSON."""
    a, b = draw(_similar_messages())
    shape = draw(st.sampled_from(["request", "notification", "response", "other"]))
    methods = st.sampled_from(["m", "n"])
    for msg in (a, b):
        if shape == "notification":
            msg.pop("id", None)
        if shape == "response":
            msg.pop("method", None)
            msg["result"] = msg.pop("params", None)
        elif draw(st.booleans()):
            msg["method"] = draw(methods)
    text = draw(json_texts(st.just(a))) if draw(st.booleans()) else json.dumps(a)
    if shape == "other":
        text = draw(st.sampled_from(["not json", "[1,2]", text]))
    live_frame = Frame.live(text if draw(st.booleans()) else text.encode())
    return live_frame, _recorded_frame(b, draw(st.sampled_from(["text", "text", "binary"])))


@settings(max_examples=300)
@given(
    pair=_frame_pairs(),
    rules=st.sampled_from([RULES, EXACT, Rules.build(match_on="body"), Rules.build(["/x"])]),
)
def test_matches_fast_path_agrees_with_the_matchers(
    pair: tuple[Frame, Frame], rules: Rules
) -> None:
    """matches (with its fast path for requests and notifications that go as recorded) says
    what running every matcher says, and what explain says."""
    got, rec = pair
    assert matches(got, rec, rules) is _matches_slowly(got, rec, rules)
    assert matches(got, rec, rules) is explain(got, rec, rules).matched


def test_matches_fast_path_examples() -> None:
    """The fast path answers yes only when the matchers would: method differences count unless
    match_on leaves the method out."""
    rec = recorded({"id": 1, "method": "a", "params": {"n": 1}})
    assert matches(live({"id": "x", "method": "a", "params": {"n": 1}}), rec, RULES)
    assert not matches(live({"id": "x", "method": "b", "params": {"n": 1}}), rec, RULES)
    assert matches(
        live({"id": "x", "method": "b", "params": {"n": 1}}), rec, Rules.build(match_on="body")
    )
    assert not matches(live({"id": "x", "method": "a", "params": {"n": 2}}), rec, RULES)
    assert matches(live({"id": "x", "method": "a", "params": {"n": 1.0}}), rec, RULES)  # slowly
    assert not matches(live({"method": "a", "params": {"n": 1}}), rec, RULES)  # notification


@given(text=st.text(max_size=30) | json_texts())
def test_live_text_is_live_of_the_decoded_text(text: str) -> None:
    """A text frame prepared from its UTF-8 bytes is the frame prepared from its text."""
    assert Frame.live_text(text.encode()) == Frame.live(text)
