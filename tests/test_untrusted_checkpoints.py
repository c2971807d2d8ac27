"""Checkpoints are read with ``torch.load(weights_only=True)``: a file that needs full unpickling (which
can run code) is refused, without running it, unless ``trust_checkpoint=True`` / ``--trust-checkpoint``;
every checkpoint our modules write loads that way."""
import os
import random

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from lightning_transfer import BertPretrainModule, FineTuneModule, ImageDataModule, SimCLRModule, TextPretrainDataModule
from lightning_transfer.errors import UserInputError
from lightning_transfer.export import main as export_main
from lightning_transfer.models.loading import load_encoder


def quiet_trainer(**overrides) -> pl.Trainer:
    settings = dict(accelerator="cpu", devices=1, max_steps=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    settings.update(overrides)
    return pl.Trainer(**settings)


def mnist(mode: str = "simclr") -> ImageDataModule:
    return ImageDataModule(source="mnist_demo", mode=mode, batch_size=16, val_size=20, test_size=20, knn_bank_size=50)


def fitted_checkpoint(module: pl.LightningModule, data: pl.LightningDataModule, path) -> str:
    """One training step of ``module`` on ``data``, then ``trainer.save_checkpoint(path)``."""
    trainer = quiet_trainer()
    trainer.fit(module, datamodule=data)
    trainer.save_checkpoint(path)
    return str(path)


class CreatesMarkerWhenUnpickled:
    """A stand-in for a hostile object in a checkpoint: unpickling it calls ``os.mkdir(marker)``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@pytest.fixture(scope="module")
def simclr_checkpoint(tmp_path_factory):
    """A real SimCLR checkpoint (tiny convnet, one step on mnist_demo) and its module."""
    torch.manual_seed(0)
    module = SimCLRModule(backbone="convnet", width=4, in_channels=1, projection_hidden_dim=16, projection_dim=8,
                          optimizer="adamw", lr=1e-3, lr_scaling="none", warmup_steps=0)
    path = fitted_checkpoint(module, mnist(), tmp_path_factory.mktemp("simclr") / "simclr.ckpt")
    return path, module


@pytest.fixture
def hostile_checkpoint(simclr_checkpoint, tmp_path):
    """The SimCLR checkpoint with one more entry, an object whose unpickling creates ``marker``."""
    checkpoint = torch.load(simclr_checkpoint[0], map_location="cpu", weights_only=True)
    marker = tmp_path / "marker"
    checkpoint["extra"] = CreatesMarkerWhenUnpickled(marker)
    torch.save(checkpoint, tmp_path / "hostile.ckpt")
    assert not marker.exists()
    return tmp_path / "hostile.ckpt", marker


def test_finetune_refuses_a_checkpoint_that_needs_unpickling_without_running_it_unless_trusted(hostile_checkpoint,
                                                                                                simclr_checkpoint):
    """FineTuneModule(pretrained=<file with a pickled object>) raises a UserInputError naming
    trust_checkpoint and never unpickles the object; with trust_checkpoint=True the file loads (the
    object's code runs: the marker appears) and the encoder has the checkpoint's weights."""
    path, marker = hostile_checkpoint
    with pytest.raises(UserInputError, match="trust_checkpoint") as refused:
        FineTuneModule(pretrained=str(path), num_classes=10)
    assert "\n" not in str(refused.value)
    assert not marker.exists()  # refused before anything was unpickled
    with pytest.warns(UserWarning, match="unpickled in full"):
        module = FineTuneModule(pretrained=str(path), num_classes=10, trust_checkpoint=True)
    assert marker.is_dir()
    expected = simclr_checkpoint[1].backbone_state_dict()
    assert module.encoder.state_dict().keys() == expected.keys()
    assert all(torch.equal(module.encoder.state_dict()[k], v) for k, v in expected.items())


def test_export_refuses_such_a_checkpoint_with_one_error_line_and_exports_it_with_trust_checkpoint(
        hostile_checkpoint, simclr_checkpoint, tmp_path, capsys):
    """``python -m lightning_transfer.export SRC OUT`` exits with code 2 and one
    ``lightning-transfer: error:`` line (nothing unpickled, nothing written); with ``--trust-checkpoint``
    it writes the encoder, which loads with the checkpoint's weights."""
    path, marker = hostile_checkpoint
    out = tmp_path / "encoder"
    with pytest.raises(SystemExit) as done:
        export_main([str(path), str(out)])
    err = capsys.readouterr().err.strip()
    assert done.value.code == 2
    assert err.startswith("lightning-transfer: error:") and "\n" not in err and "--trust-checkpoint" in err
    assert not marker.exists() and not out.exists()
    with pytest.warns(UserWarning, match="unpickled in full"):
        export_main([str(path), str(out), "--trust-checkpoint"])
    assert marker.is_dir() and (out / "encoder.safetensors").is_file() and (out / "encoder.json").is_file()
    encoder = load_encoder(str(out)).encoder
    assert all(torch.equal(encoder.state_dict()[k], v) for k, v in simclr_checkpoint[1].backbone_state_dict().items())


# ----------------------------------------------------------------------------- our own checkpoints


class TinyEncoder(nn.Module):
    """A custom backbone module (not a name SimCLRModule can rebuild)."""

    feature_dim = 8

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, stride=2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv(images).relu().mean((2, 3))


def toy_corpus(path, documents: int = 40) -> str:
    rng = random.Random(0)
    words = ["cat", "dog", "owl", "fox", "sees", "likes", "the", "red", "big", "garden", "river"]
    path.write_text("\n\n".join("\n".join(" ".join(rng.choice(words) for _ in range(8)) + " ." for _ in range(4))
                                for _ in range(documents)) + "\n")
    return str(path)


def simclr_named(tmp_path):
    module = SimCLRModule(backbone="convnet", width=4, in_channels=1, projection_hidden_dim=16, projection_dim=8,
                          optimizer="adamw", lr=1e-3, lr_scaling="none", warmup_steps=0)
    return module, mnist()


def simclr_custom(tmp_path):
    module = SimCLRModule(backbone=TinyEncoder(), projection_hidden_dim=16, projection_dim=8, optimizer="adamw", lr=1e-3,
                          lr_scaling="none", warmup_steps=0)
    return module, mnist()


def bert_pretrain(tmp_path):
    data = TextPretrainDataModule(source=toy_corpus(tmp_path / "corpus.txt"), tokenizer_vocab_size=60, min_frequency=1,
                                  max_seq_length=16, batch_size=4, val_fraction=0.1, cache_dir=str(tmp_path / "cache"))
    module = BertPretrainModule(vocab_size=None, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32, max_position_embeddings=16, warmup_steps=0)
    return module, data


def finetune(tmp_path):
    module = FineTuneModule(encoder_config={"backbone": "convnet", "in_channels": 1, "small_images": True, "width": 4},
                            init="scratch", num_classes=10, warmup_steps=0)
    return module, mnist(mode="supervised")


@pytest.mark.parametrize("build", [simclr_named, simclr_custom, bert_pretrain, finetune], ids=lambda f: f.__name__)
def test_checkpoints_our_modules_write_load_with_weights_only(build, tmp_path):
    """After a one-step fit with a DataModule, ``trainer.save_checkpoint`` writes tensors and plain
    values only: ``torch.load(weights_only=True)`` reads it, and its weights are the module's. (A
    custom backbone module is not kept as a hyperparameter; it is passed again to load the checkpoint.)"""
    torch.manual_seed(0)
    module, data = build(tmp_path)
    path = fitted_checkpoint(module, data, tmp_path / "model.ckpt")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = module.state_dict()
    assert checkpoint["state_dict"].keys() == state.keys()
    assert all(torch.equal(checkpoint["state_dict"][k], v) for k, v in state.items())
    if build is simclr_custom:
        assert checkpoint["hyper_parameters"]["backbone"] is None
        reloaded = SimCLRModule.load_from_checkpoint(path, backbone=TinyEncoder())
        assert all(torch.equal(reloaded.state_dict()[k], v) for k, v in state.items())
