"""The `rpctape_codex` fixture with a stdio client that answers a server request: recorded
accepting (first run), then replayed declining (DECISION=decline): the plugin fails the test
once, with rpctape's explanation as the failure message.

Copied into a temporary project (with tests/fake_codex.py as its real codex) and run by
tests/test_pytest_plugin.py; not collected here.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from proxy.pytest_plugin import CodexStandin


def converse(standin: CodexStandin, decision: str) -> list[str]:
    """Ask, answer the server's request with ``decision``; every line the server wrote."""
    with subprocess.Popen(
        standin.argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **standin.env},
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write('{"id": 1, "method": "ask", "params": "x"}\n')
        proc.stdin.flush()
        lines = [proc.stdout.readline()]
        proc.stdin.write(json.dumps({"id": "s1", "result": {"decision": decision}}) + "\n")
        proc.stdin.flush()
        lines += [proc.stdout.readline()]
        proc.stdin.close()
        proc.wait(30)
    return [line for line in lines if line]


@pytest.mark.rpctape(cassette="ask.jsonl")
def test_ask(rpctape_codex: CodexStandin) -> None:
    """The client does not check the reply: the fixture notices the miss."""
    converse(rpctape_codex, os.environ.get("DECISION", "accept"))
