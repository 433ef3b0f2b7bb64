"""`rpctape verify` of corpus cassettes against the real app-server of each version, on the
stage their scenario was recorded on (scripts/verify_cassettes.py --corpus). A bounded sample:
the full run over every corpus cassette is the script's (docs/drift.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from corpus.scenarios import SCENARIOS  # scripts/ is on pytest's pythonpath
from verify_cassettes import verify_corpus_one

from proxy.codex.appserver import find_codex
from tests.corpus_driver import CORPUS

pytestmark = pytest.mark.e2e

SAMPLE = ("fs", "command-exec")
"""Client-driven shapes: fs/changed that no request caused, interleaved exec writes."""


@pytest.mark.parametrize("name", SAMPLE)
async def test_corpus_cassette_verifies_against_both_versions(
    name: str, codex_version: str, tmp_path: Path
) -> None:
    """The 0.169.0 recording played against each version: same messages in the same order;
    against 0.171.0 only the version in initialize's userAgent differs."""
    scenario = next(s for s in SCENARIOS if s.name == name)
    cassette = tmp_path / f"{name}.jsonl"
    cassette.write_bytes((CORPUS / "0.169.0" / f"{name}.jsonl").read_bytes())
    outcome = await verify_corpus_one(scenario, cassette, find_codex(version=codex_version), [])
    assert outcome.failures == []
    assert outcome.diff is not None
    entries = [
        (e.kind.value, e.dir.value, e.type, e.method, [c.pointer for c in e.changes])
        for e in outcome.diff.entries
    ]
    if codex_version == "0.169.0":
        assert entries == []
    else:
        assert entries == [("changed", "s2c", "response", "initialize", ["/result/userAgent"])]
