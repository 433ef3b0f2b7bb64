"""Unit tests of proxy.core.rules: matching, every action, ids of injected requests, rule files."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
import pytest

from proxy.core.jsonrpc import Direction, MessageType, Pairing, parse
from proxy.core.rules import (
    Action,
    Decision,
    Engine,
    Position,
    Rule,
    RuleError,
    Towards,
    load_rules,
)

C2S, S2C = Direction.C2S, Direction.S2C


class Conn:
    """Feeds frames to an Engine with a Pairing, as the relay does."""

    def __init__(self, *rules: Rule) -> None:
        self.engine = Engine(rules)
        self.pairing: Pairing[str] = Pairing()

    def send(self, direction: Direction, msg: Any) -> Decision:
        raw = msg if isinstance(msg, bytes) else orjson.dumps(msg)
        parsed = parse(raw)
        return self.engine.decide(direction, raw, parsed, self.pairing.observe(direction, parsed))


def loads(frame: bytes | None) -> Any:
    assert frame is not None
    return orjson.loads(frame)


def test_untouched_message_is_forwarded_as_is() -> None:
    """No matching rule: the original bytes go on."""
    conn = Conn(Rule("r", Action.DROP, method="other"))
    raw = b'{ "id": 1, "method": "initialize" }'
    decision = conn.send(C2S, raw)
    assert decision.forward is raw and decision.untouched and decision.applied == []


def test_match_fields() -> None:
    """dir, method, type, where and response_to all have to fit."""
    rule = Rule(
        "r",
        Action.DROP,
        dir=S2C,
        response_to="thread/start",
        type=MessageType.RESPONSE,
        where={"/result/thread/ephemeral": False},
    )
    conn = Conn(rule)
    conn.send(C2S, {"id": 5, "method": "thread/start"})
    assert conn.send(C2S, {"id": 5, "result": {"thread": {"ephemeral": False}}}).untouched
    assert conn.send(S2C, {"id": 5, "result": {"thread": {"ephemeral": True}}}).untouched
    conn.send(C2S, {"id": 6, "method": "thread/start"})
    assert conn.send(S2C, {"id": 6, "result": {"thread": {"ephemeral": False}}}).forward is None


def test_nth_and_times() -> None:
    """nth picks one occurrence; times caps how often a rule acts."""
    second = Conn(Rule("r", Action.DROP, method="n", nth=2))
    assert [second.send(S2C, {"method": "n"}).forward is None for _ in range(3)] == [
        False,
        True,
        False,
    ]
    twice = Conn(Rule("r", Action.DROP, method="n", times=2))
    assert [twice.send(S2C, {"method": "n"}).forward is None for _ in range(3)] == [
        True,
        True,
        False,
    ]


def test_patch_set_and_remove_chain() -> None:
    """Patches accumulate across rules and keep member order; the original is untouched."""
    conn = Conn(
        Rule("a", Action.PATCH, method="initialize", set={"/params/capabilities/x": 1}),
        Rule("b", Action.PATCH, method="initialize", remove=("/trace",)),
    )
    original = {"id": 1, "method": "initialize", "params": {}, "trace": {"t": 1}}
    decision = conn.send(C2S, original)
    assert decision.changed and decision.applied == [("a", "patch"), ("b", "patch")]
    assert decision.forward == b'{"id":1,"method":"initialize","params":{"capabilities":{"x":1}}}'
    assert original["trace"] == {"t": 1}


@pytest.mark.parametrize("request_id", [0, "b8e0-uuid"])
def test_reply_answers_the_sender_with_the_live_id(request_id: int | str) -> None:
    """A server request answered locally: not forwarded, reply carries the request's id."""
    conn = Conn(
        Rule(
            "r",
            Action.REPLY,
            dir=S2C,
            method="attestation/generate",
            result={"token": "T"},
        )
    )
    decision = conn.send(S2C, {"id": request_id, "method": "attestation/generate", "params": {}})
    assert decision.forward is None
    assert [(name, loads(f)) for name, f in decision.to_sender] == [
        ("r", {"id": request_id, "result": {"token": "T"}})
    ]


def test_reply_with_error() -> None:
    """reply can answer with a JSON-RPC error."""
    error = {"code": -32000, "message": "no"}
    conn = Conn(Rule("r", Action.REPLY, method="model/list", error=error))
    decision = conn.send(C2S, {"id": 3, "method": "model/list"})
    assert loads(decision.to_sender[0][1]) == {"id": 3, "error": error}


