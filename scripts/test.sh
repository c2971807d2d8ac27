#!/usr/bin/env bash
# Quickstart 2: set up (if needed) and run the test suite (slow tests: `bash scripts/test.sh -m slow`).
# Tests run on PYTEST_WORKERS processes (default 5, pytest-xdist: many tests wait on the subprocesses they
# launch, so five workers keep both cores of a 2-core machine busy; `--dist load --maxschedchunk 1` starts
# each worker on two tests, one of the longest among them (tests/conftest.py orders them), then hands out
# one test at a time as workers free up);
# 7 workers were slower (716 s against 640-669 s, 2026-11-29). PYTEST_WORKERS=0 runs them in one.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}  # the same variable scripts/setup.sh reads
export VENV
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
exec "$VENV/bin/python" -m pytest -n "${PYTEST_WORKERS:-5}" --dist load --maxschedchunk 1 "$@"
