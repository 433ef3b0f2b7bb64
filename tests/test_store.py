"""proxy.wire.store: which files of a folder are cassettes; atomic replace; header rewrite;
the cassette's lock."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from proxy.codex.dialect import CODEX
from proxy.core.dialect import NEUTRAL
from proxy.errors import CassetteError, CassetteLocked, CassetteNotFound, CassetteWriteError
from proxy.wire.store import (
    CassetteLock,
    cassette_files,
    is_cassette_name,
    is_rpctape_temporary,
    lock_path,
    replace_atomically,
    restore,
    rewrite_header,
    stamp_version,
)

HEADER = b'{"rpctape":1,"created":"2026-01-01T00:00:00+00:00","tool":"rpctape 0.1.0","meta":{}}'
EVENT = b'{"seq":1,"t":0.5,"conn":1,"kind":"text","dir":"c2s","msg":{"id":1,"method":"a"}}'
CASSETTE = HEADER + b"\n" + EVENT + b"\n"


def touch(path: Path, data: bytes = CASSETTE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("name", "temporary", "cassette"),
    [
        ("two-turns.jsonl", False, True),
        (".two-turns.jsonl.1a2b3c4d.recording", True, False),
        (".two-turns.jsonl.recording", True, False),
        (".two-turns.verify.jsonl", True, False),
        (".two-turns.i70h_uao.verify.jsonl", True, False),
        (".two-turns.jsonl.lock", True, False),
        (".two-turns.jsonl", False, False),
        ("two-turns.verify.jsonl", False, True),
        ("notes.txt", False, False),
    ],
)
def test_names(name: str, temporary: bool, cassette: bool) -> None:
    """rpctape's temporary files are hidden; a folder's cassettes are its visible .jsonl."""
    assert (is_rpctape_temporary(name), is_cassette_name(name)) == (temporary, cassette)


def test_a_folder_lists_its_cassettes_without_temporary_or_hidden_files(tmp_path: Path) -> None:
    """Recursive, sorted per folder; temporaries, hidden files and hidden folders left out."""
    for name in [
        "b.jsonl", "a.jsonl", "sub/c.jsonl", ".a.jsonl.1a2b3c4d.recording", ".a.verify.jsonl",
        ".a.x1y2z3.verify.jsonl", ".hidden.jsonl", ".git/d.jsonl", "notes.txt", "README.md",
        ".a.jsonl.lock",
    ]:  # fmt: skip
        touch(tmp_path / name)
    assert cassette_files([tmp_path]) == [
        tmp_path / "a.jsonl",
        tmp_path / "b.jsonl",
        tmp_path / "sub" / "c.jsonl",
    ]


def test_named_files_are_kept_as_named_once_each_in_order(tmp_path: Path) -> None:
    """A file named on the command line is meant, whatever its name; repeats count once."""
    hidden = touch(tmp_path / ".a.verify.jsonl")
    b = touch(tmp_path / "b.jsonl")
    assert cassette_files([b, hidden, tmp_path, str(b)]) == [b, hidden]


def test_a_missing_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(CassetteNotFound, match=f"^no cassette at {tmp_path / 'nope'}$"):
        cassette_files([tmp_path / "nope"])


def test_replace_atomically_keeps_the_mode_and_leaves_no_temporary(tmp_path: Path) -> None:
    """The new bytes, the old mode; a new file gets 0600; nothing else in the folder."""
    path = touch(tmp_path / "c.jsonl", b"old\n")
    path.chmod(0o644)
    replace_atomically(path, b"new\n")
    assert path.read_bytes() == b"new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    fresh = tmp_path / "fresh.jsonl"
    replace_atomically(fresh, b"x\n")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    replace_atomically(tmp_path / "given.jsonl", b"y\n", mode=0o640)
    assert stat.S_IMODE((tmp_path / "given.jsonl").stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl", "fresh.jsonl", "given.jsonl"]


def test_a_failed_replace_leaves_the_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rename fails: the old file is untouched, the temporary is gone, the error names
    the cassette."""
    path = touch(tmp_path / "c.jsonl", b"old\n")

    def refuse(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(CassetteWriteError) as caught:
        replace_atomically(path, b"new\n")
    assert str(path) in str(caught.value)
    assert path.read_bytes() == b"old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["c.jsonl"]


def test_rewrite_header_changes_the_header_line_only(tmp_path: Path) -> None:
    """Fields set and removed; every byte after the header line kept (a torn tail too)."""
    tail = b'{"seq":2,"t":1,"conn":1,"kind":"te'
    path = touch(tmp_path / "c.jsonl", CASSETTE + tail)
    header = rewrite_header(path, {"codex": "0.171.0", "meta": None})
    assert header == {
        "rpctape": 1,
        "created": "2026-01-01T00:00:00+00:00",
        "tool": "rpctape 0.1.0",
        "codex": "0.171.0",
    }
    assert path.read_bytes() == (
        b'{"rpctape":1,"created":"2026-01-01T00:00:00+00:00","tool":"rpctape 0.1.0",'
        b'"codex":"0.171.0"}\n' + EVENT + b"\n" + tail
    )


def test_rewrite_header_without_a_change_does_not_write(tmp_path: Path) -> None:
    path = touch(tmp_path / "c.jsonl")
    before = path.stat()
    assert rewrite_header(path, {"meta": {}})["meta"] == {}
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


@pytest.mark.parametrize(
    ("data", "updates", "message"),
    [
        (CASSETTE, {"rpctape": 2}, "the header's format version is not rewritten"),
        (b"not a cassette\n", {"codex": "1"}, "is not an rpctape cassette"),
    ],
)
def test_rewrite_header_refuses(
    tmp_path: Path, data: bytes, updates: dict[str, object], message: str
) -> None:
    path = touch(tmp_path / "c.jsonl", data)
    with pytest.raises(CassetteError, match=message):
        rewrite_header(path, updates)
    assert path.read_bytes() == data


def test_rewrite_header_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CassetteNotFound):
        rewrite_header(tmp_path / "nope.jsonl", {"codex": "1"})
    assert not os.listdir(tmp_path)


