"""lightning_transfer.callbacks: ThroughputReport, HostSyncCounter, loggers_sharing_one_version, BestCheckpoint,
LatestCheckpoint and EmbeddingProjectionPlot in every recipe (PredictionWriter is tested with fine-tuning, the plots' drawing in
tests/test_plots.py)."""
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from lightning_transfer.callbacks import ThroughputReport
from tests.helpers.ddp import ListDataset, bert_module, bert_rows


def test_throughput_report_counts_sequences_and_non_padding_tokens_after_warmup(capsys):
    rows = bert_rows(n=12)
    monitor = ThroughputReport(warmup_steps=1, label="bert")
    trainer = pl.Trainer(accelerator="cpu", max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, callbacks=[monitor])
    trainer.fit(bert_module(), DataLoader(ListDataset(rows), batch_size=4))
    summary = monitor.summary
    assert summary["steps"] == 2  # step 0 is warm-up
    tokens = sum(int(r["attention_mask"].sum()) for r in rows[4:12])
    assert summary["tokens_per_s"] * summary["seconds"] == pytest.approx(tokens)
    assert summary["samples_per_s"] * summary["seconds"] == pytest.approx(8)
    assert "throughput bert: steps=2" in capsys.readouterr().out
    assert ThroughputReport.batch_counts({"views": (torch.zeros(5, 3), torch.zeros(5, 3)), "labels": torch.zeros(5)}) == (5, 0)


def test_the_old_throughput_monitor_name_still_works_and_says_it_is_deprecated():
    from lightning_transfer.callbacks import ThroughputMonitor

    with pytest.warns(FutureWarning, match="ThroughputReport"):
        monitor = ThroughputMonitor(warmup_steps=3, label="old")
    assert isinstance(monitor, ThroughputReport) and (monitor.warmup_steps, monitor.label) == (3, "old")


def test_host_sync_counter_counts_sync_warnings_inside_training_steps_only(capsys):
    """The counting of HostSyncCounter (on a GPU torch emits the warnings; here the module emits torch's
    own message): two per step inside steps 1..3, none for what happens between steps (validation)."""
    import warnings

    from lightning_transfer.callbacks import HostSyncCounter

    counter = HostSyncCounter(warmup_steps=1, label="bert")
    message = f"{HostSyncCounter.MARKER} (test)"

    class Syncing(pl.Callback):
        def on_before_backward(self, trainer, pl_module, loss):  # inside the step
            for _ in range(2):
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    warnings.warn(message, UserWarning)
                counter.count(str(caught[0].message), caught[0].filename, caught[0].lineno)

        def on_validation_batch_end(self, *args):  # between steps: never counted
            counter.count(message)

    trainer = pl.Trainer(accelerator="cpu", max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=1, val_check_interval=2, num_sanity_val_steps=0,
                         callbacks=[Syncing(), counter])
    rows = bert_rows(n=16)
    trainer.fit(bert_module(), DataLoader(ListDataset(rows), batch_size=4), DataLoader(ListDataset(rows[:4]), batch_size=4))
    assert counter.summary["steps"] == 3 and counter.summary["per_step"] == 2.0
    assert counter.summary["first"].startswith(__file__)
    assert "host_syncs bert: steps=3 per_step=2.00" in capsys.readouterr().out


def test_tensorboard_and_csv_loggers_on_one_folder_share_the_next_free_version(tmp_path):
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from lightning_transfer.callbacks import loggers_sharing_one_version

    (tmp_path / "lightning_logs" / "version_0").mkdir(parents=True)  # an earlier run
    args = [{"save_dir": str(tmp_path)}, {"save_dir": str(tmp_path)}, {"save_dir": str(tmp_path), "version": 7},
            {"save_dir": str(tmp_path / "elsewhere")}]
    loggers = [TensorBoardLogger(**args[0]), CSVLogger(**args[1]), CSVLogger(**args[2]), CSVLogger(**args[3])]
    shared = loggers_sharing_one_version(loggers, args)
    assert [type(logger) for logger in shared] == [type(logger) for logger in loggers]
    assert [logger.version for logger in shared] == [1, 1, 7, 0]  # an explicit version and another folder are kept
    assert shared[1].log_dir == shared[0].log_dir == str(tmp_path / "lightning_logs" / "version_1")
    alone = [CSVLogger(tmp_path / "alone")]
    assert loggers_sharing_one_version(alone, [{}]) is alone


