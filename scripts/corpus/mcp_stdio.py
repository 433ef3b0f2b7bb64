"""A tiny MCP server over stdio for the corpus recordings (standard library only).

codex starts it as ``python3 mcp_stdio.py`` (``mcp_servers.corpus`` in its config.toml) and
speaks MCP to it: newline-delimited JSON-RPC 2.0 on stdin/stdout. It offers one tool,
``echo`` (returns its ``text`` argument), one tool ``ask`` that asks the user through an
elicitation (``elicitation/create``, which codex turns into ``mcpServer/elicitation/request``)
and returns the answer, and one resource, ``corpus://greeting`` (a short text).
"""

from __future__ import annotations

import json
import sys
from typing import Any

PROTOCOL_VERSION = "2025-06-18"
TOOLS = [
    {
        "name": "echo",
        "description": "Return the given text.",
        "inputSchema": {
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        },
    },
    {
        "name": "ask",
        "description": "Ask the user for a name and return it.",
        "inputSchema": {"type": "object", "properties": {}},
    },
]
RESOURCE = {"uri": "corpus://greeting", "name": "greeting", "mimeType": "text/plain"}
GREETING = "Hello from the corpus MCP server."
ELICITATION_ID = "elicit-1"


def send(message: dict[str, Any]) -> None:
    """Write one message as a line on stdout."""
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def result(request: dict[str, Any]) -> dict[str, Any] | None:
    """The result of a request (``None``: no result yet, or a notification)."""
    method = request.get("method")
    params = request.get("params") or {}
    if method == "initialize":
        return {
            "protocolVersion": params.get("protocolVersion", PROTOCOL_VERSION),
            "capabilities": {"tools": {}, "resources": {}},
            "serverInfo": {"name": "corpus-mcp", "version": "1.0.0"},
        }
    if method == "tools/list":
        return {"tools": TOOLS}
    if method == "tools/call" and params.get("name") == "echo":
        text = str((params.get("arguments") or {}).get("text", ""))
        return {"content": [{"type": "text", "text": text}], "isError": False}
    if method == "resources/list":
        return {"resources": [RESOURCE]}
    if method == "resources/templates/list":
        return {"resourceTemplates": []}
    if method == "resources/read":
        uri = params.get("uri")
        return {"contents": [{"uri": uri, "mimeType": "text/plain", "text": GREETING}]}
    if method == "prompts/list":
        return {"prompts": []}
    return {}


def main() -> None:
    """Serve until stdin ends."""
    pending_ask: Any = None
    for line in sys.stdin:
        if not line.strip():
            continue
        message = json.loads(line)
        if "method" not in message:  # the answer to our elicitation
            if message.get("id") == ELICITATION_ID and pending_ask is not None:
                answer = message.get("result") or {}
                text = json.dumps({"action": answer.get("action"), **(answer.get("content") or {})})
                send({"jsonrpc": "2.0", "id": pending_ask, "result": {
                    "content": [{"type": "text", "text": text}], "isError": False}})  # fmt: skip
                pending_ask = None
            continue
        if "id" not in message:
            continue  # notifications (initialized, cancelled)
        if message["method"] == "tools/call" and (message.get("params") or {}).get("name") == "ask":
            pending_ask = message["id"]
            send({"jsonrpc": "2.0", "id": ELICITATION_ID, "method": "elicitation/create",
                  "params": {"message": "What is your name?", "requestedSchema": {
                      "type": "object", "properties": {"name": {"type": "string"}},
                      "required": ["name"]}}})  # fmt: skip
            continue
        send({"jsonrpc": "2.0", "id": message["id"], "result": result(message)})


if __name__ == "__main__":
    main()
