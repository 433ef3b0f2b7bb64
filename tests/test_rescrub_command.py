"""``rpctape redact`` (proxy.cli.redact): in place and atomic, -o OUT, --check."""

from __future__ import annotations

import io
import itertools
import stat
from pathlib import Path

import orjson
import pytest

from proxy.cli import _run
from proxy.cli.redact import redact_command
from proxy.core.cassette import event_lines, load
from proxy.core.jsonrpc import Direction
from proxy.core.recorder import Recorder
from proxy.core.redact import Redactor, marker
from proxy.wire.store import cassette_files

REPO = Path(__file__).resolve().parent.parent
HEADER = b'{"rpctape":1,"created":"2026-01-01T00:00:00+00:00","tool":"rpctape 0.1.0"}\n'
KEY = "sk-proj-Zq4f9d8s7a6s5d4f3g2h1j0k"
TOKEN = "Zqattest4f9d8s7a6s5d4"


def planted(path: Path) -> Path:
    """A cassette recorded with redaction off: an Authorization header, an API key in a
    notification, the attestation token in an answer, a cwd."""
    ticks = itertools.count()
    rec = Recorder(None, Redactor.build(enabled=False), clock=lambda: next(ticks) * 0.5)
    conn = rec.new_connection()
    headers = [("Host", "h"), ("Authorization", f"Bearer {TOKEN}")]
    lines = [HEADER, event_lines([rec.open(conn, path="/", headers=headers, subprotocol=None,
                                          upstream="ws://127.0.0.1:1/")])]  # fmt: skip
    for direction, frame in [
        (Direction.C2S, b'{"id":1,"method":"initialize","params":{}}'),
        (Direction.S2C, b'{"id":1,"result":{"userAgent":"c/0.169.0","cwd":"/home/alice"}}'),
        (Direction.S2C, orjson.dumps({"method": "note", "params": {"text": f"key {KEY}"}})),
        (Direction.C2S, orjson.dumps({"id": 0, "result": {"token": TOKEN}})),
    ]:
        lines.append(rec.text_line(conn, direction, frame, *rec.inspect(conn, direction, frame))[1])
    lines.append(event_lines([rec.close(conn, by="client", code=1000, reason="")]))
    path.write_bytes(b"".join(lines))
    path.chmod(0o640)
    return path


def run(*args: str | Path, **kw: object) -> tuple[int, str, str]:
    """redact_command with the arguments the typer wrapper would pass."""
    out, err = io.StringIO(), io.StringIO()
    paths = [Path(a) for a in args]
    status = redact_command(paths, stdout=out, stderr=err, **kw)  # type: ignore[arg-type]
    return status, out.getvalue(), err.getvalue()