# ----------------------------------------------------------------------------- BestCheckpoint
class RecordValidation(pl.Callback):
    """The value of ``metric`` after every validation epoch (the sanity check left out)."""

    def __init__(self, metric: str):
        self.metric, self.values = metric, []

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.values.append(float(trainer.callback_metrics[self.metric]))


def _simclr_fit():
    from lightning_transfer import ImageDataModule, SimCLRModule

    module = SimCLRModule(backbone="convnet", width=4, in_channels=1, projection_hidden_dim=16, projection_dim=8,
                          optimizer="adamw", lr=1e-2, lr_scaling="none", warmup_steps=0, schedule="constant", knn_k=5)
    data = ImageDataModule(source="mnist_demo", batch_size=16, val_size=48, test_size=16, knn_bank_size=64,
                           image_size=16, num_workers=0)
    return module, {"datamodule": data}


def _bert_fit():
    rows = bert_rows(n=16)
    return bert_module(), {"train_dataloaders": DataLoader(ListDataset(rows[:12]), batch_size=4),
                           "val_dataloaders": DataLoader(ListDataset(rows[12:]), batch_size=4)}


def _finetune_fit():
    from lightning_transfer import FineTuneModule
    from tests.helpers.ddp import FINETUNE_TEXT_ENCODER, classification_rows

    rows = classification_rows(n=36)
    for row in rows:  # three tokens that name the class: learnable in a few steps, so the accuracy moves
        row["input_ids"][1:4] = 10 + int(row["labels"])
    module = FineTuneModule(encoder_config=FINETUNE_TEXT_ENCODER, init="scratch", num_classes=3, pooling="mean",
                            head_dropout=0.0, lr=3e-3, warmup_steps=0, schedule="constant")
    return module, {"train_dataloaders": DataLoader(ListDataset(rows[:24]), batch_size=4),
                    "val_dataloaders": DataLoader(ListDataset(rows[24:]), batch_size=4)}


KINDS = {  # module kind -> (how to fit it, the metric and mode it declares, the name in the file)
    "simclr": (_simclr_fit, "val/knn_acc", "max", "knn_acc"),
    "bert": (_bert_fit, "val/mlm_loss", "min", "mlm_loss"),
    "finetune": (_finetune_fit, "val/acc", "max", "acc"),
}


def _fit(module, data, tmp_path, callbacks, epochs: int = 3, ckpt_path=None):
    trainer = pl.Trainer(accelerator="cpu", max_epochs=epochs, limit_train_batches=3, limit_val_batches=3,
                         num_sanity_val_steps=0, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path, callbacks=callbacks)
    trainer.fit(module, **data, ckpt_path=ckpt_path)
    return trainer


