"""The lightning-transfer CLI: every config in configs/ loads and runs a couple of steps."""
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_transfer.cli import main
from tests.helpers.images import write_image_folder

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "configs").rglob("*.yaml"))
TINY_TRAINER = ["--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1",
                "--trainer.num_sanity_val_steps", "0", "--trainer.enable_progress_bar", "false", "--trainer.devices", "1",
                "--trainer.accelerator", "cpu", "--trainer.num_nodes", "1", "--trainer.strategy", "auto",
                "--trainer.sync_batchnorm", "false", "--trainer.precision", "32-true"]
IMAGE_FOLDER = ["--data.init_args.source", "folder", "--data.init_args.image_size", "32", "--data.init_args.decode_size", "32",
                "--data.init_args.batch_size", "4", "--data.init_args.val_size", "2", "--data.init_args.test_size", "2",
                "--data.init_args.num_workers", "0", "--data.init_args.augment_on", "auto", "--data.init_args.pin_memory", "false",
                "--data.init_args.persistent_workers", "false"]
# Offline stand-ins where a recipe needs the network (its real data source is tested separately).
OVERRIDES = {
    "configs/simclr/mnist.yaml": ["--data.init_args.batch_size", "32"],
    "configs/simclr/cifar10.yaml": IMAGE_FOLDER,
    "configs/simclr/stl10.yaml": IMAGE_FOLDER,
    "configs/simclr/imagenet_resnet50.yaml": IMAGE_FOLDER,
}


def needs_image_folder(config: str) -> bool:
    return OVERRIDES.get(config) is IMAGE_FOLDER


@pytest.mark.parametrize("config", CONFIGS)
def test_every_config_fits_for_two_steps(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", str(ROOT / config), *TINY_TRAINER, "--trainer.default_root_dir", str(tmp_path / "run")]
    extra = list(OVERRIDES.get(config, []))
    if needs_image_folder(config):
        extra += ["--data.init_args.root", str(write_image_folder(tmp_path / "images", per_class=6, size=40))]
    main(args + extra)
    assert list((tmp_path / "run").rglob("*.ckpt")), "fit wrote no checkpoint"


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
