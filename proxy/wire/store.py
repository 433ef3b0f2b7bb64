"""The cassette on disk during a session: new file, append, atomic replace, abandon.

One rule for every door (docs/reliability.md): a cassette that exists is never written in
place. A recording that would replace it goes to a temporary file beside it (the same file
system, so the final rename is atomic) and replaces it only when the session ended well
(:meth:`CassetteFile.commit`); ``new_episodes`` appends to a copy. A recording into a path
that does not exist yet is written there directly, so a killed rpctape leaves a readable
cassette holding every frame it forwarded. A recording that is not kept
(:meth:`CassetteFile.abandon`: a write failure, a failed test, a server that exited badly)
leaves the old cassette byte for byte as it was; the new lines are deleted, or kept beside
it when the door asks (``keep_partial``: ``record`` and ``wrap``, whose users want what was
captured).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
from pathlib import Path

from ..core.cassette import CassetteWriter, Event
from ..errors import CassetteError, CassetteWriteError

log = logging.getLogger("rpctape.store")

TEMP_SUFFIX = ".recording"
"""Temporary recordings are named ``.NAME.XXXXXXXX.recording`` beside the cassette."""


def temp_beside(path: Path, suffix: str = TEMP_SUFFIX) -> Path:
    """A fresh hidden file name beside ``path`` (same folder, so renames are atomic)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{suffix}")


def is_rpctape_temp(path: Path) -> bool:
    """Whether ``path`` is one of rpctape's own hidden or temporary files."""
    return path.name.startswith(".")


class CassetteFile:
    """One session's cassette: where new lines go and what happens to them at the end.

    Call :meth:`record` (a fresh recording) or :meth:`extend` (``new_episodes``) once, then
    :meth:`commit` or :meth:`abandon` once; both are safe twice.
    """

    def __init__(self, path: Path, *, keep_partial: bool = False) -> None:
        self.path = path
        self.keep_partial = keep_partial
        self.writer: CassetteWriter | None = None
        self.temp: Path | None = None
        """The temporary file a recording goes to when the cassette already exists."""
        self.kept: Path | None = None
        """Where an abandoned recording was left (``keep_partial``), if anywhere."""
        self.served = True
        """Whether the session served anything: an abandoned recording of a session that
        never served is removed quietly (a failed start leaves no header-only cassette)."""
        self._in_place = False
        self._done = False

    @property
    def target(self) -> Path:
        """The file the lines are written to now."""
        return self.temp if self.temp is not None else self.path

    def record(self, header: Event, *, overwrite: bool = True) -> CassetteWriter:
        """A new recording: beside the cassette if it exists (``overwrite`` false refuses
        that), else in place."""
        if self.path.is_dir():
            raise CassetteError(
                f"{self.path} is a directory, not a cassette file; name a .jsonl file"
            )
        if self.path.exists():
            if not overwrite:
                raise CassetteError(
                    f"{self.path} already exists; choose another path or pass --overwrite"
                )
            self.temp = temp_beside(self.path)
            self.writer = CassetteWriter(self.temp, header)
        else:
            self.writer = CassetteWriter(self.path, header)
            self._in_place = True
        return self.writer

    def extend(self, header: Event) -> CassetteWriter:
        """``new_episodes``: a copy of the cassette to append to (replaces it on commit), or
        a new recording when there is none yet."""
        if not self.path.is_file():
            return self.record(header)
        self.temp = temp_beside(self.path)
        try:
            shutil.copyfile(self.path, self.temp)
            os.chmod(self.temp, 0o600)
        except OSError as exc:
            self.temp.unlink(missing_ok=True)
            self.temp = None
            raise CassetteWriteError(self.path, exc) from exc
        self.writer = CassetteWriter.append_to(self.temp)
        return self.writer

    @property
    def failed(self) -> CassetteWriteError | None:
        """The write error that stopped this recording, if one did."""
        return self.writer.failed if self.writer is not None else None

    def commit(self) -> bool:
        """The session ended well: the recording becomes the cassette (atomically). A
        recording whose writes failed is abandoned instead. Returns whether it was kept."""
        if self._done:
            return self.kept is None and self.writer is not None
        try:
            self._close()
        except CassetteWriteError:
            self.abandon()
            return False
        if self.failed is not None:
            self.abandon()
            return False
        self._done = True
        if self.temp is not None:
            try:
                os.replace(self.temp, self.path)
            except OSError as exc:
                self._done = False
                self.abandon()
                raise CassetteWriteError(self.path, exc) from exc
            self.temp = None
        if self.writer is not None:
            log.info("recorded %s", self.path)
        return True

    def abandon(self) -> None:
        """The recording is not kept: the cassette that was there stays as it was."""
        if self._done:
            return
        self._done = True
        with contextlib.suppress(CassetteWriteError):
            self._close()
        keep = self.keep_partial and self.served
        say = log.warning if self.served else log.info
        if self.temp is not None:
            if keep:
                self.kept = self.temp
                log.warning("recording not kept; %s is unchanged; the recording is in %s",
                            self.path, self.temp)  # fmt: skip
            else:
                self.temp.unlink(missing_ok=True)
                say("recording not kept; %s is unchanged", self.path)
        elif self._in_place:
            if keep:
                self.kept = self.path
            else:
                self.path.unlink(missing_ok=True)
                say("recording not kept; no cassette at %s", self.path)

    def _close(self) -> None:
        if self.writer is not None:
            self.writer.close()
