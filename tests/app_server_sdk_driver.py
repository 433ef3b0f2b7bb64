"""Drive one chat turn with codex-app-server-sdk; run by tests/test_e2e_app_server_sdk.py.

codex-app-server-sdk needs Python >= 3.12, so this script runs under ``.venv-sdk/bin/python``
(``./dev setup`` builds it from requirements/sdk.lock), not under the project's 3.11 venv; the
3.11 mypy run leaves it out and ``./dev test`` type-checks it against the SDK's own types
(``mypy --python-executable .venv-sdk/bin/python``).

    app_server_sdk_driver.py ws URL --prompt TEXT [--token TOKEN] [--approve DECISION]
    app_server_sdk_driver.py stdio --prompt TEXT [--approve DECISION] [-- COMMAND...]

``ws`` connects with ``CodexClient.connect_websocket(url=URL)``; ``stdio`` with
``CodexClient.connect_stdio()``, which starts ``$CODEX_APP_SERVER_CMD`` (or COMMAND) with this
process's environment. Either way the SDK runs ``start_thread()`` and one
``ThreadHandle.chat_once(TEXT)``; ``--approve`` answers approval requests through
``set_approval_handler``. One JSON object goes to stdout: ``reply`` (the turn's final text) or
``error`` (the SDK's exception: type, message, code, data, cause), ``approvals`` (the kinds of the
approval requests the handler saw, e.g. ``CommandApprovalRequest``), and ``sent`` and
``received``, every message that crossed the SDK's ``Transport`` interface, in order. The exit
code is 0 whenever that object was written.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping
from typing import Any

from codex_app_server_sdk import ApprovalRequest, CodexClient, CodexError
from codex_app_server_sdk.models import CommandApprovalDecision
from codex_app_server_sdk.transport import Transport

DECISIONS: dict[str, CommandApprovalDecision] = {
    "accept": "accept",
    "decline": "decline",
    "cancel": "cancel",
}


class TappedTransport(Transport):
    """A transport that keeps a copy of every message its inner transport sends and receives."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.sent: list[dict[str, Any]] = []
        self.received: list[dict[str, Any]] = []

    async def connect(self) -> None:
        await self.inner.connect()

    async def send(self, payload: Mapping[str, Any]) -> None:
        self.sent.append(dict(payload))
        await self.inner.send(payload)

    async def recv(self) -> dict[str, Any]:
        message = await self.inner.recv()
        self.received.append(message)
        return message

    async def close(self) -> None:
        await self.inner.close()


def describe(exc: BaseException) -> str:
    """``Type: message``, with the exception it came from, if any, after `` <- ``."""
    text = f"{type(exc).__name__}: {exc}"
    return text if exc.__cause__ is None else f"{text} <- {describe(exc.__cause__)}"


def connect(args: argparse.Namespace) -> CodexClient:
    """The client, made by the SDK's own factory for the chosen transport."""
    if args.transport == "ws":
        return CodexClient.connect_websocket(url=args.url, token=args.token)
    return CodexClient.connect_stdio(command=args.command or None)


async def drive(args: argparse.Namespace) -> dict[str, Any]:
    """One thread, one turn; what happened, as a JSON-ready dict."""
    client = connect(args)
    # The factories give no hook on the wire, so the transport they built is wrapped in place.
    tap = TappedTransport(client._transport)
    client._transport = tap
    approvals: list[str] = []
    outcome: dict[str, Any] = {}

    async def approve(request: ApprovalRequest) -> CommandApprovalDecision:
        approvals.append(type(request).__name__)
        return DECISIONS[args.approve]

    try:
        async with client:
            if args.approve:
                client.set_approval_handler(approve)
            thread = await client.start_thread()
            result = await thread.chat_once(args.prompt)
            outcome["reply"] = result.final_text
    except CodexError as exc:
        outcome["error"] = {
            "type": type(exc).__name__,
            "message": str(exc),
            "code": getattr(exc, "code", None),
            "data": getattr(exc, "data", None),
            "cause": None if exc.__cause__ is None else describe(exc.__cause__),
        }
    return {**outcome, "approvals": approvals, "sent": tap.sent, "received": tap.received}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="app_server_sdk_driver.py")
    sub = parser.add_subparsers(dest="transport", required=True)
    ws = sub.add_parser("ws")
    ws.add_argument("url")
    ws.add_argument("--token")
    stdio = sub.add_parser("stdio")
    stdio.add_argument("command", nargs="*")
    for each in (ws, stdio):
        each.add_argument("--prompt", required=True)
        each.add_argument("--approve", choices=sorted(DECISIONS))
    return parser.parse_args(argv)


def main() -> None:
    outcome = asyncio.run(drive(parse(sys.argv[1:])))
    sys.stdout.write(json.dumps(outcome) + "\n")


if __name__ == "__main__":
    main()
