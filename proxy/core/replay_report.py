"""What a replay did: per connection, what was matched, sent, left unused, and every miss.

Pure code. The planner (:mod:`proxy.core.planner`) and the session
(:mod:`proxy.core.replay_session`) build these; the doors render them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import RpctapeError

SHOWN = 10
"""At most this many ``not replayed``, ``not sent`` and ``miss`` entries are rendered per
connection, and this many recorded connections never replayed; the rest are counted
(``... and N more``). :meth:`ReplayReport.to_json` has every one."""


class ReplayMismatch(RpctapeError, AssertionError):
    """A strict replay had misses or left recorded client messages unused."""


@dataclass(frozen=True)
class Candidate:
    """A recorded client message named in a miss message, and why it did not match."""

    seq: int
    description: str
    note: str

    def render(self) -> str:
        """``seq 7 request thread/start, next in order: /params/cwd: got ..., recorded ...``."""
        return f"seq {self.seq} {self.description}: {self.note}"


@dataclass(frozen=True)
class Miss:
    """A live client frame that matched nothing, or a connection with no recording left."""

    live_connection: int
    recorded_connection: int | None
    message: int
    """The live client message's number on its connection (from 1; 0 for the connection)."""
    description: str
    candidates: tuple[Candidate, ...] = ()
    note: str = ""

    def render(self) -> str:
        """The explanation a person reads: in the error reply, the log and the report."""
        where = f"live connection {self.live_connection}"
        if self.recorded_connection is not None:
            where += f", recorded connection {self.recorded_connection}"
        if self.message:
            where += f", client message {self.message}"
        lines = [f"rpctape: no recorded match for {self.description} ({where})"]
        if self.note:
            lines.append(self.note)
        if self.candidates:
            lines.append("closest recorded client messages:")
            lines.extend(f"- {c.render()}" for c in self.candidates)
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """The miss as JSON (:meth:`ReplayReport.to_json`)."""
        return {
            "message": self.message,
            "description": self.description,
            "note": self.note,
            "candidates": [
                {"seq": c.seq, "description": c.description, "note": c.note}
                for c in self.candidates
            ],
            "text": self.render(),
        }


@dataclass(frozen=True)
class Unused:
    """A recorded frame that was not replayed (client: never matched; server: never sent)."""

    seq: int
    description: str


@dataclass(frozen=True)
class ConnectionReport:
    """What happened on one live connection (or to one recorded connection never used)."""

    live: int | None
    """The live connection number, from 1; ``None`` for a recorded connection never used."""
    recorded: int | None
    """The recorded connection replayed, or (``recorded_live``) the one appended."""
    recorded_live: bool = False
    """True when the connection was relayed to the upstream and recorded, not replayed."""
    client: tuple[int, int] = (0, 0)
    """Recorded client messages matched, of how many."""
    server: tuple[int, int] = (0, 0)
    """Recorded server messages sent, of how many."""
    unused_client: tuple[Unused, ...] = ()
    unused_server: tuple[Unused, ...] = ()
    misses: tuple[Miss, ...] = ()
    notes: tuple[str, ...] = ()
    """How the recording was chosen, frames held too long for another connection."""

    def render(self, shown: int = SHOWN) -> list[str]:
        """Lines of the report for this connection: at most ``shown`` of each list (not
        replayed, not sent, misses), then how many more."""
        if self.recorded_live:
            return [
                f"live connection {self.live}: relayed to the upstream and recorded as "
                f"connection {self.recorded}"
            ]
        if self.live is None:
            head = f"recorded connection {self.recorded}: never replayed"
        elif self.recorded is None:
            head = f"live connection {self.live}: no recorded connection"
        else:
            head = f"live connection {self.live} = recorded connection {self.recorded}"
        lines = [
            f"{head}: {self.client[0]} of {self.client[1]} client message(s) matched, "
            f"{self.server[0]} of {self.server[1]} server message(s) sent"
        ]
        lines += [f"  note: {note}" for note in self.notes]
        lines += [
            f"  not replayed: seq {u.seq} {u.description}" for u in self.unused_client[:shown]
        ]
        lines += _more(len(self.unused_client) - shown, "recorded client message(s) not replayed")
        lines += [f"  not sent: seq {u.seq} {u.description}" for u in self.unused_server[:shown]]
        lines += _more(len(self.unused_server) - shown, "recorded server message(s) not sent")
        for miss in self.misses[:shown]:
            text = miss.render().replace("\n", "\n    ")
            lines.append(f"  miss: {text}")
        lines += _more(len(self.misses) - shown, "miss(es)")
        return lines

    def to_json(self) -> dict[str, Any]:
        """This connection as JSON (:meth:`ReplayReport.to_json`)."""
        return {
            "live": self.live,
            "recorded": self.recorded,
            "recorded_live": self.recorded_live,
            "client": {"matched": self.client[0], "recorded": self.client[1]},
            "server": {"sent": self.server[0], "recorded": self.server[1]},
            "notes": list(self.notes),
            "not_replayed": [
                {"seq": u.seq, "description": u.description} for u in self.unused_client
            ],
            "not_sent": [{"seq": u.seq, "description": u.description} for u in self.unused_server],
            "misses": [m.to_json() for m in self.misses],
        }


