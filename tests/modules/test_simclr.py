"""SimCLRModule: learning, the probe and kNN monitors, LR scaling and schedule, checkpoints, export."""

import json

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from lightning_transfer import ImageDataModule, SimCLRModule
from lightning_transfer.data.sources import load_mnist_demo
from lightning_transfer.errors import UserInputError
from lightning_transfer.optim import LARS, warmup_factor
from tests.helpers.knn import naive_knn_scores


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


def test_online_probe_loss_and_accuracy_count_labeled_images_only():
    """The probe's loss is the cross-entropy over the labeled images (-1 = unlabeled) and its epoch
    accuracy the share of labeled images it gets right, over batches of every labeling, computed here
    naively on the labeled rows; a batch without labels adds a loss of 0 with zero (defined) gradients."""
    torch.manual_seed(0)
    module = tiny_module(num_classes=4)
    batches = [(torch.randn(6, 8), torch.tensor([0, -1, 3, 2, -1, 1])), (torch.randn(5, 8), torch.full((5,), -1)),
               (torch.randn(4, 8), torch.tensor([1, 1, 0, 3]))]
    module.probe = torch.nn.Linear(8, 4)
    correct = total = 0
    for features, labels in batches:
        module.probe.zero_grad()
        loss = module._probe_loss(features, labels)
        loss.backward()
        keep = labels >= 0
        if keep.any():
            logits = module.probe(features[keep])
            torch.testing.assert_close(loss, F.cross_entropy(logits, labels[keep]))
            correct, total = correct + (logits.argmax(1) == labels[keep]).sum().item(), total + int(keep.sum())
        else:
            assert loss.item() == 0.0 and module.probe.weight.grad is not None
            assert not module.probe.weight.grad.any()
    assert total == 8 and 0 < correct < total  # an informative reference
    assert module.train_probe_acc.compute().item() == pytest.approx(correct / total)


def test_bf16_mixed_fit_with_probe_and_knn_bank_logs_finite_monitors():
    """A validation pass under precision="bf16-mixed" with the probe and the kNN bank on (an
    ImageDataModule with labels) logs finite val/knn_acc and val/probe_acc."""
    torch.manual_seed(0)
    module = tiny_module(width=4, num_classes=10, knn_k=20)
    data = tiny_data(batch_size=32, val_size=64, test_size=10, knn_bank_size=128)
    fit = trainer(max_steps=2, limit_train_batches=2, limit_val_batches=2, num_sanity_val_steps=0, precision="bf16-mixed")
    fit.fit(module, data)
    metrics = fit.callback_metrics
    assert torch.isfinite(metrics["val/knn_acc"]) and torch.isfinite(metrics["val/probe_acc"])
    assert 0.0 <= metrics["val/knn_acc"].item() <= 1.0 and 0.0 <= metrics["val/probe_acc"].item() <= 1.0


class MonitorData(pl.LightningDataModule):
    """Fixed validation batches and a labeled kNN bank, as ImageDataModule's val_dataloader and
    bank_dataloader give them (normalized images)."""

    def __init__(self, val_batches: list[dict], bank: dict):
        super().__init__()
        self.val_batches, self.bank = val_batches, bank

    def val_dataloader(self):
        return DataLoader(self.val_batches, batch_size=None)

    def bank_dataloader(self):
        return DataLoader([{"images": self.bank["images"][i : i + 40], "labels": self.bank["labels"][i : i + 40]}
                           for i in range(0, len(self.bank["labels"]), 40)], batch_size=None)


