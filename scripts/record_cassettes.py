"""Record the real cassettes in cassettes/ from the real codex app-server, offline.

    .venv/bin/python scripts/record_cassettes.py            # all scenarios into cassettes/
    .venv/bin/python scripts/record_cassettes.py --only two-turns --out /tmp/c
    .venv/bin/python scripts/record_cassettes.py serve      # an upstream for the pytest plugin
    .venv/bin/python scripts/record_cassettes.py --codex 0.171.0 --out /tmp/c171   # another codex
    .venv/bin/python scripts/record_cassettes.py --corpus --codex 0.171.0  # the protocol corpus
    .venv/bin/python scripts/record_cassettes.py --corpus --codex 0.169.0 --only fs

Each scenario starts the fake model backend and the real app-server (proxy.codex.backend,
proxy.codex.appserver; codex from `./dev setup`), records one session of the built-in client
through `recording_proxy` with redaction on into a temporary file, and renames it over
cassettes/NAME.jsonl when the session succeeded. Every process it starts is stopped before
it returns. `--corpus` records the protocol corpus instead (scripts/corpus/scenarios.py,
cassettes/corpus/README.md) into cassettes/corpus/VERSION/. `--codex` picks the codex: a
version installed by `./dev setup` (`0.171.0`) or a
path to any codex executable (default: the pinned one, or $RPCTAPE_CODEX). `serve` starts a
backend and an app-server and prints `listening on ws://...`, then serves until SIGINT or
SIGTERM (the command form of the plugin's `rpctape_upstream`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from corpus.driver import record_scenario  # noqa: E402
from corpus.scenarios import SCENARIOS as CORPUS  # noqa: E402

from proxy import recording_proxy  # noqa: E402
from proxy.codex.appserver import AppServer, choose_codex, find_codex  # noqa: E402
from proxy.codex.backend import FakeBackend, Reply  # noqa: E402
from proxy.codex.client import ClientOptions, SessionClient  # noqa: E402
from proxy.codex.schema import codex_version  # noqa: E402
from tests.rejoin import record_rejoin  # noqa: E402

APPROVAL_ARGUMENTS = {
    "cmd": "touch x",
    "sandbox_permissions": "require_escalated",
    "justification": "why",
}


@dataclass(frozen=True)
class Scenario:
    """One cassette: how the backend and app-server are set up and what the client does."""

    name: str
    description: str
    drive: Callable[[SessionClient], Awaitable[None]]
    replies: tuple[Reply, ...] = ()
    approval_policy: str = "never"
    string_ids: bool = False
    auth: str = "apikey"
    attestation_token: str | None = None
    """The client advertises requestAttestation and answers attestation/generate with it."""


async def _metadata(client: SessionClient) -> None:
    await client.initialize()
    await client.call("model/list", {})
    await client.call("config/read", {})


async def _one_turn(client: SessionClient) -> None:
    await client.initialize()
    thread_id = await client.start_thread()
    await client.run_turn(thread_id, "Say hello.")


async def _two_turns(client: SessionClient) -> None:
    await client.initialize()
    thread_id = await client.start_thread()
    await client.run_turn(thread_id, "First question.")
    await client.run_turn(thread_id, "Second question.")


async def _approval(client: SessionClient) -> None:
    await client.initialize()
    thread_id = await client.start_thread()
    await client.run_turn(thread_id, "Touch x.")


SCENARIOS = (
    Scenario(
        "initialize-model-list-config",
        "initialize, initialized, model/list, config/read (integer ids)",
        _metadata,
    ),
    Scenario(
        "turn-streamed",
        "initialize, thread/start, one turn with streamed agent message deltas (string ids)",
        _one_turn,
        replies=(Reply.text("Hello from the recorded turn, streamed in deltas."),),
        string_ids=True,
    ),
    Scenario(
        "two-turns",
        "initialize, thread/start, two turns on the same thread (integer ids)",
        _two_turns,
        replies=(Reply.text("First answer."), Reply.text("Second answer.")),
    ),
    Scenario(
        "command-approval",
        "a turn whose exec_command asks for approval (approval_policy on-request), "
        "answered accept (string ids)",
        _approval,
        replies=(
            Reply.function_call(name="exec_command", arguments=APPROVAL_ARGUMENTS),
            Reply.text("Done: x is touched."),
        ),
        approval_policy="on-request",
        string_ids=True,
    ),
    Scenario(
        "attestation",
        "ChatGPT-auth mode: the client advertises requestAttestation and answers "
        "attestation/generate with a token before the turn's model request (integer ids)",
        _one_turn,
        replies=(Reply.text("Attested answer."),),
        auth="chatgpt",
        attestation_token="v1.recorded-client-token",
    ),
)


async def record(scenario: Scenario, out: Path, codex: Path | None = None) -> Path:
    """Record ``scenario`` into ``out/NAME.jsonl`` (replaced only if the session succeeds)."""
    codex = codex or find_codex()
    target = out / f"{scenario.name}.jsonl"
    temp = out / f".{scenario.name}.jsonl.recording"
    temp.unlink(missing_ok=True)
    meta = {
        "made_by": "scripts/record_cassettes.py",
        "scenario": scenario.name,
        "codex": codex_version(codex),
    }
    try:
        async with (
            FakeBackend() as backend,
            AppServer(
                backend.url, codex, approval_policy=scenario.approval_policy, auth=scenario.auth
            ) as server,
        ):
            backend.script(*scenario.replies)
            options = ClientOptions(
                string_ids=scenario.string_ids,
                request_attestation=scenario.attestation_token is not None,
                attestation_token=scenario.attestation_token,
            )
            async with (
                recording_proxy(server.url, temp, meta=meta) as url,
                SessionClient(url, options) as client,
            ):
                await scenario.drive(client)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    return target


REJOIN = "rejoin"
REJOIN_DESCRIPTION = (
    "two clients, one thread: A starts a turn streaming 10 deltas 100 ms apart; after 3 of "
    "them B connects, initializes and resumes A's thread with thread/resume, and both receive "
    "the rest of the turn (integer ids; docs/replay.md, many clients)"
)


async def record_rejoin_cassette(out: Path, codex: Path | None = None) -> Path:
    """Record the thread rejoin scenario (tests/rejoin.py) into ``out/many-clients/rejoin.jsonl``
    (a folder of its own: the tests that replay every cassette of ``out`` drive one
    connection at a time)."""
    codex = codex or find_codex()
    folder = out / "many-clients"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{REJOIN}.jsonl"
    temp = folder / f".{REJOIN}.jsonl.recording"
    temp.unlink(missing_ok=True)
    meta = {
        "made_by": "scripts/record_cassettes.py",
        "scenario": REJOIN,
        "codex": codex_version(codex),
    }
    try:
        await record_rejoin(codex, temp, meta)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    return target


async def serve(codex: Path | None = None) -> None:
    """Backend + app-server until SIGINT/SIGTERM; prints ``listening on ws://...`` first."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with FakeBackend() as backend, AppServer(backend.url, codex) as server:
        print(f"listening on {server.url}", flush=True)
        await stop.wait()


