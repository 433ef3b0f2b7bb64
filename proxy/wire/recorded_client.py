"""``rpctape verify``: a recorded client, played against a live app-server, recorded anew.

:class:`RecordedClientLeg` is the client :class:`~proxy.wire.legs.Leg` of one recorded connection:
what it sends and when is decided by the pure planner :class:`~proxy.core.verify.ClientPlan`. A
:class:`~proxy.wire.bridge.Bridge` joins it to a live server leg from
:func:`~proxy.wire.upstream.open_upstream` (a websocket, a unix socket, or one child per recorded
connection over stdio) and records the new session, rules applied, like ``record`` does.
:func:`verify_cassette` does that for every connection of a cassette, then compares the new
recording with the original (:func:`proxy.core.diff.diff_cassettes`).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.datastructures import Headers
from websockets.frames import CloseCode
from websockets.http11 import Request

from ..core.cassette import Cassette, Event, load, new_header
from ..core.dialect import NEUTRAL, Dialect, RecordedVersion, recorded_version
from ..core.diff import DiffReport, diff_cassettes
from ..core.jsonrpc import Message
from ..core.recorded import RecordedConnection, recorded_connections
from ..core.recorder import Recorder
from ..core.redact import Redactor
from ..core.rules import Rule
from ..core.verify import ClientPlan
from ..errors import RpctapeError, UpstreamError
from ..wire.store import CassetteWriter
from .bridge import Bridge
from .legs import ClosePlan, Leg, Party
from .listener import DEFAULT_MAX_SIZE
from .store import cassette_files, stamp_version, temporary_beside
from .upstream import Upstream, open_upstream

__all__ = [
    "RecordedClientLeg",
    "SummaryRow",
    "Verdict",
    "VerifyOutcome",
    "default_out",
    "render_outcome",
    "render_summary",
    "settle",
    "summary_json",
    "verify_cassette",
    "verify_paths",
]

log = logging.getLogger("rpctape.verify")

DEFAULT_TIMEOUT = 30.0
"""Seconds one wait may take (a response, a turn's notifications) before verify gives up."""

_NOT_SENT_UPSTREAM = frozenset({"authorization", "cookie"})


class RecordedClientLeg(Leg):
    """The client side of a recorded connection, sending as :class:`ClientPlan` decides.

    The live server's frames come in through :meth:`send` (the bridge forwards them here);
    the client messages they make due go out through :meth:`~proxy.wire.legs.Leg.deliver`. It
    closes (1000) once the plan is finished; if ``timeout`` seconds pass without progress
    (no frame counting towards the wait in force, nothing sent), or the server closes first,
    it closes too and :attr:`failure` says what did not come.
    """

    def __init__(self, plan: ClientPlan, timeout: float = DEFAULT_TIMEOUT) -> None:
        super().__init__("client")
        self.plan = plan
        self.timeout = timeout
        self.failure: str | None = None
        self._ended: ClosePlan | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = -1

    def start(self) -> None:
        """Send what needs no wait; call once the bridge is started."""
        self._advance(self.plan.start())

    @property
    def is_open(self) -> bool:
        return self._ended is None

    def send(self, messages: Sequence[Message]) -> bool:
        if not self.is_open:
            return False
        for is_text, payload in messages:
            if is_text:
                self._advance(self.plan.receive(payload))
        return True

    def _advance(self, due: list[Message]) -> None:
        self.deliver(due)
        if not self.is_open:
            return
        if self.plan.finished:
            self._finish(ClosePlan(Party.CLIENT, 1000, "verify done", 1000, "verify done"))
        elif self._timer is None or self.plan.progress != self._armed_at:
            self._arm()

    def _arm(self) -> None:
        self._armed_at = self.plan.progress
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.timeout, self._expired)

    def _expired(self) -> None:
        self._timer = None
        if not self.is_open:
            return
        self.failure = f"no progress within {self.timeout:g} s {self.plan.describe_wait()}"
        reason = "verify: timed out waiting for the server"
        self._finish(ClosePlan(Party.PROXY, 1000, reason, 1000, reason))

    def close(self, code: int, reason: str) -> None:
        """The server leg ended first."""
        if not self.is_open:
            return
        if not self.plan.finished:
            self.failure = f"the server closed ({reason}) {self.plan.describe_wait()}"
        self._finish(ClosePlan(Party.SERVER, code, reason, code, reason))

    def close_plan(self) -> ClosePlan:
        if self._ended is not None:
            return self._ended
        return ClosePlan(Party.CLIENT, None, "still open", CloseCode.NORMAL_CLOSURE, "")

    def _finish(self, ended: ClosePlan) -> None:
        log.info(
            "recorded client ends after %d message(s): %s",
            self.plan.sent,
            self.failure or "done",
        )
        self._ended = ended
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.report_closed()
        self._set_lost()


