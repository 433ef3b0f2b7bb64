"""The event loop rpctape's commands run on: uvloop where it is installed, else asyncio's own.

uvloop comes with the ``fast`` extra (``pip install 'rpctape[fast]'``). On one message per
wakeup (a request and its response) the loop and its system calls are most of the time, and
uvloop shortens a relayed or replayed round trip; on a stream it changes little
(docs/benchmarks.md). ``RPCTAPE_LOOP=asyncio`` forces the standard loop, ``uvloop`` requires
uvloop. Only the commands choose a loop: the library and the pytest plugin run on whatever
loop their caller runs.
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ..errors import UsageError

T = TypeVar("T")

LOOP_ENV = "RPCTAPE_LOOP"
"""``asyncio`` forces the standard loop; ``uvloop`` requires uvloop; unset or ``auto``: uvloop
if it is installed."""


class LoopUnavailable(UsageError):
    """``RPCTAPE_LOOP`` names a loop that cannot be had."""


def loop_factory(choice: str | None = None) -> tuple[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The loop to run on, as ``(name, factory)``; ``choice`` defaults to ``$RPCTAPE_LOOP``."""
    choice = (os.environ.get(LOOP_ENV, "") if choice is None else choice).strip().lower()
    if choice not in ("", "auto", "asyncio", "uvloop"):
        raise LoopUnavailable(f"{LOOP_ENV}={choice}: expected asyncio, uvloop or auto")
    if choice == "asyncio":
        return "asyncio", asyncio.new_event_loop
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise LoopUnavailable(
                f"{LOOP_ENV}=uvloop: uvloop is not installed (pip install 'rpctape[fast]')"
            ) from None
        return "asyncio", asyncio.new_event_loop
    return "uvloop", uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """:func:`asyncio.run` on the loop :func:`loop_factory` picks."""
    try:
        _, factory = loop_factory()
    except LoopUnavailable:
        main.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def freeze_loaded() -> None:
    """Move everything allocated so far (a loaded cassette, its plan) out of the garbage
    collector's sight: it lives until the process ends, and walking it on every collection
    cost a replay 5-10% per frame (docs/benchmarks.md). No collection first: a full one over
    a big cassette delays the start by a tenth of a second or more. For commands only, never
    a library caller's process."""
    gc.freeze()
