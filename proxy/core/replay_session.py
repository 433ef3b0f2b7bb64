"""Which recorded connection a live one replays, the order across them, and the report.

Pure code. One :class:`ReplaySession` per served cassette: it numbers live connections,
pairs each with the unused recording that fits it best (:meth:`ReplaySession.pair`, or
:meth:`ReplaySession.pair_matching` for ``new_episodes``), keeps the recorded order across
connections (:mod:`proxy.core.ordering`) and gathers the :class:`ReplayReport`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from .cassette import Cassette
from .dialect import NEUTRAL, Dialect
from .jsonrpc import Direction
from .matching import Frame, Rules, explain
from .ordering import Ordering
from .planner import ConnectionReplay, ReplayOptions
from .recorded import Item, RecordedConnection, recorded_connections
from .replay_report import ConnectionReport, Miss, ReplayReport, Unused

VARYING_HEADERS = frozenset(
    {"host", "sec-websocket-key", "authorization", "cookie", "content-length", "date"}
)
"""Upgrade headers that change from run to run (a port, a nonce, a secret): not compared
when a live connection is paired with a recorded one."""


@dataclass(frozen=True)
class Handshake:
    """What a live client's upgrade request says, for pairing it with a recording."""

    path: str = "/"
    headers: tuple[tuple[str, str], ...] = ()
    subprotocols: tuple[str, ...] = ()
    """The subprotocols the client offers, in its order."""


