"""Helpers for the cassette-failure tests (not a test module): a writer that fails on demand.

In process, :func:`fail_writes_after` patches :meth:`CassetteWriter.append_lines`; for an
``rpctape`` subprocess, :data:`FAILING_RPCTAPE` is a ``python -c`` program that does the same
(``RPCTAPE_FAIL_AFTER`` successful writes, then ENOSPC) before running the command line.
"""

from __future__ import annotations

import errno
import os
import sys

import pytest

from proxy.errors import CassetteWriteError
from proxy.wire.store import CassetteWriter


def enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def fail_writes_after(monkeypatch: pytest.MonkeyPatch, writes: int) -> list[bytes]:
    """From now on, every :class:`CassetteWriter` accepts ``writes`` more appends, then fails
    as a full disk does (the writer stays failed). Returns the data each accepted append got."""
    original = CassetteWriter.append_lines
    accepted: list[bytes] = []

    def append_lines(self: CassetteWriter, data: bytes) -> None:
        if self.failed is None and len(accepted) >= writes:
            self._failed = CassetteWriteError(self.path, enospc())
        if self.failed is not None:
            raise self.failed
        original(self, data)
        accepted.append(data)

    monkeypatch.setattr(CassetteWriter, "append_lines", append_lines)
    return accepted


FAILING_RPCTAPE = r"""
import errno, os, runpy, sys
from proxy.wire.store import CassetteWriter
from proxy.errors import CassetteWriteError
left = [int(os.environ["RPCTAPE_FAIL_AFTER"])]
original = CassetteWriter.append_lines
def append_lines(self, data):
    if self.failed is None and left[0] <= 0:
        full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._failed = CassetteWriteError(self.path, full)
    if self.failed is not None:
        raise self.failed
    original(self, data)
    left[0] -= 1
CassetteWriter.append_lines = append_lines
sys.argv = ["rpctape", *sys.argv[1:]]
runpy.run_module("proxy", run_name="__main__")
"""


def failing_rpctape(*args: str) -> list[str]:
    """The argv of ``rpctape ARGS`` whose cassette fails after ``$RPCTAPE_FAIL_AFTER`` writes."""
    return [sys.executable, "-c", FAILING_RPCTAPE, *args]
