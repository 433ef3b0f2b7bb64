"""Tests of proxy.codex.attest_check: the pure verdicts, and the real check end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from proxy.codex.attest_check import (
    CASES,
    Case,
    Outcome,
    envelope,
    judge,
    missed_deadline,
    render_table,
)

T = envelope(0, "T")


def req(method: str, path: str, header: str | None = None) -> dict[str, Any]:
    headers = {"accept": "*/*"}
    if header is not None:
        headers["x-oai-attestation"] = header
    return {"method": method, "path": path, "headers": headers}


BASE = [
    req("GET", "/backend-api/wham/accounts/check"),
    req("GET", "/backend-api/codex/models"),
    req("GET", "/backend-api/ps/plugins/list"),
]


def test_envelope() -> None:
    """The header value has the app-server's exact shape."""
    assert (envelope(0, "T"), envelope(1)) == ('{"v":1,"s":0,"t":"T"}', '{"v":1,"s":1}')


def test_pass_when_every_post_carries_the_expected_header() -> None:
    """inject:T: the header on each POST, nowhere else, one request per POST."""
    case = Case("inject:T", ("inject:T",), T, turns=2)
    requests = [*BASE, req("POST", "/backend-api/codex/responses", T),
                req("POST", "/backend-api/codex/responses", T)]  # fmt: skip
    outcome = judge(case, requests, asked=2)
    assert (outcome.ok, outcome.problems) == (True, [])
    assert outcome.observed == '{"v":1,"s":0,"t":"T"} x2 on 2 POST(s); 2 request(s)'
    assert outcome.expected == '{"v":1,"s":0,"t":"T"} on every POST'


def test_fail_on_leak_wrong_value_and_count() -> None:
    """A header on /models, a wrong value and a request count off by one all fail."""
    case = Case("inject:T", ("inject:T",), T)
    requests = [
        req("GET", "/backend-api/codex/models", T),
        req("POST", "/backend-api/codex/responses", envelope(1)),
    ]
    outcome = judge(case, requests, asked=2)
    assert not outcome.ok
    assert outcome.problems == [
        'unexpected header values {\'{"v":1,"s":1}\': 1}',
        "header on non-scoped request(s): GET /backend-api/codex/models",
        "2 attestation/generate request(s) for 1 POST(s)",
    ]


def test_absent_cases() -> None:
    """Capability not advertised: no header and no request, or it fails."""
    case = Case("capability not advertised", (), None, expect_requests=False)
    good = judge(case, [*BASE, req("POST", "/backend-api/codex/responses")], asked=0)
    assert good.ok and good.observed == "absent x1 on 1 POST(s); 0 request(s)"
    bad = judge(case, [req("POST", "/backend-api/codex/responses", T)], asked=1)
    assert bad.problems == [
        "header present on 1 request(s)",
        "1 attestation/generate request(s) sent, expected none",
    ]
    assert judge(case, BASE, asked=0).problems == ["the server made no model request"]


def test_websocket_upgrade_is_scoped_and_frames_are_ignored() -> None:
    """In websocket mode the upgrade (a GET) carries the header; frames are not requests."""
    case = Case("ws", ("inject:T",), T, responses_websocket=True)
    frame = {"method": "WS", "path": "/backend-api/codex/responses", "headers": {}}
    requests = [req("GET", "/backend-api/codex/responses", T), frame]
    outcome = judge(case, requests, asked=1)
    assert outcome.ok, outcome.problems
    assert outcome.observed == '{"v":1,"s":0,"t":"T"} x1 on 1 websocket upgrade(s); 1 request(s)'


def test_render_table_lists_problems_under_failures() -> None:
    """The table has a header row, one row per case, problems indented below failures."""
    ok = judge(Case("a", (), None, expect_requests=False),
               [req("POST", "/backend-api/codex/responses")], 0)  # fmt: skip
    bad = judge(Case("b", (), T), [], 0)
    lines = render_table([ok, bad])
    assert lines[0].split() == ["case", "expected", "observed", "verdict"]
    assert lines[1].endswith("  ok") and lines[2].endswith("  FAIL")
    assert lines[3:] == [
        "    - the server made no model request",
        "    - no scoped request to /backend-api/codex/responses",
    ]


@pytest.mark.e2e
def test_attest_check_against_the_real_app_server(
    tmp_path: Path, codex_bin: Path, codex_version: str
) -> None:
    """`rpctape attest-check --json --codex BIN`: every case passes, against each codex
    release in .tools/ (0.169.0 and 0.171.0)."""
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "attest-check", "--json", "--out", str(tmp_path),
         "--codex", str(codex_bin)],
        capture_output=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    report = orjson.loads(done.stdout)
    assert report["ok"] is True
    by_case = {c["case"]: c for c in report["cases"]}
    assert list(by_case) == [c.name for c in CASES]
    observed = {name: c["observed"] for name, c in by_case.items()}
    assert observed == {
        "inject:T": '{"v":1,"s":0,"t":"T"} x1 on 1 POST(s); 1 request(s)',
        "client answers T, rewrite:U": '{"v":1,"s":0,"t":"U"} x1 on 1 POST(s); 1 request(s)',
        "error": '{"v":1,"s":2} x1 on 1 POST(s); 1 request(s)',
        "silent": '{"v":1,"s":1} x1 on 1 POST(s); 1 request(s)',
        "client answers T, delay:500": '{"v":1,"s":1} x1 on 1 POST(s); 1 request(s)',
        "garbage": '{"v":1,"s":4} x1 on 1 POST(s); 1 request(s)',
        "capability not advertised": "absent x1 on 1 POST(s); 0 request(s)",
        "API-key provider": "no scoped request; 0 request(s)",
        "Responses over websocket, inject:T": (
            '{"v":1,"s":0,"t":"T"} x1 on 1 websocket upgrade(s); 1 request(s)'
        ),
        "two turns, inject:T": '{"v":1,"s":0,"t":"T"} x2 on 2 POST(s); 2 request(s)',
    }
    assert all(c["problems"] == [] for c in report["cases"])
    # The absence checks, read again from the backend logs themselves.
    for case in report["cases"]:
        log = [orjson.loads(line) for line in Path(case["backend_log"]).read_bytes().splitlines()]
        assert log, case["case"]
        for record in log:
            names = {n.lower() for n in record.get("headers", {})}
            if record["path"] != "/backend-api/codex/responses":
                assert "x-oai-attestation" not in names, (case["case"], record["path"])
        assert Path(case["cassette"]).is_file()
        # The case ran against the codex asked for: its cassette says which.
        assert f"/{codex_version} " in Path(case["cassette"]).read_text()


def test_only_a_missed_deadline_is_tried_again() -> None:
    """A case that expected a token but saw s:1 (too late) is run again; a wrong token, or a
    case whose expected outcome is s:1, is not."""
    inject = next(c for c in CASES if c.name == "inject:T")
    silent = next(c for c in CASES if c.name == "silent")
    late = Outcome("inject:T", "x", '{"v":1,"s":1} x1 on 1 POST(s); 1 request(s)', False)
    wrong = Outcome("inject:T", "x", '{"v":1,"s":0,"t":"X"} x1 on 1 POST(s); 1 request(s)', False)
    passed = Outcome("inject:T", "x", '{"v":1,"s":0,"t":"T"} x1 on 1 POST(s); 1 request(s)', True)
    assert missed_deadline(inject, late)
    assert not missed_deadline(inject, wrong)
    assert not missed_deadline(inject, passed)
    assert not missed_deadline(silent, late)