def test_in_place_every_secret_goes_and_nothing_else_changes(tmp_path: Path) -> None:
    """Replaced atomically with the same mode; other lines byte for byte; a second run
    changes nothing."""
    path = planted(tmp_path / "c.jsonl")
    before = path.read_bytes().split(b"\n")
    status, out, err = run(path, redact_keys=["cwd"])
    assert (status, err) == (0, "")
    assert out.splitlines() == [
        f"{path}: redacted 4 secret(s) in 4 line(s)",
        "redact: 4 secret(s) in 1 of 1 cassette(s)",
    ]
    data = path.read_bytes()
    for secret in (KEY, TOKEN, "/home/alice"):
        assert secret.encode() not in data
    after = data.split(b"\n")
    assert [n for n, (a, b) in enumerate(zip(before, after, strict=True), 1) if a != b] == [
        2, 4, 5, 6
    ]  # fmt: skip
    assert orjson.loads(after[3])["msg"]["result"] == {
        "userAgent": "c/0.169.0",
        "cwd": marker("/home/alice"),
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["c.jsonl"]
    assert load(path).warnings == []
    again = run(path, redact_keys=["cwd"])
    assert again == (0, "redact: 0 secret(s) in 0 of 1 cassette(s)\n", "")
    assert path.read_bytes() == data


def test_check_names_every_place_exits_1_and_writes_nothing(tmp_path: Path) -> None:
    """The pre-commit hook's mode."""
    path = planted(tmp_path / "c.jsonl")
    data, mtime = path.read_bytes(), path.stat().st_mtime_ns
    status, out, err = run(path, check=True)
    assert (status, err) == (1, "")
    assert out.splitlines() == [
        f"{path}:2: seq 1 conn 1 open header Authorization",
        f"{path}:5: seq 4 conn 1 text /params/text",
        f"{path}:6: seq 5 conn 1 text /result/token",
        "redact --check: 3 secret(s) to redact in 1 of 1 cassette(s); run `rpctape redact` on "
        "them (with the same options)",
    ]
    assert (path.read_bytes(), path.stat().st_mtime_ns) == (data, mtime)
    assert [p.name for p in tmp_path.iterdir()] == ["c.jsonl"]


def test_check_passes_on_clean_cassettes(tmp_path: Path) -> None:
    """The shipped cassettes (the corpus too) hold nothing the defaults redact (they were
    recorded redacted)."""
    count = len(cassette_files([REPO / "cassettes"]))
    assert count > 60  # the six of cassettes/ and the corpus of both codex versions
    status, out, err = run(REPO / "cassettes", check=True)
    assert (status, out, err) == (
        0, f"redact --check: nothing to redact in {count} cassette(s)\n", ""
    )  # fmt: skip


def test_out_writes_one_redacted_copy(tmp_path: Path) -> None:
    """-o OUT: the cassette stays, OUT gets the redacted copy with the cassette's mode."""
    path = planted(tmp_path / "c.jsonl")
    data = path.read_bytes()
    out_path = tmp_path / "clean.jsonl"
    status, out, err = run(path, out=out_path)
    assert (status, err) == (0, "")
    assert out.splitlines()[0] == f"{path}: redacted 3 secret(s) in 3 line(s) into {out_path}"
    assert path.read_bytes() == data
    assert KEY.encode() not in out_path.read_bytes()
    assert stat.S_IMODE(out_path.stat().st_mode) == 0o640


def test_a_folder_is_walked_and_temporary_files_are_left_alone(tmp_path: Path) -> None:
    """Folders give their cassettes; a verify's leftover (hidden) is not touched."""
    planted(tmp_path / "a.jsonl")
    (tmp_path / "sub").mkdir()
    planted(tmp_path / "sub" / "b.jsonl")
    leftover = planted(tmp_path / ".a.verify.jsonl")
    data = leftover.read_bytes()
    status, out, _ = run(tmp_path)
    assert status == 0
    assert out.splitlines()[-1] == "redact: 6 secret(s) in 2 of 2 cassette(s)"
    assert leftover.read_bytes() == data


@pytest.mark.parametrize(
    ("args", "kw", "message"),
    [
        (["nope.jsonl"], {}, "no cassette at nope.jsonl"),
        ([], {}, "name at least one cassette or folder"),
        (["EMPTY"], {}, "no cassette in EMPTY"),
        (["GOOD", "BAD"], {}, "BAD is not an rpctape cassette"),
        (["GOOD", "GOOD2"], {"out": Path("o.jsonl")}, "-o/--out names one file"),
        (["GOOD"], {"out": Path("o.jsonl"), "check": True}, "--check writes nothing"),
        (["GOOD"], {"redact_values": ["x("]}, "--redact-value 'x(': not a regular expression"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    kw: dict[str, object],
    message: str,
) -> None:
    """Every cassette is read before any is written: a bad one stops all."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "EMPTY").mkdir()
    (tmp_path / "BAD").write_bytes(b"hello\n")
    good = planted(tmp_path / "GOOD").read_bytes()
    planted(tmp_path / "GOOD2")
    status, out, err = run(*args, **kw)
    assert (status, out) == (2, "")
    assert err.startswith(f"rpctape: error: {message}") and err.count("\n") == 1
    assert (tmp_path / "GOOD").read_bytes() == good
    assert not (tmp_path / "o.jsonl").exists()


def test_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`rpctape redact` runs the same body, options passed through."""
    path = planted(tmp_path / "c.jsonl")
    status = _run(["redact", str(path), "--check", "--redact-key", "cwd"])
    out, _ = capsys.readouterr()
    assert status == 1
    assert out.splitlines()[-1].startswith("redact --check: 4 secret(s) to redact")
    assert _run(["redact", str(path), "--redact-value", r"c/0\.169\.0"]) == 0
    assert b"c/0.169.0" not in path.read_bytes()


def test_the_pre_commit_hook_runs_the_check() -> None:
    """.pre-commit-hooks.yaml offers `rpctape redact --check` on .jsonl files."""
    text = (REPO / ".pre-commit-hooks.yaml").read_text()
    assert "- id: rpctape-redact-check\n" in text
    assert "  entry: rpctape redact --check\n" in text
    assert "  files: \\.jsonl$\n" in text
