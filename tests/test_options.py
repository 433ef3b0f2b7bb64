"""The options model against every door: each option is accepted and reaches the session,
or is refused with the reason where it cannot apply.

The doors: the `rpctape record|replay|wrap` commands and `replay --stdio` (typer, words), the
stand-in's `RPCTAPE_ARGS` (words), the marker of both fixtures (keywords) and the library
(`proxy.wire.session.Session` keywords). Which option a door refuses is written out here by
hand (:data:`REFUSED`), not derived from the model, so the model is checked against it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import proxy.cli.sessions
from proxy.cli import app
from proxy.codex.standin import setup_from
from proxy.core.address import ListenAddress
from proxy.core.matching import Aspect
from proxy.core.modes import MatchOrder, OnMiss, Pace, RecordMode, Stale
from proxy.core.options import SPECS, Door, Kind, Settings, parse_words
from proxy.core.ordering import Order
from proxy.errors import RpctapeError, UsageError
from proxy.pytest_plugin import resolve_settings, standin_args
from proxy.wire.session import Session
from tests.helpers import fake_item

ROOT = Path(__file__).resolve().parent.parent
CASSETTE = ROOT / "cassettes" / "two-turns.jsonl"
runner = CliRunner()

RULES = '[[rules]]\nname = "t"\ndir = "s2c"\nmethod = "m"\naction = "drop"\n'

LISTENING = {"listen", "allow_origins", "token_file", "allow_remote", "handshake_timeout"}
REPLAYING = {
    "record_mode", "pace", "on_miss", "match", "match_on", "ignore", "allow_playback_repeats",
    "strict", "order", "hold_timeout", "report_json", "codex_version", "stale",
}  # fmt: skip
ACROSS = {"order", "hold_timeout"}

REFUSED: dict[Door, set[str]] = {
    Door.RECORD: REPLAYING,
    Door.REPLAY: {"overwrite"},
    Door.REPLAY_STDIO: {"overwrite"} | ACROSS | LISTENING,
    Door.WRAP: REPLAYING | LISTENING | {"upstream"},
    Door.STANDIN: {"overwrite", "upstream"} | ACROSS | LISTENING,
    Door.FIXTURE: {"overwrite"},
    Door.CODEX_FIXTURE: {"overwrite", "upstream"} | ACROSS | LISTENING,
    Door.LIBRARY: set(),
}
"""What each door refuses, by hand: stdio doors listen to nothing and serve one connection
(no order across connections); record and wrap only record; the stand-in and its fixture
record through the codex they run; only record and wrap make a new file every run."""

REASONS = {
    "listen": "serves one client on stdin and stdout; nothing listens",
    "order": "serves one connection per process, so there is no order across connections",
    "pace": "only records",
    "upstream": "records through the codex it runs",
    "overwrite": "follows its record mode to decide when a cassette is replaced",
}
"""The reason a door gives, for one option of each kind of refusal."""


def samples(folder: Path) -> dict[str, tuple[list[str], Any, Any]]:
    """Per option: its words (after the flag), the keyword value, and the value it must
    have in the resolved settings."""
    rules = folder / "r.toml"
    rules.write_text(RULES)
    token = folder / "token"
    token.write_text("s3cret\n")
    report = folder / "report.json"
    return {
        "record_mode": (["all"], "all", RecordMode.ALL),
        "upstream": (["ws://127.0.0.1:9"], "ws://127.0.0.1:9", "ws://127.0.0.1:9"),
        "overwrite": ([], True, True),
        "redact": ([], False, False),
        "redact_keys": (["k"], ["k"], ("k",)),
        "redact_values": (["corp-[0-9]+"], ["corp-[0-9]+"], ("corp-[0-9]+",)),
        "max_size": (["1024"], 1024, 1024),
        "connect_timeout": (["2.5"], 2.5, 2.5),
        "close_timeout": (["0.5"], 0.5, 0.5),
        "lock_timeout": (["5"], 5, 5.0),
        "rules": ([str(rules)], [str(rules)], (rules,)),
        "attest": (["inject:v1.T"], ["inject:v1.T"], ("inject:v1.T",)),
        "advertise_attestation": ([], True, True),
        "faults": (["thread/start:error"], ["thread/start:error"], ("thread/start:error",)),
        "pace": (["10"], 10, Pace(10.0)),
        "on_miss": (["close"], "close", OnMiss.CLOSE),
        "match": (["any-order"], "any-order", MatchOrder.ANY_ORDER),
        "match_on": (["exact"], "exact", frozenset(Aspect)),
        "ignore": (["/params/x"], ["/params/x"], ("/params/x",)),
        "allow_playback_repeats": ([], True, True),
        "strict": ([], True, True),
        "order": (["global"], "global", Order.GLOBAL),
        "hold_timeout": (["2.5"], 2.5, 2.5),
        "listen": (["ws://127.0.0.1:0"], "ws://127.0.0.1:0", ListenAddress("127.0.0.1", 0)),
        "allow_origins": (["http://x"], ["http://x"], frozenset({"http://x"})),
        "token_file": ([str(token)], str(token), token),
        "allow_remote": ([], True, True),
        "handshake_timeout": (["3"], 3, 3.0),
        "validate": ([], True, True),
        "codex": (["0.169.0"], "0.169.0", "0.169.0"),
        "schema": ([str(folder)], str(folder), folder),
        "report_json": ([str(report)], str(report), report),
        "codex_version": (["0.169.0"], "0.169.0", "0.169.0"),
        "stale": (["fail"], "fail", Stale.FAIL),
    }


NEEDED: dict[str, dict[str, Any]] = {
    "codex": {"validate": True},
    "schema": {"validate": True},
    "upstream": {"record_mode": "all"},
    "stale": {"codex_version": "0.169.0"},
}
"""Options that only make sense with another (refused alone, with that reason)."""


def test_every_option_has_a_sample() -> None:
    """A new option in the model needs a line here (and in REFUSED where it cannot apply)."""
    assert set(samples(Path("/tmp"))) == set(SPECS)


def needed(name: str, door: Door) -> dict[str, Any]:
    """The other options ``name`` needs, where the door takes them."""
    return {k: v for k, v in NEEDED.get(name, {}).items() if k not in REFUSED[door]}


def _words(name: str, words: list[str], door: Door) -> list[str]:
    flag = SPECS[name].flag
    out = [flag, *words]
    for other, value in needed(name, door).items():
        spec = SPECS[other]
        out += [spec.flag] if spec.kind is Kind.FLAG else [spec.flag, str(value)]
    return out


def _check(settings: Settings, name: str, expected: Any) -> None:
    assert getattr(settings, name) == expected, name


def _refusal(door: Door, name: str, label: str) -> str:
    return f"{label} does not apply to {door.value}: "


OPTIONS = sorted(SPECS)


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Settings]]:
    """The settings the CLI's session commands hand the session (which is not run)."""
    seen: list[Settings] = []

    class Captured(Session):
        def __init__(self, cassette: Any, *, settings: Settings, **_: Any) -> None:
            seen.append(settings)
            raise RpctapeError("captured")

    monkeypatch.setattr(proxy.cli.sessions, "Session", Captured)
    monkeypatch.setattr(proxy.cli.sessions, "_validator", lambda settings, only=None: None)
    yield seen


