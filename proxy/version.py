"""rpctape's version and the cassette format version it writes (a leaf: imports nothing)."""

__version__ = "0.1.0"

CASSETTE_FORMAT_VERSION = 1
"""Version of the cassette format this rpctape writes (see docs/cassette-format.md)."""
