"""proxy/core/coverage.py and `rpctape coverage` (proxy/codex/coverage_cli.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.codex.coverage_cli import cassette_files, coverage_command, render
from proxy.core.coverage import Coverage, Kind, Outcome, SchemaMethods, measure
from tests.helpers import REPO, C, S, make_tape, write_tape

SCHEMA = SchemaMethods(
    "test schema",
    {
        Kind.CLIENT_REQUEST: frozenset({"initialize", "thread/start", "model/list", "fs/watch"}),
        Kind.SERVER_REQUEST: frozenset({"item/tool/call", "attestation/generate"}),
        Kind.CLIENT_NOTIFICATION: frozenset({"initialized"}),
        Kind.SERVER_NOTIFICATION: frozenset({"fs/changed", "turn/completed"}),
    },
)

SESSION = [
    (C, '{"id":1,"method":"initialize","params":{}}'),
    (S, '{"id":1,"result":{}}'),
    (C, '{"method":"initialized"}'),
    (C, '{"id":2,"method":"model/list","params":{}}'),
    (S, '{"id":2,"error":{"code":-32600,"message":"no"}}'),
    (C, '{"id":3,"method":"fs/watch","params":{}}'),
    (S, '{"method":"fs/changed","params":{}}'),
    (S, '{"id":0,"method":"item/tool/call","params":{}}'),
    (C, '{"id":0,"result":{"success":true}}'),
    (C, '{"id":4,"method":"no/such","params":{}}'),
    (S, '{"id":4,"error":{"code":-32600,"message":"unknown"}}'),
    (S, '{"method":"thread/new/thing","params":{}}'),
]


def test_exact_counts_of_a_small_session() -> None:
    """One of each outcome: initialize answered, model/list only with an error, fs/watch
    never answered, a server request answered, two methods the schema does not know."""
    coverage = measure(SCHEMA, [("a.jsonl", make_tape(SESSION))])
    assert coverage.counts(Kind.CLIENT_REQUEST) == {
        "schema": 4,
        "exercised": 3,
        "result": 1,
        "error_only": 1,
        "unanswered": 1,
    }
    assert coverage.with_outcome(Kind.CLIENT_REQUEST, Outcome.RESULT) == ["initialize"]
    assert coverage.with_outcome(Kind.CLIENT_REQUEST, Outcome.ERROR_ONLY) == ["model/list"]
    assert coverage.with_outcome(Kind.CLIENT_REQUEST, Outcome.UNANSWERED) == ["fs/watch"]
    assert coverage.not_exercised(Kind.CLIENT_REQUEST) == ["thread/start"]
    assert coverage.counts(Kind.SERVER_REQUEST) == {
        "schema": 2,
        "exercised": 1,
        "result": 1,
        "error_only": 0,
        "unanswered": 0,
    }
    assert coverage.counts(Kind.CLIENT_NOTIFICATION) == {"schema": 1, "exercised": 1}
    assert coverage.counts(Kind.SERVER_NOTIFICATION) == {"schema": 2, "exercised": 1}
    assert coverage.not_exercised(Kind.SERVER_NOTIFICATION) == ["turn/completed"]
    assert [(u.kind, u.method, u.sent, u.errors) for u in coverage.unknown()] == [
        (Kind.CLIENT_REQUEST, "no/such", 1, 1),
        (Kind.SERVER_NOTIFICATION, "thread/new/thing", 1, 0),
    ]


def test_a_method_answered_once_with_a_result_counts_as_answered() -> None:
    """Two cassettes: model/list fails in one and succeeds in the other; the ids repeat across
    connections and cassettes without mixing them up."""
    failing = make_tape(SESSION[:5])
    working = make_tape(
        [(C, '{"id":2,"method":"model/list"}'), (S, '{"id":2,"result":{"data":[]}}')]
    )
    coverage = measure(SCHEMA, [("a", failing), ("b", working)])
    [use] = [u for u in coverage.known(Kind.CLIENT_REQUEST) if u.method == "model/list"]
    assert (use.sent, use.results, use.errors, use.outcome) == (2, 1, 1, Outcome.RESULT)
    assert use.cassettes == {"a", "b"}


def test_an_answer_pairs_with_the_request_of_its_own_connection_and_direction() -> None:
    """A server request with id 1 and a client request with id 1 on one connection, and a
    client request id 1 on a second connection left unanswered."""
    tape = make_tape(
        [
            (C, '{"id":1,"method":"thread/start"}'),
            (S, '{"id":1,"method":"attestation/generate"}'),
            (C, '{"id":1,"error":{"code":1,"message":"no token"}}'),
            (S, '{"id":1,"result":{}}'),
        ],
        [(C, '{"id":1,"method":"initialize"}')],
    )
    coverage = measure(SCHEMA, [("t", tape)])
    outcomes = {(u.kind, u.method): u.outcome for u in coverage.uses.values()}
    assert outcomes == {
        (Kind.CLIENT_REQUEST, "thread/start"): Outcome.RESULT,
        (Kind.SERVER_REQUEST, "attestation/generate"): Outcome.ERROR_ONLY,
        (Kind.CLIENT_REQUEST, "initialize"): Outcome.UNANSWERED,
    }


def test_json_shape() -> None:
    """The documented shape (docs/drift.md, "rpctape coverage")."""
    body = measure(SCHEMA, [("a.jsonl", make_tape(SESSION))]).to_json()
    assert list(body) == [
        "schema",
        "cassettes",
        "client_request",
        "server_request",
        "client_notification",
        "server_notification",
        "unknown",
    ]
    assert body["schema"] == "test schema"
    assert body["cassettes"] == ["a.jsonl"]
    assert body["client_request"]["methods"][0] == {
        "method": "fs/watch",
        "sent": 1,
        "results": 0,
        "errors": 0,
        "outcome": "unanswered",
        "cassettes": ["a.jsonl"],
    }
    assert body["server_notification"] == {
        "counts": {"schema": 2, "exercised": 1},
        "methods": [
            {"method": "fs/changed", "sent": 1, "outcome": "seen", "cassettes": ["a.jsonl"]}
        ],
        "not_exercised": ["turn/completed"],
    }
    assert body["unknown"] == [
        {
            "kind": "client_request",
            "method": "no/such",
            "sent": 1,
            "results": 0,
            "errors": 1,
            "outcome": "error_only",
            "cassettes": ["a.jsonl"],
        },
        {
            "kind": "server_notification",
            "method": "thread/new/thing",
            "sent": 1,
            "outcome": "seen",
            "cassettes": ["a.jsonl"],
        },
    ]


def test_text_report() -> None:
    """The summary lines and the lists, in order."""
    lines = render(measure(SCHEMA, [("a.jsonl", make_tape(SESSION))]))
    assert lines[:7] == [
        "coverage of 1 cassette(s) against test schema",
        "client requests: 1 of 4 answered with a result, 1 only with errors, 1 never answered, "
        "1 not exercised",
        "server requests: 1 of 2 answered with a result, 0 only with errors, 0 never answered, "
        "1 not exercised",
        "client notifications: 1 of 1 seen",
        "server notifications: 1 of 2 seen",
        "methods the schema does not know: 2",
        "",
    ]
    assert "client requests answered only with errors: model/list" in lines
    assert "server requests not exercised: attestation/generate" in lines
    assert lines[-3:] == [
        "methods test schema does not know:",
        "  client request no/such (a.jsonl)",
        "  server notification thread/new/thing (a.jsonl)",
    ]


# --- properties ------------------------------------------------------------------------

METHODS = ["initialize", "model/list", "x/unknown"]


@st.composite
def sessions(draw: st.DrawFn) -> tuple[list[tuple[Any, str]], dict[str, tuple[int, int, int]]]:
    """A client's requests with ids 1..n, each answered with a result, an error or nothing,
    in any order; and per method the expected (sent, results, errors)."""
    calls = draw(
        st.lists(
            st.tuples(st.sampled_from(METHODS), st.sampled_from(["result", "error", None])),
            max_size=12,
        )
    )
    requests = [
        (C, orjson.dumps({"id": n, "method": m}).decode()) for n, (m, _) in enumerate(calls)
    ]
    answers = [
        (
            S,
            orjson.dumps(
                {"id": n, a: {} if a == "result" else {"code": 1, "message": "e"}}
            ).decode(),
        )
        for n, (_, a) in enumerate(calls)
        if a is not None
    ]
    order = draw(st.permutations(range(len(answers))))
    expected: dict[str, tuple[int, int, int]] = {}
    for method, answer in calls:
        sent, results, errors = expected.get(method, (0, 0, 0))
        expected[method] = (sent + 1, results + (answer == "result"), errors + (answer == "error"))
    return requests + [answers[i] for i in order], expected


@given(sessions())
def test_counts_follow_the_answers_whatever_their_order(
    case: tuple[list[tuple[Any, str]], dict[str, tuple[int, int, int]]],
) -> None:
    """Every request is counted once, every answer once against its own request's method;
    the outcome follows from the counts; unknown methods are kept apart."""
    script, expected = case
    coverage = measure(SCHEMA, [("p", make_tape(script))])
    got = {u.method: (u.sent, u.results, u.errors) for u in coverage.uses.values()}
    assert got == expected
    for use in coverage.uses.values():
        outcome = (
            Outcome.RESULT
            if use.results
            else Outcome.ERROR_ONLY
            if use.errors
            else Outcome.UNANSWERED
        )
        assert use.outcome is outcome
    assert [u.method for u in coverage.unknown()] == (
        ["x/unknown"] if "x/unknown" in expected else []
    )
    counts = coverage.counts(Kind.CLIENT_REQUEST)
    assert counts["exercised"] == len(set(expected) - {"x/unknown"})
    assert counts["result"] + counts["error_only"] + counts["unanswered"] == counts["exercised"]


# --- the command ---------------------------------------------------------------------------


def test_folders_are_walked_leaving_hidden_and_temporary_files_out(tmp_path: Path) -> None:
    """A folder holds cassettes in subfolders, a hidden folder, rpctape's temporary files and
    a file that is not .jsonl: only the two cassettes count."""
    script = SESSION[:2]
    write_tape(tmp_path / "b.jsonl", script)
    (tmp_path / "sub").mkdir()
    write_tape(tmp_path / "sub" / "a.jsonl", script)
    (tmp_path / ".hidden").mkdir()
    write_tape(tmp_path / ".hidden" / "c.jsonl", script)
    write_tape(tmp_path / ".b.x1y2.verify.jsonl", script)
    write_tape(tmp_path / ".b.jsonl.recording", script)
    write_tape(tmp_path / "notes.txt", script)
    assert cassette_files([tmp_path]) == [tmp_path / "b.jsonl", tmp_path / "sub" / "a.jsonl"]
    hidden = tmp_path / ".hidden" / "c.jsonl"
    assert cassette_files([hidden]) == [hidden]  # named explicitly, a file is taken


def _schema_dir(root: Path) -> Path:
    """A schema folder holding the four top files of SCHEMA (what schema_methods reads)."""
    files = {
        Kind.CLIENT_REQUEST: "ClientRequest.json",
        Kind.CLIENT_NOTIFICATION: "ClientNotification.json",
        Kind.SERVER_REQUEST: "ServerRequest.json",
        Kind.SERVER_NOTIFICATION: "ServerNotification.json",
    }
    root.mkdir()
    for kind, name in files.items():
        branches = [{"properties": {"method": {"enum": [m]}}} for m in sorted(SCHEMA.methods[kind])]
        (root / name).write_bytes(orjson.dumps({"oneOf": branches}))
    return root


def test_command_with_a_schema_folder_prints_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--schema DIR --json` over a folder: exit 0 and the JSON report."""
    (tmp_path / "cassettes").mkdir()
    write_tape(tmp_path / "cassettes" / "a.jsonl", SESSION)
    status = coverage_command([tmp_path / "cassettes"], None, _schema_dir(tmp_path / "s"), True)
    body = orjson.loads(capsys.readouterr().out)
    assert status == 0
    assert body["schema"] == str(tmp_path / "s")
    assert body["client_request"]["counts"]["result"] == 1
    assert [u["method"] for u in body["unknown"]] == ["no/such", "thread/new/thing"]


