"""The small error tree of rpctape.

Every error rpctape raises on purpose derives from :class:`RpctapeError` and from the builtin
that fits, so callers can catch either. Messages say what happened and what to do.
"""

from __future__ import annotations


class RpctapeError(Exception):
    """Base class of every error rpctape raises on purpose."""


class UsageError(RpctapeError, ValueError):
    """A command-line option or API argument is invalid."""


class CassetteError(RpctapeError, ValueError):
    """A cassette file cannot be read: not a cassette, or corrupt."""


class CassetteNotFound(CassetteError, FileNotFoundError):
    """The cassette file does not exist."""


class CassetteVersionError(CassetteError):
    """The cassette was written by a newer rpctape (format version too new)."""


class UpstreamError(RpctapeError, ConnectionError):
    """The upstream app-server could not be reached or went away."""


class AppServerError(RpctapeError, RuntimeError):
    """The real codex app-server could not be found, started, or failed."""


class CassetteWriteError(RpctapeError, OSError):
    """The cassette could not be written (disk full, I/O error, file removed or read-only).

    Its message names the cassette and the operating system's error; ``errno`` is the OS
    error's. A writer that raised it stays failed: nothing more is written.
    """

    def __init__(self, path: object, cause: OSError) -> None:
        reason = cause.strerror or str(cause) or type(cause).__name__
        super().__init__(
            f"cannot write cassette {path}: {reason} (errno {cause.errno}); "
            "frames from now on cannot be recorded"
        )
        self.errno = cause.errno
        self.path = path
        self.cause = cause


class CassetteLocked(RpctapeError, TimeoutError):
    """Another session is recording the cassette, for longer than this one may wait."""


class StaleCassette(RpctapeError, ValueError):
    """The cassette was recorded with another codex than the one the project is pinned to
    (``--codex-version`` with ``--stale fail``)."""