def test_not_recursive_lists_the_folder_itself(tmp_path: Path) -> None:
    """What the project's tests use for cassettes/: its own visible cassettes only."""
    for name in ["a.jsonl", "many/b.jsonl", ".a.verify.jsonl", ".a.jsonl.1a2b3c4d.recording"]:
        touch(tmp_path / name)
    assert cassette_files([tmp_path], recursive=False) == [tmp_path / "a.jsonl"]


def test_stamp_version_from_the_recording_or_as_given(tmp_path: Path) -> None:
    """The codex field: what the initialize answer says, or the version given (the real
    binary); nothing known, nothing written."""
    agent = b'{"userAgent":"c/0.171.0 (Linux; x86_64) t (c; 1)"}'
    answer = (
        b'{"seq":2,"t":1,"conn":1,"kind":"text","dir":"s2c","type":"response",'
        b'"response_to":"initialize","msg":{"id":1,"result":' + agent + b"}}\n"
    )
    path = touch(tmp_path / "c.jsonl", CASSETTE + answer)
    assert stamp_version(path, CODEX) == "0.171.0"
    assert path.read_bytes() == HEADER[:-1] + b',"codex":"0.171.0"}\n' + EVENT + b"\n" + answer
    assert stamp_version(path, CODEX, "0.172.0") == "0.172.0"
    assert rewrite_header(path, {})["codex"] == "0.172.0"
    bare = touch(tmp_path / "bare.jsonl")
    assert stamp_version(bare, CODEX) is None
    assert stamp_version(bare, NEUTRAL) is None
    assert bare.read_bytes() == CASSETTE


def test_the_lock_is_exclusive_names_its_holder_and_leaves_no_file(tmp_path: Path) -> None:
    """Two locks on one cassette, as two sessions hold them: the second is refused while the
    first holds it; the lock file names the holder's process and is gone once released."""
    cassette = tmp_path / "c.jsonl"
    first, second = CassetteLock(cassette), CassetteLock(cassette)
    assert first.path == lock_path(cassette) == tmp_path / ".c.jsonl.lock"
    assert not first.present
    assert first.try_acquire() and first.held
    assert second.present and not second.try_acquire() and not second.held
    assert second.holder() == f"process {os.getpid()}"
    first.release()
    first.release()  # safe twice
    assert not second.present
    assert second.try_acquire()
    second.release()
    assert os.listdir(tmp_path) == []


def test_a_lock_file_left_by_a_killed_process_is_taken_at_once(tmp_path: Path) -> None:
    """A lock file nobody holds an flock on (its process died): taken without waiting, and
    removed when let go."""
    cassette = tmp_path / "c.jsonl"
    lock_path(cassette).write_text("999999\n")
    lock = CassetteLock(cassette)
    started = time.monotonic()
    lock.acquire(timeout=5)
    assert time.monotonic() - started < 1
    assert lock_path(cassette).read_text() == f"{os.getpid()}\n"
    lock.release()
    assert os.listdir(tmp_path) == []


HOLD = """
import sys, time
from pathlib import Path
from proxy.wire.store import CassetteLock
lock = CassetteLock(Path(sys.argv[1]))
assert lock.try_acquire()
print("held", flush=True)
sys.stdin.read()
lock.release()
"""


def test_another_process_holding_the_lock_bounds_the_wait(tmp_path: Path) -> None:
    """The lock is exclusive across processes; a wait longer than its timeout fails naming
    the cassette, the holder's process and the lock file; once the holder lets go, the lock
    is taken."""
    cassette = tmp_path / "c.jsonl"
    with subprocess.Popen(
        [sys.executable, "-c", HOLD, str(cassette)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    ) as holder:  # fmt: skip
        assert holder.stdin is not None and holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        lock = CassetteLock(cassette)
        with pytest.raises(CassetteLocked) as caught:
            lock.acquire(timeout=0.2)
        assert str(caught.value) == (
            f"{cassette} is being recorded by another session (process {holder.pid}) for "
            f"longer than 0.2s: the lock file {tmp_path / '.c.jsonl.lock'} is held. Wait for "
            "it, or give the sessions more time (--lock-timeout)"
        )
        holder.stdin.close()
        lock.acquire(timeout=10)
        lock.release()
    assert os.listdir(tmp_path) == []


def test_restore_puts_the_cassette_back_atomically(tmp_path: Path) -> None:
    """The bytes it had (atomically, the mode kept), or no file when it had none."""
    path = touch(tmp_path / "c.jsonl", b"recorded by a failed test\n")
    restore(path, CASSETTE, timeout=1)
    assert path.read_bytes() == CASSETTE
    restore(path, None, timeout=1)
    assert os.listdir(tmp_path) == []
