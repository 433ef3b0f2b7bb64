"""rpctape: record/replay man-in-the-middle proxy for Codex app-server JSON-RPC traffic."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

CASSETTE_FORMAT_VERSION = 1
"""Version of the cassette format this rpctape writes (see docs/cassette-format.md)."""

__all__ = ["CASSETTE_FORMAT_VERSION", "__version__", "recording_proxy", "replay_server"]

if TYPE_CHECKING:
    from .wire.relay import recording_proxy as recording_proxy
    from .wire.replay_server import replay_server as replay_server


def __getattr__(name: str) -> Any:
    """Import ``recording_proxy`` and ``replay_server`` on first use (``import proxy`` stays
    light)."""
    if name == "recording_proxy":
        from .wire.relay import recording_proxy

        return recording_proxy
    if name == "replay_server":
        from .wire.replay_server import replay_server

        return replay_server
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
