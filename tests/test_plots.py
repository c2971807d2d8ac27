"""lightning_transfer.plots and the plotting callbacks: logs read back exactly, PCA against numpy,
the test confusion matrix against a loop over the predictions, and PNGs written next to the logs."""

from typing import ClassVar

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lightning_transfer import ImageDataModule, SimCLRModule, plots
from lightning_transfer.callbacks import EmbeddingProjectionPlot, TrainingCurvesPlot, loggers_sharing_one_version
from lightning_transfer.errors import UserInputError
from lightning_transfer.evaluation import extract_features
from lightning_transfer.modules.finetune import FineTuneModule


class Points(Dataset):
    def __init__(self, n: int = 12, classes: int = 3):
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, 1, 16, 16, generator=generator)
        self.labels = torch.arange(n) % classes

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return {"images": self.images[index], "labels": self.labels[index]}


class Regression(pl.LightningModule):
    """Logs its training loss every step and a validation loss every epoch, and remembers both."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(256, 1)
        self.train_losses: list[float] = []
        self.val_losses: list[float] = []

    def _loss(self, batch):
        return self.linear(batch["images"].flatten(1)).squeeze(1).sub(batch["labels"].float()).square().mean()

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.train_losses.append(loss.item())
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.val_losses.append(loss.item())
        self.log("val/loss", loss)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit_regression(logger, epochs: int = 2, callbacks=()) -> Regression:
    module = Regression()
    if isinstance(logger, list):  # built with save_dir alone
        logger = loggers_sharing_one_version(logger, [{"save_dir": each.save_dir} for each in logger])
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        logger=logger,
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=list(callbacks),
    )
    trainer.fit(module, DataLoader(Points(12), batch_size=4), DataLoader(Points(4), batch_size=4))
    return module


def tiny_classifier() -> FineTuneModule:
    """A 3-class FineTuneModule on a 4-wide CNN encoder at random init, for the 16 x 16 Points."""
    return FineTuneModule(
        encoder_config={"backbone": "convnet", "in_channels": 1, "small_images": True, "width": 4},
        num_classes=3,
        lr=1e-2,
        warmup_steps=0,
        schedule="constant",
    )


def assert_valid_png(path):
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100


# -------------------------------------------------------------------------------- reading logs
@pytest.mark.parametrize("kind", ["csv", "tensorboard"])
def test_read_metrics_returns_the_steps_and_values_a_trainer_logged(tmp_path, kind):
    logger = CSVLogger(tmp_path) if kind == "csv" else TensorBoardLogger(tmp_path)
    module = fit_regression(logger)
    metrics = plots.read_metrics(logger.log_dir)
    assert [step for step, _ in metrics["train/loss"]] == list(range(6))  # 3 batches x 2 epochs
    assert [value for _, value in metrics["train/loss"]] == pytest.approx(module.train_losses, rel=1e-6)
    assert [step for step, _ in metrics["val/loss"]] == [2, 5]  # after the last batch of each epoch
    assert [value for _, value in metrics["val/loss"]] == pytest.approx(module.val_losses, rel=1e-6)
    if kind == "csv":
        assert metrics == plots.read_metrics(tmp_path / "lightning_logs" / "version_0" / "metrics.csv")
    assert metrics == plots.read_metrics(tmp_path)  # a folder above: its newest run


def test_read_metrics_without_logs_is_a_one_line_error(tmp_path):
    with pytest.raises(UserInputError, match="no training logs") as excinfo:
        plots.read_metrics(tmp_path)
    assert "\n" not in str(excinfo.value)


def test_training_curves_put_train_and_val_of_one_metric_on_one_panel_and_skip_bookkeeping():
    metrics = {
        "train/loss": [(0, 2.0), (1, 1.0)],
        "val/loss": [(1, 1.5)],
        "val/acc": [(1, 0.5)],
        "lr-AdamW": [(0, 0.1)],
        "epoch": [(0, 0.0)],
        "train/acc_step": [(0, 0.3)],
        "train/acc_epoch": [(1, 0.4)],
    }
    fig = plots.curves_figure(metrics)
    panels = {
        ax.get_title(): sorted(line.get_label() for line in ax.get_lines()) for ax in fig.axes if ax.get_visible()
    }
    assert panels == {"loss": ["train/loss", "val/loss"], "acc": ["train/acc_epoch", "train/acc_step", "val/acc"]}
    line = next(line for ax in fig.axes for line in ax.get_lines() if line.get_label() == "train/loss")
    assert list(line.get_xdata()) == [0, 1] and list(line.get_ydata()) == [2.0, 1.0]


def test_plot_training_curves_writes_a_png_next_to_the_logs(tmp_path):
    logger = CSVLogger(tmp_path)
    fit_regression(logger, epochs=1)
    path = plots.plot_training_curves(logger.log_dir)
    assert path == tmp_path / "lightning_logs" / "version_0" / "training_curves.png"
    assert_valid_png(path)
    with pytest.raises(UserInputError, match="val/acc"):
        plots.plot_training_curves(logger.log_dir, tmp_path / "other.png", metrics=["val/acc"])


# -------------------------------------------------------------------------------- projection, confusion
def test_project_2d_equals_numpy_pca_up_to_the_sign_of_each_axis():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(60, 7, generator=generator) * torch.tensor([5.0, 3.0, 1.0, 0.5, 0.3, 0.2, 0.1]) + 4.0
    x = features.double().numpy()
    centred = x - x.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    reference = centred @ vt[:2].T
    projected = plots.project_2d(features).double().numpy()
    assert projected.shape == (60, 2)
    for k in range(2):
        sign = np.sign(projected[:, k] @ reference[:, k])
        np.testing.assert_allclose(projected[:, k] * sign, reference[:, k], atol=1e-4)


def test_embedding_projection_png_with_class_names_and_unlabeled_points(tmp_path):
    labels = torch.tensor([0, 1, 2, -1] * 10)
    path = plots.plot_embedding_projection(torch.randn(40, 5), labels, tmp_path / "e.png", class_names=["a", "b", "c"])
    assert_valid_png(path)


def test_finetune_test_confusion_matrix_equals_a_loop_over_its_predictions_and_is_plotted(tmp_path):
    module = tiny_classifier().eval()
    trainer = pl.Trainer(
        accelerator="cpu", logger=CSVLogger(tmp_path), enable_progress_bar=False, enable_model_summary=False
    )
    data = Points(23)
    trainer.test(module, DataLoader(data, batch_size=5), verbose=False)
    predictions = trainer.predict(module, DataLoader(data, batch_size=5))
    predicted = torch.cat([p["prediction"] for p in predictions])
    expected = torch.zeros(3, 3, dtype=torch.long)
    for true, guess in zip(data.labels.tolist(), predicted.tolist()):
        expected[true, guess] += 1
    assert torch.equal(module.test_confusion_matrix, expected)
    assert_valid_png(tmp_path / "lightning_logs" / "version_0" / "confusion_matrix.png")


def test_accuracy_spread_is_the_mean_the_sample_std_and_the_range_over_seeds():
    accuracies = [0.5, 0.625, 0.75, 0.8]
    spread = plots.accuracy_spread(accuracies)
    assert spread["mean_accuracy"] == pytest.approx(np.mean(accuracies), rel=1e-12)
    assert spread["std_accuracy"] == pytest.approx(np.std(accuracies, ddof=1), rel=1e-12)
    assert (spread["min_accuracy"], spread["max_accuracy"]) == (0.5, 0.8)
    assert plots.accuracy_spread([0.7]) == {
        "mean_accuracy": 0.7,
        "std_accuracy": 0.0,
        "min_accuracy": 0.7,
        "max_accuracy": 0.7,
    }
    with pytest.raises(UserInputError, match="no test accuracy"):
        plots.accuracy_spread([])


# Three seeds per (init, labels per class), given out of order: the figure groups them.
SEEDS = {
    ("pretrained", 1): [0.5, 0.7, 0.6],
    ("pretrained", 10): [0.8, 0.9, 0.85],
    ("scratch", 1): [0.3, 0.2, 0.4],
    ("scratch", 10): [0.6, 0.75, 0.7],
    ("scratch", 100): [0.9, 0.95, 0.92],
}


def _records(task=None):
    records = [
        {"init": init, "labels_per_class": k, "seed": seed, "test_accuracy": accuracy}
        for (init, k), accuracies in SEEDS.items()
        for seed, accuracy in enumerate(accuracies)
    ]
    records = records[1::2] + records[::2]  # seeds and budgets interleaved, pretrained still first
    return [{**r, "task": task} for r in records] if task else records


def test_the_label_efficiency_figure_draws_the_mean_the_std_and_the_min_max_band_of_every_init():
    fig = plots.label_efficiency_figure(_records())
    [ax] = fig.axes
    assert ax.get_title() == plots.LABEL_EFFICIENCY_TITLE and ax.get_xscale() == "log"
    assert list(ax.get_xticks()) == [1, 10, 100]
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["pretrained", "scratch"]  # first seen first
    bands = [c for c in ax.collections if type(c).__name__.endswith("PolyCollection")]
    for init, bars, band in zip(("pretrained", "scratch"), ax.containers, bands):
        ks = sorted(k for i, k in SEEDS if i == init)
        line, _, (segments,) = bars.lines
        assert list(line.get_xdata()) == ks
        np.testing.assert_allclose(line.get_ydata().astype(float), [np.mean(SEEDS[init, k]) for k in ks])
        for k, segment in zip(ks, segments.get_segments()):  # error bars: mean -+ the sample std
            mean, std = np.mean(SEEDS[init, k]), np.std(SEEDS[init, k], ddof=1)
            np.testing.assert_allclose(segment, [[k, mean - std], [k, mean + std]])
        vertices = band.get_paths()[0].vertices
        for k in ks:  # the band: from the worst seed to the best
            at_k = vertices[np.isclose(vertices[:, 0], k), 1]
            assert (at_k.min(), at_k.max()) == pytest.approx((min(SEEDS[init, k]), max(SEEDS[init, k])))
    [reversed_ax] = plots.label_efficiency_figure(_records()[::-1]).axes
    assert [text.get_text() for text in reversed_ax.get_legend().get_texts()] == ["scratch", "pretrained"]


def test_plot_label_efficiency_writes_one_panel_per_task(tmp_path):
    results = _records("mnist") + _records("reviews")[:6]
    fig = plots.label_efficiency_figure(results, title="Two tasks")
    assert [ax.get_title() for ax in fig.axes] == ["mnist", "reviews"] and fig.get_suptitle() == "Two tasks"
    assert_valid_png(plots.plot_label_efficiency(results, tmp_path / "label_efficiency.png"))


# -------------------------------------------------------------------------------- callbacks
def test_training_curves_callback_writes_next_to_metrics_csv_with_tensorboard_and_csv_in_one_version(tmp_path):
    callback = TrainingCurvesPlot()
    fit_regression([TensorBoardLogger(tmp_path), CSVLogger(tmp_path)], epochs=1, callbacks=[callback])
    run = tmp_path / "lightning_logs" / "version_0"
    assert [p.name for p in (tmp_path / "lightning_logs").iterdir()] == ["version_0"]
    assert (run / "metrics.csv").is_file() and list(run.glob("events.out.tfevents.*"))
    assert callback.path == run / "training_curves.png"
    assert_valid_png(callback.path)


def test_training_curves_callback_reads_tensorboard_when_there_is_no_csv(tmp_path):
    callback = TrainingCurvesPlot()
    fit_regression(TensorBoardLogger(tmp_path), epochs=1, callbacks=[callback])
    assert callback.path == tmp_path / "lightning_logs" / "version_0" / "training_curves.png"
    assert_valid_png(callback.path)


def test_embedding_projection_callback_embeds_normalized_validation_images(tmp_path, monkeypatch):
    seen = []
    original = plots.plot_embedding_projection

    def plot(features, labels, path, **kw):
        seen.append((features, labels))
        return original(features, labels, path, **kw)

    monkeypatch.setattr(plots, "plot_embedding_projection", plot)
    data = ImageDataModule(source="mnist_demo", batch_size=8, val_size=20, test_size=10, image_size=16)
    module = SimCLRModule(
        backbone="convnet",
        width=4,
        in_channels=1,
        projection_hidden_dim=8,
        projection_dim=4,
        optimizer="adamw",
        lr=1e-3,
        lr_scaling="none",
        num_classes=0,
    )
    callback = EmbeddingProjectionPlot(every_n_epochs=1, max_samples=12)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=2,
        limit_train_batches=1,
        logger=CSVLogger(tmp_path),
        callbacks=[callback],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, data)
    assert len(seen) == 3  # after each of the 2 validation epochs, and at the end of fit
    assert callback.path == tmp_path / "lightning_logs" / "version_0" / "embedding_projection.png"
    assert_valid_png(callback.path)
    reference = extract_features(module.backbone, data.val_dataloader(), lambda b: data.on_after_batch_transfer(b, 0))
    features, labels = seen[-1]
    assert features.shape == (12, module.feature_dim)
    torch.testing.assert_close(features, reference[0][:12])
    assert torch.equal(labels, reference[1][:12])


def test_embedding_projection_callback_uses_finetune_features(tmp_path):
    module = tiny_classifier()
    callback = EmbeddingProjectionPlot()
    pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=CSVLogger(tmp_path),
        callbacks=[callback],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(module, DataLoader(Points(8), batch_size=4), DataLoader(Points(6), batch_size=4))
    assert_valid_png(callback.path)


def test_embedding_projection_callback_rejects_bad_settings():
    with pytest.raises(UserInputError, match="every_n_epochs"):
        EmbeddingProjectionPlot(every_n_epochs=0)


def test_class_names_come_from_the_datamodule_only_when_they_fit():
    class Data:
        class_names: ClassVar[list] = []
        label_names: ClassVar[list] = ["neg", "pos"]

    assert plots.class_names_of(Data()) == ["neg", "pos"]
    assert plots.class_names_of(Data(), num_classes=3) is None
    assert plots.class_names_of(None) is None
