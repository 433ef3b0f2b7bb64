"""The official Python SDK (`openai-codex`) drives corpus methods through its own calls, against
`rpctape-codex` replaying the corpus cassettes (cassettes/corpus/VERSION/): no codex, no backend.

Each test replays one cassette from its start: every recorded client request is sent by the
SDK, with the SDK's typed call where it has one for the method (SDK_CALLS) and its generic
`request` otherwise, with the recorded params (thread and turn ids are the recorded ones, since
the replay answers with the recorded results). The session must be clean (`--strict`).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from openai_codex import CodexConfig
from openai_codex.client import CodexClient
from pydantic import BaseModel, ConfigDict

from proxy.core.cassette import load
from proxy.pytest_plugin import standin_executable
from tests.corpus_driver import CORPUS

pytestmark = pytest.mark.e2e

Params = dict[str, Any]


class AnyResult(BaseModel):
    """Whatever a method without a typed SDK call returns."""

    model_config = ConfigDict(extra="allow")


def _rest(params: Params, *drop: str) -> Params:
    return {k: v for k, v in params.items() if k not in drop}


SDK_CALLS: dict[str, Callable[[CodexClient, Params], object]] = {
    "thread/start": lambda c, p: c.thread_start(p),
    "thread/name/set": lambda c, p: c.thread_set_name(p["threadId"], p["name"]),
    "thread/list": lambda c, p: c.thread_list(p),
    "thread/resume": lambda c, p: c.thread_resume(p["threadId"], _rest(p, "threadId")),
    "thread/fork": lambda c, p: c.thread_fork(p["threadId"], _rest(p, "threadId")),
    "thread/archive": lambda c, p: c.thread_archive(p["threadId"]),
    "thread/unarchive": lambda c, p: c.thread_unarchive(p["threadId"]),
    "thread/compact/start": lambda c, p: c.thread_compact(p["threadId"]),
    "thread/goal/set": lambda c, p: c.thread_goal_set(p["threadId"], objective=p["objective"]),
    "thread/goal/clear": lambda c, p: c.thread_goal_clear(p["threadId"]),
    "turn/start": lambda c, p: c.turn_start(
        p["threadId"], p["input"], _rest(p, "threadId", "input")
    ),
    "turn/steer": lambda c, p: c.turn_steer(p["threadId"], p["expectedTurnId"], p["input"]),
    "turn/interrupt": lambda c, p: c.turn_interrupt(p["threadId"], p["turnId"]),
    "account/read": lambda c, p: c.account_read(p),
    "account/login/start": lambda c, p: c.account_login_start(p),
    "account/login/cancel": lambda c, p: c.account_login_cancel(p["loginId"]),
    "account/logout": lambda c, p: c.account_logout(),
}
"""Corpus methods the SDK has a call for, and how to make it send the recorded params."""


def recorded_requests(cassette: Path) -> list[tuple[str, Params | None]]:
    """The client requests of the cassette's connection, after initialize, in order."""
    return [
        (e["method"], e["msg"].get("params"))
        for e in load(cassette).frames(1)
        if e["dir"] == "c2s" and e.get("type") == "request" and e["method"] != "initialize"
    ]


def drive(cassette: Path, tmp_path: Path) -> list[str]:
    """The SDK sends the cassette's requests; the methods it sent through a typed call."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    config = CodexConfig(
        codex_bin=str(standin_executable(tmp_path)),
        cwd=str(workdir),
        env={
            "RPCTAPE_CASSETTE": str(cassette),
            "RPCTAPE_RECORD_MODE": "none",
            # The SDK advertises experimentalApi, the corpus's initialize does not.
            "RPCTAPE_ARGS": "--strict --ignore /params/capabilities",
            "RPCTAPE_REPORT": str(tmp_path / "sessions.jsonl"),
            "CODEX_HOME": str(tmp_path / "no-codex-home"),
        },
    )
    typed = []
    client = CodexClient(config)
    try:
        client.start()
        client.initialize()
        for method, params in recorded_requests(cassette):
            call = SDK_CALLS.get(method)
            if call is not None:
                call(client, params or {})
                typed.append(method)
            else:
                client.request(method, params, response_model=AnyResult)
    finally:
        client.close()
    return typed


def session(tmp_path: Path) -> tuple[str, int, bool]:
    [report] = (tmp_path / "sessions.jsonl").read_bytes().splitlines()
    body = orjson.loads(report)
    return body["plan"], body["exit"], body["clean"]


CASES = {
    "thread-lifecycle": ["thread/start", "thread/name/set", "thread/list", "thread/resume",
                         "thread/archive", "thread/unarchive"],
    "thread-history": ["thread/start", "turn/start", "thread/fork"],
    "thread-goal": ["thread/start", "thread/goal/set", "thread/goal/clear"],
    "thread-compact": ["thread/start", "turn/start", "thread/compact/start"],
    "turn-steer-interrupt": ["thread/start", "turn/start", "turn/steer", "turn/interrupt"],
    "account": ["account/read", "account/login/start", "account/login/cancel",
                "account/login/start", "account/logout"],
}  # fmt: skip


@pytest.mark.parametrize("version", ["0.171.0", "0.169.0"])
@pytest.mark.parametrize("name", list(CASES))
def test_sdk_calls_replay_from_the_corpus(
    name: str, version: str, tmp_path: Path, tracked_popen: list[subprocess.Popen[str]]
) -> None:
    """The SDK's own calls for these methods are answered from the corpus, and the replayed
    session is clean: every recorded client message matched, in order."""
    typed = drive(CORPUS / version / f"{name}.jsonl", tmp_path)
    assert typed == CASES[name]
    assert session(tmp_path) == ("replay", 0, True)
