"""Shared pytest setup: end-to-end tests need the real codex app-server."""

from __future__ import annotations

import os

import pytest

from proxy.appserver import find_codex
from proxy.errors import AppServerError


@pytest.fixture(autouse=True)
def _e2e_needs_codex(request: pytest.FixtureRequest) -> None:
    """Tests marked e2e skip without codex on a developer machine, and fail in CI."""
    if request.node.get_closest_marker("e2e") is None:
        return
    try:
        find_codex()
    except AppServerError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the end-to-end tests: {exc}")
        pytest.skip(str(exc))
