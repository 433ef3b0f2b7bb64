"""What several benchmark scripts share (not a benchmark itself)."""

from __future__ import annotations

import asyncio
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


async def start(*argv: str) -> tuple[asyncio.subprocess.Process, str]:
    """Start a server command (``rpctape record``, an upstream) from the repository root and
    return it with the URL from its ``listening on URL`` line."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, cwd=ROOT
    )
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
    if not line.startswith("listening on "):
        raise RuntimeError(f"{argv[:3]} did not start: {line!r}")
    return proc, line.split()[-1]