@dataclass
class VerifyOutcome:
    """What verifying one cassette gave."""

    source: Path
    out: Path
    diff: DiffReport | None = None
    failures: list[str] = field(default_factory=list)
    """Connections that could not be played to the end (what did not come, or why)."""
    updated: bool = False
    """The cassette was replaced by the new recording (``--update``)."""
    live_version: str | None = None
    """The version the live server gave of itself (stamped into the new recording's
    header), when the dialect could read one."""

    @property
    def ok(self) -> bool:
        """Played to the end and equivalent."""
        return not self.failures and self.diff is not None and self.diff.equivalent


def default_out(source: Path) -> Path:
    """Where verify puts the new recording of ``source`` when not told: one predictable
    hidden file beside it, ``.NAME.verify.jsonl`` (``cassettes/two-turns.jsonl`` ->
    ``cassettes/.two-turns.verify.jsonl``), which the next verify of ``source`` replaces.
    Hidden, so listings of a cassette folder skip it
    (:func:`proxy.wire.store.cassette_files`); git-ignored by ``.*.verify.jsonl``."""
    return source.with_name(f".{source.stem}.verify.jsonl")


def _upgrade_request(opened: Event | None) -> Request:
    """The upgrade request to open upstream: the recorded path and end-to-end headers
    (credentials were redacted in the recording and are not sent)."""
    path = str(opened.get("path") or "/") if opened else "/"
    headers = Headers()
    recorded = opened.get("headers") if opened else None
    if isinstance(recorded, dict):
        for name, value in recorded.items():
            if name.lower() not in _NOT_SENT_UPSTREAM and isinstance(value, str):
                headers[name] = value
    return Request(path, headers)


async def _play(
    recorded: RecordedConnection,
    opened: Event | None,
    target: Upstream,
    recorder: Recorder,
    rules: Sequence[Rule],
    timeout: float,
    max_size: int,
) -> str | None:
    """Play one recorded connection against ``target``; the failure, or ``None``."""
    conn = recorder.new_connection()
    request = _upgrade_request(opened)
    url = target.url_for(request.path)
    try:
        server = await open_upstream(target, request, max_size=max_size)
    except UpstreamError as exc:
        recorder.error(conn, str(exc), stage="connect", upstream=url)
        return str(exc)
    recorder.open(
        conn,
        path=request.path,
        headers=request.headers.raw_items(),
        subprotocol=None,
        upstream=url,
        transport=target.kind,
        client_transport="recorded",
    )
    client = RecordedClientLeg(ClientPlan(recorded), timeout)
    bridge = Bridge(conn, client, server, recorder, rules)
    bridge.start()
    client.start()
    await bridge.wait()
    if client.failure is not None:
        recorder.error(conn, f"verify: {client.failure}")
    return client.failure


