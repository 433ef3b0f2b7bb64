"""rpctape's `rpctape_codex` fixture used as an SDK user would: the official `openai-codex` SDK
started with the stand-in as its codex binary. The first run records (record mode once), the
next ones replay from tests' cassettes/ with no codex and no model.

Copied into a temporary project and run by tests/test_pytest_plugin.py; not collected here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from openai_codex import ApprovalMode, Codex, CodexConfig

from proxy.pytest_plugin import CodexStandin


@pytest.mark.rpctape(cassette="sdk-two-turns.jsonl", strict=True)
def test_two_turns(rpctape_codex: CodexStandin, tmp_path: Path) -> None:
    """Two turns on one thread, in a working directory that changes from run to run."""
    config = CodexConfig(codex_bin=str(rpctape_codex.path), cwd=str(tmp_path),
                         env=rpctape_codex.env)  # fmt: skip
    with Codex(config) as codex:
        thread = codex.thread_start(approval_mode=ApprovalMode.deny_all, cwd=str(tmp_path))
        assert thread.run("Say one.").final_response == "First answer."
        assert thread.run("Say two.").final_response == "Second answer."
