"""The verify planner (proxy.core.verify.ClientPlan): exact sends, waits, remapped answers; no
I/O."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.cli import _run
from proxy.codex.dialect import CODEX
from proxy.core.cassette import load
from proxy.core.jsonrpc import Direction, Message
from proxy.core.recorded import RecordedConnection
from proxy.core.recorder import Recorder
from proxy.core.redact import Redactor
from proxy.core.verify import ClientPlan, learn_uuids
from proxy.wire.recorded_client import (
    Verdict,
    default_out,
    render_summary,
    summary_json,
    verify_paths,
)
from proxy.wire.store import cassette_files, is_rpctape_temporary
from proxy.wire.upstream import Upstream

REPO = Path(__file__).resolve().parent.parent
C, S = Direction.C2S, Direction.S2C
T1 = "01a20a63-ea15-7af3-8230-8fcb38eed9ed"
T2 = "01a20a64-0000-7000-8000-000000000001"
LIVE1 = "01b00000-1111-7222-8333-444444444444"
LIVE2 = "01b00000-1111-7222-8333-555555555555"


def plan_of(*frames: tuple[Direction, str]) -> ClientPlan:
    """A plan over one recorded connection holding ``frames`` in this order."""
    recorder = Recorder(None, Redactor.build((), enabled=False))
    events = [recorder.open(1, path="/", headers=(), subprotocol=None, upstream="ws://x")]
    events += [recorder.text(1, direction, text) for direction, text in frames]
    return ClientPlan(RecordedConnection.build(1, events))


def texts(messages: list[Message]) -> list[bytes]:
    assert all(is_text for is_text, _ in messages)
    return [payload for _, payload in messages]


INIT = '{"id":1,"method":"initialize","params":{"clientInfo":{"name":"c","version":"1"}}}'
INIT_OK = '{"id":1,"result":{"userAgent":"x"}}'
INITIALIZED = '{"method":"initialized"}'
START = '{"id":2,"method":"thread/start","params":{}}'
STARTED = '{"id":2,"result":{"thread":{"id":"%s"}}}'
TURN = '{"id":%d,"method":"turn/start","params":{"threadId":"%s","input":[]}}'
TURN_OK = '{"id":%d,"result":{"turn":{"id":"t"}}}'
COMPLETED = '{"method":"turn/completed","params":{"threadId":"%s"}}'


def test_first_message_goes_at_once_the_next_waits_for_its_response() -> None:
    """initialize goes at once; initialized and thread/start wait for initialize's result."""
    plan = plan_of((C, INIT), (S, INIT_OK), (C, INITIALIZED), (C, START), (S, STARTED % T1))
    assert texts(plan.start()) == [INIT.encode()]
    assert plan.receive(b'{"method":"configWarning","params":{}}') == []
    assert texts(plan.receive(b'{"id":1,"result":{"userAgent":"live"}}')) == [
        INITIALIZED.encode(),
        START.encode(),
    ]
    assert not plan.finished
    assert plan.missing() == ["the answer to thread/start (id 2) (0 of 1 came)"]
    assert plan.receive((STARTED % LIVE1).encode()) == []
    assert plan.finished


def test_a_notification_the_recording_waited_for_is_waited_for_counted() -> None:
    """The second turn/start goes only after the first turn's turn/completed, and the
    thread id in it is the live one."""
    plan = plan_of(
        (C, START),
        (S, STARTED % T1),
        (C, TURN % (3, T1)),
        (S, TURN_OK % 3),
        (S, COMPLETED % T1),
        (C, TURN % (4, T1)),
        (S, TURN_OK % 4),
        (S, COMPLETED % T1),
    )
    assert texts(plan.start()) == [START.encode()]
    assert texts(plan.receive((STARTED % LIVE1).encode())) == [(TURN % (3, LIVE1)).encode()]
    assert plan.receive((TURN_OK % 3).encode()) == []
    assert plan.describe_wait() == (
        "before client message seq 7 (> request turn/start): still waiting for "
        "notification turn/completed (0 of 1 came)"
    )
    assert texts(plan.receive((COMPLETED % LIVE1).encode())) == [(TURN % (4, LIVE1)).encode()]
    assert plan.receive((COMPLETED % LIVE1).encode()) == []
    assert not plan.finished  # the second turn/completed is counted, its result is not here
    assert plan.missing() == ["the answer to turn/start (id 4) (0 of 1 came)"]
    assert plan.receive((TURN_OK % 4).encode()) == []
    assert plan.finished