async def verify_cassette(
    source: Path,
    target: Upstream,
    out: Path,
    *,
    rules: Sequence[Rule] = (),
    redactor: Redactor | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    ignore: Sequence[str] = (),
    max_size: int = DEFAULT_MAX_SIZE,
    original: Cassette | None = None,
    meta: Mapping[str, Any] | None = None,
    dialect: Dialect = NEUTRAL,
) -> VerifyOutcome:
    """Play every recorded connection of ``source`` against ``target``, one after another,
    record the new session to ``out``, and diff it against ``source``.

    The recording is written to a temporary file beside ``out`` and renamed over it when
    it ends (also when it ends in an error), so ``out`` is always a whole recording: the
    previous run's until this one's is done, whatever runs at the same time.

    The new header keeps the original's ``meta`` except ``codex`` (the version that recorded
    it; give the live one in ``meta`` when known), adds ``verified_from`` (the cassette's
    name), then ``meta``; once the session ends, the header's ``codex`` field says which
    server answered, as the live server said it (``dialect.server_version``; kept in
    :attr:`VerifyOutcome.live_version`)."""
    tape = original or load(source)
    outcome = VerifyOutcome(source, out)
    header_meta = {k: v for k, v in (tape.header.get("meta") or {}).items() if k != "codex"}
    header_meta["verified_from"] = source.name
    header_meta.update(meta or {})
    header = new_header(target.url, transport=target.kind, meta=header_meta)
    temp = temporary_beside(out)
    writer = CassetteWriter(temp, header)
    recorder = Recorder(writer, redactor or Redactor())
    opens = {e["conn"]: e for e in tape.events if e["kind"] == "open"}
    try:
        for recorded in recorded_connections(tape):
            failure = await _play(
                recorded, opens.get(recorded.conn), target, recorder, rules, timeout, max_size
            )
            if failure is not None:
                outcome.failures.append(f"conn {recorded.conn}: {failure}")
    except BaseException:
        _settle_temporary(writer, temp, out)
        raise
    outcome.live_version = _settle_temporary(writer, temp, out, dialect)
    outcome.diff = diff_cassettes(tape, load(out), ignore)
    return outcome


def _settle_temporary(
    writer: CassetteWriter, temp: Path, out: Path, dialect: Dialect | None = None
) -> str | None:
    """Close the new recording, stamp the server's version into its header (with a
    ``dialect``), and rename it over ``out``; never leave ``temp`` behind. Returns the
    version stamped."""
    try:
        writer.close()
        version = stamp_version(temp, dialect) if dialect is not None else None
        os.replace(temp, out)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return version


def settle(outcome: VerifyOutcome, *, update: bool, keep: bool) -> None:
    """After a verify: with ``update``, a complete new recording replaces the cassette
    (atomic rename); otherwise the new recording is removed when it is equivalent and
    ``keep`` is false (a default temporary file), and kept for a look when not."""
    if update and not outcome.failures:
        os.replace(outcome.out, outcome.source)
        outcome.updated = True
    elif not keep and outcome.ok:
        outcome.out.unlink(missing_ok=True)


def render_outcome(outcome: VerifyOutcome) -> list[str]:
    """The lines ``rpctape verify`` prints for one cassette."""
    lines: list[str] = []
    if outcome.diff is not None:
        for entry in outcome.diff.entries:
            lines += entry.render()
    lines += [f"{outcome.source}: FAILED {failure}" for failure in outcome.failures]
    summary = outcome.diff.summary() if outcome.diff is not None else "not compared"
    if outcome.updated:
        where = f"cassette updated with the new recording ({summary})"
    elif outcome.ok and not outcome.out.exists():
        where = summary
    else:
        where = f"{summary}; new recording in {outcome.out}"
    lines.append(f"{outcome.source}: verify: {where}")
    return lines


# --- verify over folders: which codex made each cassette, and does it still hold ---------


class Verdict(enum.Enum):
    """How one cassette fared in :func:`verify_paths`."""

    EQUIVALENT = "equivalent"
    DIFFERENT = "different"
    FAILED = "failed"
    """A connection could not be played to the end."""
    UPDATED = "updated"
    """Replaced by its new recording (``--update``)."""
    ERROR = "error"
    """Not verified: the file could not be read as a cassette."""


