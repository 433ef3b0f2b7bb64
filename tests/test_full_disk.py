"""A full disk, for real: a small tmpfs (as root) under every door that records.

`rpctape-codex` (record modes once, all and new_episodes), `rpctape replay --record-mode all`
and `new_episodes`, and `rpctape wrap --overwrite` record a session whose next frame does not
fit: the client gets the reason (stderr before stdout ends; close 1011 on a websocket), the
exit status is 74, and the cassette that was there before is byte for byte what it was.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from proxy.pytest_plugin import standin_executable
from tests.helpers import rpctape_listening
from tests.scripted_upstream import ScriptedUpstream

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "cassettes" / "turn-streamed.jsonl"
DISK_SIZE = 512 * 1024
FREE = 96 * 1024
"""What is left free on the disk once the old cassette is on it: enough for its copy
(new_episodes) and the session's start, not for the large frame."""
LARGE = 256 * 1024
INIT = {
    "id": 1,
    "method": "initialize",
    "params": {"clientInfo": {"name": "t", "version": "1"}, "capabilities": {"fullDisk": True}},
}
WRITE_FAILED = 74


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of :data:`DISK_SIZE` bytes (needs root), unmounted at the end."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (the other write-failure tests fake it)")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE}", "tmpfs", str(folder)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path, leave: int = FREE) -> None:
    """Fill ``folder``'s file system until ``leave`` bytes are free."""
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize
    (folder / "filler").write_bytes(b"\0" * max(0, free - leave))


def old_cassette(folder: Path) -> bytes:
    """A good cassette on the disk (a shipped one); its bytes."""
    shutil.copy(SHIPPED, folder / "c.jsonl")
    return (folder / "c.jsonl").read_bytes()


def leftovers(folder: Path) -> list[str]:
    """rpctape's temporary files left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def large_request() -> bytes:
    return orjson.dumps({"id": 2, "method": "noop", "params": {"pad": "x" * LARGE}}) + b"\n"


@pytest.mark.parametrize("mode", ["once", "all", "new_episodes"])
def test_standin_on_a_full_disk(disk: Path, fake_codex: Path, mode: str) -> None:
    """rpctape-codex records through the real codex; the disk fills: the reason on stderr,
    exit 74, the old cassette (none for once) as it was, no temporary file left."""
    before = None if mode == "once" else old_cassette(disk)
    fill(disk)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RPCTAPE_")}
    env |= {"RPCTAPE_CASSETTE": str(disk / "c.jsonl"), "RPCTAPE_RECORD_MODE": mode,
            "RPCTAPE_REAL_CODEX": str(fake_codex)}  # fmt: skip
    done = subprocess.run(
        [str(standin_executable(disk.parent)), "app-server"],
        input=orjson.dumps(INIT) + b"\n" + large_request(),
        capture_output=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    stderr = done.stderr.decode()
    assert done.returncode == WRITE_FAILED, stderr
    assert "rpctape: error: cannot write cassette c.jsonl" not in stderr  # the full path
    assert f"cannot write cassette {disk / 'c.jsonl'}" in stderr or ".recording" in stderr
    assert "No space left on device (errno 28)" in stderr
    assert b'"id":2' not in done.stdout  # the frame that could not be recorded never went on
    if before is None:
        assert not (disk / "c.jsonl").exists()
    else:
        assert (disk / "c.jsonl").read_bytes() == before
    assert leftovers(disk) == []


@pytest.mark.parametrize("mode", ["all", "new_episodes"])
async def test_replay_recording_on_a_full_disk(disk: Path, mode: str) -> None:
    """rpctape replay --record-mode MODE relays and records; the disk fills: the client is
    closed with 1011 and the reason, the command says it and exits 74, the old cassette is
    as it was."""
    before = old_cassette(disk)
    fill(disk)
    async with ScriptedUpstream() as upstream, rpctape_listening(
        "replay", str(disk / "c.jsonl"), "--record-mode", mode, "--upstream", upstream.url,
        "--listen", "ws://127.0.0.1:0",
    ) as (proc, url):  # fmt: skip
        try:
            async with connect(url, max_size=None) as ws:
                await ws.send(orjson.dumps(INIT).decode())
                await ws.send(large_request().decode().strip())
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await asyncio.wait_for(ws.recv(), 20)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
            assert "No space left on device" in closed.value.rcvd.reason
        finally:
            proc.send_signal(signal.SIGINT)
            _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == WRITE_FAILED, err.decode()
    assert "No space left on device (errno 28)" in err.decode()
    assert (disk / "c.jsonl").read_bytes() == before
    assert leftovers(disk) == []


def test_wrap_overwrite_on_a_full_disk(disk: Path, fake_codex: Path) -> None:
    """rpctape wrap --overwrite of an existing cassette; the disk fills: one error line,
    exit 74, the old cassette as it was (what was recorded stays beside it, named)."""
    before = old_cassette(disk)
    fill(disk)
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "wrap", "--cassette", str(disk / "c.jsonl"),
         "--overwrite", "--", str(fake_codex), "app-server"],
        input=orjson.dumps(INIT) + b"\n" + large_request(),
        capture_output=True, timeout=60, check=False, cwd=ROOT,
    )  # fmt: skip
    stderr = done.stderr.decode()
    assert done.returncode == WRITE_FAILED, stderr
    assert "rpctape: error: cannot write cassette" in stderr
    assert "No space left on device (errno 28)" in stderr
    assert (disk / "c.jsonl").read_bytes() == before
    kept = leftovers(disk)
    assert len(kept) == 1 and kept[0].startswith(".c.jsonl.") and kept[0] in stderr


def test_wrap_on_a_read_only_folder(tmp_path: Path, fake_codex: Path) -> None:
    """rpctape wrap with its cassette on a read-only file system (root ignores a folder's
    mode, so a read-only mount): one error line naming the cassette and the reason, exit 74,
    no traceback, the child never started."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
    else:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a read-only tmpfs here: {mounted.stderr.strip()}")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "proxy", "wrap", "--cassette", str(folder / "c.jsonl"),
             "--", str(fake_codex), "app-server"],
            input=orjson.dumps(INIT) + b"\n", capture_output=True, timeout=60, check=False,
            cwd=ROOT,
        )  # fmt: skip
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", "-l", str(folder)], check=False)
    assert (done.returncode, done.stdout) == (WRITE_FAILED, b"")
    reason = "Read-only file system (errno 30)" if os.geteuid() == 0 else "Permission denied"
    (line,) = done.stderr.decode().splitlines()
    assert line.startswith(f"rpctape: error: cannot write cassette {folder / 'c.jsonl'}: ")
    assert reason in line
