"""The library door: rpctape's sessions for Python code, with codex's conventions.

``async with replay_server("c.jsonl") as url:`` serves a cassette to the code under test;
``async with recording_proxy("ws://127.0.0.1:4222", "c.jsonl") as url:`` records what goes
through it. Both are :class:`~proxy.wire.session.Session` objects with the options model's
keyword arguments (docs/replay.md), and codex's dialect (:mod:`proxy.codex.dialect`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from ..core.options import Door
from ..core.recorder import FrameValidator
from ..core.rules import Rule
from ..wire.session import Session
from .dialect import CODEX


class ReplayServer(Session):
    """A :class:`~proxy.wire.session.Session` of the library door with codex's dialect.

    Use as ``async with ReplayServer(path, **options) as url:``; ``url`` is
    ``ws://127.0.0.1:PORT`` (``listen=`` says otherwise). :attr:`report` says what was not
    replayed and every miss, at any time and finally after the block; with ``strict=True``
    leaving the block raises :class:`~proxy.core.replay_report.ReplayMismatch` when the
    report is not clean. A recording made by ``once``, ``all`` or ``new_episodes`` replaces
    the cassette only when the block exits without an exception.
    """

    def __init__(
        self,
        cassette: Path | str,
        *,
        command: Sequence[str] = (),
        validator: FrameValidator | None = None,
        extra_rules: Sequence[Rule] = (),
        after_load: Callable[[], None] | None = None,
        meta: dict[str, Any] | None = None,
        fresh: bool = False,
        keep_partial: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(
            cassette,
            door=Door.LIBRARY,
            command=command,
            dialect=CODEX,
            validator=validator,
            extra_rules=extra_rules,
            after_load=after_load,
            meta=meta,
            fresh=fresh,
            keep_partial=keep_partial,
            **options,
        )


def replay_server(cassette: Path | str, **options: Any) -> ReplayServer:
    """A :class:`ReplayServer` for ``async with replay_server(path, **options) as url:``.

    It binds 127.0.0.1 on a free port unless ``listen`` says otherwise; keep the returned
    object to read its :attr:`~ReplayServer.report` after the block.
    """
    return ReplayServer(cassette, **options)


@contextlib.asynccontextmanager
async def recording_proxy(
    upstream: str | None,
    cassette: Path | str,
    *,
    command: Sequence[str] = (),
    meta: dict[str, Any] | None = None,
    **options: Any,
) -> AsyncIterator[str]:
    """Run a recording relay in-process on 127.0.0.1 (a free port); yield its ws URL.

    ``upstream`` is the app-server's URL, or ``None`` with ``command=(...)`` to start that
    command per client over stdio. An existing cassette is refused unless
    ``overwrite=True``. The recording is kept when the block ends, whatever ended it (what
    was forwarded was recorded; after a write failure, every frame forwarded before it).
    """
    session = ReplayServer(
        cassette,
        command=command,
        meta=meta,
        fresh=True,
        keep_partial=True,
        record_mode="all",
        upstream=upstream,
        **options,
    )
    await session.start()
    try:
        yield session.url
    finally:
        await session.close(commit=True)


__all__ = ["ReplayServer", "recording_proxy", "replay_server"]
