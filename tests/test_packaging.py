"""Packaging: the wheel's contents and metadata, and the core working without the backend extra."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel hatchling builds from this checkout (build isolation, as users get it)."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
         "--no-deps", "--wheel-dir", str(out), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (built,) = out.glob("rpctape-*.whl")
    return built


def _metadata(wheel: Path) -> list[tuple[str, str]]:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        message = Parser().parsestr(archive.read(name).decode())
    return [(key, value) for key, value in message.items()]


def test_wheel_ships_py_typed_and_the_console_script(wheel: Path) -> None:
    """PEP 561: `proxy/py.typed` is in the wheel, next to the package's modules."""
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    assert "proxy/py.typed" in names
    assert {"proxy/__init__.py", "proxy/cli/__init__.py", "proxy/core/matching.py"} <= names
    assert "rpctape = proxy.cli:main" in scripts


def test_runtime_requirements_are_ranges_and_the_backend_is_an_extra(wheel: Path) -> None:
    """No `==` pins; websockets 16 (codex-app-server-sdk's range) is allowed; aiohttp, aiohttp-sse
    and tomli-w come only with the `backend` extra."""
    requires = [value for key, value in _metadata(wheel) if key == "Requires-Dist"]
    runtime = sorted(r for r in requires if ";" not in r)
    backend = sorted(r for r in requires if r.endswith("extra == 'backend'"))
    assert runtime == [
        "jsonpointer<4,>=2.4",
        "jsonschema<5,>=4.18",
        "orjson<4,>=3.10",
        "rich<16,>=13.8",
        "typer<1,>=0.26",
        "websockets<18,>=16.0",
    ]
    assert backend == [
        "aiohttp-sse<4,>=3.0; extra == 'backend'",
        "aiohttp<4,>=3.11; extra == 'backend'",
        "tomli-w<2,>=1.0; extra == 'backend'",
    ]
    assert not [r for r in requires if "==" in r.split(";")[0]]
    assert ("Requires-Python", ">=3.11") in _metadata(wheel)


def test_lowest_constraints_pin_every_lower_end() -> None:
    """`scripts/lock.py lowest` (what `./dev test` installs into .venv-lowest) pins each runtime and
    backend and fast-path dependency at its lower end, and the test runners as locked."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "lock.py"), "lowest"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    lines = done.stdout.splitlines()
    locked = dict(
        line.split("==")
        for line in (ROOT / "requirements" / "dev.lock").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert lines[:11] == [
        "websockets==16.0",
        "orjson==3.10",
        "typer==0.26",
        "jsonschema==4.18",
        "jsonpointer==2.4",
        "rich==13.8",
        "aiohttp==3.11",
        "aiohttp-sse==3.0",
        "tomli-w==1.0",
        "hyperscan==0.9",
        "uvloop==0.21",
    ]
    assert lines[11:] == [
        f"{name}=={locked[name]}"
        for name in ("pytest", "pytest-asyncio", "pytest-timeout", "hypothesis")
    ]


# A blocker on sys.meta_path: the backend extra's modules cannot be imported, as in an
# environment where `pip install rpctape` installed only the core.
_WITHOUT_BACKEND_EXTRA = textwrap.dedent(
    """
    import sys

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in {"aiohttp", "aiohttp_sse", "tomli_w"}:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Blocker())
    """
)


def _run_without_backend(code: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _WITHOUT_BACKEND_EXTRA + textwrap.dedent(code), *argv],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
    )  # fmt: skip


def test_core_imports_without_the_backend_extra() -> None:
    """Recording, replay, the CLI and the pytest plugin import without aiohttp or tomli-w."""
    done = _run_without_backend(
        """
        import proxy, proxy.cli, proxy.pytest_plugin
        import proxy.wire.session, proxy.wire.sides, proxy.codex.library
        loaded = sorted(m for m in sys.modules if m.partition(".")[0] in {"aiohttp", "tomli_w"})
        print("loaded:", loaded)
        """
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "loaded: []\n", "")


@pytest.mark.parametrize(
    ("command", "feature", "missing"),
    [
        ("backend", "the fake backend", "aiohttp"),
        ("demo", "the app-server launcher", "aiohttp"),
        ("attest-check", "the app-server launcher", "aiohttp"),
    ],
)
def test_backend_commands_name_the_missing_extra(command: str, feature: str, missing: str) -> None:
    """`rpctape backend` (demo, attest-check) without the extra: one line saying what to install,
    exit 2, no traceback."""
    done = _run_without_backend(
        """
        import runpy
        sys.argv[0] = "rpctape"
        runpy.run_module("proxy", run_name="__main__")
        """,
        command,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"rpctape: error: {feature} needs the 'backend' extra: pip install 'rpctape[backend]' "
        f"(module {missing!r} is missing)\n"
    )


def test_missing_extra_is_an_import_error() -> None:
    """Importing proxy.codex.backend without the extra raises MissingExtra, which is an ImportError
    naming the missing module, so `except ImportError` callers keep working."""
    done = _run_without_backend(
        """
        from proxy.errors import MissingExtra
        try:
            import proxy.codex.backend
        except ImportError as exc:
            print(type(exc).__name__, isinstance(exc, MissingExtra), exc.name, exc.extra)
        """
    )
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        "MissingExtra True aiohttp backend\n",
        "",
    )
