"""rpctape: record/replay man-in-the-middle proxy for Codex app-server JSON-RPC traffic."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .version import CASSETTE_FORMAT_VERSION, __version__

__all__ = [
    "CASSETTE_FORMAT_VERSION",
    "ReplayServer",
    "__version__",
    "recording_proxy",
    "replay_server",
]

if TYPE_CHECKING:
    from .codex.library import ReplayServer as ReplayServer
    from .codex.library import recording_proxy as recording_proxy
    from .codex.library import replay_server as replay_server

_LAZY = frozenset({"ReplayServer", "recording_proxy", "replay_server"})


def __getattr__(name: str) -> Any:
    """The library door (:mod:`proxy.codex.library`) on first use (``import proxy`` stays light)."""
    if name in _LAZY:
        from .codex import library

        return getattr(library, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