def test_failing_rule_is_logged_and_message_unchanged(caplog: pytest.LogCaptureFixture) -> None:
    """reply on a notification and a bad pointer fail: logged, the message goes on as is."""
    conn = Conn(
        Rule("bad reply", Action.REPLY, method="initialized", result=1),
        Rule("bad pointer", Action.PATCH, method="initialized", set={"/params/0/x": 1}),
    )
    raw = b'{"method":"initialized","params":[5]}'
    with caplog.at_level(logging.WARNING, logger="rpctape.rules"):
        decision = conn.send(C2S, raw)
    assert decision.forward is raw and decision.untouched
    assert [r.getMessage() for r in caplog.records] == [
        "rule 'bad reply' failed on initialized: reply needs a request, got a notification "
        "(left unchanged)",
        "rule 'bad pointer' failed on initialized: /params/0/x: cannot set 'x' in a number "
        "(left unchanged)",
    ]


def test_drop_delay_close() -> None:
    """drop stops forwarding; delays add up; close ends the connection."""
    conn = Conn(
        Rule("d1", Action.DELAY, method="a", ms=100),
        Rule("d2", Action.DELAY, method="a", ms=50),
        Rule("x", Action.DROP, method="b"),
        Rule("c", Action.CLOSE, method="c", code=4000, reason="bye"),
    )
    assert conn.send(C2S, {"method": "a"}).delay_ms == 150
    assert conn.send(C2S, {"method": "b"}).forward is None
    closing = conn.send(C2S, {"method": "c"})
    assert (closing.close, closing.forward) == ((4000, "bye"), None)


def test_inject_ids_never_collide_and_replies_are_hidden() -> None:
    """Injected requests get ids no peer used; the answers to them are hidden."""
    inject = Rule(
        "ping server",
        Action.INJECT,
        method="initialized",
        to=Towards.SERVER,
        message={"id": "auto", "method": "model/list", "params": {}},
    )
    conn = Conn(inject)
    conn.send(C2S, {"id": "rpctape-1", "method": "initialize"})  # a client using our style
    decision = conn.send(C2S, {"method": "initialized"})
    ((name, towards, frame),) = decision.after
    assert (name, towards) == ("ping server", C2S)
    assert loads(frame) == {"id": "rpctape-2", "method": "model/list", "params": {}}
    assert decision.forward == b'{"method":"initialized"}'
    hidden = conn.send(S2C, {"id": "rpctape-2", "result": {"data": []}})
    assert (hidden.forward, hidden.hidden) == (None, True)
    assert conn.send(S2C, {"id": "rpctape-1", "result": {}}).forward is not None


def test_inject_to_client_before() -> None:
    """An injected notification can go to the client before the message."""
    conn = Conn(
        Rule(
            "n",
            Action.INJECT,
            method="turn/started",
            to=Towards.CLIENT,
            position=Position.BEFORE,
            message={"method": "rpctape/note", "params": {}},
        )
    )
    decision = conn.send(S2C, {"method": "turn/started", "params": {}})
    assert [(n, d, loads(f)) for n, d, f in decision.before] == [
        ("n", S2C, {"method": "rpctape/note", "params": {}})
    ]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    return path


def test_load_rules_file(tmp_path: Path) -> None:
    """A rules file becomes rules, in order."""
    path = write(
        tmp_path,
        """
[[rules]]
name = "fake token"
dir = "s2c"
method = "attestation/generate"
action = "reply"
result = { token = "T" }

[[rules]]
name = "strip trace"
dir = "c2s"
action = "patch"
remove = ["/trace"]
""",
    )
    first, second = load_rules([path])
    assert (first.name, first.dir, first.result, first.error) == (
        "fake token",
        S2C,
        {"token": "T"},
        None,
    )
    assert (second.action, second.remove) == ("patch", ("/trace",))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[rules]]\nname = "x"\naction = "explode"\n',
            "rule 'x': action: 'explode' is not one of",
        ),
        ('[[rules]]\nname = "x"\naction = "reply"\n', "rule 'x': (rule): {'name': 'x'"),
        ('[[rules]]\nname = "x"\naction = "drop"\ndir = "up"\n', "rule 'x': dir: 'up' is not one"),
        (
            '[[rules]]\nname = "x"\naction = "patch"\nset = { "a" = 1 }\n',
            "rule 'x': set: 'a' does not match '^/'",
        ),
        (
            '[[rules]]\nname = "x"\naction = "drop"\nbogus = 1\n',
            "rule 'x': (rule): Additional properties are not allowed ('bogus' was unexpected)",
        ),
        (
            '[[rules]]\nname = "x"\naction = "drop"\n[[rules]]\nname = "x"\naction = "drop"\n',
            "rule 'x': the name is used twice",
        ),
        ("rules = 1\n", "expected only [[rules]] tables"),
        ("[[rules]\n", "not valid TOML"),
    ],
)
def test_invalid_rule_files_name_file_rule_and_problem(
    tmp_path: Path, text: str, message: str
) -> None:
    """Invalid files fail at startup with the file, the rule and what is wrong."""
    path = write(tmp_path, text)
    with pytest.raises(RuleError) as info:
        load_rules([path])
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_missing_rules_file(tmp_path: Path) -> None:
    """A missing file is named."""
    with pytest.raises(RuleError, match=r"rules file .*nope\.toml does not exist"):
        load_rules([tmp_path / "nope.toml"])


