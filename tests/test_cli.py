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
MINILM_TEXT = ["--model.init_args.pretrained", "minilm_demo", "--data.init_args.tokenizer", "minilm_demo",
               "--data.init_args.batch_size", "4", "--data.init_args.max_seq_length", "32"]
# Offline stand-ins where a recipe needs the network or an earlier run's checkpoint ({simclr1},
# {simclr3}: tiny SimCLR encoders for 1- and 3-channel images; {cache}: a fresh cache folder).
OVERRIDES = {
    "configs/simclr/mnist.yaml": ["--data.init_args.batch_size", "32"],
    "configs/simclr/cifar10.yaml": IMAGE_FOLDER,
    "configs/simclr/stl10.yaml": IMAGE_FOLDER,
    "configs/simclr/imagenet_resnet50.yaml": IMAGE_FOLDER,
    "configs/bert/reviews_tiny.yaml": ["--data.init_args.cache_dir", "{cache}", "--data.init_args.batch_size", "8"],
    "configs/bert/minilm_continue.yaml": ["--data.init_args.cache_dir", "{cache}", "--data.init_args.batch_size", "2",
                                          "--data.init_args.max_seq_length", "32"],
    "configs/bert/wikitext103_base.yaml": ["--data.init_args.source", "reviews_demo", "--data.init_args.cache_dir", "{cache}",
                                           "--data.init_args.batch_size", "2", "--data.init_args.max_seq_length", "32",
                                           "--data.init_args.num_workers", "0"],
    "configs/finetune/mnist_from_simclr.yaml": ["--model.init_args.pretrained", "{simclr1}", "--data.init_args.batch_size", "8"],
    "configs/finetune/cifar10_from_simclr.yaml": IMAGE_FOLDER + ["--model.init_args.pretrained", "{simclr3}",
                                                                 "--data.init_args.label_fraction", "null",
                                                                 "--data.init_args.labels_per_class", "2"],
    "configs/finetune/reviews_from_bert.yaml": MINILM_TEXT,
    "configs/finetune/reviews_from_minilm.yaml": MINILM_TEXT,
    "configs/finetune/sst2_from_bert.yaml": MINILM_TEXT + ["--data.init_args.source", "reviews_demo",
                                                           "--data.init_args.text_column", "text",
                                                           "--data.init_args.label_column", "label"],
}


@pytest.fixture(scope="module")
def simclr_encoders(tmp_path_factory):
    """Tiny SimCLR encoders: a Lightning checkpoint (1 channel) and an exported encoder (3 channels)."""
    import lightning.pytorch as pl

    from lightning_transfer import ImageDataModule, SimCLRModule

    root = tmp_path_factory.mktemp("encoders")
    gray = SimCLRModule(backbone="convnet", width=8, in_channels=1, projection_hidden_dim=16, projection_dim=8,
                        optimizer="adamw", lr=1e-3, lr_scaling="none", num_classes=0)
    trainer = pl.Trainer(accelerator="cpu", max_steps=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(gray, ImageDataModule(source="mnist_demo", batch_size=8))
    trainer.save_checkpoint(root / "gray.ckpt")
    SimCLRModule(backbone="convnet", width=8, in_channels=3, num_classes=0).export_encoder(root / "rgb.pt")
    return {"simclr1": str(root / "gray.ckpt"), "simclr3": str(root / "rgb.pt")}


@pytest.mark.parametrize("config", CONFIGS)
def test_every_config_fits_for_two_steps(config, tmp_path, monkeypatch, simclr_encoders):
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", str(ROOT / config), *TINY_TRAINER, "--trainer.default_root_dir", str(tmp_path / "run")]
    values = {**simclr_encoders, "cache": str(tmp_path / "cache")}
    extra = [arg.format(**values) for arg in OVERRIDES.get(config, [])]
    if "--data.init_args.source" in extra and extra[extra.index("--data.init_args.source") + 1] == "folder":
        extra += ["--data.init_args.root", str(write_image_folder(tmp_path / "images", per_class=6, size=40))]
    main(args + extra)
    assert list((tmp_path / "run").rglob("*.ckpt")), "fit wrote no checkpoint"
    # TensorBoard and CSV loggers share one version folder (they follow --trainer.default_root_dir), plots included
    (version,) = (tmp_path / "run" / "lightning_logs").iterdir()
    assert list(version.glob("events.out.tfevents.*")) and list(version.glob("checkpoints/*.ckpt"))
    assert_png(version / "training_curves.png")
    if "ImageDataModule" in (ROOT / config).read_text():
        assert_png(version / "embedding_projection.png")


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


def test_test_without_ckpt_path_evaluates_the_best_checkpoint_of_the_last_fit(tmp_path, monkeypatch, simclr_encoders, capsys):
    monkeypatch.chdir(tmp_path)
    config = str(ROOT / "configs/finetune/mnist_from_simclr.yaml")
    common = ["--config", config, *TINY_TRAINER, "--trainer.default_root_dir", str(tmp_path / "run"),
              *[arg.format(**simclr_encoders) for arg in OVERRIDES["configs/finetune/mnist_from_simclr.yaml"]]]
    main(["fit", *common])
    best = (tmp_path / "run" / "best_checkpoint.txt").read_text().strip()
    assert best.endswith(".ckpt") and Path(best).exists()
    main(["test", *common])
    assert f"uses the best checkpoint of the last fit: {best}" in capsys.readouterr().err
    assert_png(tmp_path / "run" / "lightning_logs" / "version_1" / "confusion_matrix.png")  # the test run's log folder
    # The fit's own config, copied next to the record, repeats none of its arguments.
    main(["test", "--config", str(tmp_path / "run" / "fit_config.yaml")])
    assert f"uses the best checkpoint of the last fit: {best}" in capsys.readouterr().err
    assert_png(tmp_path / "run" / "lightning_logs" / "version_2" / "confusion_matrix.png")


def assert_png(path: Path) -> None:
    from PIL import Image

    assert path.is_file() and path.stat().st_size > 0, f"{path} was not written"
    with Image.open(path) as image:
        assert image.format == "PNG"
