"""proxy.wire.session: sessions that would write one cassette take turns; a kept recording
names its server; a replayed cassette from another codex than the pinned one is stale.

Recordings are made against tests/scripted_upstream.py (an echo server), so no codex runs.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import orjson
import pytest
from websockets.asyncio.client import connect

from proxy.codex.dialect import CODEX
from proxy.core.cassette import frame_of, load
from proxy.core.modes import Plan
from proxy.core.options import Door, Settings
from proxy.errors import CassetteLocked, StaleCassette, UsageError
from proxy.wire.session import Session
from proxy.wire.store import CassetteLock
from tests.helpers import C, S, write_tape
from tests.scripted_upstream import ScriptedUpstream

THREAD = b'{"method":"thread/started","params":{"thread":{"cliVersion":"0.171.0"}}}'
"""Echoed by the upstream, it is a server message naming codex 0.171.0 (as a thread's
``cliVersion`` does)."""


async def say(url: str, frame: bytes | str) -> str | bytes:
    """Send one frame on a new connection; the reply."""
    async with connect(url) as ws:
        await ws.send(frame)
        return await asyncio.wait_for(ws.recv(), 10)


def frames(path: Path) -> list[tuple[int, str, bytes]]:
    """Every frame of a cassette: its connection, direction and bytes."""
    return [(e["conn"], e["dir"], frame_of(e)) for e in load(path).frames()]


async def test_once_the_second_session_waits_then_replays_the_first_ones_recording(
    tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    """Two sessions, record mode once, one missing cassette: the first records it holding
    the lock; the second waits for the lock, then decides again and replays. The upstream
    sees one session; no lock or temporary file is left."""
    cassette = tmp_path / "c.jsonl"
    first = Session(cassette, record_mode="once", upstream=upstream.url)
    url = await first.start()
    assert (first.plan, first.file.lock.held) == (Plan.RECORD, True)
    second = Session(cassette, record_mode="once", upstream=upstream.url)
    starting = asyncio.create_task(second.start())
    await asyncio.sleep(0.3)
    assert not starting.done()  # the cassette is being written: it waits
    assert await say(url, "hello") == "hello"
    await first.close()
    replay_url = await asyncio.wait_for(starting, 10)
    assert (second.plan, second.file.lock.held) == (Plan.REPLAY, False)
    assert second.waited >= 0.3
    assert await say(replay_url, "hello") == "hello"
    await second.close()
    assert upstream.received == [["hello"]]
    assert frames(cassette) == [(1, "c2s", b"hello"), (1, "s2c", b"hello")]
    assert os.listdir(tmp_path) == ["c.jsonl"]
    assert f"waited {second.waited:.1f}s for another session recording {cassette}" in (
        second.report.render()
    )


async def test_all_records_one_session_after_the_other(
    tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    """Record mode all: the second session records only once the first one's recording
    replaced the cassette; the cassette is the second recording, whole."""
    cassette = write_tape(tmp_path / "c.jsonl", [(C, "old"), (S, "old")])
    first = Session(cassette, record_mode="all", upstream=upstream.url)
    url = await first.start()
    second = Session(cassette, record_mode="all", upstream=upstream.url)
    starting = asyncio.create_task(second.start())
    await asyncio.sleep(0.2)
    assert not starting.done()
    await say(url, "one")
    await first.close()
    assert frames(cassette) == [(1, "c2s", b"one"), (1, "s2c", b"one")]
    url = await asyncio.wait_for(starting, 10)
    assert second.plan is Plan.RECORD
    await say(url, "two")
    await second.close()
    assert frames(cassette) == [(1, "c2s", b"two"), (1, "s2c", b"two")]
    assert os.listdir(tmp_path) == ["c.jsonl"]


async def test_a_replay_never_reads_a_recording_in_progress(tmp_path: Path) -> None:
    """A replay that finds the lock file waits for it (a recording into a new file is
    written in place); its wait is bounded by lock_timeout, with the reason."""
    cassette = write_tape(tmp_path / "c.jsonl", [(C, "a"), (S, "b")])
    holder = CassetteLock(cassette)
    assert holder.try_acquire()
    waiting = Session(cassette, lock_timeout=0.3)
    with pytest.raises(CassetteLocked, match=r"is being recorded by another session \(process"):
        await waiting.start()
    assert waiting.plan is None
    replay = Session(cassette)
    starting = asyncio.create_task(replay.start())
    await asyncio.sleep(0.2)
    assert not starting.done()
    holder.release()
    url = await asyncio.wait_for(starting, 10)
    assert await say(url, "a") == "b"
    await replay.close()
    assert os.listdir(tmp_path) == ["c.jsonl"]


async def test_a_replay_without_a_lock_file_costs_one_stat(tmp_path: Path) -> None:
    """No lock file: the replay opens no lock (the lock is never taken)."""
    cassette = write_tape(tmp_path / "c.jsonl", [(C, "a"), (S, "b")])
    session = Session(cassette)
    taken: list[bool] = []
    original = CassetteLock.try_acquire

    def spy(self: CassetteLock) -> bool:
        taken.append(True)
        return original(self)

    CassetteLock.try_acquire = spy  # type: ignore[method-assign]
    try:
        url = await session.start()
    finally:
        CassetteLock.try_acquire = original  # type: ignore[method-assign]
    assert await say(url, "a") == "b"
    await session.close()
    assert taken == []


async def test_a_kept_recording_names_its_server_in_the_header(
    tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    """In place (a new cassette) and beside an existing one (record mode all): the header's
    codex field is what the recorded server said, written when the recording is kept; the
    rest of the file is what was recorded."""
    new = tmp_path / "new.jsonl"
    old = write_tape(tmp_path / "old.jsonl", [(C, "x"), (S, "x")])
    for cassette, mode in ((new, "once"), (old, "all")):
        session = Session(cassette, record_mode=mode, upstream=upstream.url, dialect=CODEX)
        url = await session.start()
        assert await say(url, THREAD.decode()) == THREAD.decode()
        await session.close()
        assert session.kept is True
        header = orjson.loads(cassette.read_bytes().split(b"\n", 1)[0])
        assert header["codex"] == "0.171.0"
        assert frames(cassette) == [(1, "c2s", THREAD), (1, "s2c", THREAD)]
    assert sorted(os.listdir(tmp_path)) == ["new.jsonl", "old.jsonl"]


async def test_a_recording_whose_server_says_nothing_asks_the_door(
    tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    """The recording names no version: the door's version (the real binary's) is written;
    a recording that is not kept asks nothing."""
    asked: list[bool] = []

    def version() -> str:
        asked.append(True)
        return "0.170.0"

    cassette = tmp_path / "c.jsonl"
    for commit in (False, True):
        session = Session(
            cassette, record_mode="once", upstream=upstream.url, dialect=CODEX, version=version
        )
        await say(await session.start(), "hi")
        await session.close(commit=commit)
    assert asked == [True]
    assert load(cassette).header["codex"] == "0.170.0"


def stamped(path: Path, version: str | None) -> Path:
    """A one-connection cassette whose header says which codex made it."""
    write_tape(path, [(C, "a"), (S, "b")])
    if version is not None:
        head, rest = path.read_bytes().split(b"\n", 1)
        path.write_bytes(orjson.dumps({**orjson.loads(head), "codex": version}) + b"\n" + rest)
    return path


async def test_a_cassette_from_another_codex_warns_or_is_refused(tmp_path: Path) -> None:
    """codex_version pinned: a cassette made by another codex is replayed with a warning in
    the report (stale warn, the default) or refused (stale fail) with the cassette, its
    version and the pinned one; the same version or none known is not stale."""
    old = stamped(tmp_path / "old.jsonl", "0.169.0")
    why = (
        f"{old} was recorded with codex 0.169.0 (header), not 0.171.0 (the pinned version): "
        "re-record it (rpctape verify --update) or pin the version it was made with"
    )
    session = Session(old, codex_version="0.171.0", dialect=CODEX)
    url = await session.start()
    assert await say(url, "a") == "b"
    await session.close()
    assert session.stale == why
    assert f"stale: {why}" in session.report.render().splitlines()
    assert session.report.clean
    refused = Session(old, codex_version="0.171.0", stale="fail", dialect=CODEX)
    with pytest.raises(StaleCassette) as caught:
        await refused.start()
    assert str(caught.value) == why
    for path in (stamped(tmp_path / "same.jsonl", "0.171.0"), stamped(tmp_path / "x.jsonl", None)):
        fine = Session(path, codex_version="0.171.0", stale="fail", dialect=CODEX)
        await fine.start()
        await fine.close()
        assert fine.stale is None


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"stale": "fail"}, "stale= says what replaying a cassette recorded with another codex "
         "than codex_version= does: add codex_version="),
        ({"codex_version": "latest"}, "invalid codex version 'latest'; give one such as 0.171.0"),
        ({"codex_version": "0.171.0", "stale": "loud"},
         "invalid stale action 'loud'; valid values: warn, fail"),
        ({"lock_timeout": 0}, "invalid --lock-timeout 0.0; give a number of seconds above 0"),
    ],
)  # fmt: skip
def test_the_new_options_are_checked(
    tmp_path: Path, options: dict[str, object], error: str
) -> None:
    """The pinned version, the stale action and the lock timeout, refused with the reason."""
    with pytest.raises(UsageError) as caught:
        Settings.resolve(Door.LIBRARY, options)
    assert str(caught.value) == error


async def test_the_header_names_the_upstream_redacted(tmp_path: Path) -> None:
    """A recording's header names its upstream as the open events do: a token in the URL is
    redacted there too."""
    secret = "sk-proj-" + "Zq9" * 16
    async with ScriptedUpstream() as upstream:
        session = Session(
            tmp_path / "c.jsonl", record_mode="all", upstream=f"{upstream.url}/?api_key={secret}"
        )
        await session.start()
        await session.close()
    header = load(tmp_path / "c.jsonl").header
    assert secret not in header["upstream"] and "api_key=" in header["upstream"]
