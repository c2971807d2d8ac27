"""The package passes its linter, its formatter's check and its type checker (configured in pyproject.toml):
``ruff check``, ``ruff format --check`` and ``mypy``, as CI runs them through this test."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "command",
    [["ruff", "check", "lightning_transfer"], ["ruff", "format", "--check", "lightning_transfer"], ["mypy"]],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_the_package_passes(command):
    executable = BIN / command[0]
    assert executable.is_file(), f"{command[0]} is not installed: bash scripts/setup.sh installs the [dev] extras"
    result = subprocess.run([str(executable), *command[1:]], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, f"`{' '.join(command)}` failed:\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}"