def test_an_answer_to_a_server_request_gets_the_live_request_id() -> None:
    """The recorded approval answer (id 0) goes out with the live request's id, byte for
    byte, as soon as that request arrives, without waiting for other recorded frames."""
    ask = '{"method":"item/commandExecution/requestApproval","id":0,"params":{"itemId":"i"}}'
    answer = '{"id":0,"result":{"decision":"accept"}}'
    plan = plan_of(
        (C, TURN % (3, T1)),
        (S, TURN_OK % 3),
        (S, '{"method":"item/started","params":{}}'),
        (S, ask),
        (C, answer),
        (S, '{"method":"serverRequest/resolved","params":{"requestId":0}}'),
    )
    assert texts(plan.start()) == [(TURN % (3, T1)).encode()]
    live_ask = b'{"method":"item/commandExecution/requestApproval","id":17,"params":{"itemId":"j"}}'
    assert texts(plan.receive(live_ask)) == [b'{"id":17,"result":{"decision":"accept"}}']
    assert plan.live_requests == {"item/commandExecution/requestApproval": [b"17"]}
    for frame in (TURN_OK % 3, '{"method":"item/started","params":{}}'):
        assert plan.receive(frame.encode()) == []
    assert not plan.finished
    assert plan.receive(b'{"method":"serverRequest/resolved","params":{"requestId":17}}') == []
    assert plan.finished


def test_the_nth_recorded_server_request_maps_to_the_nth_live_one() -> None:
    """Two attestation requests: each answer carries the id of the live request of the
    same rank, even when the live server numbers them differently."""
    plan = plan_of(
        (C, TURN % (3, T1)),
        (S, '{"id":0,"method":"attestation/generate","params":{}}'),
        (C, '{"id":0,"result":{"token":"a"}}'),
        (S, '{"id":1,"method":"attestation/generate","params":{}}'),
        (C, '{"id":1,"result":{"token":"b"}}'),
    )
    plan.start()
    first = plan.receive(b'{"id":"s-9","method":"attestation/generate","params":{}}')
    assert texts(first) == [b'{"id":"s-9","result":{"token":"a"}}']
    second = plan.receive(b'{"id":"s-10","method":"attestation/generate","params":{}}')
    assert texts(second) == [b'{"id":"s-10","result":{"token":"b"}}']
    assert plan.finished


def test_frames_that_are_not_json_rpc_are_sent_as_recorded_and_never_awaited() -> None:
    """A garbage client frame goes out verbatim; garbage from the server is not counted."""
    plan = plan_of((C, "not json"), (S, "junk"), (C, INIT), (S, INIT_OK))
    assert texts(plan.start()) == [b"not json", INIT.encode()]
    assert plan.receive(b"other junk") == []
    assert plan.receive(INIT_OK.encode()) == []
    assert plan.finished


def test_describe_wait_names_what_did_not_come_at_the_end() -> None:
    """After the last client message the plan waits for the whole recorded server side."""
    plan = plan_of((C, TURN % (3, T1)), (S, TURN_OK % 3), (S, COMPLETED % T1))
    plan.start()
    plan.receive((TURN_OK % 3).encode())
    assert plan.describe_wait() == (
        "before ending the connection (after the last client message): still waiting for "
        "notification turn/completed (0 of 1 came)"
    )


def test_progress_counts_sends_and_awaited_frames_only() -> None:
    """The leg's timeout measures silence: progress moves with each send and each frame
    the wait in force still lacks; not with frames nobody waits for, nor surplus ones."""
    plan = plan_of((C, START), (S, STARTED % T1), (C, TURN % (3, T1)), (S, COMPLETED % T1))
    plan.start()
    assert plan.progress == 1
    plan.receive(b'{"method":"configWarning","params":{}}')
    assert plan.progress == 1
    plan.receive((STARTED % LIVE1).encode())  # awaited, and it makes turn/start due
    assert plan.progress == 3
    plan.receive((COMPLETED % LIVE1).encode())
    assert plan.progress == 4 and plan.finished
    plan.receive((COMPLETED % LIVE1).encode())  # more than the recording had
    assert plan.progress == 4


def test_learn_uuids_maps_uuids_at_the_same_place_only() -> None:
    """UUIDs are learned where both values hold as many at the same place; others not."""
    learned: dict[bytes, bytes] = {}
    recorded = {"thread": {"id": T1, "path": f"/s/rollout-{T2}.jsonl"}, "other": [T2], "x": T1}
    live = {"thread": {"id": LIVE1, "path": f"/s/rollout-{LIVE2}.jsonl"}, "other": []}
    learn_uuids(recorded, live, learned)
    assert learned == {T1.encode(): LIVE1.encode(), T2.encode(): LIVE2.encode()}


_IDS = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63),
    st.text(max_size=12),
)


