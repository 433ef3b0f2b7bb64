"""proxy.codex.version and proxy.core.dialect.recorded_version: which codex made a cassette."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.codex.dialect import CODEX
from proxy.codex.version import (
    version_from_cli_output,
    version_from_events,
    version_from_initialize,
    version_from_user_agent,
)
from proxy.core.cassette import Cassette, load
from proxy.core.dialect import NEUTRAL, RecordedVersion, VersionSource, recorded_version
from proxy.core.redact import marker
from tests.helpers import REPO

AGENT_169 = "rpctape-client/0.169.0 (Debian 12.0.0; x86_64) xterm (rpctape-client; 0.1.0)"
AGENT_171 = "probe/0.171.0 (Debian 12.0.0; x86_64) xterm (probe; 1.0)"
"""What codex 0.169.0 (a shipped cassette) and 0.171.0 (asked directly) answer."""


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("codex-cli 0.169.0\n", "0.169.0"),
        ("codex-cli 0.171.0", "0.171.0"),
        ("codex-cli 0.172.0-alpha.3\n", "0.172.0-alpha.3"),
        ("codex-cli\n", None),
    ],
)
def test_version_from_cli_output(text: str, version: str | None) -> None:
    assert version_from_cli_output(text) == version


@pytest.mark.parametrize(
    ("agent", "version"),
    [
        (AGENT_169, "0.169.0"),
        (AGENT_171, "0.171.0"),
        ("my/client/0.170.1 (Darwin 24.1; arm64) iTerm (my/client; 2.0.1)", "0.170.1"),
        ("codex_cli_rs/0.172.0-alpha.1 (Linux; x86_64)", "0.172.0-alpha.1"),
        ("codex_cli_rs/0.169.0", "0.169.0"),
        (marker(AGENT_169), None),  # --redact-key userAgent
        ("client 1.2.3 (x; y)", None),
    ],
)
def test_version_from_user_agent(agent: str, version: str | None) -> None:
    """The first ``/VERSION`` after the client's name; a redacted agent holds none."""
    assert version_from_user_agent(agent) == version


def test_version_from_initialize() -> None:
    assert version_from_initialize({"userAgent": AGENT_171, "codexHome": "/h"}) == "0.171.0"
    assert version_from_initialize({"codexHome": "/h"}) is None
    assert version_from_initialize(None) is None


def _text(direction: str, msg: Any, response_to: str | None = None) -> dict[str, Any]:
    event = {"seq": 1, "t": 0, "conn": 1, "kind": "text", "dir": direction, "msg": msg}
    return event | ({"response_to": response_to} if response_to else {})


def test_version_from_events_initialize_first_then_cli_version() -> None:
    """initialize's answer wins; a redacted userAgent falls back to the thread's
    cliVersion; a client saying a version proves nothing."""
    init = _text("s2c", {"id": 1, "result": {"userAgent": AGENT_171}}, "initialize")
    thread = _text("s2c", {"id": 2, "result": {"thread": {"cliVersion": "0.169.0"}}}, "x")
    params = {"thread": {"cliVersion": "0.1.0"}}
    started = _text("s2c", {"method": "thread/started", "params": params})
    fake = _text("c2s", {"id": 1, "result": {"userAgent": "a/9.9.9"}}, "initialize")
    assert version_from_events([fake, thread, init]) == "0.171.0"
    redacted = _text("s2c", {"id": 1, "result": {"userAgent": marker("x")}}, "initialize")
    assert version_from_events([redacted, started, thread]) == "0.1.0"
    assert version_from_events([redacted, fake]) is None


def test_the_shipped_cassettes_say_their_codex() -> None:
    """Every shipped cassette: meta.codex, and the initialize answer agrees (the corpus has
    a folder per codex version)."""
    for path in sorted((REPO / "cassettes").rglob("*.jsonl")):
        tape = load(path)
        corpus = path.parent.parent.name == "corpus"
        version = path.parent.name if corpus else "0.169.0"
        assert recorded_version(tape, CODEX) == RecordedVersion(version, VersionSource.META), path
        if any(e.get("method") == "initialize" for e in tape.events):
            assert CODEX.server_version(tape.events) == version, path


def test_recorded_version_header_then_meta_then_the_recording() -> None:
    tape = load(REPO / "cassettes" / "two-turns.jsonl")
    events = tape.events

    def version(header: dict[str, Any], dialect: Any = CODEX) -> RecordedVersion | None:
        return recorded_version(Cassette(None, {"rpctape": 1, **header}, events), dialect)

    both = {"codex": "0.171.0", "meta": {"codex": "0.170.0"}}
    assert version(both) == RecordedVersion("0.171.0", VersionSource.HEADER)
    assert version({"meta": {"codex": "0.170.0"}}) == RecordedVersion("0.170.0", VersionSource.META)
    assert version({"meta": {}}) == RecordedVersion("0.169.0", VersionSource.RECORDING)
    assert version({"meta": {}}, NEUTRAL) is None
    assert version({"codex": "", "meta": {"codex": 3}}) == RecordedVersion(
        "0.169.0", VersionSource.RECORDING
    )
    assert RecordedVersion("0.169.0", VersionSource.META).describe() == "0.169.0 (meta)"
