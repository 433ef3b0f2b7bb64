"""The architecture contract (pyproject.toml [tool.importlinter]) is checked, and it bites."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on the package in ``tree`` with the project's contract."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(tree / "pyproject.toml")],
        cwd=tree, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": str(tree)},
    )  # fmt: skip


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the package and the contract, to break on purpose."""
    shutil.copytree(
        ROOT / "proxy", tmp_path / "proxy", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_project_keeps_its_contract(tree: Path) -> None:
    """Both contracts hold on the code as it is."""
    done = lint(tree)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 2 kept, 0 broken." in done.stdout


@pytest.mark.parametrize(
    ("line", "broken"),
    [
        ("import asyncio", "proxy.core is not allowed to import asyncio"),
        ("from asyncio import streams", "proxy.core is not allowed to import asyncio"),
        ("from ..wire import session", "proxy.core.modes -> proxy.wire.session"),
        ("from .. import cli", "proxy.core.modes -> proxy.cli"),
    ],
)
def test_a_core_module_that_imports_io_or_a_layer_above_breaks_it(
    tree: Path, line: str, broken: str
) -> None:
    """A core module importing asyncio's streams, the wire or a front end fails the check."""
    modes = tree / "proxy" / "core" / "modes.py"
    modes.write_text(modes.read_text() + f"\n{line}  # noqa\n")
    done = lint(tree)
    assert done.returncode == 1, done.stdout
    assert broken in done.stdout
