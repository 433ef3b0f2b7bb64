"""Shared pytest setup for rpctape's tests."""

from __future__ import annotations

import sys
from pathlib import Path

# Make the `proxy` package importable when pytest runs from a checkout that is not installed
# (`.venv/bin/pytest`). Setting `pythonpath = ["."]` under [tool.pytest.ini_options] would
# make this unnecessary.
_REPO_ROOT = str(Path(__file__).resolve().parent.parent)
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)
