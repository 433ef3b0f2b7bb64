"""Packaging: the wheel's contents and metadata, and the core working without the backend extra."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from email.parser import Parser
from pathlib import Path

import orjson
import pytest

from proxy.core.cassette import load

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


def test_runtime_requirements_are_ranges_and_extras_only_make_it_faster(wheel: Path) -> None:
    """No `==` pins; websockets 16 (codex-app-server-sdk's range) is allowed; everything a
    command needs (aiohttp for the fake backend and the launcher included) is a plain
    requirement; the only extras a user picks are `fast` (hyperscan, uvloop) and the
    project's own test and dev sets."""
    requires = [value for key, value in _metadata(wheel) if key == "Requires-Dist"]
    runtime = sorted(r for r in requires if ";" not in r)
    assert runtime == [
        "aiohttp-sse<4,>=3.0",
        "aiohttp<4,>=3.11",
        "jsonpointer<4,>=2.4",
        "jsonschema<5,>=4.18",
        "orjson<4,>=3.10",
        "rich<16,>=13.8",
        "tomli-w<2,>=1.0",
        "typer<1,>=0.26",
        "websockets<18,>=16.0",
    ]
    extras = {value for key, value in _metadata(wheel) if key == "Provides-Extra"}
    assert extras == {"fast", "test", "dev"}
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


@pytest.fixture(scope="module")
def plain_install(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment holding `pip install rpctape` and nothing else (no extras),
    its dependencies at the locked versions; its bin folder."""
    venv = tmp_path_factory.mktemp("plain") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
         "--disable-pip-version-check", "-c", str(ROOT / "requirements" / "dev.lock"),
         str(wheel)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    return venv / "bin"


def _plain(
    bin_dir: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    (Path(env["CODEX_HOME"]) if env and "CODEX_HOME" in env else ROOT).mkdir(exist_ok=True)
    return subprocess.run(
        [str(bin_dir / "rpctape"), *args], capture_output=True, text=True, timeout=300,
        check=False, cwd=ROOT, env={**os.environ, **(env or {})},
    )  # fmt: skip


@pytest.mark.e2e
def test_a_plain_install_runs_every_command(plain_install: Path, tmp_path: Path) -> None:
    """`pip install rpctape` with no extra: the fast path's packages are absent, and every
    command runs: validate of each shipped cassette, attest-check, demo, verify."""
    python = plain_install / "python"
    absent = subprocess.run(
        [str(python), "-c", "import importlib.util as u; "
         "print([m for m in ('hyperscan', 'uvloop') if u.find_spec(m)])"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert absent.stdout == "[]\n"
    codex = str(ROOT / ".tools" / "codex-0.169.0" / "node_modules" / ".bin" / "codex")
    shipped = sorted(str(p) for p in (ROOT / "cassettes").glob("*.jsonl"))
    validated = _plain(plain_install, "validate", "--codex", codex, *shipped)
    assert validated.returncode == 0, validated.stderr
    assert validated.stdout.splitlines()[-1].startswith(f"{len(shipped)} cassette(s), ")
    checked = _plain(plain_install, "attest-check", "--codex", codex, "--json",
                     "--out", str(tmp_path / "attest"))  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    report = orjson.loads(checked.stdout)
    assert report["ok"] is True and all(case["ok"] for case in report["cases"])
    demo = _plain(plain_install, "demo", "--codex", codex, "--cassette", str(tmp_path / "d.jsonl"))
    assert demo.returncode == 0, demo.stderr
    assert (tmp_path / "d.jsonl").is_file()
    verified = _plain(
        plain_install, "verify", str(ROOT / "cassettes" / "initialize-model-list-config.jsonl"),
        "--out", str(tmp_path / "v.jsonl"), "--", codex, "app-server",
        env={"CODEX_HOME": str(tmp_path / "home")},
    )  # fmt: skip
    # It ran to the end: a new recording and its diff (a default CODEX_HOME is not the
    # recording's configured one, so the config answers differ: exit 1, no traceback).
    assert verified.returncode in (0, 1), verified.stderr
    assert "Traceback" not in verified.stderr
    assert load(tmp_path / "v.jsonl").frames()


# A blocker on sys.meta_path: the modules a replay over stdio does not need cannot be
# imported, so importing one fails the check below.
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


def test_recording_and_replay_import_without_the_backend() -> None:
    """Recording, replay, the CLI and the pytest plugin import without aiohttp or tomli-w
    (the fake backend and the launcher are imported only by the commands that use them)."""
    done = _run_without_backend(
        """
        import proxy, proxy.cli, proxy.pytest_plugin
        import proxy.wire.session, proxy.wire.sides, proxy.codex.library
        loaded = sorted(m for m in sys.modules if m.partition(".")[0] in {"aiohttp", "tomli_w"})
        print("loaded:", loaded)
        """
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "loaded: []\n", "")