def test_command_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing path, a folder without cassettes, and both schema sources: exit 2, one line."""
    schema = _schema_dir(tmp_path / "s")
    assert coverage_command([tmp_path / "nope"], None, schema, False) == 2
    assert (
        capsys.readouterr().err == f"rpctape: error: no cassette or folder at {tmp_path / 'nope'}\n"
    )
    assert coverage_command([schema], None, schema, False) == 2
    assert capsys.readouterr().err == f"rpctape: error: no *.jsonl cassette in {schema}\n"
    write_tape(tmp_path / "a.jsonl", SESSION)
    assert coverage_command([tmp_path / "a.jsonl"], "0.171.0", schema, False) == 2
    assert "--codex and --schema exclude each other" in capsys.readouterr().err


@pytest.mark.e2e
def test_the_corpus_covers_the_protocol_of_0_171_0() -> None:
    """`rpctape coverage cassettes/ --codex 0.171.0 --json` (the real command, the real
    schema): at least 90 client requests answered with a result and 6 server request kinds."""
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "coverage", "cassettes/", "--codex", "0.171.0", "--json"],
        cwd=REPO,
        capture_output=True,
        check=True,
    )
    body = orjson.loads(done.stdout)
    assert body["schema"] == "codex 0.171.0"
    assert body["client_request"]["counts"]["schema"] == 110
    assert body["client_request"]["counts"]["result"] >= 90
    assert body["server_request"]["counts"]["result"] >= 6
    assert body["client_notification"]["counts"] == {"schema": 1, "exercised": 1}
    assert [u["method"] for u in body["unknown"]] == ["no/such/method"]


def test_coverage_is_measured_per_cassette_once() -> None:
    """Coverage.add counts a cassette's frames once and lists its name once."""
    coverage = Coverage(SCHEMA)
    coverage.add("a", make_tape(SESSION[:2]))
    assert coverage.cassettes == ["a"]
    assert coverage.uses[Kind.CLIENT_REQUEST, "initialize"].results == 1
