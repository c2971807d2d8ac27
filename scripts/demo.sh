#!/usr/bin/env bash
# Quickstart 1: set up (if needed) and run the main job on the offline demo data.
# Extra arguments go to the demo, e.g. `bash scripts/demo.sh --quick --output-dir runs/demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}  # the same variable scripts/setup.sh reads
export VENV
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
exec "$VENV/bin/python" -m lightning_transfer.demo "$@"
