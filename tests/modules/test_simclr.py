"""SimCLRModule: learning, the probe and kNN monitors, LR scaling and schedule, checkpoints, export."""
import math

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F

from lightning_transfer import ImageDataModule, SimCLRModule
from lightning_transfer.errors import UserInputError
from lightning_transfer.modules.simclr import knn_predict
from lightning_transfer.optim import LARS, warmup_factor


def tiny_module(**overrides) -> SimCLRModule:
    settings = dict(backbone="convnet", width=8, in_channels=1, projection_hidden_dim=32, projection_dim=16,
                    temperature=0.2, optimizer="adamw", lr=3e-3, lr_scaling="none", warmup_steps=2)
    settings.update(overrides)
    return SimCLRModule(**settings)


def tiny_data(**overrides) -> ImageDataModule:
    settings = dict(source="mnist_demo", batch_size=64, val_size=200, test_size=200, knn_bank_size=500,
                    augment={"crop_scale": (0.4, 1.0), "flip_prob": 0.0})
    settings.update(overrides)
    return ImageDataModule(**settings)


def trainer(**overrides) -> pl.Trainer:
    settings = dict(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False)
    settings.update(overrides)
    return pl.Trainer(**settings)


def test_simclr_loss_falls_and_monitors_beat_chance_after_a_short_fit():
    torch.manual_seed(0)
    module, data = tiny_module(), tiny_data()
    losses = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(trainer.callback_metrics["train/loss"].item())

    fit = trainer(limit_train_batches=30, limit_val_batches=2, callbacks=[Record()])
    fit.fit(module, data)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3
    assert module.hparams.num_classes == 10  # taken from the data and kept for the checkpoint
    assert fit.callback_metrics["val/knn_acc"] > 0.3 and fit.callback_metrics["val/probe_acc"] > 0.15


def test_probe_does_not_change_encoder_gradients():
    torch.manual_seed(0)
    batch = {"views": (torch.randn(8, 1, 28, 28), torch.randn(8, 1, 28, 28)), "labels": torch.randint(0, 10, (8,))}
    with_probe, without_probe = tiny_module(num_classes=10), tiny_module(num_classes=0)
    without_probe.load_state_dict({k: v for k, v in with_probe.state_dict().items() if not k.startswith("probe")})
    grads = []
    for module in (with_probe, without_probe):
        module.training_step(batch, 0).backward()
        grads.append(torch.cat([p.grad.flatten() for p in module.backbone.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])
    assert with_probe.probe.weight.grad.abs().sum() > 0


def test_knn_predict_matches_a_naive_weighted_vote():
    torch.manual_seed(0)
    bank, labels, query = torch.randn(50, 8), torch.randint(0, 3, (50,)), torch.randn(4, 8)
    scores = knn_predict(query, bank, labels, 3, k=5, temperature=0.5)
    for q in range(4):
        sims = F.cosine_similarity(query[q : q + 1], bank)
        expected = torch.zeros(3)
        for j in sims.topk(5).indices:
            expected[labels[j]] += math.exp(sims[j] / 0.5)
        torch.testing.assert_close(scores[q], expected, rtol=1e-4, atol=1e-5)


def test_lars_excludes_bias_and_norm_and_lr_scales_with_global_batch():
    module, data = tiny_module(optimizer="lars", lr=0.3, lr_scaling="linear", warmup_steps=3), tiny_data(batch_size=64)
    lrs = []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    fit = trainer(max_steps=6, limit_val_batches=0, callbacks=[Record()])
    fit.fit(module, data)
    optimizer = fit.optimizers[0]
    assert isinstance(optimizer, LARS)
    base = 0.3 * 64 / 256
    total = fit.estimated_stepping_batches
    expected = [base * warmup_factor(step, 3, total, "cosine") for step in range(6)]
    assert lrs == pytest.approx(expected)
    decay, no_decay = optimizer.param_groups[0], optimizer.param_groups[1]
    assert not decay["lars_exclude"] and no_decay["lars_exclude"] and no_decay["weight_decay"] == 0
    assert all(p.ndim == 1 for p in no_decay["params"]) and all(p.ndim > 1 for p in decay["params"])


def test_checkpoint_loads_alone_and_export_gives_prefix_free_encoder(tmp_path):
    module, data = tiny_module(), tiny_data()
    fit = trainer(max_steps=2, limit_val_batches=1)
    fit.fit(module, data)
    path = tmp_path / "simclr.ckpt"
    fit.save_checkpoint(path)
    loaded = SimCLRModule.load_from_checkpoint(path)
    assert loaded.probe is not None and loaded.probe.out_features == 10
    for key, value in module.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    exported = loaded.backbone_state_dict()
    assert set(exported) == set(module.backbone.state_dict()) and not any(k.startswith("backbone.") for k in exported)
    module.export_encoder(tmp_path / "encoder.pt")
    saved = torch.load(tmp_path / "encoder.pt")
    assert saved["kind"] == "simclr" and saved["modality"] == "image" and saved["encoder"]["feature_dim"] == 64


def test_channel_mismatch_is_a_clear_error():
    with pytest.raises(UserInputError, match="in_channels: 1"):
        trainer(max_steps=1).fit(tiny_module(in_channels=3), tiny_data())


def test_bf16_mixed_training_step_keeps_fp32_loss_and_learns():
    torch.manual_seed(0)
    module, data = tiny_module(), tiny_data()
    fit = trainer(max_steps=8, limit_val_batches=0, precision="bf16-mixed")
    fit.fit(module, data)
    assert torch.isfinite(fit.callback_metrics["train/loss"])


def test_compile_option_compiles_backbone_and_head_in_place_keeping_state_dict_keys(monkeypatch):
    module = tiny_module(compile=True)
    keys = list(module.state_dict())
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(self))
    monkeypatch.setattr("lightning_transfer.modules.base.compile_unavailable_reason", lambda device: None)
    monkeypatch.setattr("lightning_transfer.modules.base.restore_loader_states", lambda trainer: None)
    monkeypatch.setattr(SimCLRModule, "trainer", None)  # the hook runs without a Trainer here
    module.on_train_start()
    assert compiled == [module.backbone, module.projection]
    assert list(module.state_dict()) == keys
    compiled.clear()
    tiny_module().on_train_start()  # compile=False (default): nothing compiled
    assert compiled == []


def test_compile_option_warns_and_stays_eager_where_torch_compile_cannot_run(monkeypatch):
    module = tiny_module(compile=True)
    monkeypatch.setattr("lightning_transfer.modules.base.compile_unavailable_reason", lambda device: "no C++ compiler")
    with pytest.warns(UserWarning, match="compile=True ignored: no C\\+\\+ compiler"):
        assert module.compile_modules() == []
    assert module.backbone._compiled_call_impl is None