def test_validation_monitors_skip_unlabeled_images():
    """Validation batches that mix unlabeled (-1) images with labeled ones (one batch wholly
    unlabeled) give the same val/knn_acc and val/probe_acc as the labeled images alone, and both
    equal accuracies computed here with a naive kNN vote and the probe's argmax."""
    images, labels = load_mnist_demo()
    rows = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))[:220]  # the file is sorted by class
    images, labels = (images[rows].float() / 255 - 0.1307) / 0.3081, labels[rows]
    bank = {"images": images[:120], "labels": labels[:120]}
    val_images, val_labels = images[120:], labels[120:].clone()
    val_labels[::2] = -1  # half of the validation images are unlabeled
    val_labels[80:] = -1  # and the last batch has none
    mixed = [{"images": val_images[i : i + 20], "labels": val_labels[i : i + 20]} for i in range(0, 100, 20)]
    keep = val_labels >= 0
    labeled_only = [{"images": val_images[keep][i : i + 10], "labels": val_labels[keep][i : i + 10]}
                    for i in range(0, int(keep.sum()), 10)]

    torch.manual_seed(0)
    module = tiny_module(width=4, num_classes=10, knn_k=7, knn_temperature=0.1)
    results = [trainer().validate(module, datamodule=MonitorData(batches, bank), verbose=False)[0]
               for batches in (mixed, labeled_only)]

    module.eval()
    with torch.no_grad():
        query, bank_features = module.backbone(val_images[keep]), module.backbone(bank["images"])
        probe_acc = (module.probe(query).argmax(1) == val_labels[keep]).float().mean().item()
        scores = naive_knn_scores(query, bank_features, bank["labels"], 10, 7, 0.1)
        knn_acc = (scores.argmax(1) == val_labels[keep]).float().mean().item()
    assert int(keep.sum()) == 40 and 0.2 < knn_acc < 1.0  # the reference is informative, not 0 or 1
    for logged in results:
        assert logged["val/knn_acc"] == pytest.approx(knn_acc, abs=1e-6)
        assert logged["val/probe_acc"] == pytest.approx(probe_acc, abs=1e-6)


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
    written = module.export_encoder(tmp_path / "encoder")
    description = json.loads((written / "encoder.json").read_text())
    assert (description["kind"], description["modality"], description["encoder"]["backbone"]) == ("simclr", "image", "convnet")
    assert load_file(written / "encoder.safetensors").keys() == exported.keys()


def test_channel_mismatch_is_a_clear_error():
    with pytest.raises(UserInputError, match="in_channels: 1"):
        trainer(max_steps=1).fit(tiny_module(in_channels=3), tiny_data())


def test_a_bad_optimizer_setting_fails_at_construction_not_at_fit():
    """The optimizer settings are checked in the constructor (OptimizedModule), not first when
    configure_optimizers runs inside fit."""
    with pytest.raises(UserInputError, match="unknown optimizer 'adagrad'; choose one of lars, adamw, sgd, adam"):
        tiny_module(optimizer="adagrad")
    with pytest.raises(UserInputError, match="warmup_fraction must be"):
        tiny_module(warmup_fraction=1.5)


def fixed_views(n: int = 32, seed: int = 0) -> dict:
    """Two fixed noisy views of ``n`` digits: the same batch every step, no augmentation randomness."""
    from lightning_transfer.data.sources import load_mnist_demo

    images, labels = load_mnist_demo()
    g = torch.Generator().manual_seed(seed)
    x = images[:n].float().div(255).sub(0.5).div(0.5)
    return {"views": (x + 0.3 * torch.randn(x.shape, generator=g), x + 0.3 * torch.randn(x.shape, generator=g)),
            "labels": labels[:n]}


def as_samples(batches: list[dict]) -> list[dict]:
    """The batches as single samples, in order: a DataLoader with their batch size gives them back."""
    return [{"views": (b["views"][0][i], b["views"][1][i]), "labels": b["labels"][i]} for b in batches
            for i in range(len(b["labels"]))]


def nt_xent_of(module: SimCLRModule, batch: dict) -> float:
    from lightning_transfer.losses import nt_xent_loss

    module.eval()  # BatchNorm with running statistics: the loss of the weights, not of this batch's statistics
    with torch.no_grad():
        z1, z2 = module.projection(module.backbone(torch.cat(batch["views"]))).chunk(2)
        return nt_xent_loss(z1, z2, module.hparams.temperature, gather=False).item()