@pytest.mark.parametrize("kind", KINDS)
def test_best_checkpoint_monitors_the_metric_each_module_declares_and_keeps_its_best_file(kind, tmp_path):
    from lightning_transfer.callbacks import BestCheckpoint

    make, metric, mode, name = KINDS[kind]
    torch.manual_seed(0)
    module, data = make()
    assert module.checkpoint_metric == (metric, mode)
    best, record = BestCheckpoint(dirpath=tmp_path / "ckpt"), RecordValidation(metric)
    trainer = _fit(module, data, tmp_path, [record, best])
    assert trainer.checkpoint_callback is best
    assert (best.monitor, best.mode, best.save_last) == (metric, mode, False)  # last.ckpt: LatestCheckpoint
    assert len(record.values) == 3 and len(set(record.values)) > 1  # min and max pick different epochs
    expected = max(record.values) if mode == "max" else min(record.values)
    epoch = record.values.index(expected)  # the first epoch to reach it: a tie later is no improvement
    assert best.best_model_score.item() == expected
    assert Path(best.best_model_path).name == f"epoch={epoch}-step={3 * (epoch + 1)}-{name}={expected:.4f}.ckpt"
    kept = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert kept == [Path(best.best_model_path).name]  # top 1: the others were removed
    saved = torch.load(best.best_model_path, map_location="cpu", weights_only=True)["callbacks"]
    assert saved[best.state_key]["monitor"] == metric  # the state is stored under the resolved metric and mode
    assert f"'monitor': '{metric}', 'mode': '{mode}'" in best.state_key


def test_best_checkpoint_sets_the_mode_dependent_state_with_the_mode():
    from lightning_transfer import FineTuneModule
    from lightning_transfer.callbacks import BestCheckpoint
    from tests.helpers.ddp import finetune_text_module

    best = BestCheckpoint()
    assert (best.monitor, best.mode, best.filename) == (None, "min", None)  # nothing chosen before setup
    best.resolve(finetune_text_module())
    assert (best.monitor, best.mode) == FineTuneModule.checkpoint_metric == ("val/acc", "max")
    assert best.kth_value.item() == -float("inf")  # max: any accuracy beats the start
    assert best.filename == "epoch={epoch}-step={step}-acc={val/acc:.4f}" and best.save_last is False
    assert best.auto_insert_metric_name is False
    mlm = BestCheckpoint()
    mlm.resolve(bert_module())
    assert (mlm.monitor, mlm.mode, mlm.kth_value.item()) == ("val/mlm_loss", "min", float("inf"))


def test_best_checkpoint_monitor_and_mode_given_explicitly_win(tmp_path):
    from lightning_transfer.callbacks import BestCheckpoint
    from lightning_transfer.errors import UserInputError
    from tests.helpers.ddp import finetune_text_module

    module, data = _finetune_fit()
    best = BestCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/loss", mode="min", filename="best-{epoch}")
    record = RecordValidation("val/loss")
    _fit(module, data, tmp_path, [record, best])
    assert (best.monitor, best.mode) == ("val/loss", "min")
    assert best.best_model_score.item() == min(record.values)
    assert Path(best.best_model_path).name == f"best-{record.values.index(min(record.values))}.ckpt"
    # monitor alone: the module's mode for its own metric; mode alone: the module's metric
    alone = BestCheckpoint(monitor="val/acc")
    alone.resolve(finetune_text_module())
    assert (alone.monitor, alone.mode) == ("val/acc", "max")
    assert alone.filename == "epoch={epoch}-step={step}-acc={val/acc:.4f}"
    worst = BestCheckpoint(mode="min")
    worst.resolve(finetune_text_module())
    assert (worst.monitor, worst.mode, worst.kth_value.item()) == ("val/acc", "min", float("inf"))
    # another metric without a mode: no guess (Lightning's default "min" would keep the worst F1)
    with pytest.raises(UserInputError, match=r"monitor='val/f1'\) needs mode 'min' or 'max'"):
        BestCheckpoint(monitor="val/f1").resolve(finetune_text_module())
    with pytest.raises(UserInputError, match="mode must be 'min' or 'max'"):
        BestCheckpoint(mode="maximum")


