"""Helpers shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import orjson
import pytest

from proxy.core.cassette import Cassette, frame_of, new_header
from proxy.core.jsonrpc import Direction, id_key
from proxy.core.recorder import Recorder
from proxy.core.redact import Redactor
from proxy.wire.store import cassette_files


def is_utf8(data: bytes) -> bool:
    """Whether ``data`` decodes as UTF-8 (a text frame may carry it)."""
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def decode_jwt_payload(token: str) -> Any:
    """The payload of a fake ChatGPT id token: three base64url parts, an ``alg: none`` header
    and the signature ``sig`` (what proxy.codex.backend.fake_id_token writes)."""
    header, payload, signature = token.split(".")

    def b64(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

    assert orjson.loads(b64(header)) == {"alg": "none", "typ": "JWT"}
    assert b64(signature) == b"sig"
    return orjson.loads(b64(payload))


C, S = Direction.C2S, Direction.S2C
Script = Sequence[tuple[Direction, str | bytes]]


def make_tape(*conns: Script, gap: float = 0.5, server_closes: bool = False) -> Cassette:
    """A cassette recorded by the real Recorder; each frame ``gap`` seconds after the last."""
    ticks = itertools.count()
    recorder = Recorder(None, Redactor(), clock=lambda: next(ticks) * gap)
    events: list[dict[str, Any]] = []
    for script in conns:
        conn = recorder.new_connection()
        events.append(
            recorder.open(conn, path="/", headers=[], subprotocol=None, upstream="ws://up")
        )
        for direction, data in script:
            if isinstance(data, bytes):
                events.append(recorder.binary(conn, direction, data))
            else:
                events.append(recorder.text(conn, direction, data))
        by = "server" if server_closes else "client"
        events.append(
            recorder.close(
                conn, by=by, code=1000, reason="bye", forwarded={"code": 1000, "reason": "bye"}
            )
        )
    return Cassette(None, new_header("ws://up"), events)


REPO = Path(__file__).resolve().parent.parent
CASSETTES = cassette_files([REPO / "cassettes"], recursive=False)
"""The shipped cassettes (rpctape's hidden and temporary files in the folder left out)."""


def write_tape(path: Path, *conns: Script, gap: float = 0.01, server_closes: bool = False) -> Path:
    """Write a cassette made by the real Recorder (see make_tape)."""
    tape = make_tape(*conns, gap=gap, server_closes=server_closes)
    lines = [tape.header, *tape.events]
    path.write_bytes(b"".join(orjson.dumps(e, option=orjson.OPT_APPEND_NEWLINE) for e in lines))
    return path


def other_id(recorded: Any, n: int) -> Any:
    """A live id of the other type: strings for integer recordings and the reverse."""
    return f"live-{n}" if isinstance(recorded, int) else 1000 + n


Exchange = list[tuple[list[bytes], bytes | None]]


def live_exchange(tape: Cassette, conn: int) -> Exchange:
    """A recorded connection as a live client holds it: for each recorded client message the
    server frames expected before it, then the message to send with another id type and a
    trace; the last entry holds the frames after the last client message (and ``None``)."""
    live_ids: dict[str, Any] = {}
    expected: list[bytes] = []
    exchange: Exchange = []
    for n, event in enumerate(tape.frames(conn)):
        msg: Any = event.get("msg")
        if event["dir"] == Direction.S2C.value:
            if event.get("type") in ("response", "error") and id_key(msg["id"]) in live_ids:
                expected.append(orjson.dumps({**msg, "id": live_ids[id_key(msg["id"])]}))
            else:
                expected.append(frame_of(event))
            continue
        if event.get("type") == "request":
            live_ids[id_key(msg["id"])] = other_id(msg["id"], n)
            msg = {**msg, "id": live_ids[id_key(msg["id"])]}
        if event.get("type") in ("request", "notification"):
            msg = {**msg, "trace": {"traceparent": f"00-{n:032x}-{n:016x}-01"}}
        exchange.append((expected, orjson.dumps(msg)))
        expected = []
    exchange.append((expected, None))
    return exchange


def fake_item(folder: Path, mark: pytest.Mark) -> pytest.Item:
    """Enough of a pytest item for resolve_settings: a path, a marker, an empty config."""
    ini = {"rpctape_cassette_dir": "cassettes", "rpctape_record_mode": "none",
           "rpctape_strict": False, "rpctape_upstream": "",
           "rpctape_codex_version": ""}  # fmt: skip
    config = SimpleNamespace(getini=ini.__getitem__, getoption=lambda name: None)
    return cast(
        pytest.Item,
        SimpleNamespace(
            path=folder / "test_x.py", name="test_x", config=config,
            get_closest_marker=lambda name: mark,
        ),
    )  # fmt: skip


@contextlib.asynccontextmanager
async def rpctape_listening(
    *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """`rpctape ARGS` (this checkout, as `python -m proxy`) started and waited for until it
    prints `listening on URL`; the process and the URL. Killed if still running on exit."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert line.startswith("listening on ws://127.0.0.1:"), line
        yield proc, line.removeprefix("listening on ").strip()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