def test_bf16_mixed_training_step_keeps_fp32_loss_and_learns():
    """Eight bf16-mixed steps on one fixed batch: the logged loss is float32 and finite, and the
    float32 NT-Xent of the trained weights on that batch falls by more than 10%."""
    torch.manual_seed(0)
    module, batch = tiny_module(warmup_steps=0, schedule="constant", num_classes=0), fixed_views()
    before = nt_xent_of(module, batch)
    losses = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(outputs["loss"].detach())

    fit = trainer(max_steps=8, limit_val_batches=0, precision="bf16-mixed", callbacks=[Record()])
    fit.fit(module, torch.utils.data.DataLoader(as_samples([batch] * 8), batch_size=32))
    assert len(losses) == 8 and all(loss.dtype == torch.float32 and torch.isfinite(loss) for loss in losses)
    after = nt_xent_of(module, batch)
    assert after < 0.9 * before, (before, after)


def simclr_fit_losses(compile: bool, steps: int = 3) -> tuple[SimCLRModule, list[float]]:
    torch.manual_seed(0)
    module = tiny_module(warmup_steps=0, schedule="constant", num_classes=0, compile=compile)
    losses = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(outputs["loss"].item())

    batches = [fixed_views(16, seed) for seed in range(steps)]
    trainer(max_steps=steps, limit_val_batches=0, callbacks=[Record()]).fit(
        module, torch.utils.data.DataLoader(as_samples(batches), batch_size=16))
    return module, losses


@pytest.mark.parametrize("backend", ["eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compile_option_compiles_backbone_and_head_in_a_real_fit_with_the_eager_results(backend, monkeypatch):
    """compile=True compiles backbone and projection in place when training starts (TorchDynamo
    captures them: frames compiled), keeps the state-dict keys, and trains to the eager losses and
    weights. Default run: TorchDynamo's "eager" backend (graph capture, no code generation);
    ``-m slow``: inductor, which builds C++ kernels."""
    from torch._dynamo.utils import counters

    from lightning_transfer.modules.base import compile_unavailable_reason

    if backend == "inductor":  # the inductor variant needs a C++ compiler: fail, do not skip, where there is none
        assert compile_unavailable_reason(torch.device("cpu")) is None, compile_unavailable_reason(torch.device("cpu"))
    if backend != "inductor":
        compile_in_place = torch.nn.Module.compile
        monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compile_in_place(self, backend=backend, **kw))
    torch._dynamo.reset()
    counters.clear()
    try:
        eager, eager_losses = simclr_fit_losses(compile=False)
        assert counters["frames"]["ok"] == 0
        compiled, compiled_losses = simclr_fit_losses(compile=True)
        assert compiled.backbone._compiled_call_impl is not None and compiled.projection._compiled_call_impl is not None
        assert eager.backbone._compiled_call_impl is None
        assert counters["frames"]["ok"] >= 2  # backbone and projection
    finally:
        torch._dynamo.reset()
    # Inductor's fused kernels sum in another order. AdamW turns that fp32 rounding into whole steps of
    # size lr where a gradient is near zero (its sign flips), so its weights may differ by a few lr.
    lr = compiled.hparams.lr
    loss_rtol, weight_atol = (1e-4, 1e-5) if backend == "eager" else (3e-3, 4 * lr)
    torch.testing.assert_close(torch.tensor(compiled_losses), torch.tensor(eager_losses), rtol=loss_rtol, atol=1e-5)
    assert list(compiled.state_dict()) == list(eager.state_dict())  # no _orig_mod. prefixes in checkpoints
    for key, value in eager.state_dict().items():
        torch.testing.assert_close(compiled.state_dict()[key], value, rtol=1e-3, atol=weight_atol, msg=key)


def test_compile_option_warns_and_stays_eager_where_torch_compile_cannot_run(monkeypatch):
    module = tiny_module(compile=True)
    monkeypatch.setattr("lightning_transfer.modules.base.compile_unavailable_reason", lambda device: "no C++ compiler")
    with pytest.warns(UserWarning, match="compile=True ignored: no C\\+\\+ compiler"):
        assert module.compile_modules() == []
    assert module.backbone._compiled_call_impl is None
