"""``rpctape attest-check``: prove the x-oai-attestation plumbing end to end.

For each case, the real ``codex app-server`` (temporary CODEX_HOME, fake ChatGPT login)
runs against the fake model backend, behind the recording relay with the case's ``--attest``
switches, and the built-in client drives a turn. The verdict comes from the backend's request
log (the headers the server really sent) and the cassette (the attestation/generate requests).
The judging is pure (:func:`judge`); :func:`run_case` does the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..core.attest import METHOD, AttestMode, attestation_rules
from ..core.cassette import load
from .appserver import AppServer, AuthMode
from .backend import CHATGPT_RESPONSES_PATH, WEBSOCKET_MESSAGE, FakeBackend
from .client import ClientOptions, SessionClient
from .library import recording_proxy

HEADER = "x-oai-attestation"
CLIENT_TOKEN = "v1.client-token"


def envelope(status: int, token: str | None = None) -> str:
    """The header value the app-server sends: ``{"v":1,"s":STATUS[,"t":TOKEN]}``."""
    value: dict[str, Any] = {"v": 1, "s": status}
    if token is not None:
        value["t"] = token
    return orjson.dumps(value).decode()


@dataclass(frozen=True)
class Case:
    """One scenario: how it is set up and the header every scoped request must carry."""

    name: str
    attest: tuple[str, ...] = ()
    expected: str | None = None
    """The header on every scoped request; ``None``: absent everywhere."""
    client_advertises: bool = False
    client_token: str | None = None
    auth: AuthMode = AuthMode.CHATGPT
    responses_websocket: bool = False
    turns: int = 1
    expect_requests: bool = True
    """Whether the server is expected to send attestation/generate at all."""


CASES: tuple[Case, ...] = (
    Case("inject:T", ("inject:T",), envelope(0, "T")),
    Case(
        "client answers T, rewrite:U",
        ("rewrite:U",),
        envelope(0, "U"),
        client_advertises=True,
        client_token="T",
    ),
    Case("error", ("error",), envelope(2)),
    Case("silent", ("silent",), envelope(1)),
    Case(
        "client answers T, delay:500",
        ("delay:500",),
        envelope(1),
        client_advertises=True,
        client_token="T",
    ),
    Case("garbage", ("garbage",), envelope(4)),
    Case("capability not advertised", (), None, expect_requests=False),
    Case(
        "API-key provider",
        (),
        None,
        client_advertises=True,
        client_token=CLIENT_TOKEN,
        auth=AuthMode.API_KEY,
        expect_requests=False,
    ),
    Case(
        "Responses over websocket, inject:T",
        ("inject:T",),
        envelope(0, "T"),
        responses_websocket=True,
    ),
    Case("two turns, inject:T", ("inject:T",), envelope(0, "T"), turns=2),
)


@dataclass
class Outcome:
    """What one case observed, and the verdict."""

    case: str
    expected: str
    observed: str
    ok: bool
    problems: list[str] = field(default_factory=list)
    cassette: str = ""
    backend_log: str = ""
    attempts: int = 1
    """Tries it took: a case that missed the server's 100 ms attestation deadline (s:1 where an
    answer was expected) is run again, up to :data:`TRIES` times, as the deadline is about
    timing, not plumbing (a busy machine can miss it)."""


TRIES = 3
TIMED_OUT = '{"v":1,"s":1}'
"""The envelope of an attestation answer that came too late (or never)."""


def missed_deadline(case: Case, outcome: Outcome) -> bool:
    """Whether a failed outcome is only a missed 100 ms deadline, worth another try."""
    return (
        not outcome.ok
        and case.expected not in (None, TIMED_OUT)
        and TIMED_OUT in outcome.observed
    )


def _header(record: dict[str, Any]) -> str | None:
    for name, value in record.get("headers", {}).items():
        if name.lower() == HEADER:
            return str(value)
    return None


def is_scoped(record: dict[str, Any]) -> bool:
    """A model request of the ChatGPT Codex provider: the POST, or the websocket upgrade."""
    return record["path"] == CHATGPT_RESPONSES_PATH and record["method"] in ("POST", "GET")


def judge(case: Case, requests: Sequence[dict[str, Any]], asked: int) -> Outcome:
    """The verdict of one case from the backend's request log and the number of
    attestation/generate requests the server sent (from the cassette)."""
    http = [r for r in requests if r["method"] != WEBSOCKET_MESSAGE]
    scoped = [r for r in http if is_scoped(r)]
    model_requests = [r for r in http if r["path"].endswith("/responses")]
    problems: list[str] = []
    values = Counter(_header(r) for r in scoped)
    if not model_requests:
        problems.append("the server made no model request")
    if case.expected is None:
        carrying = [r for r in http if _header(r) is not None]
        if carrying:
            problems.append(f"header present on {len(carrying)} request(s)")
    else:
        if not scoped:
            problems.append(f"no scoped request to {CHATGPT_RESPONSES_PATH}")
        wrong = {v: n for v, n in values.items() if v != case.expected}
        if wrong:
            problems.append(f"unexpected header values {wrong}")
    leaks = [f"{r['method']} {r['path']}" for r in http if not is_scoped(r) and _header(r)]
    if leaks:
        problems.append(f"header on non-scoped request(s): {', '.join(leaks)}")
    if not case.expect_requests and asked:
        problems.append(f"{asked} attestation/generate request(s) sent, expected none")
    if case.expect_requests and not case.responses_websocket and asked != len(scoped):
        problems.append(f"{asked} attestation/generate request(s) for {len(scoped)} POST(s)")
    if case.expect_requests and case.responses_websocket and asked < 1:
        problems.append("no attestation/generate request for the websocket upgrade")
    kind = "websocket upgrade" if case.responses_websocket else "POST"
    if scoped:
        shown = ", ".join(f"{v or 'absent'} x{n}" for v, n in values.items())
        observed = f"{shown} on {len(scoped)} {kind}(s); {asked} request(s)"
    else:
        observed = f"no scoped request; {asked} request(s)"
    expected = "absent" if case.expected is None else f"{case.expected} on every {kind}"
    return Outcome(case.name, expected, observed, not problems, problems)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


async def run_case(case: Case, out: Path, codex: Path | None) -> Outcome:
    """Run one case against the real app-server; files go to ``out``."""
    slug = _slug(case.name)
    cassette = out / f"{slug}.jsonl"
    backend_log = out / f"{slug}.backend.jsonl"
    rules = attestation_rules([AttestMode.parse(m) for m in case.attest])
    options = ClientOptions(
        request_attestation=case.client_advertises,
        attestation_token=case.client_token,
        client_name="rpctape-attest-check",
    )
    async with (
        FakeBackend(log_path=backend_log) as backend,
        AppServer(
            backend.url,
            codex=codex,
            auth=case.auth,
            responses_websocket=case.responses_websocket,
        ) as server,
        recording_proxy(
            server.url,
            cassette,
            overwrite=True,
            rules=tuple(rules),
            meta={"made_by": "rpctape attest-check", "case": case.name},
        ) as url,
        SessionClient(url, options) as client,
    ):
        await client.initialize()
        thread = await client.start_thread()
        for n in range(case.turns):
            await client.run_turn(thread, f"Turn {n + 1} of the attestation check.")
        requests = list(backend.requests)
    asked = sum(
        1
        for e in load(cassette).frames()
        if e.get("method") == METHOD and e.get("dir") == "s2c" and e.get("type") == "request"
    )
    outcome = judge(case, requests, asked)
    outcome.cassette, outcome.backend_log = str(cassette), str(backend_log)
    return outcome


async def run_all(
    out: Path,
    codex: Path | None,
    cases: Sequence[Case] = CASES,
    progress: Callable[[str], None] = lambda _: None,
    concurrency: int = 3,
) -> list[Outcome]:
    """Run the cases, a few at a time, reporting progress; failures become failed outcomes."""
    out.mkdir(parents=True, exist_ok=True)
    gate = asyncio.Semaphore(concurrency)
    done = 0

    async def one(case: Case) -> Outcome:
        nonlocal done
        async with gate:
            for attempt in range(1, TRIES + 1):
                try:
                    outcome = await asyncio.wait_for(run_case(case, out, codex), 60)
                except Exception as exc:  # a crashed case is a failed case, with the reason
                    outcome = Outcome(
                        case.name, case.expected or "absent", "error", False, [repr(exc)]
                    )
                outcome.attempts = attempt
                if not missed_deadline(case, outcome):
                    break
                progress(f"{case.name}: missed the 100 ms attestation deadline; trying again")
            done += 1
            progress(f"[{done}/{len(cases)}] {case.name}: {'ok' if outcome.ok else 'FAIL'}")
            return outcome

    tasks = [asyncio.create_task(one(case), name=f"attest-check {case.name}") for case in cases]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)


def render_table(outcomes: Sequence[Outcome]) -> list[str]:
    """Plain-text table: case, expected, observed, verdict (and problems under failures)."""
    rows = [("case", "expected", "observed", "verdict")]
    rows += [(o.case, o.expected, o.observed, "ok" if o.ok else "FAIL") for o in outcomes]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = []
    for index, row in enumerate(rows):
        lines.append(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[3]
        )
        if index:
            lines += [f"    - {p}" for p in outcomes[index - 1].problems]
    return lines


def to_json(outcomes: Sequence[Outcome]) -> bytes:
    """The outcomes as one JSON document."""
    return orjson.dumps(
        {"ok": all(o.ok for o in outcomes), "cases": [asdict(o) for o in outcomes]},
        option=orjson.OPT_INDENT_2,
    )
