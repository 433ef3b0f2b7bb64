"""A tiny stand-in for `codex app-server --listen stdio://` used by tests/test_standin.py.

It answers `initialize`, and for `ask` first sends a server request `approve` and replies with
the decision it got back. `--version` prints a version; any other invocation (including
`app-server generate-json-schema`) exits 5 with its arguments on stderr.
`FAKE_CODEX_USER_AGENT` replaces the `userAgent` of its `initialize` answer (default `fake`,
which names no version); `FAKE_CODEX_VERSION` makes `--version` print `codex-cli VERSION`,
as the real codex does.
Run it as ``python tests/fake_codex.py ARGS``.
"""

from __future__ import annotations

import json
import os
import sys


def main(argv: list[str]) -> int:
    """Serve JSON Lines on stdin/stdout until stdin ends."""
    if argv == ["--version"]:
        version = os.environ.get("FAKE_CODEX_VERSION")
        print(f"codex-cli {version}" if version else "fake-codex 1.0")
        return 0
    agent = os.environ.get("FAKE_CODEX_USER_AGENT", "fake")
    if "app-server" not in argv or "generate-json-schema" in argv:
        print(f"fake-codex: {' '.join(argv)}", file=sys.stderr)
        return 5
    pending: dict[str, object] = {}
    for line in sys.stdin:
        message = json.loads(line)
        if message.get("method") == "initialize":
            reply = {"id": message["id"], "result": {"userAgent": agent, "argv": argv}}
        elif message.get("method") == "ask":
            pending["s1"] = message["id"]
            reply = {"id": "s1", "method": "approve", "params": {"what": message["params"]}}
        elif message.get("id") == "s1":
            asked = pending.pop("s1")
            reply = {"id": asked, "result": {"decision": message["result"]["decision"]}}
        else:
            continue
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