def test_code_built_rules_are_checked_and_typed() -> None:
    """A rule built in code is checked against the rules-file schema and gets enums; a reply
    without error sends result (null when not given), never "error": null."""
    with pytest.raises(RuleError, match=r"rule 'r': action 'frobnicate' is not one of: patch"):
        Rule("r", "frobnicate")  # type: ignore[arg-type]
    with pytest.raises(RuleError) as info:
        Rule("d", Action.INJECT, to=Towards.SERVER)
    assert str(info.value) == "rule 'd': (rule): 'message' is a required property"
    rule = Rule("r", "reply", method="model/list")  # type: ignore[arg-type]
    assert (rule.action, rule.position) == (Action.REPLY, Position.AFTER)
    decision = Conn(rule).send(C2S, {"id": 3, "method": "model/list"})
    assert decision.to_sender == [("r", b'{"id":3,"result":null}')]


def test_a_rule_that_raises_is_logged_and_the_message_goes_on(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any exception from a rule (not only RuleFailure) is logged with the rule's name; the
    message is forwarded unchanged and later rules still run."""
    broken = Rule("broken", Action.DROP, method="a")
    later = Rule("later", Action.DELAY, method="a", ms=5)
    engine = Engine([broken, later])
    original = engine._act

    def act(rule: Rule, *args: Any) -> Any:
        if rule is broken:
            raise ZeroDivisionError("boom")
        return original(rule, *args)

    monkeypatch.setattr(engine, "_act", act)
    raw = b'{"method":"a"}'
    with caplog.at_level(logging.ERROR, logger="rpctape.rules"):
        decision = engine.decide(C2S, raw, parse(raw), None)
    assert (decision.forward, decision.delay_ms, decision.applied) == (
        raw,
        5,
        [("later", Action.DELAY)],
    )
    assert "rule 'broken' raised on a (left unchanged)" in caplog.text
    assert "ZeroDivisionError: boom" in caplog.text


def test_a_stalled_direction_takes_nothing_more() -> None:
    """After Engine.stall(S2C): every server message is held back with the stalling rule
    named, and rpctape's own messages to the client are taken out; the client's messages
    still go on."""
    conn = Conn(
        Rule("answer", Action.REPLY, dir=C2S, method="local", result=1),
        Rule("hello", Action.INJECT, dir=C2S, method="n", to=Towards.CLIENT,
             message={"method": "hi"}),
    )  # fmt: skip
    conn.engine.stall(S2C, "the stall")
    assert conn.engine.stalled(S2C) == "the stall" and conn.engine.stalled(C2S) is None
    server = conn.send(S2C, {"method": "x"})
    assert (server.forward, server.applied) == (None, [("the stall", "stall")])
    assert conn.send(S2C, b"not json").forward is None
    local = conn.send(C2S, {"id": 1, "method": "local"})
    assert (local.forward, local.to_sender) == (None, [])
    note = conn.send(C2S, {"method": "n"})
    assert note.forward == b'{"method":"n"}' and note.after == []


def test_a_rule_built_in_code_acts_through_apply() -> None:
    """A Rule subclass overriding apply and label: the engine calls it and names its label;
    frames sent in a message's place make the decision touched."""

    class Swap(Rule):
        @property
        def label(self) -> str:
            return "swap"

        def apply(self, engine: Engine, direction: Direction, raw: bytes, parsed: Any,
                  patched: Any, decision: Decision) -> Any:  # fmt: skip
            decision.instead.append((self.name, raw.upper()))
            decision.forward = None
            return patched

    decision = Conn(Swap("s", Action.DROP, method="m")).send(S2C, b'{"method":"m"}')
    assert decision.instead == [("s", b'{"METHOD":"M"}')]
    assert decision.applied == [("s", "swap")] and not decision.untouched
