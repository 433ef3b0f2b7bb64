"""Which codex a session was recorded with: read from what codex says about itself.

Pure code. Codex names its version in three places a recording or a shell can see:

- ``codex --version`` prints ``codex-cli 0.169.0``;
- ``initialize``'s result has ``userAgent``, ``CLIENT/VERSION (OS; ARCH) TERMINAL (CLIENT;
  CLIENT_VERSION)``, where ``CLIENT`` is the ``clientInfo.name`` the client sent and
  ``VERSION`` the server's codex version (0.169.0 and 0.171.0 both answer
  ``probe/0.171.0 (Debian 12.0.0; x86_64) xterm (probe; 1.0)`` to a client named
  ``probe``);
- a thread (``thread/start``'s result, ``thread/started``'s params) has ``cliVersion``.

A ``userAgent`` or ``cliVersion`` that was redacted (``--redact-key userAgent``) holds a
marker, not a version: nothing is read from it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from ..core.cassette import Event

__all__ = [
    "version_from_cli_output",
    "version_from_events",
    "version_from_initialize",
    "version_from_user_agent",
]

_VERSION = r"\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]*)?"
_CLI_OUTPUT = re.compile(rf"({_VERSION})")
_USER_AGENT = re.compile(rf"/({_VERSION})(?=[\s(]|\Z)")
_PLAIN = re.compile(rf"{_VERSION}\Z")


def version_from_cli_output(text: str) -> str | None:
    """The version ``codex --version`` printed (``codex-cli 0.169.0`` -> ``0.169.0``)."""
    match = _CLI_OUTPUT.search(text)
    return match[1] if match else None


def version_from_user_agent(user_agent: str) -> str | None:
    """The codex version in ``initialize``'s ``userAgent``: the first ``/VERSION`` after
    the client's name (``rpctape-client/0.169.0 (Debian 12.0.0; x86_64) ...`` ->
    ``0.169.0``); ``None`` when it holds none (redacted, or another server)."""
    match = _USER_AGENT.search(user_agent)
    return match[1] if match else None


def version_from_initialize(result: Any) -> str | None:
    """The codex version in an ``initialize`` result (its ``userAgent``), or ``None``."""
    agent = result.get("userAgent") if isinstance(result, dict) else None
    return version_from_user_agent(agent) if isinstance(agent, str) else None


def version_from_events(events: Iterable[Event]) -> str | None:
    """The codex version a recorded server said it was: the first ``initialize`` answer's
    ``userAgent``, else the first thread's ``cliVersion``; ``None`` when neither says."""
    thread_version: str | None = None
    for event in events:
        if event.get("kind") != "text" or event.get("dir") != "s2c":
            continue
        msg = event.get("msg")
        if not isinstance(msg, dict):
            continue
        if event.get("response_to") == "initialize":
            found = version_from_initialize(msg.get("result"))
            if found is not None:
                return found
        if thread_version is None:
            body = msg.get("result") if "result" in msg else msg.get("params")
            thread = body.get("thread") if isinstance(body, dict) else None
            cli = thread.get("cliVersion") if isinstance(thread, dict) else None
            if isinstance(cli, str) and _PLAIN.match(cli):
                thread_version = cli
    return thread_version
