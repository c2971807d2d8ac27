"""litdata never asks the package index for a newer version when lightning-transfer imports it (an
offline machine would wait on every StreamingDataset), and a user's own setting still wins."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lightning_transfer.optimize import optimize
from tests.helpers.images import write_image_folder

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import requests
calls = []
requests.get = lambda *args, **kwargs: calls.append(args) or (_ for _ in ()).throw(requests.ConnectionError("offline"))
from lightning_transfer.data.shards import ShardDataset
from lightning_transfer.data.litdata_env import litdata
litdata.StreamingDataset({path!r})
print("version requests:", len(calls))
"""


def probe(path: Path, **env: str) -> str:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LITDATA_")}
    environment.update(PYTHONPATH=str(ROOT), **env)
    result = subprocess.run([sys.executable, "-c", PROBE.format(path=str(path))], env=environment, cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def test_no_version_request_unless_the_user_turns_it_back_on(tmp_path):
    images = write_image_folder(tmp_path / "images", classes=("ant",), per_class=2, size=8)
    out = optimize(images, tmp_path / "out", start_method="fork", progress=False, val_size=0, test_size=0)
    # LITDATA_CHECK_UPDATES=1 turns litdata's own check on; our default still keeps it off
    assert probe(out / "train", LITDATA_CHECK_UPDATES="1") == "version requests: 0"
    assert probe(out / "train", LITDATA_CHECK_UPDATES="1", LITDATA_DISABLE_VERSION_CHECK="0") == "version requests: 1"
