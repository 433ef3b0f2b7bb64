"""Which cassettes a test run used: the ledger behind ``pytest --rpctape-unused`` and the
stale-cassette summary.

Pure code. Each test of the run that asks for a cassette claims it, whether it runs, is
skipped or is deselected (:meth:`Usage.claim`); each fixture notes what it served
(:meth:`Usage.served`): the cassette, the folder it was looked up in, the recorded connections
its replay played, whether it recorded, and why the cassette is stale (``--codex-version``).
Parallel workers each keep a ledger and hand it over as JSON (:meth:`Usage.to_json`,
:meth:`Usage.merge`); the run's end compares the merged ledger with the cassettes of the
folders (:meth:`Usage.unused`, :meth:`Usage.unplayed`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CassetteUse", "Unplayed", "Usage"]


@dataclass
class CassetteUse:
    """What the run did with one cassette."""

    played: set[int] = field(default_factory=set)
    """Recorded connections some test's replay played, by number."""
    recorded: bool = False
    """Some test recorded into it during the run (its connections are new, not unplayed)."""


@dataclass(frozen=True)
class Unplayed:
    """A cassette some test replayed, with recorded connections no test played."""

    cassette: str
    connections: tuple[int, ...]

    def render(self) -> str:
        """``cassettes/x.jsonl: recorded connection(s) 2, 3 never played``."""
        numbers = ", ".join(str(c) for c in self.connections)
        return f"{self.cassette}: recorded connection(s) {numbers} never played"


@dataclass
class Usage:
    """The cassettes a run's fixtures served, and the folders they were served from."""

    folders: set[str] = field(default_factory=set)
    claimed: set[str] = field(default_factory=set)
    """Cassettes a test of the run names (run, skipped or deselected)."""
    cassettes: dict[str, CassetteUse] = field(default_factory=dict)
    """Cassettes a fixture served, and what it did with them."""
    stale: dict[str, str] = field(default_factory=dict)
    """Stale cassettes (``--codex-version``): the cassette and why, once each."""

    def claim(self, folder: str, cassette: str) -> None:
        """A test of the run names ``cassette`` (looked up in ``folder``)."""
        self.folders.add(folder)
        self.claimed.add(cassette)

    def served(
        self,
        folder: str,
        cassette: str,
        *,
        played: Iterable[int] = (),
        recorded: bool = False,
        stale: str = "",
    ) -> None:
        """A fixture served ``cassette`` (looked up in ``folder``)."""
        self.claim(folder, cassette)
        use = self.cassettes.setdefault(cassette, CassetteUse())
        use.played.update(played)
        use.recorded = use.recorded or recorded
        if stale:
            self.stale.setdefault(cassette, stale)

    def to_json(self) -> dict[str, Any]:
        """The ledger as JSON-able values (what a parallel worker sends its controller)."""
        return {
            "folders": sorted(self.folders),
            "claimed": sorted(self.claimed),
            "cassettes": {
                name: {"played": sorted(use.played), "recorded": use.recorded}
                for name, use in sorted(self.cassettes.items())
            },
            "stale": dict(sorted(self.stale.items())),
        }

    def merge(self, data: Mapping[str, Any]) -> None:
        """Add a ledger given as :meth:`to_json` made it (a worker's)."""
        self.folders.update(data.get("folders", ()))
        self.claimed.update(data.get("claimed", ()))
        for name, use in data.get("cassettes", {}).items():
            mine = self.cassettes.setdefault(name, CassetteUse())
            mine.played.update(use["played"])
            mine.recorded = mine.recorded or bool(use["recorded"])
        for name, why in data.get("stale", {}).items():
            self.stale.setdefault(name, why)

    def unused(self, listed: Iterable[str]) -> list[str]:
        """The cassettes of ``listed`` (the folders' cassettes) no test of the run names."""
        return [name for name in listed if name not in self.claimed]

    def unplayed(self, connections: Callable[[str], Iterable[int]]) -> list[Unplayed]:
        """Cassettes replayed (and not recorded into) during the run whose recorded
        connections (``connections(cassette)``) were not all played, in name order."""
        found = []
        for name, use in sorted(self.cassettes.items()):
            if use.recorded:
                continue
            left = tuple(c for c in connections(name) if c not in use.played)
            if left:
                found.append(Unplayed(name, left))
        return found
