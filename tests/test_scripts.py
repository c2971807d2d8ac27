"""scripts/test.sh, scripts/demo.sh and scripts/setup.sh use the virtual environment that ``VENV``
names (default .venv), run against a fake environment whose ``bin/python`` records how it was called.

The scripts run from a copy of the repository's scripts/ and pyproject.toml (they cd to their own
parent directory), so that a script that ignored ``VENV`` would fail on the copy's missing .venv
instead of starting the real test suite or demo."""
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAMP = ".lightning-transfer-installed"


@pytest.fixture
def checkout(tmp_path) -> Path:
    """scripts/ and pyproject.toml copied to ``tmp_path/repo`` (no .venv there)."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "scripts", repo / "scripts")
    shutil.copy2(ROOT / "pyproject.toml", repo / "pyproject.toml")
    return repo


def fake_venv(path: Path, installed: bool = True) -> tuple[Path, Path]:
    """A directory with an executable ``bin/python`` that appends its path, its arguments and
    HF_HUB_OFFLINE to ``calls.txt``; ``installed`` adds setup.sh's stamp, dated in the future so
    that it is newer than pyproject.toml (setup.sh then installs nothing)."""
    (path / "bin").mkdir(parents=True)
    record = path / "calls.txt"
    python = path / "bin" / "python"
    python.write_text(f'#!/bin/sh\nprintf "%s\\n" "$0" "$@" "HF_HUB_OFFLINE=$HF_HUB_OFFLINE" "--" >> "{record}"\n')
    python.chmod(0o755)
    if installed:
        (path / STAMP).touch()
        future = time.time() + 3600
        os.utime(path / STAMP, (future, future))
    return python, record


def calls(record: Path) -> list[list[str]]:
    """Each call of the fake python: ``[argv0, *args, "HF_HUB_OFFLINE=..."]``."""
    lines = record.read_text().splitlines() if record.exists() else []
    out, current = [], []
    for line in lines:
        if line == "--":
            out.append(current)
            current = []
        else:
            current.append(line)
    return out


def run_script(repo: Path, script: str, venv: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_WORKERS", "HF_HUB_OFFLINE")}
    env["VENV"] = str(venv)
    return subprocess.run(["bash", f"scripts/{script}", *args], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("script, args, expected", [
    ("test.sh", ["-k", "nothing"], ["-m", "pytest", "-n", "5", "--dist", "load", "--maxschedchunk", "1", "-k", "nothing"]),
    ("demo.sh", ["--quick"], ["-m", "lightning_transfer.demo", "--quick"]),
])
def test_script_runs_the_python_of_the_venv_that_VENV_names(checkout, tmp_path, script, args, expected):
    """``VENV=<dir> bash scripts/<script> ...`` (with <dir> already set up) execs ``<dir>/bin/python``
    exactly once, with the script's command and the extra arguments, offline."""
    python, record = fake_venv(tmp_path / "venv")
    done = run_script(checkout, script, tmp_path / "venv", *args)
    assert done.returncode == 0, done.stderr
    assert calls(record) == [[str(python), *expected, "HF_HUB_OFFLINE=1"]]
    assert "[setup]" not in done.stdout  # the stamp is newer than pyproject.toml: nothing installed


def test_setup_installs_into_the_venv_that_VENV_names_and_stamps_it(checkout, tmp_path):
    """Without the stamp, ``VENV=<dir> bash scripts/setup.sh`` installs with ``<dir>/bin/python``
    (pip, the package with its dev extras, the demo data) and writes the stamp in ``<dir>``; a
    second run, with the stamp newer than pyproject.toml, installs nothing."""
    python, record = fake_venv(tmp_path / "venv", installed=False)
    done = run_script(checkout, "setup.sh", tmp_path / "venv")
    assert done.returncode == 0, done.stderr
    made = calls(record)
    assert [c[0] for c in made] == [str(python)] * 3
    assert made[0][1:5] == ["-m", "pip", "install", "--quiet"]
    assert made[1][1:] == ["-m", "pip", "install", "--quiet", "-e", ".[dev]", "HF_HUB_OFFLINE="]
    assert (tmp_path / "venv" / STAMP).is_file() and not (checkout / ".venv").exists()
    future = time.time() + 3600
    os.utime(tmp_path / "venv" / STAMP, (future, future))
    again = run_script(checkout, "setup.sh", tmp_path / "venv")
    assert again.returncode == 0 and len(calls(record)) == 3
