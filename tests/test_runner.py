"""Tests of proxy.wire.runner: which event loop the commands run on (RPCTAPE_LOOP), and the
garbage-collector freeze after a replay has loaded its cassette."""

from __future__ import annotations

import asyncio
import gc
import inspect
import subprocess
import sys
from collections.abc import Coroutine
from typing import Any

import pytest
import uvloop

from proxy import ReplayServer
from proxy.wire.runner import LOOP_ENV, LoopUnavailable, freeze_loaded, loop_factory, run
from tests.helpers import REPO


async def _loop_class() -> type[asyncio.AbstractEventLoop]:
    return type(asyncio.get_running_loop())


@pytest.mark.parametrize("value", ["", "auto", "uvloop", " UVLOOP "])
def test_uvloop_when_installed(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """Unset, ``auto`` or ``uvloop`` (any case): the commands run on uvloop (installed here)."""
    monkeypatch.setenv(LOOP_ENV, value)
    assert loop_factory()[0] == "uvloop"
    assert run(_loop_class()) is uvloop.Loop


def test_asyncio_forces_the_standard_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOOP_ENV, "asyncio")
    assert loop_factory()[0] == "asyncio"
    standard = asyncio.new_event_loop()
    standard.close()
    assert run(_loop_class()) is type(standard)
    assert not isinstance(standard, uvloop.Loop)


def test_without_uvloop_auto_falls_back_and_uvloop_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """uvloop not importable (``sys.modules[...] = None`` makes ``import`` fail): the default
    is the standard loop; asking for uvloop is a usage error that says how to install it."""
    monkeypatch.setitem(sys.modules, "uvloop", None)
    assert loop_factory("auto")[0] == "asyncio"
    with pytest.raises(LoopUnavailable) as info:
        loop_factory("uvloop")
    assert str(info.value) == (
        "RPCTAPE_LOOP=uvloop: uvloop is not installed (pip install 'rpctape[fast]')"
    )


def test_an_unknown_loop_is_one_line_from_the_command() -> None:
    """A bad RPCTAPE_LOOP: the command says so in one line and exits 2, before doing anything."""
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "replay", str(REPO / "cassettes" / "turn-streamed.jsonl"),
         "--listen", "ws://127.0.0.1:0"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
        env={"PATH": "/usr/bin:/bin", LOOP_ENV: "trio"},
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "rpctape: error: RPCTAPE_LOOP=trio: expected asyncio, uvloop or auto\n"


def test_run_closes_the_coroutine_it_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused loop leaves no "coroutine was never awaited" warning behind."""
    monkeypatch.setenv(LOOP_ENV, "nope")
    coroutine: Coroutine[Any, Any, Any] = _loop_class()
    with pytest.raises(LoopUnavailable):
        run(coroutine)
    assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED


async def test_after_load_runs_once_the_cassette_is_planned() -> None:
    """ReplayServer calls ``after_load`` when the cassette is loaded, before any client."""
    seen: list[bool] = []
    cassette = REPO / "cassettes" / "turn-streamed.jsonl"
    server = ReplayServer(cassette, after_load=lambda: seen.append(server.plan is not None))
    assert seen == []
    async with server:
        assert seen == [True]
    assert seen == [True]


def test_freeze_loaded_moves_what_exists_out_of_the_collector() -> None:
    before = gc.get_freeze_count()
    try:
        kept = [{"n": n} for n in range(1000)]
        freeze_loaded()
        assert gc.get_freeze_count() >= before + len(kept)
    finally:
        gc.unfreeze()
