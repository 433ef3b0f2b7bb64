#!/usr/bin/env python3
"""The locked development set and the lowest supported versions, both derived from pyproject.toml.

    python scripts/lock.py lock      rewrite requirements/dev.lock: the exact versions pip
                                     resolves today for `.[dev]` (run by `./dev lock`)
    python scripts/lock.py sdk PYTHON REQUIREMENT...
                                     rewrite requirements/sdk.lock: the exact versions PYTHON's
                                     pip resolves for rpctape plus REQUIREMENT... (run by
                                     `./dev lock` with pyenv's Python 3.12 and
                                     codex-app-server-sdk, for .venv-sdk)
    python scripts/lock.py lowest    print the constraints of the lowest-versions run: every
                                     runtime dependency (and the fast extra's) at
                                     the lower end of its range, the test runners as locked

The lock is what `./dev setup` installs (`pip install -c requirements/dev.lock -e '.[dev]'`).
It is resolved by pip itself (`pip install --dry-run --ignore-installed --report`), so it needs
nothing beyond pip; it holds the versions for the Python and platform that ran it (CPython 3.11 on
Linux x86-64 for the committed one).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "dev.lock"
SDK_LOCK = ROOT / "requirements" / "sdk.lock"
LOWEST_EXTRAS = ("fast",)
"""Extras whose lower ends the lowest-versions run pins, besides the runtime dependencies."""
TEST_EXTRA = "test"
"""The extra whose own tools (pytest and plugins) the lowest-versions run takes from the lock."""

_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$")
_LOWER = re.compile(r"(?:^|,)\s*>=\s*([^,;\s]+)")


def normalize(name: str) -> str:
    """PEP 503 normalized project name: ``Tomli_W`` is ``tomli-w``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lower_bound(requirement: str) -> tuple[str, str]:
    """``("orjson", "3.10")`` for ``"orjson>=3.10,<4"``; a requirement without ``>=`` fails."""
    found = _REQUIREMENT.match(requirement)
    if not found:
        raise SystemExit(f"lock.py: cannot read the requirement {requirement!r}")
    name, _extras, spec = found.groups()
    lower = _LOWER.search(spec.split(";")[0])
    if not lower:
        raise SystemExit(
            f"lock.py: {requirement!r} has no lower bound: write it as NAME>=LOWER,<NEXTMAJOR"
        )
    return normalize(name), lower.group(1)


def project() -> dict[str, object]:
    """The ``[project]`` table of pyproject.toml."""
    with (ROOT / "pyproject.toml").open("rb") as file:
        table: dict[str, object] = tomllib.load(file)["project"]
    return table


def _own(requirement: str) -> bool:
    found = _REQUIREMENT.match(requirement)
    return found is not None and normalize(found.group(1)) == normalize(str(project()["name"]))


def locked() -> dict[str, str]:
    """``{name: version}`` from requirements/dev.lock."""
    pins: dict[str, str] = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[normalize(name)] = version.strip()
    return pins


def lowest() -> list[str]:
    """The constraint lines of the lowest-versions run."""
    table = project()
    extras: dict[str, list[str]] = table["optional-dependencies"]  # type: ignore[assignment]
    runtime = list(table["dependencies"])  # type: ignore[call-overload]
    for extra in LOWEST_EXTRAS:
        runtime += [r for r in extras[extra] if not _own(r)]
    lines = [f"{name}=={version}" for name, version in map(lower_bound, runtime)]
    pins = locked()
    for requirement in extras[TEST_EXTRA]:
        if _own(requirement):
            continue
        name, _ = lower_bound(requirement)
        if name not in pins:
            raise SystemExit(f"lock.py: {name} is not in {LOCK.name}: run ./dev lock")
        lines.append(f"{name}=={pins[name]}")
    return lines


def resolve(python: str, requirements: list[str]) -> list[tuple[str, str]]:
    """``(name, version)`` of everything ``python``'s pip installs for ``requirements`` today
    (rpctape itself left out), sorted."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        subprocess.run(
            [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--dry-run", "--ignore-installed", "--report", str(report), *requirements],
            check=True,
        )  # fmt: skip
        resolved = json.loads(report.read_text())
    own = normalize(str(project()["name"]))
    return sorted(
        (normalize(item["metadata"]["name"]), item["metadata"]["version"])
        for item in resolved["install"]
        if normalize(item["metadata"]["name"]) != own
    )


def python_version(python: str) -> str:
    """``3.12`` for a Python 3.12 interpreter."""
    done = subprocess.run(
        [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return done.stdout.strip()


def write_lock(path: Path, header: list[str], pins: list[tuple[str, str]]) -> None:
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n".join(header + [f"{n}=={v}" for n, v in pins]) + "\n")
    print(f"wrote {path.relative_to(ROOT)}: {len(pins)} packages")


def lock(python: str) -> None:
    """Resolve ``.[dev]`` with ``python``'s pip and write requirements/dev.lock."""
    header = [
        "# The exact development set: `./dev setup` installs `-e '.[dev]'` constrained by it.",
        f"# Generated by `./dev lock` (scripts/lock.py), Python {python_version(python)}; "
        "do not edit by hand.",
    ]
    write_lock(LOCK, header, resolve(python, [f"{ROOT}[dev]"]))


def lock_sdk(python: str, requirements: list[str]) -> None:
    """Resolve rpctape plus ``requirements`` with ``python``'s pip (Python 3.12: the SDK needs
    it) and write requirements/sdk.lock, the set of .venv-sdk."""
    header = [
        "# The exact set of .venv-sdk: `./dev setup` installs `-e .` and "
        f"{' '.join(requirements)} constrained by it.",
        f"# Generated by `./dev lock` (scripts/lock.py), Python {python_version(python)}; "
        "do not edit by hand.",
    ]
    write_lock(SDK_LOCK, header, resolve(python, [str(ROOT), *requirements]))


def main(argv: list[str]) -> None:
    """Command line: ``lock [PYTHON]``, ``sdk PYTHON REQUIREMENT...`` or ``lowest``."""
    if argv[:1] == ["lock"] and len(argv) <= 2:
        lock(argv[1] if len(argv) == 2 else sys.executable)
    elif argv[:1] == ["sdk"] and len(argv) >= 3:
        lock_sdk(argv[1], argv[2:])
    elif argv == ["lowest"]:
        print("\n".join(lowest()))
    else:
        raise SystemExit(
            "usage: lock.py lock [PYTHON] | lock.py sdk PYTHON REQUIREMENT... | lock.py lowest"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
