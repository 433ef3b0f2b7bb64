"""``rpctape wrap -- codex app-server ARGS``: a recording shim for clients that spawn the server.

The VS Code extension and the desktop app start ``codex app-server`` and speak JSON Lines
over its stdin and stdout. ``wrap`` stands in its place: it starts the real command, relays
its own stdin to the child's stdin and the child's stdout to its own stdout, line by line as
each line completes, and records both directions. Its stdout carries nothing but the child's
output; its own logs go to stderr (or ``--log``). Signals it receives are passed to the child;
it exits with the child's exit code (128 + N when the child died of signal N).

When the cassette cannot be written, nothing more is relayed (a frame is never forwarded
unrecorded): the child's stdin and our stdout are closed, the child gets SIGTERM (SIGKILL
``grace`` seconds later), and :func:`run_wrap` raises the
:class:`~proxy.errors.CassetteWriteError` once the child is gone (``rpctape wrap`` prints it
as one line and exits 74).
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..core.cassette import CassetteWriter, new_header
from ..core.recorder import Recorder
from ..core.redact import Redactor
from ..core.rules import Rule
from .bridge import Bridge
from .legs import ChildLeg, StdioLeg
from .relay import DEFAULT_MAX_SIZE

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                     signal.SIGUSR1, signal.SIGUSR2)  # fmt: skip


DRAIN = 0.5
"""Seconds the child's last output may wait for a client that does not read, once stopping."""


def exit_status(code: int) -> int:
    """A shell's view of a child's status: its code, or 128 + N for death by signal N."""
    return code if code >= 0 else 128 - code


async def run_wrap(
    command: Sequence[str],
    cassette: Path,
    *,
    rules: Sequence[Rule] = (),
    redactor: Redactor | None = None,
    overwrite: bool = False,
    max_size: int = DEFAULT_MAX_SIZE,
    on_started: Callable[[], None] | None = None,
) -> int:
    """Run ``command`` behind this process's stdio, recording; return the exit status.

    ``on_started`` is called once the child runs and the cassette holds its ``open`` event.
    Raises :class:`~proxy.errors.CassetteWriteError` (after the child is gone) when the
    cassette could not be written.
    """
    upstream = "stdio:" + shlex.join(command)
    header = new_header(upstream, transport="stdio", meta={"client_transport": "stdio"})
    writer = CassetteWriter(cassette, header, overwrite=overwrite)
    try:
        recorder = Recorder(writer, redactor)
        conn = recorder.new_connection()
        try:
            child = await ChildLeg.spawn(command, max_size)
        except OSError as exc:
            recorder.error(conn, f"cannot start {upstream}: {exc}", stage="connect")
            raise
        opened: StdioLeg | None = None
        try:
            client = opened = await StdioLeg.open(max_size)
            recorder.open(
                conn,
                path="",
                headers=(),
                subprotocol=None,
                upstream=upstream,
                transport="stdio",
                client_transport="stdio",
            )
        except BaseException:  # e.g. the open event could not be written: no child left
            if opened is not None:
                opened.abort()
            child.abort()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(child.exited), 5)
            raise
        if on_started is not None:
            on_started()
        bridge = Bridge(conn, client, child, recorder, rules)
        stop = asyncio.Event()
        # SIGINT/SIGTERM received, or the cassette failed: do not wait for a stalled client.

        def write_failed(*_: object) -> None:
            child.signal(signal.SIGTERM)  # nothing can be recorded: stop it now, not after grace
            stop.set()

        def forward(sig: int) -> None:
            child.signal(sig)
            if sig in (signal.SIGINT, signal.SIGTERM):
                stop.set()

        bridge.on_write_failed = write_failed
        bridge.start()
        loop = asyncio.get_running_loop()
        for sig in FORWARDED_SIGNALS:
            loop.add_signal_handler(sig, forward, sig)
        try:
            code = await asyncio.shield(child.exited)
            # Its last output is relayed while our client reads it; once stopping, a client
            # that does not read holds us DRAIN seconds at most.
            stopped = asyncio.ensure_future(stop.wait())
            try:
                lost = asyncio.ensure_future(asyncio.shield(child.lost))
                waits: set[asyncio.Future[Any]] = {lost, stopped}
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopped.cancel()
                lost.cancel()
            if not child.lost.done():
                try:
                    await asyncio.wait_for(asyncio.shield(child.lost), DRAIN)
                except TimeoutError:
                    client.abort()  # drops what the client did not read; the child's EOF follows
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(child.lost), DRAIN)
            client.close(1000, "app-server exited")  # no-op if the bridge closed it already
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(bridge.wait(), DRAIN if stop.is_set() else 5)
        finally:
            for sig in FORWARDED_SIGNALS:
                loop.remove_signal_handler(sig)
        if bridge.failure is not None:
            raise bridge.failure
        return exit_status(code)
    finally:
        writer.close()
