"""The hand-off from pretraining to fine-tuning: checkpoint markers, the safetensors export, and the
files written before them (legacy checkpoints, ``.pt`` exports)."""

import json

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from lightning_transfer import BertPretrainModule, FineTuneModule, SimCLRModule
from lightning_transfer.errors import UserInputError
from lightning_transfer.export import main as export_main
from lightning_transfer.models.encoder_handoff import ENCODER_FORMAT, HANDOFF_KEY, save_encoder
from lightning_transfer.models.loading import load_encoder

TINY_BERT = {
    "vocab_size": 40,
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "max_position_embeddings": 16,
}


def fit_and_save(module: pl.LightningModule, loader, path) -> str:
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(module, loader)
    trainer.save_checkpoint(path)
    return str(path)


def image_samples(n: int = 8) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    return [
        {
            "views": (torch.randn(1, 16, 16, generator=g), torch.randn(1, 16, 16, generator=g)),
            "labels": torch.tensor(-1),
        }
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def simclr_checkpoint(tmp_path_factory):
    """One SimCLR step (convnet, width 4, 1 channel): ``(checkpoint path, module)``."""
    torch.manual_seed(0)
    module = SimCLRModule(
        backbone="convnet",
        width=4,
        in_channels=1,
        projection_hidden_dim=16,
        projection_dim=8,
        optimizer="adamw",
        lr=1e-2,
        lr_scaling="none",
        warmup_steps=0,
        num_classes=0,
    )
    path = fit_and_save(
        module, DataLoader(image_samples(), batch_size=8), tmp_path_factory.mktemp("simclr") / "simclr.ckpt"
    )
    return path, module


@pytest.fixture(scope="module")
def bert_checkpoint(tmp_path_factory):
    """One BertPretrainModule step on a fixed batch: ``(checkpoint path, module)``."""
    torch.manual_seed(0)
    module = BertPretrainModule(**TINY_BERT, lr=1e-2, warmup_steps=0)
    ids = torch.randint(5, 40, (4, 12), generator=torch.Generator().manual_seed(0))
    labels = torch.full_like(ids, -100)
    labels[:, 3] = ids[:, 3]
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "token_type_ids": torch.zeros_like(ids),
        "labels": labels,
        "next_sentence_label": torch.tensor([0, 1, 0, 1]),
    }
    path = fit_and_save(module, DataLoader([batch], batch_size=None), tmp_path_factory.mktemp("bert") / "bert.ckpt")
    return path, module


