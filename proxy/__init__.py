"""rpctape: record/replay man-in-the-middle proxy for Codex app-server JSON-RPC traffic."""

from __future__ import annotations

__version__ = "0.1.0"

CASSETTE_FORMAT_VERSION = 1
"""Version of the cassette format this rpctape writes (see docs/cassette-format.md)."""

__all__ = ["CASSETTE_FORMAT_VERSION", "__version__"]
