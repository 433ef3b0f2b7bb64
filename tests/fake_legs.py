"""Fake legs for socket-free bridge tests (not a test module): two legs and a writer in
memory, every action appended to one shared journal, so tests can assert the order of
cassette writes and sends (record first, forward after) exactly."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from proxy.core.jsonrpc import Message
from proxy.core.recorder import Recorder
from proxy.core.rules import Rule
from proxy.errors import CassetteWriteError
from proxy.wire.bridge import Bridge
from proxy.wire.legs import ClosePlan, Leg, Party
from proxy.wire.store import CassetteWriter
from tests.faults import enospc

Journal = list[tuple[Any, ...]]


class FakeLeg(Leg):
    """A leg that journals what it is sent and how it is closed."""

    def __init__(self, name: str, journal: Journal) -> None:
        super().__init__(name)
        self.journal = journal
        self.sent: list[Message] = []
        self.closed_with: tuple[int, str] | None = None
        self.hung_up: tuple[int, str] | None = None

    @property
    def is_open(self) -> bool:
        return self.closed_with is None and self.hung_up is None

    def send(self, messages: Sequence[Message]) -> bool:
        if not self.is_open:
            return False
        self.journal.append(("send", self.name, [payload for _, payload in messages]))
        self.sent.extend(messages)
        return True

    def close(self, code: int, reason: str) -> None:
        if not self.is_open:
            return
        self.closed_with = (code, reason)
        self.journal.append(("close", self.name, code, reason))
        self.report_closed()
        self._set_lost()

    def close_plan(self) -> ClosePlan:
        if self.hung_up is not None:
            code, reason = self.hung_up
            return ClosePlan(Party(self.name), code, reason, code, reason)
        assert self.closed_with is not None
        code, reason = self.closed_with
        return ClosePlan(Party.PROXY, code, reason, code, reason)

    def receive(self, *payloads: bytes | str) -> None:
        """The peer sent these messages (str: text, bytes: binary), in one read."""
        self.deliver(
            [(True, p.encode()) if isinstance(p, str) else (False, p) for p in payloads]
        )

    def hang_up(self, code: int, reason: str) -> None:
        """The peer closed with ``code`` and ``reason``."""
        self.hung_up = (code, reason)
        self.report_closed()
        self._set_lost()


class MemoryWriter(CassetteWriter):
    """A cassette writer that journals each write; fails (ENOSPC) after ``fail_after``."""

    def __init__(self, journal: Journal, fail_after: int | None = None) -> None:
        self.path = Path("memory.jsonl")
        self._failed = None
        self._fd = None
        self.journal = journal
        self.fail_after = fail_after
        self.writes = 0

    def append_lines(self, data: bytes) -> None:
        if self._failed is None and self.fail_after is not None and self.writes >= self.fail_after:
            self._failed = CassetteWriteError(self.path, enospc())
        if self._failed is not None:
            raise self._failed
        self.writes += 1
        self.journal.append(("write", [orjson.loads(line) for line in data.splitlines()]))

    def close(self) -> None:
        pass


def joined(
    rules: Sequence[dict[str, Any] | Rule] = (),
    fail_after: int | None = None,
    *,
    recording: bool = True,
) -> tuple[Bridge, FakeLeg, FakeLeg, Journal]:
    """A started bridge between two fake legs: recording into a :class:`MemoryWriter`
    (``recording=False``: no recorder, as replay); rules as tables or :class:`Rule`."""
    journal: Journal = []
    client, server = FakeLeg("client", journal), FakeLeg("server", journal)
    recorder = None
    if recording:
        writer = MemoryWriter(journal)
        recorder = Recorder(writer)
        recorder.open(1, path="/", headers=(), subprotocol=None, upstream="fake")
        journal.clear()  # the open event
        writer.fail_after, writer.writes = fail_after, 0
    built = [r if isinstance(r, Rule) else Rule.from_dict(r) for r in rules]
    bridge = Bridge(1, client, server, recorder, built)
    bridge.start()
    return bridge, client, server, journal


def written(journal: Journal) -> list[dict[str, Any]]:
    """Every event written, in order."""
    return [event for entry in journal if entry[0] == "write" for event in entry[1]]


