"""Unit tests of proxy.core.cassette: header, writer, reader, torn lines, versions, frames."""

from __future__ import annotations

import base64
import errno
import os
import stat
from pathlib import Path

import orjson
import pytest

from proxy import CASSETTE_FORMAT_VERSION, __version__
from proxy.core.cassette import frame_of, load, new_header, parse_lines
from proxy.errors import (
    CassetteError,
    CassetteNotFound,
    CassetteVersionError,
    CassetteWriteError,
    RpctapeError,
)
from proxy.wire.store import CassetteWriter

HEADER = b'{"rpctape":1,"created":"2026-11-23T00:00:00+00:00","tool":"rpctape 0.1.0"}\n'
EVENT = b'{"seq":1,"t":0.5,"conn":1,"kind":"text","dir":"c2s","msg":{"method":"x"}}\n'


def test_new_header() -> None:
    """The header names the format version, tool, upstream, transport and metadata."""
    header = new_header("ws://127.0.0.1:1", meta={"case": "a"})
    assert header["rpctape"] == CASSETTE_FORMAT_VERSION == 1
    assert header["tool"] == f"rpctape {__version__}"
    assert (header["upstream"], header["transport"], header["meta"]) == (
        "ws://127.0.0.1:1",
        "websocket",
        {"case": "a"},
    )
    assert header["created"].endswith("+00:00")


def test_writer_creates_0600_and_appends_lines(tmp_path: Path) -> None:
    """The file is mode 0600, one JSON object per line, header first."""
    path = tmp_path / "sub" / "c.jsonl"
    writer = CassetteWriter(path, {"rpctape": 1})
    writer.append([{"seq": 1, "t": 0.0, "conn": 1, "kind": "open"}])
    writer.append([{"seq": 2, "t": 0.1, "conn": 1, "kind": "close"}])
    writer.close()
    writer.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == (
        b'{"rpctape":1}\n'
        b'{"seq":1,"t":0.0,"conn":1,"kind":"open"}\n'
        b'{"seq":2,"t":0.1,"conn":1,"kind":"close"}\n'
    )


def test_writer_refuses_existing_unless_overwrite(tmp_path: Path) -> None:
    """An existing cassette is not clobbered by accident."""
    path = tmp_path / "c.jsonl"
    path.write_text("old")
    with pytest.raises(CassetteError, match="already exists; choose another path or pass"):
        CassetteWriter(path, {"rpctape": 1})
    CassetteWriter(path, {"rpctape": 1}, overwrite=True).close()
    assert path.read_bytes() == b'{"rpctape":1}\n'


def test_writer_after_close_raises(tmp_path: Path) -> None:
    """Appending to a closed writer is an error, not a silent loss."""
    writer = CassetteWriter(tmp_path / "c.jsonl", {"rpctape": 1})
    writer.close()
    with pytest.raises(CassetteError, match="is closed"):
        writer.append([{"seq": 1}])


def test_load_round_trip(tmp_path: Path) -> None:
    """What the writer writes, load reads back in order."""
    path = tmp_path / "c.jsonl"
    path.write_bytes(HEADER + EVENT)
    tape = load(path)
    assert tape.header["rpctape"] == 1 and tape.original_version == 1
    assert tape.events == [orjson.loads(EVENT)]
    assert tape.warnings == []
    assert tape.connections() == [1]


def test_torn_last_line_is_reported_and_ignored() -> None:
    """A recorder killed mid-write leaves a torn last line: tolerated, reported."""
    tape = parse_lines(HEADER + EVENT + b'{"seq":2,"t":0.6,"co', source="c.jsonl")
    assert [e["seq"] for e in tape.events] == [1]
    assert tape.warnings == [
        "c.jsonl:3: torn last line (20 bytes) ignored; "
        "the recorder was probably killed while writing it"
    ]


def test_complete_last_line_without_newline_is_kept() -> None:
    """A whole event missing only its newline is kept, with a note."""
    tape = parse_lines(HEADER + EVENT.rstrip(b"\n"), source="c.jsonl")
    assert [e["seq"] for e in tape.events] == [1]
    assert tape.warnings == ["c.jsonl: last line has no newline (kept)"]