CLI_DOORS = {
    Door.RECORD: lambda c: ["record", "--cassette", str(c), "--upstream", "ws://127.0.0.1:9"],
    Door.REPLAY: lambda c: ["replay", str(CASSETTE)],
    Door.REPLAY_STDIO: lambda c: ["replay", str(CASSETTE), "--stdio"],
    Door.WRAP: lambda c: ["wrap", "--cassette", str(c)],
}


@pytest.mark.parametrize("door", list(CLI_DOORS), ids=lambda d: d.name)
@pytest.mark.parametrize("name", OPTIONS)
def test_the_commands(
    door: Door, name: str, tmp_path: Path, captured: list[Settings]
) -> None:
    """`rpctape record|replay|wrap` and `replay --stdio`: each option reaches the session,
    or the command refuses it with the reason (exit 2)."""
    words, _, expected = samples(tmp_path)[name]
    args = [*CLI_DOORS[door](tmp_path / "c.jsonl"), *_words(name, words, door)]
    if door is Door.WRAP:
        args += ["--", "true"]
    result = runner.invoke(app, args)
    if name in REFUSED[door]:
        assert result.exit_code == 2, result.output
        label = SPECS[name].flag
        assert f"rpctape: error: {_refusal(door, name, label)}" in result.stderr
        assert captured == []
        return
    assert result.stderr == "rpctape: error: captured\n", result.output
    (settings,) = captured
    _check(settings, name, expected)


