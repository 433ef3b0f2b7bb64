"""Verify the shipped cassettes against a real codex app-server, offline (docs/drift.md).

    .venv/bin/python scripts/verify_cassettes.py --codex 0.171.0            # all of them
    .venv/bin/python scripts/verify_cassettes.py --codex 0.169.0 --only two-turns
    .venv/bin/python scripts/verify_cassettes.py --codex 0.171.0 --update   # re-record them
    .venv/bin/python scripts/verify_cassettes.py --corpus --codex 0.169.0   # the corpus, both
    .venv/bin/python scripts/verify_cassettes.py --corpus --codex 0.171.0 --cassettes \
        cassettes/corpus/0.169.0 --only fs                                  # one, across versions

For each cassette of cassettes/ it starts the fake model backend scripted with the replies the
cassette was recorded with (the scenario of scripts/record_cassettes.py named in the
cassette's header) and the real app-server configured the same way (approval policy, auth
mode), then runs `rpctape verify CASSETTE --upstream URL` (the same code, in-process) and
prints its report. Every process it starts is stopped before it returns. Exit 0 when every
cassette is equivalent.

With `--corpus`, the cassettes are the protocol corpus (cassettes/corpus/VERSION/NAME.jsonl,
default: both versions' folders) and the stage of each is its corpus scenario's
(scripts/corpus/driver.py `stage`: fixtures, stubs, backend, app-server configured alike).
`--ignore POINTER` hides members from the diff, as `rpctape verify --ignore` does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for entry in (REPO, REPO / "scripts"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from corpus.driver import CorpusScenario, stage  # noqa: E402
from corpus.scenarios import SCENARIOS as CORPUS  # noqa: E402
from record_cassettes import SCENARIOS, Scenario  # noqa: E402

from proxy.codex.appserver import AppServer, choose_codex  # noqa: E402
from proxy.codex.backend import FakeBackend  # noqa: E402
from proxy.codex.dialect import CODEX  # noqa: E402
from proxy.codex.schema import codex_version  # noqa: E402
from proxy.wire.recorded_client import (  # noqa: E402
    VerifyOutcome,
    default_out,
    render_outcome,
    settle,
    verify_cassette,
)
from proxy.wire.upstream import Upstream  # noqa: E402


async def verify_one(
    scenario: Scenario, cassette: Path, codex: Path, out: Path | None
) -> VerifyOutcome:
    """Backend + app-server set up as ``scenario`` was recorded; verify ``cassette`` there."""
    async with (
        FakeBackend() as backend,
        AppServer(
            backend.url, codex, approval_policy=scenario.approval_policy, auth=scenario.auth
        ) as server,
    ):
        backend.script(*scenario.replies)
        return await verify_cassette(
            cassette,
            Upstream.parse(server.url),
            out or default_out(cassette),
            meta={"made_by": "scripts/verify_cassettes.py", "codex": codex_version(codex)},
            dialect=CODEX,
        )


async def verify_corpus_one(
    scenario: CorpusScenario, cassette: Path, codex: Path, ignore: list[str]
) -> VerifyOutcome:
    """Set the stage of a corpus ``scenario`` with ``codex`` and verify ``cassette`` there."""
    async with stage(scenario, codex) as ready:
        return await verify_cassette(
            cassette,
            Upstream.parse(ready.server.url),
            default_out(cassette),
            ignore=ignore,
            meta={"made_by": "scripts/verify_cassettes.py --corpus", "codex": codex_version(codex)},
        )


def verify_corpus(
    codex: Path, folders: list[Path], only: list[str] | None, update: bool, ignore: list[str]
) -> int:
    """Verify every corpus cassette of ``folders`` against ``codex``; 1 if one differs."""
    failed = 0
    for folder in folders:
        for scenario in CORPUS:
            cassette = folder / f"{scenario.name}.jsonl"
            if (only and scenario.name not in only) or not cassette.exists():
                continue
            with contextlib.suppress(ValueError):
                cassette = cassette.resolve().relative_to(Path.cwd())
            outcome = asyncio.run(verify_corpus_one(scenario, cassette, codex, ignore))
            settle(outcome, update=update, keep=False)
            for line in render_outcome(outcome):
                print(line, flush=True)
            failed += not outcome.ok
    return 1 if failed and not update else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--codex", help="a codex version from .tools/ or a codex executable")
    parser.add_argument("--cassettes", type=Path, action="append", help="a folder (repeatable)")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted({s.name for s in SCENARIOS} | {s.name for s in CORPUS}),
    )
    parser.add_argument("--update", action="store_true", help="replace each cassette")
    parser.add_argument("--corpus", action="store_true", help="verify the protocol corpus")
    parser.add_argument("--ignore", action="append", default=[], help="a JSON pointer")
    args = parser.parse_args(argv)
    codex = choose_codex(args.codex)
    if args.corpus:
        corpus = REPO / "cassettes" / "corpus"
        folders = args.cassettes or [corpus / "0.169.0", corpus / "0.171.0"]
        return verify_corpus(codex, folders, args.only, args.update, args.ignore)
    args.cassettes = (args.cassettes or [REPO / "cassettes"])[0]
    failed = 0
    for scenario in SCENARIOS:
        if args.only and scenario.name not in args.only:
            continue
        cassette = args.cassettes / f"{scenario.name}.jsonl"
        with contextlib.suppress(ValueError):  # name it as the user would, from here
            cassette = cassette.resolve().relative_to(Path.cwd())
        outcome = asyncio.run(verify_one(scenario, cassette, codex, None))
        settle(outcome, update=args.update, keep=False)
        for line in render_outcome(outcome):
            print(line)
        failed += not outcome.ok
    return 1 if failed and not args.update else 0


if __name__ == "__main__":
    sys.exit(main())
