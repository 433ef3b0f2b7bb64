"""The cassette on disk: its lifecycle during a session, which files in a folder are
cassettes, and replacing one atomically.

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

And the functions a cassette folder needs:

- :func:`cassette_files` lists the cassettes of files and folders, leaving out hidden files
  and rpctape's own temporary files (a recording in progress, ``.NAME.XXXX.recording``; a
  verify's new recording, ``.NAME.verify.jsonl``), so a folder of committed cassettes reads
  the same whatever ran in it;
- :func:`replace_atomically` writes a file's new bytes beside it and renames them over it:
  a reader sees the old file or the new one, never half of one;
- :func:`rewrite_header` changes fields of a cassette's header line that way, every other
  byte kept.

Sessions that may write the same cassette (two pytest workers, two ``rpctape-codex``
processes) take turns: :class:`CassetteLock`, an exclusive ``flock`` on ``.NAME.lock`` beside
the cassette, held from the moment a session decides to record until its recording is
committed or abandoned (docs/cassette-format.md, "Parallel sessions").
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson

from ..core.cassette import Event, event_lines, load, parse_lines
from ..core.dialect import VERSION_FIELD, Dialect
from ..errors import CassetteError, CassetteLocked, CassetteNotFound, CassetteWriteError

__all__ = [
    "CASSETTE_SUFFIX",
    "CassetteFile",
    "CassetteLock",
    "CassetteWriter",
    "cassette_files",
    "is_cassette_name",
    "is_rpctape_temporary",
    "lock_path",
    "replace_atomically",
    "restore",
    "rewrite_header",
    "stamp_version",
    "temporary_beside",
]

log = logging.getLogger("rpctape.store")

CASSETTE_SUFFIX = ".jsonl"

_TEMPORARY_SUFFIXES = (".recording", ".verify.jsonl", ".lock")


class CassetteWriter:
    """Appends cassette lines to a file created with mode 0600.

    Each :meth:`append` is one ``write(2)`` of whole lines, so a process killed at any point
    leaves every earlier line intact and at most the last line torn. Nothing is buffered in
    this process: an event is in the operating system's hands when ``append`` returns.
    """

    def __init__(self, path: Path, header: Event, *, overwrite: bool = False) -> None:
        self.path = path
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if overwrite else os.O_EXCL)
        self._failed: CassetteWriteError | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CassetteWriteError(path, exc) from exc
        try:
            self._fd: int | None = os.open(path, flags, 0o600)
        except FileExistsError:
            raise CassetteError(
                f"{path} already exists; choose another path or pass --overwrite"
            ) from None
        except OSError as exc:
            raise CassetteWriteError(path, exc) from exc
        try:
            os.fchmod(self._fd, 0o600)
            self.append([header])
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.close()
            if isinstance(exc, CassetteWriteError):
                raise
            raise CassetteWriteError(path, exc) from exc

    @classmethod
    def append_to(cls, path: Path) -> CassetteWriter:
        """Open an existing cassette to append events (no new header).

        A torn last line (a recorder killed mid-write) is cut off first, so appended lines
        never follow half a line; a whole last line missing its newline gets one.
        """
        writer = cls.__new__(cls)
        writer.path = path
        writer._failed = None
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND)
        except OSError as exc:
            raise CassetteWriteError(path, exc) from exc
        try:
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):
                cut = data.rfind(b"\n") + 1
                try:
                    whole = isinstance(orjson.loads(data[cut:]), dict)
                except orjson.JSONDecodeError:
                    whole = False
                if whole:
                    os.write(fd, b"\n")
                else:
                    os.ftruncate(fd, cut)
        except BaseException:
            os.close(fd)
            raise
        writer._fd = fd
        return writer

    def append(self, events: Iterable[Event]) -> None:
        """Write ``events`` as lines, in one system call when possible."""
        self.append_lines(event_lines(events))

    def append_lines(self, data: bytes) -> None:
        """Write already serialised lines (each ending in ``\\n``) in one system call.

        Raises :class:`CassetteWriteError` when the operating system refuses (disk full, I/O
        error, a bad descriptor); from then on the writer is failed: every later call raises
        the same error at once, without writing. A line cut by the failure is at most the
        last line of the file, which readers ignore as torn.
        """
        if self._failed is not None:
            raise self._failed
        if self._fd is None:
            raise CassetteError(f"cassette {self.path} is closed")
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            self._failed = CassetteWriteError(self.path, exc)
            raise self._failed from exc

    @property
    def failed(self) -> CassetteWriteError | None:
        """The error that stopped this writer, if one did."""
        return self._failed

    def close(self) -> None:
        """Flush to disk and close; safe to call twice, and after a failure.

        A failed ``fsync`` of a writer that had not failed yet raises
        :class:`CassetteWriteError`; a failed writer closes without raising.
        """
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.fsync(fd)
        except OSError as exc:
            if self._failed is None:
                self._failed = CassetteWriteError(self.path, exc)
                raise self._failed from exc
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)


def is_rpctape_temporary(name: str) -> bool:
    """Whether a file name is one of rpctape's own temporary files: ``.NAME.XXXX.recording``
    (a recording or a rewrite in progress), ``.NAME.verify.jsonl`` (``rpctape verify``'s
    new recording; older rpctape wrote ``.NAME.XXXX.verify.jsonl``) or ``.NAME.lock`` (a
    session is recording NAME: :class:`CassetteLock`)."""
    return name.startswith(".") and name.endswith(_TEMPORARY_SUFFIXES)


def is_cassette_name(name: str) -> bool:
    """Whether a file found in a folder counts as a cassette: ``*.jsonl`` and not hidden
    (which leaves out every temporary file of :func:`is_rpctape_temporary`)."""
    return name.endswith(CASSETTE_SUFFIX) and not name.startswith(".")


def cassette_files(paths: Iterable[Path | str], *, recursive: bool = True) -> list[Path]:
    """The cassettes ``paths`` name: a file as it is (named, it is meant, whatever its
    name), a folder walked for :func:`is_cassette_name` files (recursively, not entering
    hidden folders, unless ``recursive`` is false); sorted within each folder, each file
    once, in the order given.

    A path that does not exist raises :class:`~proxy.errors.CassetteNotFound`.
    """
    found: dict[Path, None] = {}
    for given in paths:
        path = Path(given)
        if path.is_dir():
            for root, folders, files in os.walk(path):
                folders[:] = sorted(f for f in folders if recursive and not f.startswith("."))
                for name in sorted(files):
                    if is_cassette_name(name):
                        found.setdefault(Path(root) / name, None)
        elif path.exists():
            found.setdefault(path, None)
        else:
            raise CassetteNotFound(f"no cassette at {path}")
    return list(found)


def temporary_beside(path: Path) -> Path:
    """A fresh temporary name beside ``path``: ``.NAME.XXXXXXXX.recording`` (hidden, so
    folder listings skip it; one of :func:`is_rpctape_temporary`'s names)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.recording")


def replace_atomically(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Make ``data`` the content of ``path`` in one step.

    Written to :func:`temporary_beside` (same folder, so the rename cannot cross file
    systems) with ``mode`` (default: the mode ``path`` has, or ``0600`` for a new file, the
    mode of every cassette rpctape creates), flushed to disk, then renamed over ``path``; the
    folder is flushed too where the system allows. On failure the temporary file is removed
    and :class:`~proxy.errors.CassetteWriteError` names ``path``; ``path`` is as it was.
    """
    if mode is None:
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o600
        except OSError as exc:
            raise CassetteWriteError(path, exc) from exc
    temp = temporary_beside(path)
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except OSError as exc:
        raise CassetteWriteError(path, exc) from exc
    try:
        try:
            os.fchmod(fd, mode)  # the umask does not narrow it
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise CassetteWriteError(path, exc) from exc
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Flush a rename to disk (best effort: not every system opens folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def rewrite_header(path: Path, updates: Mapping[str, Any]) -> Event:
    """Set fields of a cassette's header line (a value ``None`` removes the field) and
    return the new header. Every other byte of the file is kept; the file is replaced
    atomically (:func:`replace_atomically`), and not written at all when nothing changes.

    The header's own fields cannot be changed this way: ``rpctape`` (the format version)
    belongs to the migrations. Raises :class:`~proxy.errors.CassetteError` for a file that
    is not a readable cassette.
    """
    if "rpctape" in updates:
        raise CassetteError("the header's format version is not rewritten: migrations own it")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CassetteNotFound(f"no cassette at {path}") from None
    except OSError as exc:
        raise CassetteError(f"cannot read cassette {path}: {exc.strerror or exc}") from None
    parse_lines(data, source=str(path))  # refuses what is not a cassette
    header: Event = orjson.loads(data.split(b"\n", 1)[0])  # the line as written, not migrated
    new = dict(header)
    for name, value in updates.items():
        if value is None:
            new.pop(name, None)
        else:
            new[name] = value
    if new == header:
        return header
    cut = data.find(b"\n")
    rest = b"" if cut < 0 else data[cut:]
    replace_atomically(path, orjson.dumps(new) + rest)
    return new


def stamp_version(path: Path, dialect: Dialect, version: str | None = None) -> str | None:
    """Write which server made the cassette at ``path`` into its header's ``codex`` field:
    ``version`` when the caller knows it (the real binary a stand-in ran), else what the
    recorded server said of itself (``dialect.server_version``: for codex, ``initialize``'s
    ``userAgent``). Returns the version written, or ``None`` (nothing known, nothing written).

    Call it on a finished recording, before it is renamed into place: the header is
    rewritten atomically (:func:`rewrite_header`), every other byte kept.
    """
    if version is None:
        version = dialect.server_version(load(path).events)
    if version is None:
        return None
    rewrite_header(path, {VERSION_FIELD: version})
    return version


# --- taking turns ------------------------------------------------------------------------------

LOCK_POLL = (0.005, 0.1)
"""The first and the longest pause, in seconds, between two attempts to take a busy lock."""


def lock_path(cassette: Path) -> Path:
    """``.NAME.lock`` beside the cassette (hidden: folder listings skip it)."""
    return cassette.with_name(f".{cassette.name}.lock")


def pauses() -> Iterable[float]:
    """The pauses between attempts to take a busy lock: doubling from the first to the
    longest of :data:`LOCK_POLL`."""
    pause, longest = LOCK_POLL
    while True:
        yield pause
        pause = min(pause * 2, longest)


class CassetteLock:
    """The right to write one cassette, exclusive across threads and processes: an
    ``flock`` on :func:`lock_path`.

    A session takes it when it decides to record (or finds another session recording: the
    lock file is there, :attr:`present`) and holds it until its recording is committed or
    abandoned; then it decides again (with ``once``, the cassette another session just
    recorded is replayed). The lock file exists only while a session holds (or is taking)
    the lock: the holder removes it before it lets go, and a taker that locked a file
    removed meanwhile tries again. A file left by a killed process holds no lock (the system
    released it with the process): the next taker gets it at once, and removes it.

    Replaying costs one ``stat`` (:attr:`present`); nothing is opened or locked.
    """

    def __init__(self, cassette: Path) -> None:
        self.cassette = cassette
        self.path = lock_path(cassette)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    @property
    def present(self) -> bool:
        """Whether a session holds the lock, or is taking it (one ``stat``)."""
        return os.path.lexists(self.path)

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; never waits. Raises
        :class:`~proxy.errors.CassetteWriteError` when the lock file cannot be made."""
        if self._fd is not None:
            return True
        while True:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:  # the cassette's folder cannot be written: say so of it
                raise CassetteWriteError(self.cassette, exc) from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            except OSError as exc:
                os.close(fd)
                raise CassetteWriteError(self.path, exc) from exc
            try:
                now = os.stat(self.path)
            except FileNotFoundError:
                now = None
            mine = os.fstat(fd)
            if now is None or (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino):
                os.close(fd)  # the holder removed it before we locked it: take the new one
                continue
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
            self._fd = fd
            return True

    def acquire(self, timeout: float, sleep: Callable[[float], None] = time.sleep) -> None:
        """Take the lock, waiting at most ``timeout`` seconds for its holder; raise
        :class:`~proxy.errors.CassetteLocked` naming the holder if it is still busy."""
        deadline = time.monotonic() + timeout
        for pause in pauses():
            if self.try_acquire():
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise self.timed_out(timeout)
            sleep(min(pause, left))

    def timed_out(self, timeout: float) -> CassetteLocked:
        """The error of a wait for the lock that lasted ``timeout`` seconds."""
        return CassetteLocked(
            f"{self.cassette} is being recorded by another session ({self.holder()}) for "
            f"longer than {timeout:g}s: the lock file {self.path} is held. Wait for it, "
            "or give the sessions more time (--lock-timeout)"
        )

    def holder(self) -> str:
        """``process 1234``, the holder the lock file names (best effort)."""
        try:
            pid = self.path.read_text().strip()
        except OSError:
            pid = ""
        return f"process {pid}" if pid.isdigit() else "a process"

    def release(self) -> None:
        """Remove the lock file and let go; safe twice and when not held."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(fd)


def restore(path: Path, data: bytes | None, *, timeout: float) -> None:
    """Put a cassette back as it was before a recording replaced it: ``data`` (atomically),
    or no file when ``data`` is ``None``; under the cassette's lock, waiting at most
    ``timeout`` seconds for a session recording it."""
    lock = CassetteLock(path)
    lock.acquire(timeout)
    try:
        if data is None:
            path.unlink(missing_ok=True)
        else:
            replace_atomically(path, data)
    finally:
        lock.release()


class CassetteFile:
    """One session's cassette: where new lines go and what happens to them at the end.

    Call :meth:`record` (a fresh recording) or :meth:`extend` (``new_episodes``) once, then
    :meth:`commit` or :meth:`abandon` once; both are safe twice. Hold :attr:`lock` before
    :meth:`record` or :meth:`extend` when other sessions may write the same cassette (the
    session layer does); :meth:`commit` and :meth:`abandon` release it.

    A kept recording's header names the server that made it (:func:`stamp_version`, field
    ``codex``): what the recorded server said of itself (``dialect``), else ``version()``
    (the real binary a stand-in ran). The header is rewritten atomically when the recording
    is committed, so a recording killed before (kept in place) simply lacks the field. An
    extended cassette (``new_episodes``) keeps the version its header names.
    """

    def __init__(
        self,
        path: Path,
        *,
        keep_partial: bool = False,
        dialect: Dialect | None = None,
        version: Callable[[], str | None] | None = None,
    ) -> None:
        self.path = path
        self.keep_partial = keep_partial
        self.dialect = dialect
        self.version = version
        self.lock = CassetteLock(path)
        """Held while this session may write the cassette (taken by the session layer)."""
        self.stamped: str | None = None
        """The server version written into the header at commit, if any."""
        self.writer: CassetteWriter | None = None
        self.temp: Path | None = None
        """The temporary file a recording goes to when the cassette already exists."""
        self.kept: Path | None = None
        """Where an abandoned recording was left (``keep_partial``), if anywhere."""
        self.served = True
        """Whether the session served anything: an abandoned recording of a session that
        never served is removed quietly (a failed start leaves no header-only cassette)."""
        self._in_place = False
        self._extended = False
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
            self.temp = temporary_beside(self.path)
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
        self.temp = temporary_beside(self.path)
        try:
            shutil.copyfile(self.path, self.temp)
            os.chmod(self.temp, 0o600)
        except OSError as exc:
            self.temp.unlink(missing_ok=True)
            self.temp = None
            raise CassetteWriteError(self.path, exc) from exc
        self.writer = CassetteWriter.append_to(self.temp)
        self._extended = True
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
        if self.writer is not None:
            self._stamp(self.target)
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
        self.lock.release()
        return True

    def _stamp(self, target: Path) -> None:
        """Name the server in the finished recording's header (never fails the commit)."""
        if self.dialect is None:
            return
        try:
            if self._extended and VERSION_FIELD in orjson.loads(_first_line(target)):
                return  # new_episodes: the cassette already says who made it
            self.stamped = stamp_version(target, self.dialect)
            if self.stamped is None and self.version is not None:
                self.stamped = stamp_version(target, self.dialect, self.version() or None)
        except (CassetteError, OSError, orjson.JSONDecodeError) as exc:
            log.warning("%s: the server's version is not in the header: %s", self.path, exc)

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
        self.lock.release()

    def _close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _first_line(path: Path) -> bytes:
    with path.open("rb") as file:
        return file.readline()
