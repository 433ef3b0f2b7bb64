"""The stand-in's replay path stays light: what it imports is checked, so startup does not
creep back (issue 18; bench/bench_startup.py measures the time)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from proxy.core.cassette import load

ROOT = Path(__file__).resolve().parent.parent
CASSETTE = ROOT / "cassettes" / "initialize-model-list-config.jsonl"

UNNEEDED = frozenset(
    {"typer", "click", "rich", "jsonschema", "referencing", "websockets", "aiohttp",
     "aiohttp_sse", "tomli_w", "hyperscan", "playwright", "openai_codex"}
)  # fmt: skip
"""What a replay over stdio with no rules, no faults and no --validate never needs: the
command line's (typer, rich), the rule files' schema (jsonschema), the websocket library
(no listener, no live leg), the fake backend's (aiohttp), the redactor's engine (nothing is
recorded)."""

PROGRAM = """
import os, sys
from proxy.codex import standin
status = standin.run(["app-server"], {"RPCTAPE_CASSETTE": sys.argv[1],
                                       "RPCTAPE_RECORD_MODE": "none"})
loaded = sorted({m.partition(".")[0] for m in sys.modules} & set(sys.argv[2].split(",")))
os.write(2, f"status {status} loaded {loaded}\\n".encode())
"""


def test_a_stdio_replay_imports_nothing_it_does_not_need() -> None:
    """rpctape-codex replaying a shipped cassette to its client: the replies come, and none
    of typer, rich, jsonschema, websockets, aiohttp or hyperscan was imported on the way."""
    first = next(e for e in load(CASSETTE).events if e.get("dir") == "c2s")
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(CASSETTE), ",".join(sorted(UNNEEDED))],
        input=orjson.dumps(first["msg"]) + b"\n", capture_output=True, timeout=60,
        check=False, cwd=ROOT,
    )  # fmt: skip
    assert done.stderr.decode().splitlines()[-1] == "status 0 loaded []", done.stderr
    assert orjson.loads(done.stdout.splitlines()[0])["id"] == first["msg"]["id"]
