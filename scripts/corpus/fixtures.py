"""The things the corpus scenarios act on, made afresh before each recording.

Everything lives under one stable folder, :data:`ROOT` (``/tmp/rpctape-corpus``), so the
paths the client sends (``fs/readFile``'s ``path``, ``thread/start``'s ``cwd``) are the same
in every recording and on every machine: a re-recording diffs line by line, and no home
folder of the machine that recorded lands in a cassette. Recording two corpora at once on
one machine would share it: don't.

- ``work/``: a git repository with two committed files (fixed author and dates), the
  app-server's working directory and every thread's ``cwd``;
- ``home/``: the app-server's ``HOME``, holding one user skill (``.agents/skills/``);
- ``extra-skills/``: a second skills root for ``skills/extraRoots/set``;
- ``marketplace/``: a local plugin marketplace with one plugin (``.agents/plugins/``);
- ``stubs/``: a copy of the stdio MCP server (``mcp_stdio.py``), run with ``python3``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path("/tmp/rpctape-corpus")
HERE = Path(__file__).resolve().parent

WORK = ROOT / "work"
HOME = ROOT / "home"
EXTRA_SKILLS = ROOT / "extra-skills"
MARKETPLACE = ROOT / "marketplace"
STUBS = ROOT / "stubs"
MCP_STDIO = STUBS / "mcp_stdio.py"

MARKETPLACE_NAME = "corpus-market"
PLUGIN_NAME = "corpus-plugin"
SKILL_NAME = "corpus-skill"
EXTRA_SKILL_NAME = "extra-skill"

_GIT_ENV = {
    "GIT_AUTHOR_NAME": "rpctape",
    "GIT_AUTHOR_EMAIL": "rpctape@example.com",
    "GIT_COMMITTER_NAME": "rpctape",
    "GIT_COMMITTER_EMAIL": "rpctape@example.com",
    "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _skill(name: str, description: str) -> str:
    return f"---\nname: {name}\ndescription: {description}\n---\n\nSay hello the {name} way.\n"


def _git(*args: str) -> None:
    subprocess.run(
        ["git", *args], cwd=WORK, env={**os.environ, **_GIT_ENV}, check=True, capture_output=True
    )


def prepare() -> None:
    """Remove :data:`ROOT` and make every fixture again; call before each scenario."""
    shutil.rmtree(ROOT, ignore_errors=True)
    _write(WORK / "README.md", "# corpus\n\nA small repository for the rpctape corpus.\n")
    _write(WORK / "src" / "hello.py", 'print("hello")\n')
    _git("init", "-q", "-b", "main")
    _git("add", ".")
    _git("commit", "-q", "-m", "Initial commit")
    _write(
        HOME / ".agents" / "skills" / SKILL_NAME / "SKILL.md", _skill(SKILL_NAME, "A user skill.")
    )
    _write(
        EXTRA_SKILLS / EXTRA_SKILL_NAME / "SKILL.md",
        _skill(EXTRA_SKILL_NAME, "A skill in an extra root."),
    )
    source = {"source": "local", "path": f"./plugins/{PLUGIN_NAME}"}
    listing = {"name": MARKETPLACE_NAME, "plugins": [{"name": PLUGIN_NAME, "source": source}]}
    _write(MARKETPLACE / ".agents" / "plugins" / "marketplace.json", json.dumps(listing) + "\n")
    plugin = MARKETPLACE / "plugins" / PLUGIN_NAME
    manifest = {"name": PLUGIN_NAME, "version": "1.0.0", "description": "A plugin with one skill."}
    _write(plugin / ".codex-plugin" / "plugin.json", json.dumps(manifest) + "\n")
    _write(
        plugin / "skills" / "plugin-skill" / "SKILL.md", _skill("plugin-skill", "A plugin skill.")
    )
    STUBS.mkdir(parents=True)
    shutil.copy(HERE / "mcp_stdio.py", MCP_STDIO)