def test_corrupt_middle_line_is_an_error() -> None:
    """Only the last line may be torn; a broken line in the middle is corruption."""
    with pytest.raises(CassetteError, match=r"^c.jsonl:2: corrupt line"):
        parse_lines(HEADER + b"{oops\n" + EVENT, source="c.jsonl")


def test_event_without_seq_or_kind_is_an_error() -> None:
    """Lines must be cassette events."""
    with pytest.raises(CassetteError, match=r"c.jsonl:2: not a cassette event"):
        parse_lines(HEADER + b'{"kind":"text"}\n', source="c.jsonl")


def test_newer_version_says_upgrade() -> None:
    """A cassette from a newer rpctape asks the user to upgrade."""
    with pytest.raises(CassetteVersionError) as info:
        parse_lines(b'{"rpctape":2}\n', source="new.jsonl")
    assert str(info.value) == (
        f"new.jsonl uses cassette format 2, but this rpctape ({__version__}) reads formats "
        "up to 1: upgrade rpctape"
    )


@pytest.mark.parametrize("data", [b"", b"hello\n", b'{"format":1}\n', b'{"rpctape":"1"}\n', b"[]"])
def test_not_a_cassette(data: bytes) -> None:
    """Empty files and other JSON are rejected with a clear message."""
    with pytest.raises(CassetteError, match=r"empty, not an rpctape cassette|is not an rpctape"):
        parse_lines(data, source="x")


def test_missing_file(tmp_path: Path) -> None:
    """A missing cassette is CassetteNotFound, which is also a FileNotFoundError."""
    with pytest.raises(FileNotFoundError, match="no cassette at"):
        load(tmp_path / "nope.jsonl")
    with pytest.raises(CassetteNotFound):
        load(tmp_path / "nope.jsonl")


@pytest.mark.parametrize(
    ("event", "frame"),
    [
        ({"kind": "text", "msg": {"id": 1, "result": 1.0}}, b'{"id":1,"result":1.0}'),
        ({"kind": "text", "msg": {"a": 1}, "raw": '{ "a" : 1 }'}, b'{ "a" : 1 }'),
        ({"kind": "text", "raw": "not json é"}, "not json é".encode()),
        ({"kind": "binary", "b64": base64.b64encode(b"\xff\x00").decode()}, b"\xff\x00"),
    ],
)
def test_frame_of_follows_the_raw_rule(event: dict[str, object], frame: bytes) -> None:
    """The frame is raw if present, else orjson.dumps(msg); binary is b64."""
    assert frame_of(event) == frame


def test_frame_of_rejects_non_frames() -> None:
    """An open event has no frame."""
    with pytest.raises(CassetteError, match="is a 'open' event, not a frame"):
        frame_of({"kind": "open", "seq": 1})


@pytest.mark.parametrize(
    ("tail", "kept"),
    [
        (b"", [1]),
        (b'{"seq":2,"t":0.6,"co', [1]),
        (b'{"seq":2,"t":0.6,"conn":1,"kind":"close"}', [1, 2]),
    ],
)
def test_append_to_repairs_the_tail(tmp_path: Path, tail: bytes, kept: list[int]) -> None:
    """Appending cuts a torn last line, or ends a whole one, before writing."""
    path = tmp_path / "c.jsonl"
    path.write_bytes(HEADER + EVENT + tail)
    writer = CassetteWriter.append_to(path)
    writer.append([{"seq": 9, "t": 1.0, "conn": 2, "kind": "open"}])
    writer.close()
    tape = load(path)
    assert [e["seq"] for e in tape.events] == [*kept, 9]
    assert tape.warnings == []


# -- write failures -------------------------------------------------------------------------