def _header_map(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        if key not in VARYING_HEADERS:
            out[key] = f"{out[key]}, {value}" if key in out else value
    return out


@dataclass(frozen=True)
class Fit:
    """How well one unused recorded connection fits a live one; smaller is better."""

    conn: int
    first: int
    """0 when the first client messages match under the session's rules (or none is known
    yet), else 1."""
    client_name: int
    """0 when ``initialize``'s ``clientInfo.name`` is the same (a preference even when
    ``match_on`` ignores clientInfo), else 1."""
    path: int
    """0 when the upgrade paths are the same, else 1."""
    headers: int
    """How many upgrade headers differ (``VARYING_HEADERS`` left out)."""
    differences: int
    """Matcher failures and member differences of the first client messages."""
    why: str = ""
    """What differs, for the report."""

    @property
    def key(self) -> tuple[int, int, int, int, int]:
        """The rank without the tie-breaker (the recorded connection number)."""
        return (self.first, self.client_name, self.path, self.headers, self.differences)


def fit(
    recorded: RecordedConnection,
    handshake: Handshake,
    first: Frame | None,
    rules: Rules,
    dialect: Dialect = NEUTRAL,
) -> Fit:
    """Score ``recorded`` for a live connection that sent ``handshake`` then ``first``
    (``dialect`` names the client, :meth:`~proxy.core.dialect.Dialect.client_name`)."""
    open_event = recorded.open or {}
    why: list[str] = []
    recorded_path = open_event.get("path", "/")
    # A stdio connection has no path: any recording fits it by path, and it fits any.
    path = 0 if not handshake.path or not recorded_path or recorded_path == handshake.path else 1
    if path:
        why.append(f"path: got {handshake.path!r}, recorded {open_event.get('path')!r}")
    raw = open_event.get("headers") or {}
    pairs = raw.items() if isinstance(raw, dict) else ()
    got, was = _header_map(handshake.headers), _header_map(pairs)
    differing = sorted(k for k in got.keys() | was.keys() if got.get(k) != was.get(k))
    if differing:
        why.append(f"header(s) differ: {', '.join(differing)}")
    first_miss = differences = name = 0
    recorded_first = recorded.first_client_frame()
    if first is not None:
        if recorded_first is None:
            first_miss, differences = 1, 1
            why.append("the recorded connection has no client messages")
        else:
            verdict = explain(first, recorded_first, rules)
            first_miss = 0 if verdict.matched else 1
            differences = len(verdict.failures) + len(verdict.differences)
            if not verdict.matched:  # the miss of that message explains the difference
                why.append("first client message differs (see its miss)")
            if dialect.client_name(first) != dialect.client_name(recorded_first):
                name = 1
                if verdict.matched:
                    why.append(
                        f"clientInfo.name: got {dialect.client_name(first)!r}, recorded "
                        f"{dialect.client_name(recorded_first)!r}"
                    )
    return Fit(recorded.conn, first_miss, name, path, len(differing), differences, "; ".join(why))


def _for_ordering(item: Item) -> tuple[int, bool, Any, Any, str]:
    """What :meth:`Ordering.build` reads of a recorded frame (its event parsed once)."""
    event = item.event
    msg, response_to = event.get("msg"), event.get("response_to")
    return item.seq, item.direction is Direction.C2S, msg, response_to, item.describe()


class ReplaySession:
    """Pairs live connections with recorded ones, keeps the order across them, gathers the
    report.

    One per session. Each live connection gets a number from :meth:`open`, then one way of
    choosing its recording, for listener and stdio clients alike: :meth:`pair` (by its
    handshake and first message: the best unused recording), or :meth:`pair_matching`
    (``new_episodes``: the best among those whose first client message matches, else
    :meth:`recorded_live`: it was relayed and recorded instead). :attr:`ordering` keeps the
    recorded order across connections (:mod:`proxy.core.ordering`).
    """

    def __init__(self, cassette: Cassette | None, options: ReplayOptions, name: str) -> None:
        self.options = options
        self.name = name
        self.recorded = recorded_connections(cassette) if cassette is not None else []
        # One recorded connection has no order across connections to keep: its player never
        # asks (Ordering.independent), so its messages are not listed for it.
        ordered = self.recorded if len(self.recorded) > 1 else []
        self.ordering = Ordering.build(
            ((r.conn, [_for_ordering(item) for item in r.items]) for r in ordered),
            options.order,
        )
        self._claimed: set[int] = set()
        self._live = 0
        self._connections: dict[int, ConnectionReplay | ConnectionReport] = {}
        self._notes: dict[int, list[str]] = {}

    def open(self) -> int:
        """Number a new live connection (from 1)."""
        self._live += 1
        return self._live

    def note(self, live: int, text: str) -> None:
        """Add a line to live connection ``live``'s part of the report."""
        self._notes.setdefault(live, []).append(text)

    def _claim(self, live: int, recorded: RecordedConnection) -> ConnectionReplay:
        self._claimed.add(recorded.conn)
        replay = ConnectionReplay(live, recorded, self.options)
        self._connections[live] = replay
        return replay

    def unused(self) -> list[RecordedConnection]:
        """The recorded connections not replayed yet, in cassette order."""
        left = [r for r in self.recorded if r.conn not in self._claimed]
        if not left and self.options.allow_playback_repeats:
            return list(self.recorded)  # allow_playback_repeats: every recording answers again
        return left

    def none_left(self, live: int) -> Miss | None:
        """The miss of there being no unused recorded connection (recorded in the report)."""
        if self.unused():
            return None
        miss = Miss(
            live,
            None,
            0,
            "a new connection",
            note=f"all {len(self.recorded)} recorded connection(s) of {self.name} were "
            "already replayed",
        )
        self._connections[live] = ConnectionReport(live, None, misses=(miss,))
        return miss

    def subprotocol(self, handshake: Handshake) -> str | None:
        """The subprotocol to accept before the recording is chosen: the first one an unused
        recording negotiated that the client offers."""
        for recorded in self.unused():
            if recorded.subprotocol is not None and recorded.subprotocol in handshake.subprotocols:
                return recorded.subprotocol
        return None

    def fits(self, handshake: Handshake, first: str | bytes | None) -> list[Fit]:
        """Every unused recording scored for this live connection, best first."""
        frame = None if first is None else Frame.live(first)
        rules, dialect = self.options.rules, self.options.dialect
        scored = [fit(r, handshake, frame, rules, dialect) for r in self.unused()]
        return sorted(scored, key=lambda f: (f.key, f.conn))

    def speaks_first(self, handshake: Handshake) -> bool:
        """Whether the recording the handshake alone would choose has server frames before
        its first client frame: then it is chosen at once (a client waiting for them would
        never speak first)."""
        fits = self.fits(handshake, None)
        if not fits:
            return False
        best = next(r for r in self.recorded if r.conn == fits[0].conn)
        return bool(best.prelude)

    def pair(
        self, live: int, handshake: Handshake, first: str | bytes | None
    ) -> ConnectionReplay | Miss:
        """Choose the best unused recording for a live connection by its ``handshake`` and
        ``first`` message (``None`` when deciding before it).

        Best means, in this order: its first client message matches, the same
        ``clientInfo.name``, the same path, fewer differing headers, fewer differences, then
        the lowest recorded connection number. A tie, or a choice whose first message does
        not match, is noted in the report (the mismatch itself is then an ordinary miss of
        that connection, answered per ``on_miss``).
        """
        fits = self.fits(handshake, first)
        if not fits:
            miss = self.none_left(live)
            assert miss is not None
            return miss
        best = fits[0]
        tied = [f.conn for f in fits if f.key == best.key]
        if len(tied) > 1:
            self.note(
                live,
                f"recorded connections {', '.join(map(str, tied))} fit equally; chose "
                f"{best.conn}, the first",
            )
        if best.first:
            self.note(
                live,
                "no unused recorded connection starts with this client message; replaying "
                f"the closest, recorded connection {best.conn} ({best.why})",
            )
        elif best.client_name or best.path:
            self.note(live, f"chose recorded connection {best.conn} despite: {best.why}")
        recorded = next(r for r in self.recorded if r.conn == best.conn)
        return self._claim(live, recorded)

    def pair_matching(
        self, live: int, handshake: Handshake, first: str | bytes
    ) -> ConnectionReplay | None:
        """``new_episodes``: the best unused recording (as :meth:`pair` ranks them) among those
        whose first client message matches ``first``; ``None`` if none does."""
        fits = [f for f in self.fits(handshake, first) if not f.first]
        if not fits:
            return None
        tied = [f.conn for f in fits if f.key == fits[0].key]
        if len(tied) > 1:
            self.note(
                live,
                f"recorded connections {', '.join(map(str, tied))} fit equally; chose "
                f"{fits[0].conn}, the first",
            )
        recorded = next(r for r in self.recorded if r.conn == fits[0].conn)
        return self._claim(live, recorded)

    def gone_before_speaking(self, live: int) -> None:
        """Live connection ``live`` closed before its first message: no recording was used."""
        self._connections[live] = ConnectionReport(live, None)
        self.note(live, "closed before its first message; no recorded connection was used")

    def recorded_live(self, live: int, conn: int) -> None:
        """Live connection ``live`` was relayed to the upstream and recorded as ``conn``."""
        self._connections[live] = ConnectionReport(live, conn, recorded_live=True)

    def episode_failed(self, live: int, message: str) -> None:
        """Live connection ``live`` matched no recording and could not be recorded either."""
        miss = Miss(live, None, 0, "a new connection", note=message)
        self._connections[live] = ConnectionReport(live, None, misses=(miss,))

    def report(self) -> ReplayReport:
        """Every live connection so far, then every recorded connection never replayed."""
        reports: list[ConnectionReport] = []
        for live in sorted(self._connections):
            entry = self._connections[live]
            report = entry.report() if isinstance(entry, ConnectionReplay) else entry
            notes = tuple(self._notes.get(live, ()))
            reports.append(replace(report, notes=report.notes + notes) if notes else report)
        for recorded in self.recorded:
            if recorded.conn in self._claimed:
                continue
            reports.append(
                ConnectionReport(
                    None,
                    recorded.conn,
                    client=(0, len(recorded.client)),
                    server=(0, recorded.server_count),
                    unused_client=tuple(
                        Unused(recorded.items[i].seq, recorded.items[i].describe())
                        for i in recorded.client
                    ),
                )
            )
        return ReplayReport(self.name, tuple(reports))