@dataclass
class SummaryRow:
    """One cassette of a summary: the version that recorded it, the one it was verified
    against, and the outcome (or why there is none)."""

    source: Path
    recorded: RecordedVersion | None = None
    outcome: VerifyOutcome | None = None
    error: str | None = None

    @property
    def live_version(self) -> str | None:
        return self.outcome.live_version if self.outcome is not None else None

    @property
    def verdict(self) -> Verdict:
        outcome = self.outcome
        if outcome is None:
            return Verdict.ERROR
        if outcome.failures:
            return Verdict.FAILED
        if outcome.updated:
            return Verdict.UPDATED
        return Verdict.EQUIVALENT if outcome.ok else Verdict.DIFFERENT

    def detail(self) -> str:
        """The diff's counts, the first failure, or the error."""
        if self.outcome is None:
            return self.error or ""
        if self.outcome.failures:
            return self.outcome.failures[0]
        diff = self.outcome.diff
        return "" if diff is None else diff.summary().split(": ", 1)[-1]

    def to_json(self) -> dict[str, Any]:
        outcome = self.outcome
        kept = outcome is not None and not outcome.updated and outcome.out.exists()
        return {
            "cassette": str(self.source),
            "codex": None if self.recorded is None else self.recorded.version,
            "codex_from": None if self.recorded is None else self.recorded.source.value,
            "against": self.live_version,
            "result": self.verdict.value,
            "detail": self.detail(),
            "new": str(outcome.out) if outcome is not None and kept else None,
        }


async def verify_paths(
    paths: Sequence[Path],
    target: Upstream,
    *,
    dialect: Dialect = NEUTRAL,
    update: bool = False,
    on_outcome: Callable[[VerifyOutcome], None] | None = None,
    **options: Any,
) -> list[SummaryRow]:
    """Verify every cassette ``paths`` name (folders walked with
    :func:`~proxy.wire.store.cassette_files`: rpctape's hidden and temporary files left out)
    against ``target``, one after another, and say per cassette which version recorded it
    (:func:`~proxy.core.dialect.recorded_version`) and how it fared.

    Each new recording goes to :func:`default_out` and is settled (:func:`settle`: removed
    when equivalent, or with ``update`` replacing the cassette); ``on_outcome`` sees each
    outcome as it comes (to print its diff). A file that is not a readable cassette gets an
    ``error`` row and the others go on. ``options`` are :func:`verify_cassette`'s (``rules``,
    ``timeout``, ``ignore``, ...). A path that does not exist raises
    :class:`~proxy.errors.CassetteNotFound` before anything runs.
    """
    rows: list[SummaryRow] = []
    for path in cassette_files(paths):
        try:
            tape = load(path)
        except RpctapeError as exc:
            rows.append(SummaryRow(path, error=str(exc)))
            continue
        outcome = await verify_cassette(
            path, target, default_out(path), original=tape, dialect=dialect, **options
        )
        settle(outcome, update=update, keep=False)
        if on_outcome is not None:
            on_outcome(outcome)
        rows.append(SummaryRow(path, recorded_version(tape, dialect), outcome))
    return rows


_COLUMNS = ("cassette", "recorded with", "against", "result")


def render_summary(rows: Sequence[SummaryRow]) -> list[str]:
    """The summary as a text table, one row per cassette, then the counts.

    Columns: the cassette, the version that recorded it and where that was read
    (``0.169.0 (header)``), the version of the server it was verified against, and the
    result with the diff's counts, the failure or the error; ``-`` for a version unknown.
    """
    table = [
        (
            str(row.source),
            "-" if row.recorded is None else row.recorded.describe(),
            row.live_version or "-",
            f"{row.verdict.value}: {row.detail()}" if row.detail() else row.verdict.value,
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [_COLUMNS, *table]) for i in range(3)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line[:3], widths, strict=True))
        + "  "
        + line[3]
        for line in [_COLUMNS, *table]
    ]
    counts = Counter(row.verdict for row in rows)
    lines.append(
        f"{len(rows)} cassette(s): "
        + ", ".join(f"{counts[verdict]} {verdict.value}" for verdict in Verdict)
    )
    return lines


def summary_json(rows: Sequence[SummaryRow]) -> dict[str, Any]:
    """The summary as JSON: ``{"cassettes": [one object per row], "counts": {...}}``."""
    counts = Counter(row.verdict for row in rows)
    return {
        "cassettes": [row.to_json() for row in rows],
        "counts": {verdict.value: counts[verdict] for verdict in Verdict},
    }