def _more(count: int, what: str) -> list[str]:
    """``  ... and N more WHAT`` when ``count`` entries were left out."""
    return [f"  ... and {count} more {what}"] if count > 0 else []


@dataclass(frozen=True)
class ReplayReport:
    """What was not replayed and every miss, per connection; rendered for people."""

    cassette: str
    connections: tuple[ConnectionReport, ...] = ()
    notes: tuple[str, ...] = ()
    """Lines printed after the summary (e.g. what was recorded instead of replayed)."""
    unfired: tuple[str, ...] = ()
    """Faults (``--fault``) that never fired, by their spec."""

    @property
    def played(self) -> tuple[int, ...]:
        """The recorded connections replayed to a live connection, by number."""
        return tuple(
            c.recorded
            for c in self.connections
            if c.live is not None and c.recorded is not None and not c.recorded_live
        )

    @property
    def misses(self) -> tuple[Miss, ...]:
        """Every miss, in connection order."""
        return tuple(m for c in self.connections for m in c.misses)

    @property
    def unused_client(self) -> tuple[Unused, ...]:
        """Every recorded client message that was never matched."""
        return tuple(u for c in self.connections for u in c.unused_client)

    @property
    def clean(self) -> bool:
        """No miss, no unused recorded client message and no fault that never fired (what
        ``--strict`` requires)."""
        return not self.misses and not self.unused_client and not self.unfired

    def render(self, shown: int = SHOWN) -> str:
        """The report as text, a summary line first; it stays short whatever the cassette's
        size: at most ``shown`` entries of each list per connection and ``shown`` recorded
        connections never replayed, with counts for the rest (:meth:`to_json` has them all)."""
        live = sum(1 for c in self.connections if c.live is not None)
        recorded = sum(1 for c in self.connections if c.recorded_live)
        unused_server = sum(len(c.unused_server) for c in self.connections)
        head = (
            f"rpctape replay report for {self.cassette}: {live} live connection(s)"
            + (f" ({recorded} recorded live)" if recorded else "")
            + f", {len(self.misses)} miss(es), {len(self.unused_client)} recorded client "
            f"message(s) not replayed, {unused_server} recorded server message(s) not sent"
        )
        lines = [head, *self.notes]
        never = 0
        for conn in self.connections:
            if conn.live is None and not conn.recorded_live:
                never += 1
                if never > shown:
                    continue
            lines.extend(conn.render(shown))
        if never > shown:
            left = [c for c in self.connections if c.live is None and not c.recorded_live]
            rest = left[shown:]
            messages = sum(c.client[1] for c in rest)
            lines.append(
                f"... and {len(rest)} more recorded connection(s) never replayed "
                f"({messages} recorded client message(s))"
            )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """The whole report as JSON, every entry of every list (what a door writes to a file
        when asked). Its shape::

            {"cassette": str, "clean": bool,
             "summary": {"live_connections": int, "recorded_live": int, "misses": int,
                         "not_replayed": int, "not_sent": int},
             "notes": [str],
             "connections": [
                 {"live": int | null,        # null: a recorded connection never replayed
                  "recorded": int | null,    # null: no recording was left for it
                  "recorded_live": bool,     # relayed to the upstream and recorded
                  "client": {"matched": int, "recorded": int},
                  "server": {"sent": int, "recorded": int},
                  "notes": [str],
                  "not_replayed": [{"seq": int, "description": str}],
                  "not_sent": [{"seq": int, "description": str}],
                  "misses": [{"message": int, "description": str, "note": str,
                              "candidates": [{"seq": int, "description": str,
                                              "note": str}],
                              "text": str}]}]}

        ``description`` is what the text report shows after the seq (``> request x``);
        a miss's ``text`` is its explanation as rendered."""
        return {
            "cassette": self.cassette,
            "clean": self.clean,
            "summary": {
                "live_connections": sum(1 for c in self.connections if c.live is not None),
                "recorded_live": sum(1 for c in self.connections if c.recorded_live),
                "misses": len(self.misses),
                "not_replayed": len(self.unused_client),
                "not_sent": sum(len(c.unused_server) for c in self.connections),
            },
            "notes": list(self.notes),
            "connections": [c.to_json() for c in self.connections],
        }

    def check(self) -> None:
        """Raise :class:`ReplayMismatch` with the rendered report unless :attr:`clean`."""
        if not self.clean:
            raise ReplayMismatch(self.render())