@settings(max_examples=60, deadline=None)
@given(recorded_id=_IDS, live_id=_IDS, token=st.text(max_size=20))
def test_a_remapped_answer_is_the_recorded_answer_with_the_live_id(
    recorded_id: int | str, live_id: int | str, token: str
) -> None:
    """Law: the answer sent is the recorded frame with its id replaced by the live id's
    exact text, and nothing else changed."""
    ask = orjson.dumps({"id": recorded_id, "method": "attestation/generate", "params": {}})
    answer = json.dumps({"id": recorded_id, "result": {"token": token}}, ensure_ascii=False)
    plan = plan_of((C, TURN % (3, T1)), (S, ask.decode()), (C, answer))
    plan.start()
    live_text = json.dumps(live_id)  # the live server's own spelling of its id
    live = b'{"id":' + live_text.encode() + b',"method":"attestation/generate","params":{}}'
    sent = texts(plan.receive(live))
    result = json.dumps({"token": token}, ensure_ascii=False)
    assert sent == [('{"id": ' + live_text + ', "result": ' + result + "}").encode()]


# --- the command line's edges (no server needed) ---------------------------------------------


def rpctape(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str
) -> tuple[int, str, str]:
    """Run the command line in-process from the repository root: (status, stdout, stderr)."""
    monkeypatch.chdir(REPO)
    status = _run(list(args))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["verify", "cassettes/two-turns.jsonl"],
         "give --upstream ws://HOST:PORT or unix://PATH, or -- COMMAND"),
        (["verify", "cassettes/two-turns.jsonl", "--upstream", "ws://127.0.0.1:1", "--", "x"],
         "give either --upstream or a command after --, not both"),
        (["verify", "--upstream", "ws://127.0.0.1:1", "--", "codex", "app-server"],
         "name at least one cassette to verify"),
        (["verify", "nope.jsonl", "--upstream", "ws://127.0.0.1:1"], "no cassette at nope.jsonl"),
        (["verify", "cassettes/two-turns.jsonl", "cassettes/turn-streamed.jsonl",
          "--out", "x.jsonl", "--upstream", "ws://127.0.0.1:1"],
         "--out names one file: verify one cassette with it"),
        (["verify", "cassettes/two-turns.jsonl", "--", "/nonexistent/codex", "app-server"],
         "verify -- /nonexistent/codex: no such executable; give a path to it or a command on "
         "PATH"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line(
    args: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Usage errors: one line in the error style, exit 2, nothing written."""
    status, out, err = rpctape(capsys, monkeypatch, *args)
    assert (status, out, err) == (2, "", f"rpctape: error: {message}\n")


def test_an_unreachable_upstream_fails_the_cassette_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing listens: the connection fails with the reason, exit 1, the new recording
    (kept at --out) holds the connect error."""
    out = tmp_path / "new.jsonl"
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    status, stdout, err = rpctape(
        capsys, monkeypatch, "verify", "cassettes/two-turns.jsonl",
        "--upstream", f"ws://127.0.0.1:{port}", "--out", str(out),
    )  # fmt: skip
    assert status == 1, err
    lines = stdout.splitlines()
    assert lines[-2].startswith(
        f"cassettes/two-turns.jsonl: FAILED conn 1: cannot reach upstream ws://127.0.0.1:{port}/: "
    )
    assert lines[-1] == (
        "cassettes/two-turns.jsonl: verify: different: A 38 message(s), B 0 message(s); "
        f"0 added, 38 removed, 0 changed, 0 moved; new recording in {out}"
    )
    (error,) = load(out).events
    assert error["kind"] == "error" and error["stage"] == "connect"


@settings(max_examples=40, deadline=None)
@given(
    recorded=st.uuids(),
    live=st.uuids(),
    text=st.text(max_size=30),
)
def test_a_learned_uuid_replaces_only_that_uuid(recorded: object, live: object, text: str) -> None:
    """Law: the client frame sent is the recorded frame with the recorded thread id replaced
    by the live one wherever it stands, and every other byte kept."""
    old, new = str(recorded), str(live)
    turn = json.dumps(
        {"id": 3, "method": "turn/start", "params": {"threadId": old, "note": f"{text} {old}"}},
        ensure_ascii=False,
    )
    plan = plan_of((C, START), (S, STARTED % old), (C, turn))
    plan.start()
    sent = texts(plan.receive((STARTED % new).encode()))
    assert sent == [turn.replace(old, new).encode()]


# --- no litter: one predictable new recording per cassette ------------------------------------


def test_a_differing_verify_run_three_times_leaves_one_file_beside_the_cassette(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each run differs (nothing listens) and keeps its new recording, always in the same
    hidden file, which the next run replaces; listing the folder still gives one cassette."""
    folder = tmp_path / "cassettes"
    folder.mkdir()
    (folder / "two-turns.jsonl").write_bytes((REPO / "cassettes" / "two-turns.jsonl").read_bytes())
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.chdir(tmp_path)
    for _ in range(3):
        status = _run(
            ["verify", "cassettes/two-turns.jsonl", "--upstream", f"ws://127.0.0.1:{port}"]
        )
        out, _ = capsys.readouterr()
        assert status == 1
        assert out.splitlines()[-1].endswith("; new recording in cassettes/.two-turns.verify.jsonl")
    assert sorted(p.name for p in folder.iterdir()) == [
        ".two-turns.verify.jsonl",
        "two-turns.jsonl",
    ]
    assert cassette_files([folder]) == [folder / "two-turns.jsonl"]
    (error,) = load(folder / ".two-turns.verify.jsonl").events
    assert error["kind"] == "error" and error["stage"] == "connect"


def test_default_out_is_one_hidden_file_beside_the_cassette() -> None:
    """Predictable, hidden, and git-ignored by the repository's pattern."""
    assert default_out(Path("cassettes/two-turns.jsonl")) == Path(
        "cassettes/.two-turns.verify.jsonl"
    )
    assert is_rpctape_temporary(default_out(Path("x.jsonl")).name)
    assert ".*.verify.jsonl" in (REPO / ".gitignore").read_text().splitlines()


# --- verify over a folder: which codex made each cassette, does it still hold ----------------


async def test_a_folder_summary_names_each_cassettes_codex_and_result(tmp_path: Path) -> None:
    """verify_paths over a folder: its cassettes only (not the leftover hidden recording),
    each with the version that recorded it and where that was read; a file that is not a
    cassette is an error row and the others go on; text and JSON summaries."""
    folder = tmp_path / "cassettes"
    folder.mkdir()
    shipped = REPO / "cassettes"
    (folder / "two-turns.jsonl").write_bytes((shipped / "two-turns.jsonl").read_bytes())
    lines = (shipped / "initialize-model-list-config.jsonl").read_bytes().split(b"\n", 1)
    header = orjson.loads(lines[0]) | {"meta": {}}  # no meta.codex: read from initialize
    (folder / "init.jsonl").write_bytes(orjson.dumps(header) + b"\n" + lines[1])
    (folder / "notes.jsonl").write_bytes(b"hello\n")
    (folder / ".two-turns.verify.jsonl").write_bytes(b"left by an older run\n")
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    seen: list[Path] = []
    rows = await verify_paths(
        [folder],
        Upstream.parse(f"ws://127.0.0.1:{port}", []),
        dialect=CODEX,
        on_outcome=lambda outcome: seen.append(outcome.source),
        timeout=5,
    )
    assert seen == [folder / "init.jsonl", folder / "two-turns.jsonl"]
    assert [(row.source.name, row.verdict) for row in rows] == [
        ("init.jsonl", Verdict.FAILED),
        ("notes.jsonl", Verdict.ERROR),
        ("two-turns.jsonl", Verdict.FAILED),
    ]
    text = render_summary(rows)
    width = len(str(folder / "two-turns.jsonl"))
    assert text[0] == f"{'cassette':<{width}}  recorded with        against  result"
    assert text[1].startswith(
        f"{folder}/init.jsonl       0.169.0 (recording)  -        failed: conn 1: cannot reach "
        f"upstream ws://127.0.0.1:{port}/: "
    )
    assert text[2] == (
        f"{folder}/notes.jsonl      -                    -        error: {folder}/notes.jsonl is "
        'not an rpctape cassette: its first line is not a header with an integer "rpctape" '
        "format version"
    )
    assert text[3].startswith(f"{folder}/two-turns.jsonl  0.169.0 (meta)       -        failed: ")
    assert text[4] == "3 cassette(s): 0 equivalent, 0 different, 2 failed, 0 updated, 1 error"
    body = summary_json(rows)
    assert body["counts"] == {
        "equivalent": 0, "different": 0, "failed": 2, "updated": 0, "error": 1
    }  # fmt: skip
    first = body["cassettes"][0]
    assert {k: v for k, v in first.items() if k != "detail"} == {
        "cassette": str(folder / "init.jsonl"),
        "codex": "0.169.0",
        "codex_from": "recording",
        "against": None,
        "result": "failed",
        "new": str(folder / ".init.verify.jsonl"),
    }
    assert sorted(p.name for p in folder.iterdir()) == [
        ".init.verify.jsonl", ".two-turns.verify.jsonl", "init.jsonl", "notes.jsonl",
        "two-turns.jsonl",
    ]  # fmt: skip