def record_corpus(codex: Path, out: Path | None, only: list[str] | None) -> int:
    """Record every corpus scenario that applies to ``codex``'s version (or those in
    ``only``) into ``out`` (default ``cassettes/corpus/VERSION/``); 1 if one failed."""
    version = codex_version(codex)
    folder = out or REPO / "cassettes" / "corpus" / version
    failed = 0
    for scenario in CORPUS:
        if (only and scenario.name not in only) or not scenario.applies_to(version):
            continue
        target = folder / f"{scenario.name}.jsonl"
        try:
            path = asyncio.run(record_scenario(scenario, target, codex, version))
        except Exception as exc:  # one broken scenario does not stop the others
            print(f"FAILED {scenario.name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"recorded {path} ({path.stat().st_size} bytes)")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("command", nargs="?", choices=["record", "serve"], default="record")
    parser.add_argument("--out", type=Path, help="default: cassettes/ (cassettes/corpus/VERSION/)")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted({*(s.name for s in SCENARIOS), REJOIN, *(s.name for s in CORPUS)}),
        help="repeatable",
    )
    parser.add_argument(
        "--corpus", action="store_true", help="record the protocol corpus (cassettes/corpus/)"
    )
    parser.add_argument(
        "--codex", help="a codex version from .tools/ (e.g. 0.171.0) or a codex executable"
    )
    args = parser.parse_args(argv)
    codex = choose_codex(args.codex)
    if args.command == "serve":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(codex))
        return 0
    if args.corpus:
        return record_corpus(codex, args.out, args.only)
    args.out = args.out or REPO / "cassettes"
    args.out.mkdir(parents=True, exist_ok=True)
    for scenario in SCENARIOS:
        if args.only and scenario.name not in args.only:
            continue
        path = asyncio.run(record(scenario, args.out, codex))
        print(f"recorded {path} ({path.stat().st_size} bytes): {scenario.description}")
    if not args.only or REJOIN in args.only:
        path = asyncio.run(record_rejoin_cassette(args.out, codex))
        print(f"recorded {path} ({path.stat().st_size} bytes): {REJOIN_DESCRIPTION}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