class FailingWrites:
    """os.write that fails with ``error`` once armed, after ``budget`` more bytes."""

    def __init__(self, error: int) -> None:
        self.error = error
        self.budget: int | None = None
        self.calls = 0
        self._write = os.write

    def __call__(self, fd: int, data: bytes | memoryview) -> int:
        self.calls += 1
        if self.budget is None:
            return self._write(fd, data)
        if self.budget <= 0:
            raise OSError(self.error, os.strerror(self.error))
        written = self._write(fd, bytes(data[: self.budget]))
        self.budget -= written
        return written


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EIO, errno.EBADF, errno.EROFS])
def test_write_failure_is_a_cassette_write_error_and_sticks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: int
) -> None:
    """An OS error names the cassette and the error; later appends fail at once; close is safe."""
    path = tmp_path / "c.jsonl"
    writes = FailingWrites(error)
    monkeypatch.setattr(os, "write", writes)
    writer = CassetteWriter(path, {"rpctape": 1})
    writer.append([{"seq": 1, "t": 0, "conn": 1, "kind": "close"}])
    writes.budget = 10  # half a line gets through, then the disk fails
    with pytest.raises(CassetteWriteError) as info:
        writer.append_lines(b'{"seq":2,"t":0,"conn":1,"kind":"close"}\n')
    failure = info.value
    assert str(failure) == (
        f"cannot write cassette {path}: {os.strerror(error)} (errno {error}); "
        "frames from now on cannot be recorded"
    )
    assert isinstance(failure, OSError) and isinstance(failure, RpctapeError)
    assert failure.errno == error and writer.failed is failure
    calls = writes.calls
    with pytest.raises(CassetteWriteError) as again:
        writer.append_lines(b'{"seq":3,"t":0,"conn":1,"kind":"close"}\n')
    assert again.value is failure and writes.calls == calls  # nothing was tried
    writer.close()
    writer.close()
    tape = load(path)  # the cut line is a torn last line: every earlier line is there
    assert [e["seq"] for e in tape.events] == [1]
    assert tape.warnings == [f"{path}:3: torn last line (10 bytes) ignored; "
                             "the recorder was probably killed while writing it"]  # fmt: skip


def test_removed_descriptor_fails_cleanly(tmp_path: Path) -> None:
    """A descriptor closed under the writer (EBADF) becomes a CassetteWriteError too."""
    writer = CassetteWriter(tmp_path / "c.jsonl", {"rpctape": 1})
    assert writer._fd is not None
    os.close(writer._fd)
    with pytest.raises(CassetteWriteError, match=r"Bad file descriptor \(errno 9\)"):
        writer.append([{"seq": 1, "t": 0, "conn": 1, "kind": "close"}])
    writer.close()


def test_unwritable_directory_is_a_cassette_write_error(tmp_path: Path) -> None:
    """Creating a cassette where nothing can be created names the path and the OS error."""
    blocker = tmp_path / "f"
    blocker.write_text("")
    with pytest.raises(CassetteWriteError, match=r"cannot write cassette .*f/c\.jsonl: "):
        CassetteWriter(blocker / "c.jsonl", {"rpctape": 1})


def test_full_disk_on_a_real_tmpfs(tiny_tmpfs: Path) -> None:
    """A disk that fills up: ENOSPC as CassetteWriteError; the file keeps every whole line."""
    path = tiny_tmpfs / "c.jsonl"
    writer = CassetteWriter(path, {"rpctape": 1})
    line = orjson.dumps({"seq": 0, "t": 0, "conn": 1, "kind": "error", "message": "x" * 900})
    written = 0
    with pytest.raises(CassetteWriteError) as info:
        for seq in range(1, 1000):
            writer.append_lines(line.replace(b'"seq":0', b'"seq":%d' % seq) + b"\n")
            written = seq
    assert info.value.errno == errno.ENOSPC
    assert f"cannot write cassette {path}: No space left on device" in str(info.value)
    with pytest.raises(CassetteWriteError):
        writer.append_lines(b"{}\n")
    writer.close()
    tape = load(path)
    assert [e["seq"] for e in tape.events] == list(range(1, written + 1))
