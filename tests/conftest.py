"""Shared pytest setup: end-to-end tests need the real codex app-server."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.codex.appserver import PINNED_CODEX_VERSION, find_codex, installed_codex_versions
from proxy.codex.backend import FakeBackend
from proxy.codex.schema import schema_dir
from proxy.errors import AppServerError
from tests.scripted_upstream import ScriptedUpstream

DRIFT_CODEX_VERSION = "0.171.0"
"""The second codex release ``./dev setup`` installs, for the protocol drift tests."""

CODEX_VERSIONS = sorted({PINNED_CODEX_VERSION, DRIFT_CODEX_VERSION, *installed_codex_versions()})
"""Versions the version-parametrized tests run against (``codex_version`` fixture)."""


def _missing(exc: AppServerError) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the end-to-end tests: {exc}")
    pytest.skip(str(exc))


@pytest.fixture(autouse=True)
def _e2e_needs_codex(request: pytest.FixtureRequest) -> None:
    """Tests marked e2e skip without codex on a developer machine, and fail in CI."""
    if request.node.get_closest_marker("e2e") is None:
        return
    try:
        find_codex()
    except AppServerError as exc:
        _missing(exc)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test taking ``codex_version`` runs once per codex release in ``.tools/``."""
    if "codex_version" in metafunc.fixturenames:
        metafunc.parametrize("codex_version", CODEX_VERSIONS)


@pytest.fixture
def codex_bin(codex_version: str) -> Path:
    """The codex executable of ``codex_version`` (skips without it; fails in CI)."""
    try:
        return find_codex(version=codex_version)
    except AppServerError as exc:
        _missing(exc)
        raise


@pytest.fixture(scope="session")
def codex_schema(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``codex_schema(version)``: that release's generated JSON Schema folder, made once per
    test session in a private cache (skips without that codex; fails in CI)."""
    cache = tmp_path_factory.mktemp("schema-cache")

    def get(version: str) -> Path:
        try:
            codex = find_codex(version=version)
        except AppServerError as exc:
            _missing(exc)
            raise
        return schema_dir(codex, cache=cache)

    return get


@pytest.fixture
async def backend() -> AsyncIterator[FakeBackend]:
    """A started fake model backend with the default reply, closed at teardown."""
    async with FakeBackend() as started:
        yield started


@pytest.fixture
async def upstream() -> AsyncIterator[ScriptedUpstream]:
    """A scripted websocket upstream (tests/scripted_upstream.py), closed at teardown."""
    async with ScriptedUpstream() as server:
        yield server


@pytest.fixture
def tracked_popen(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[subprocess.Popen[str]]]:
    """Every process started through ``subprocess.Popen`` during the test (the official SDK
    starts its codex that way), reaped and with its pipes closed at teardown.

    `CodexClient.close()` terminates its child but never closes the child's stdout and stderr
    pipes, which warnings-as-errors turns into a failure when they are collected.
    """
    started: list[subprocess.Popen[str]] = []

    class TrackedPopen(subprocess.Popen[str]):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(subprocess, "Popen", TrackedPopen)
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs on a fresh folder, unmounted at teardown (root only; skipped where
    mounting is not permitted)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


FAKE_CODEX = Path(__file__).resolve().parent / "fake_codex.py"


@pytest.fixture
def fake_codex(tmp_path: Path) -> Path:
    """An executable that runs tests/fake_codex.py (a tiny stdio app-server)."""
    path = tmp_path / "real-codex"
    path.write_text(f'#!/bin/sh\nexec {sys.executable} {FAKE_CODEX} "$@"\n')
    path.chmod(0o755)
    return path
