"""Throw-away pytest projects run by a real `pytest`, as a user would (not a test module)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

INI = """[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
filterwarnings = error
addopts = --strict-markers -p no:cacheprovider
timeout = 60
"""
"""The projects' pytest.ini: as strict as the suite's own."""


async def run_pytest(
    project: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run `python -m pytest ARGS` in ``project`` (with ``env`` added); exit code and output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pytest",
        "-q",
        *args,
        cwd=project,
        env={**_outer_environment(), **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def _outer_environment() -> dict[str, str]:
    """This process's environment without what pytest-xdist sets in a worker (the inner
    pytest is a run of its own, whether or not this suite runs in workers)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST_")}


def summary(output: str) -> str:
    """The counts of the last line: ``2 passed, 1 failed``."""
    last = output.strip().splitlines()[-1]
    return re.sub(r" in [\d.]+s.*$", "", last)