@pytest.mark.parametrize("name", OPTIONS)
def test_rpctape_args(name: str, tmp_path: Path) -> None:
    """rpctape-codex's RPCTAPE_ARGS: the same words, the same checks."""
    words, _, expected = samples(tmp_path)[name]
    door = Door.STANDIN
    env = {"RPCTAPE_ARGS": " ".join(_words(name, words, door))}
    if name in REFUSED[door]:
        with pytest.raises(UsageError) as refused:
            setup_from(env)
        assert str(refused.value).startswith(_refusal(door, name, SPECS[name].flag))
        return
    _check(setup_from(env).settings, name, expected)


@pytest.mark.parametrize("door", [Door.FIXTURE, Door.CODEX_FIXTURE], ids=lambda d: d.name)
@pytest.mark.parametrize("name", OPTIONS)
def test_the_marker(door: Door, name: str, tmp_path: Path) -> None:
    """@pytest.mark.rpctape(name=value) for the rpctape and the rpctape_codex fixture; the
    stand-in's fixture hands it on as RPCTAPE_ARGS words, which mean the same there."""
    _, value, expected = samples(tmp_path)[name]
    marker = pytest.mark.rpctape(**{name: value, **needed(name, door)})
    item = fake_item(tmp_path, marker.mark)
    if name in REFUSED[door]:
        with pytest.raises(UsageError) as refused:
            resolve_settings(item, door)
        assert f"@pytest.mark.rpctape: {_refusal(door, name, f'{name}=')}" in str(refused.value)
        return
    resolved = resolve_settings(item, door)
    _check(resolved.settings, name, expected)
    if door is Door.CODEX_FIXTURE and name != "record_mode":
        words = " ".join(standin_args(resolved))
        handed_on = setup_from({"RPCTAPE_ARGS": words, "RPCTAPE_RECORD_MODE": "none"})
        _check(handed_on.settings, name, expected)


@pytest.mark.parametrize("name", OPTIONS)
def test_the_library(name: str, tmp_path: Path) -> None:
    """Session(cassette, name=value): every option is a keyword argument."""
    _, value, expected = samples(tmp_path)[name]
    session = Session(CASSETTE, **{name: value, **needed(name, Door.LIBRARY)})
    _check(session.settings, name, expected)


@pytest.mark.parametrize(("name", "door"), [
    ("listen", Door.REPLAY_STDIO), ("order", Door.STANDIN), ("hold_timeout", Door.CODEX_FIXTURE),
    ("pace", Door.RECORD), ("upstream", Door.WRAP), ("overwrite", Door.FIXTURE),
])  # fmt: skip
def test_refusals_say_why(name: str, door: Door) -> None:
    """The reason, in words a user reads: e.g. `order` on the rpctape_codex fixture, whose
    stand-in serves one connection per process."""
    kind = next(k for k in REASONS if SPECS[k].needs == SPECS[name].needs or k == name)
    with pytest.raises(UsageError) as refused:
        Settings.resolve(door, {name: samples(Path("/tmp"))[name][1]})
    assert REASONS[kind] in str(refused.value)


def test_replay_help_shows_the_recording_options_of_record() -> None:
    """`rpctape replay --help` lists the same redaction, size, origin and repeat options as
    `rpctape record` (one declaration each)."""
    shown = {}
    for command in ("record", "replay"):
        result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0
        shown[command] = result.output
    for flag in ("--redact-key", "--redact-value", "--no-redact", "--max-size",
                 "--allow-origin", "--fault", "--rules", "--attest"):  # fmt: skip
        assert flag in shown["record"] and flag in shown["replay"], flag
    assert "--allow-playback-repeats" in shown["replay"]
    assert "--allow-playback-repeats" not in shown["record"]  # it only records: hidden


def test_words_that_do_not_split_are_one_clear_error() -> None:
    """An unclosed quote in RPCTAPE_ARGS: the source and the shell's reason, no traceback."""
    with pytest.raises(UsageError, match=r"^\$RPCTAPE_ARGS: No closing quotation; valid options: "):
        parse_words('--pace "10', Door.STANDIN, source="$RPCTAPE_ARGS")
    assert parse_words("", Door.STANDIN, source="$RPCTAPE_ARGS") == {}
