"""The fault recipes of docs/replay.md ("Faults: recipes"), as the suite runs them.

Each recipe is a test an SDK user can copy: the official SDK's client (`openai-codex`) on the
`rpctape_codex` fixture, replaying cassettes/turn-streamed.jsonl (the suite's
`rpctape_cassette_dir` is the repository's cassettes/) with one fault from the marker. The
docs quote this module's code verbatim; the last test checks that they still do.
"""

from __future__ import annotations

# --8<-- [start:helpers]
import contextlib
import time
from collections.abc import Iterator

import pytest
from openai_codex import CodexConfig, CodexRpcError, TransportClosedError
from openai_codex.client import CodexClient
from openai_codex.generated.v2_all import AgentMessageThreadItem, ThreadStartResponse
from openai_codex.models import AgentMessageDeltaNotification, TurnCompletedNotification
from openai_codex.retry import retry_on_overload
from openai_codex.types import Turn

from proxy.pytest_plugin import CodexStandin

TEXT = "Hello from the recorded turn, streamed in deltas."  # what the recorded turn says


@contextlib.contextmanager
def codex_client(standin: CodexStandin) -> Iterator[CodexClient]:
    """The SDK's client on rpctape-codex; closed with its child's pipes (the SDK's own
    close() leaves them open, which warnings-as-errors reports)."""
    client = CodexClient(CodexConfig(codex_bin=str(standin.path), env=standin.env))
    client.start()
    proc = client._proc
    assert proc is not None
    try:
        yield client
    finally:
        client.close()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def run_turn(client: CodexClient, thread_id: str, text: str) -> tuple[list[str], Turn]:
    """One turn: the agent message deltas as they came, and the completed turn."""
    turn_id = client.turn_start(thread_id, text).turn.id
    deltas: list[str] = []
    while True:
        payload = client.next_turn_notification(turn_id).payload
        if isinstance(payload, AgentMessageDeltaNotification):
            deltas.append(payload.delta)
        elif isinstance(payload, TurnCompletedNotification):
            return deltas, payload.turn


def agent_text(turn: Turn) -> str:
    """The turn's final agent message, whole."""
    return "".join(i.root.text for i in turn.items if isinstance(i.root, AgentMessageThreadItem))
# --8<-- [end:helpers]


# --8<-- [start:overload-as-sent]
@pytest.mark.rpctape(cassette="turn-streamed.jsonl", ignore=["/params/capabilities"],
                     faults=["thread/start:error"])  # fmt: skip
def test_overload_as_codex_sends_it_is_not_retried(rpctape_codex: CodexStandin) -> None:
    """codex's own overload error has no `data`: the SDK's retry_on_overload gives up at
    once, and the client must cope with a CodexRpcError -32001."""
    attempts = 0
    with codex_client(rpctape_codex) as client:
        client.initialize()

        def start_thread() -> ThreadStartResponse:
            nonlocal attempts
            attempts += 1
            return client.thread_start({})

        with pytest.raises(CodexRpcError) as caught:
            retry_on_overload(start_thread)
    assert (caught.value.code, caught.value.data, attempts) == (-32001, None, 1)
    assert caught.value.message == "Server overloaded; retry later."
# --8<-- [end:overload-as-sent]


# --8<-- [start:overload-retryable]
@pytest.mark.rpctape(cassette="turn-streamed.jsonl", ignore=["/params/capabilities"],
                     rules=["rules/overloaded-once.toml"], strict=True)  # fmt: skip
def test_a_retryable_overload_is_retried(rpctape_codex: CodexStandin) -> None:
    """The first thread/start gets the overload error with `data` saying server_overloaded
    (the rules file): retry_on_overload retries, and the retry gets the recorded thread."""
    attempts = 0
    with codex_client(rpctape_codex) as client:
        client.initialize()

        def start_thread() -> ThreadStartResponse:
            nonlocal attempts
            attempts += 1
            return client.thread_start({})

        started = retry_on_overload(start_thread, initial_delay_s=0.01)
        deltas, turn = run_turn(client, started.thread.id, "Say hello.")
    assert attempts == 2
    assert "".join(deltas) == agent_text(turn) == TEXT
# --8<-- [end:overload-retryable]


# --8<-- [start:drop]
@pytest.mark.rpctape(cassette="turn-streamed.jsonl", ignore=["/params/capabilities"],
                     faults=["item/agentMessage/delta#2:drop"], strict=True)  # fmt: skip
def test_a_delta_lost_mid_stream(rpctape_codex: CodexStandin) -> None:
    """The second delta never arrives: text pieced together from deltas misses it; the
    completed turn still carries the whole message."""
    with codex_client(rpctape_codex) as client:
        client.initialize()
        thread = client.thread_start({})
        deltas, turn = run_turn(client, thread.thread.id, "Say hello.")
    assert "".join(deltas) == "Hello from the in deltas."
    assert agent_text(turn) == TEXT
# --8<-- [end:drop]


# --8<-- [start:disconnect]
@pytest.mark.rpctape(cassette="turn-streamed.jsonl", ignore=["/params/capabilities"],
                     faults=["thread/start:disconnect"])  # fmt: skip
def test_codex_goes_away_after_initialize(rpctape_codex: CodexStandin) -> None:
    """initialize works, then codex's stdout ends instead of the thread/start answer: the
    SDK raises TransportClosedError; rpctape-codex exits 4 (a disconnect fault)."""
    with codex_client(rpctape_codex) as client:
        client.initialize()
        with pytest.raises(TransportClosedError) as caught:
            client.thread_start({})
    assert str(caught.value) == "Codex process closed stdout. stderr_tail="
    [session] = rpctape_codex.sessions()
    assert session["exit"] == 4
# --8<-- [end:disconnect]


# --8<-- [start:slow]
@pytest.mark.rpctape(cassette="turn-streamed.jsonl", ignore=["/params/capabilities"],
                     faults=["item/agentMessage/delta#2:delay=1s"], strict=True)  # fmt: skip
def test_a_slow_stream_still_completes(rpctape_codex: CodexStandin) -> None:
    """The second delta comes a second late: the turn takes that much longer and still
    completes with every delta, in order."""
    with codex_client(rpctape_codex) as client:
        client.initialize()
        thread = client.thread_start({})
        start = time.monotonic()
        deltas, turn = run_turn(client, thread.thread.id, "Say hello.")
        took = time.monotonic() - start
    assert "".join(deltas) == agent_text(turn) == TEXT
    assert took >= 1.0
# --8<-- [end:slow]


def test_the_docs_quote_the_recipes_verbatim() -> None:
    """docs/replay.md shows each recipe of this module (the code between its --8<-- marks)
    and the rules file, word for word, each in its own code block."""
    import re
    from pathlib import Path

    here = Path(__file__)
    docs = (here.parent.parent / "docs" / "replay.md").read_text()
    blocks = re.findall(r"```(?:python|toml)\n(.*?)```\n", docs, re.S)
    marks = r"# --8<-- \[start:(?P<name>[\w-]+)\]\n(?P<code>.*?)# --8<-- \[end:(?P=name)\]\n"
    recipes = {m["name"]: m["code"] for m in re.finditer(marks, here.read_text(), re.S)}
    assert sorted(recipes) == sorted(
        ["helpers", "overload-as-sent", "overload-retryable", "drop", "disconnect", "slow"]
    )
    for name, code in recipes.items():
        assert code in blocks, f"docs/replay.md does not quote the recipe {name!r} as it is"
    assert (here.parent / "rules" / "overloaded-once.toml").read_text() in blocks