class NoDeclaredMetric(pl.LightningModule):
    """A module that logs a validation loss but declares no ``checkpoint_metric``."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.layer(batch).pow(2).mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_best_checkpoint_on_a_module_without_checkpoint_metric_is_one_line_saying_what_to_set(tmp_path):
    from lightning_transfer.callbacks import BestCheckpoint
    from lightning_transfer.errors import UserInputError

    steps = []

    class Count(pl.Callback):
        def on_train_batch_end(self, *args):
            steps.append(1)

    loader = DataLoader(torch.randn(8, 2), batch_size=4)
    data = {"train_dataloaders": loader, "val_dataloaders": loader}
    with pytest.raises(UserInputError) as error:
        _fit(NoDeclaredMetric(), data, tmp_path, [Count(), BestCheckpoint()])
    message = str(error.value)
    assert "\n" not in message and not steps  # one line, before any step
    assert "NoDeclaredMetric.checkpoint_metric = ('val/<metric>', 'min' or 'max')" in message
    assert "give the callback monitor and mode" in message
    # what the message says to do works: the attribute, or monitor and mode on the callback
    declared = type("Declared", (NoDeclaredMetric,), {"checkpoint_metric": ("val/loss", "min")})
    _fit(declared(), data, tmp_path / "a", [BestCheckpoint()], epochs=1)
    explicit = BestCheckpoint(monitor="val/loss", mode="min")
    _fit(NoDeclaredMetric(), data, tmp_path / "b", [explicit], epochs=1)
    assert Path(explicit.best_model_path).name.startswith("epoch=0-step=2-loss=")
    with pytest.raises(UserInputError, match="checkpoint_metric must be"):
        BestCheckpoint().resolve(type("Bad", (NoDeclaredMetric,), {"checkpoint_metric": ("val/loss", "lowest")})())
    # validate / test / predict checkpoint nothing: no metric needed there
    trainer = pl.Trainer(accelerator="cpu", logger=False, default_root_dir=tmp_path)
    BestCheckpoint().setup(trainer, NoDeclaredMetric(), "test")


def test_resuming_with_best_checkpoint_restores_the_best_path_and_score(tmp_path):
    from lightning_transfer.callbacks import BestCheckpoint, LatestCheckpoint

    torch.manual_seed(0)
    module, data = _finetune_fit()
    first = BestCheckpoint(dirpath=tmp_path / "ckpt")
    _fit(module, data, tmp_path, [first, LatestCheckpoint(dirpath=tmp_path / "ckpt")], epochs=2)
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)["callbacks"]
    assert first.state_key in saved

    restored = {}

    class AtTrainStart(pl.Callback):  # after the checkpoint is restored, before any new validation
        def on_train_start(self, trainer, pl_module):
            restored.update(path=second.best_model_path, score=second.best_model_score, kth=second.kth_value)

    torch.manual_seed(0)
    module, data = _finetune_fit()
    second = BestCheckpoint(dirpath=tmp_path / "ckpt")
    assert second.state_key != first.state_key  # before setup: no metric chosen yet
    _fit(module, data, tmp_path, [AtTrainStart(), second, LatestCheckpoint(dirpath=tmp_path / "ckpt")], epochs=3,
         ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert second.state_key == first.state_key
    assert restored["path"] == first.best_model_path and restored["score"] == first.best_model_score
    assert restored["kth"] == first.best_model_score  # top 1: the value a new checkpoint must beat


# ----------------------------------------------------------------------------- last.ckpt: LatestCheckpoint
SHARED_CALLBACKS = Path(__file__).resolve().parents[1] / "configs" / "base" / "callbacks.yaml"
SCORES = [0.5, 0.9, 0.7, 0.6, 0.4]  # the monitored metric by epoch: best at epoch 1, worse after it


class ScriptedScore(pl.LightningModule):
    """A tiny module whose ``val/score`` (max) follows :data:`SCORES` epoch by epoch."""

    checkpoint_metric = ("val/score", "max")

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/score", SCORES[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def shared_checkpoint_callbacks() -> list:
    """The checkpoint callbacks of configs/base/callbacks.yaml, built in their order (the rest: loggers, plots)."""
    import importlib

    import yaml
    from lightning.pytorch.callbacks import ModelCheckpoint

    built = []
    for entry in yaml.safe_load(SHARED_CALLBACKS.read_text()):
        module, _, name = entry["class_path"].rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        if issubclass(cls, ModelCheckpoint):
            built.append(cls(**entry.get("init_args", {})))
    return built


def test_last_ckpt_of_the_shared_callbacks_holds_the_final_step_after_the_best_stopped_improving(tmp_path):
    """Lightning rewrites a monitored ModelCheckpoint's save_last file only when it saved a new best: the
    shared list keeps last.ckpt current with LatestCheckpoint, and the best file at the best epoch."""
    from lightning_transfer.callbacks import BestCheckpoint, LatestCheckpoint

    def fit(epochs: int, ckpt_path=None):
        callbacks = shared_checkpoint_callbacks()
        loader = DataLoader(torch.randn(8, 2), batch_size=4)  # 2 steps an epoch
        trainer = pl.Trainer(accelerator="cpu", max_epochs=epochs, num_sanity_val_steps=0, logger=False,
                             enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                             callbacks=callbacks)
        module = ScriptedScore()
        trainer.fit(module, loader, loader, ckpt_path=ckpt_path)
        return trainer, module, callbacks

    trainer, module, callbacks = fit(epochs=4)
    folder = tmp_path / "checkpoints"
    last = folder / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert saved["global_step"] == trainer.global_step == 8 and saved["epoch"] == 3  # the final state
    assert all(torch.equal(saved["state_dict"][k], v) for k, v in module.state_dict().items())
    assert [type(c) for c in callbacks[:2]] == [BestCheckpoint, LatestCheckpoint]
    best, latest = callbacks[:2]
    assert trainer.checkpoint_callback is best  # the CLI records its best_model_path
    assert Path(latest.best_model_path) == last and best.last_model_path == ""
    assert Path(best.best_model_path).name == "epoch=1-step=4-score=0.9000.ckpt"
    kept = torch.load(best.best_model_path, map_location="cpu", weights_only=True)
    assert (kept["epoch"], kept["global_step"]) == (1, 4)  # the best epoch
    assert sorted(p.name for p in folder.iterdir()) == ["epoch=1-step=4-score=0.9000.ckpt", "last.ckpt"]

    # a resume from the newest state (ckpt_path="last" finds last.ckpt) goes on from step 8, rewriting the one file
    trainer, _, _ = fit(epochs=5, ckpt_path="last")
    assert trainer.global_step == 10
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 10
    assert sorted(p.name for p in folder.glob("last*")) == ["last.ckpt"]  # no last-v1.ckpt


def test_latest_checkpoint_refuses_a_second_writer_of_its_last_ckpt(tmp_path):
    from lightning_transfer.callbacks import BestCheckpoint, LatestCheckpoint
    from lightning_transfer.errors import UserInputError

    loader = DataLoader(torch.randn(4, 2), batch_size=4)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path,
                         callbacks=[BestCheckpoint(save_last=True), LatestCheckpoint()])
    with pytest.raises(UserInputError, match="set save_last to false on the BestCheckpoint"):
        trainer.fit(ScriptedScore(), loader, loader)


# ----------------------------------------------------------------------------- EmbeddingProjectionPlot in every recipe
def test_embedding_projection_plot_skips_bert_pretraining_and_embeds_text_within_limit_val_batches(
        tmp_path, monkeypatch, caplog):
    """configs/base/callbacks.yaml gives every recipe the plot: MLM pretraining (no class features) gets
    none and one info line, text fine-tuning gets one, from no more batches than validation reads."""
    import logging

    from lightning.pytorch.loggers import CSVLogger

    from lightning_transfer import plots
    from lightning_transfer.callbacks import EmbeddingProjectionPlot

    seen = []
    original = plots.plot_embedding_projection

    def plot(features, labels, path, **kw):
        seen.append(len(labels))
        return original(features, labels, path, **kw)

    monkeypatch.setattr(plots, "plot_embedding_projection", plot)

    def fit(module, data, root, **settings):
        callback = EmbeddingProjectionPlot()
        pl.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=2, num_sanity_val_steps=0,
                   logger=CSVLogger(root), enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, callbacks=[callback], **settings).fit(module, **data)
        return callback

    with caplog.at_level(logging.INFO):
        skipped = fit(*_bert_fit(), tmp_path / "bert")
    assert skipped.path is None and not list((tmp_path / "bert").rglob("*.png")) and not seen
    assert "BertPretrainModule has no class features to embed" in caplog.text

    module, data = _finetune_fit()  # 12 validation rows, batches of 4
    assert fit(module, data, tmp_path / "all").path.is_file() and seen == [12]
    assert fit(module, data, tmp_path / "two", limit_val_batches=2).path.is_file() and seen[-1] == 8
    assert fit(module, data, tmp_path / "half", limit_val_batches=0.5).path.is_file() and seen[-1] == 4
    with pytest.warns(UserWarning, match="limit_val_batches=0"):
        assert fit(module, data, tmp_path / "none", limit_val_batches=0).path is None


class _NaNAtStep(pl.LightningModule):
    """A linear model whose loss is NaN at one optimizer step."""

    def __init__(self, bad_step: int):
        super().__init__()
        self.layer, self.bad_step = torch.nn.Linear(2, 1), bad_step

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch).mean()
        return loss * float("nan") if self.global_step == self.bad_step else loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit_nan_at_step_2(tmp_path, callbacks, log_every_n_steps=50):
    trainer = pl.Trainer(accelerator="cpu", max_steps=8, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         log_every_n_steps=log_every_n_steps, callbacks=callbacks, default_root_dir=tmp_path)
    trainer.fit(_NaNAtStep(bad_step=2), DataLoader(torch.randn(32, 2), batch_size=2))


def test_non_finite_loss_read_every_n_steps_names_the_first_bad_step_when_it_is_read(tmp_path):
    """Between reads the check stays on the device; the read at the end of step 3 (every 4 steps,
    here the Trainer's log_every_n_steps) still names step 2, its epoch and batch, and its value."""
    from lightning_transfer.callbacks import NonFiniteLossError, StopOnNonFiniteLoss

    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 2 \(epoch 0, batch 2\); training stopped 1 step"):
        _fit_nan_at_step_2(tmp_path, [StopOnNonFiniteLoss()], log_every_n_steps=4)
    with pytest.raises(NonFiniteLossError, match=r"at step 2 .* 1 step\(s\) later, at its check"):
        _fit_nan_at_step_2(tmp_path, [StopOnNonFiniteLoss(check_every_n_steps=4)])


def test_non_finite_loss_is_read_before_any_checkpoint_so_every_checkpoint_written_predates_it(tmp_path):
    """A checkpoint after every step, the record read every 50 steps only: the save after the bad step
    raises instead of writing, so the files on disk are those of steps 1 and 2, finite."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lightning_transfer.callbacks import NonFiniteLossError, StopOnNonFiniteLoss

    every_step = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{step}", every_n_train_steps=1, save_top_k=-1,
                                 monitor=None)
    with pytest.raises(NonFiniteLossError, match="at step 2 .*before a checkpoint with weights trained on it was written"):
        _fit_nan_at_step_2(tmp_path, [StopOnNonFiniteLoss(), every_step])
    saved = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert saved == ["step=1.ckpt", "step=2.ckpt"]  # after steps 0 and 1; none after the bad step 2
    for name in saved:
        weights = torch.load(tmp_path / "ckpt" / name, weights_only=True)["state_dict"]
        assert all(torch.isfinite(w).all() for w in weights.values())


def test_non_finite_loss_check_every_n_steps_must_be_a_positive_integer():
    from lightning_transfer.callbacks import StopOnNonFiniteLoss
    from lightning_transfer.errors import UserInputError

    for bad in (0, -1, 2.5, True):
        with pytest.raises(UserInputError, match="check_every_n_steps"):
            StopOnNonFiniteLoss(check_every_n_steps=bad)
