"""The lightning-transfer CLI's own behaviour: --print_config and one-line errors. Every config
fitting, testing, predicting and resuming through the real process: tests/test_launch_matrix.py."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_print_config_resolves_every_argument():
    out = subprocess.run([sys.executable, "-m", "lightning_transfer.cli", "fit", "--config", "configs/simclr/mnist.yaml",
                          "--print_config"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "class_path: lightning_transfer.SimCLRModule" in out and "temperature: 0.2" in out and "source: mnist_demo" in out


def test_bad_input_is_one_line_from_the_cli(tmp_path):
    result = subprocess.run([sys.executable, "-m", "lightning_transfer.cli", "fit", "--config", "configs/simclr/mnist.yaml",
                             "--model.init_args.backbone", "resnet19", "--trainer.default_root_dir", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("lightning-transfer: error:")]
    assert len(error_lines) == 1 and "unknown backbone 'resnet19'" in error_lines[0]
    assert "Traceback" not in result.stderr