def rewritten(path, tmp_path, name: str, change) -> str:
    """A copy of checkpoint ``path`` after ``change(checkpoint)``."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, tmp_path / name)
    return str(tmp_path / name)


def same_weights(encoder: nn.Module, reference: nn.Module) -> bool:
    theirs = reference.state_dict()
    return encoder.state_dict().keys() == theirs.keys() and all(
        torch.equal(v, theirs[k]) for k, v in encoder.state_dict().items()
    )


# ----------------------------------------------------------------------------- the marker
def test_simclr_checkpoint_marker_describes_the_backbone_in_plain_values(simclr_checkpoint):
    checkpoint = torch.load(simclr_checkpoint[0], map_location="cpu", weights_only=True)  # plain values only
    assert checkpoint[HANDOFF_KEY] == {
        "format": ENCODER_FORMAT,
        "kind": "simclr",
        "modality": "image",
        "encoder": {"backbone": "convnet", "in_channels": 1, "small_images": True, "width": 4},
        "state_dict_prefix": "backbone.",
        "tokenizer": None,
    }


@pytest.mark.parametrize("which", ["simclr", "bert"])
def test_a_marked_checkpoint_loads_from_its_marker_alone(which, simclr_checkpoint, bert_checkpoint, tmp_path):
    """The marker is all load_encoder reads: without hyper_parameters the encoder is rebuilt the same."""
    path, module = simclr_checkpoint if which == "simclr" else bert_checkpoint
    stripped = rewritten(path, tmp_path, "stripped.ckpt", lambda checkpoint: checkpoint.pop("hyper_parameters"))
    loaded = load_encoder(stripped)
    reference = module.backbone if which == "simclr" else module.encoder
    assert (loaded.info["kind"], loaded.info["source"]) == (which, "lightning_checkpoint")
    assert same_weights(loaded.encoder, reference)


def test_the_bert_marker_is_what_load_encoder_dispatches_on(bert_checkpoint, tmp_path):
    """Weights under another prefix than the marker names are an error, not a guess."""
    path, module = bert_checkpoint
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert checkpoint[HANDOFF_KEY]["encoder"] == module.encoder.config.to_dict()
    assert (checkpoint[HANDOFF_KEY]["kind"], checkpoint[HANDOFF_KEY]["state_dict_prefix"]) == ("bert", "model.bert.")

    def moved(checkpoint):
        checkpoint[HANDOFF_KEY]["state_dict_prefix"] = "elsewhere."

    with pytest.raises(UserInputError, match="no weights under 'elsewhere.'"):
        load_encoder(rewritten(path, tmp_path, "moved.ckpt", moved))


def test_a_custom_backbone_is_marked_and_refused_in_one_line(tmp_path):
    class Tiny(nn.Module):
        feature_dim = 4

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)

        def forward(self, images):
            return self.conv(images).mean((2, 3))

    module = SimCLRModule(
        backbone=Tiny(),
        projection_hidden_dim=8,
        projection_dim=4,
        optimizer="adamw",
        lr=1e-3,
        lr_scaling="none",
        warmup_steps=0,
        num_classes=0,
    )
    path = fit_and_save(module, DataLoader(image_samples(), batch_size=8), tmp_path / "custom.ckpt")
    with pytest.raises(UserInputError, match="custom backbone module") as refused:
        load_encoder(path)
    assert "\n" not in str(refused.value)
    with pytest.raises(UserInputError, match="named backbone"):
        module.export_encoder(tmp_path / "encoder")


# ----------------------------------------------------------------------------- the export
def test_simclr_export_is_safetensors_and_json_that_fine_tunes_to_the_same_features(
    simclr_checkpoint, tmp_path, monkeypatch
):
    """checkpoint -> ``python -m lightning_transfer.export`` -> encoder.safetensors + encoder.json, which
    FineTuneModule reads without unpickling anything (torch.load raises) and whose features are
    exactly the pretrained backbone's."""
    path, simclr = simclr_checkpoint
    out = tmp_path / "encoder"
    export_main([path, str(out)])
    assert sorted(p.name for p in out.iterdir()) == ["encoder.json", "encoder.safetensors"]
    description = json.loads((out / "encoder.json").read_text())
    assert description == {
        "format": ENCODER_FORMAT,
        "kind": "simclr",
        "modality": "image",
        "encoder": {"backbone": "convnet", "in_channels": 1, "small_images": True, "width": 4},
    }

    def no_pickle(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", no_pickle)
    module = FineTuneModule(pretrained=str(out), num_classes=3).eval()
    assert module.source_info["source"] == "encoder_directory"
    images = torch.stack([sample["views"][0] for sample in image_samples()])
    with torch.no_grad():
        assert torch.equal(module.features({"images": images}), simclr.eval().backbone(images))


def test_exports_are_directories_not_pt_files(simclr_checkpoint, tmp_path):
    _, simclr = simclr_checkpoint
    with pytest.raises(UserInputError, match="is a directory"):
        simclr.export_encoder(tmp_path / "encoder.pt")
    assert not (tmp_path / "encoder.pt").exists()


def test_a_damaged_export_is_a_one_line_error(simclr_checkpoint, tmp_path):
    written = simclr_checkpoint[1].export_encoder(tmp_path / "encoder")
    (written / "encoder.safetensors").write_bytes((written / "encoder.safetensors").read_bytes()[:100])
    with pytest.raises(UserInputError, match="not a readable safetensors file") as broken:
        load_encoder(str(written))
    assert "\n" not in str(broken.value)
    (written / "encoder.json").write_text("{")
    with pytest.raises(UserInputError, match="not readable JSON"):
        load_encoder(str(written))


def test_save_encoder_writes_a_text_encoder_as_a_hugging_face_directory(bert_checkpoint, tmp_path):
    module = bert_checkpoint[1]
    written = save_encoder(tmp_path / "hf", module.encoder, module.encoder.config.to_dict(), kind="bert")
    assert (written / "config.json").is_file() and (written / "model.safetensors").is_file()
    loaded = load_encoder(str(written))
    assert loaded.info["source"] == "hf_directory" and same_weights(loaded.encoder, module.encoder)


# ----------------------------------------------------------------------------- files from before the marker
def test_a_pt_export_of_earlier_versions_still_loads(simclr_checkpoint, tmp_path):
    """What SimCLRModule.export_encoder wrote before the safetensors export, byte for byte the same dict."""
    _, simclr = simclr_checkpoint
    torch.save(
        {
            "format": "lightning_transfer.encoder/v1",
            "kind": "simclr",
            "modality": "image",
            "encoder": {
                "backbone": "convnet",
                "in_channels": 1,
                "small_images": True,
                "width": 4,
                "feature_dim": simclr.feature_dim,
            },
            "state_dict": simclr.backbone_state_dict(),
        },
        tmp_path / "encoder.pt",
    )
    loaded = load_encoder(str(tmp_path / "encoder.pt"))
    assert (loaded.info["kind"], loaded.info["source"], loaded.modality) == ("simclr", "encoder_file", "image")
    assert same_weights(loaded.encoder, simclr.backbone)


def test_checkpoints_without_the_marker_load_as_their_module_wrote_them(simclr_checkpoint, bert_checkpoint, tmp_path):
    """Earlier SimCLRModule checkpoints had no marker, earlier BertPretrainModule ones the marker
    ``{"kind": "bert_pretrain", "modality": "text", "tokenizer"}``; both load as before."""
    path, simclr = simclr_checkpoint
    old_simclr = rewritten(path, tmp_path, "old_simclr.ckpt", lambda checkpoint: checkpoint.pop(HANDOFF_KEY))
    loaded = load_encoder(old_simclr)
    assert loaded.info["kind"] == "simclr" and same_weights(loaded.encoder, simclr.backbone)

    def old_bert_marker(checkpoint):
        checkpoint[HANDOFF_KEY] = {"kind": "bert_pretrain", "modality": "text", "tokenizer": None}

    path, bert = bert_checkpoint
    loaded = load_encoder(rewritten(path, tmp_path, "old_bert.ckpt", old_bert_marker))
    assert loaded.info["kind"] == "bert" and loaded.info["config"] == {
        "modality": "text",
        **bert.encoder.config.to_dict(),
    }
    assert same_weights(loaded.encoder, bert.encoder)


def test_a_fine_tuned_checkpoint_without_the_marker_loads_from_its_encoder_config(simclr_checkpoint, tmp_path):
    finetuned = FineTuneModule(pretrained=simclr_checkpoint[0], num_classes=3, warmup_steps=0)
    samples = [
        {"images": sample["views"][0], "labels": torch.tensor(i % 3)} for i, sample in enumerate(image_samples())
    ]
    path = fit_and_save(finetuned, DataLoader(samples, batch_size=8), tmp_path / "finetuned.ckpt")
    for name, change in (
        ("marked.ckpt", lambda checkpoint: None),
        ("old.ckpt", lambda checkpoint: checkpoint.pop(HANDOFF_KEY)),
    ):
        loaded = load_encoder(rewritten(path, tmp_path, name, change))
        assert loaded.info["kind"] == "finetune" and same_weights(loaded.encoder, finetuned.encoder)
