"""Codex's conventions for the replay core (:class:`proxy.core.dialect.Dialect`).

Every rpctape door passes :data:`CODEX` to the session it opens.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from ..core.cassette import Event
from ..core.dialect import Dialect
from ..core.matching import Frame
from .version import version_from_events


class CodexDialect(Dialect):
    """``initialize``'s ``clientInfo.name`` names the client; ``turn/completed`` with
    ``status: "failed"`` ends a turn with a message every codex client shows."""

    name = "codex"

    def client_name(self, frame: Frame | None) -> Any:
        """``initialize``'s ``params.clientInfo.name`` (``None`` for anything else)."""
        if frame is None or not frame.structured or frame.parsed.method != "initialize":
            return None
        msg = frame.parsed.msg
        params = msg.get("params") if isinstance(msg, dict) else None
        info = params.get("clientInfo") if isinstance(params, dict) else None
        return info.get("name") if isinstance(info, dict) else None

    def failed_turn(self, pending: Iterable[Event], message: str) -> bytes | None:
        """The recorded ``turn/completed`` not sent yet, with ``status: "failed"``, ``message``
        as its error and no items (the recorded ones never happened in this conversation).

        Codex clients show a failed turn's message to their user; a closed connection some
        report with no reason at all (codex-app-server-sdk). ``None`` when no recorded
        ``turn/completed`` is left to send."""
        for event in pending:
            if event.get("method") != "turn/completed":
                continue
            msg = event.get("msg")
            if not isinstance(msg, dict):
                return None
            params = msg.get("params")
            if not isinstance(params, dict) or not isinstance(params.get("turn"), dict):
                return None
            turn = params["turn"]
            failed = turn | {"status": "failed", "error": {"message": message}}
            if "items" in turn:  # what the recording did after this point never happened
                failed["items"] = []
            return orjson.dumps({**msg, "params": {**params, "turn": failed}})
        return None

    def server_version(self, events: Iterable[Event]) -> str | None:
        """The codex version in the first ``initialize`` answer's ``userAgent``, else in
        the first thread's ``cliVersion`` (:func:`proxy.codex.version.version_from_events`)."""
        return version_from_events(events)


CODEX = CodexDialect()
