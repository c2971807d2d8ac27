"""Plots next to the logs: :class:`TrainingCurvesPlot` (the logged metrics over training) and
:class:`EmbeddingProjectionPlot` (validation features projected to 2-D, coloured by class). The
figures themselves are drawn by :mod:`lightning_transfer.plots`."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info

from lightning_transfer.callbacks.log_folder import run_log_dir
from lightning_transfer.errors import UserInputError

if TYPE_CHECKING:
    import torch


class TrainingCurvesPlot(pl.Callback):
    """At the end of ``fit``, process 0 writes ``training_curves.png`` (see
    :func:`~lightning_transfer.plots.plot_training_curves`) into the run's log folder, from the
    CSVLogger's ``metrics.csv`` or, without one, the TensorBoard event files. ``metrics``: the names
    to draw (default: every logged metric but learning rates and bookkeeping). The path written is
    kept in :attr:`path`. The PNG goes to the first logger's folder (``trainer.log_dir``, where the
    checkpoints are); for it to sit next to ``metrics.csv`` give TensorBoard and CSV loggers one
    ``save_dir`` and one version
    (:func:`~lightning_transfer.callbacks.log_folder.loggers_sharing_one_version`; the CLI does that)."""

    def __init__(self, metrics: list[str] | None = None, filename: str = "training_curves.png"):
        self.metrics, self.filename = metrics, filename
        self.path: Path | None = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from lightning.pytorch.loggers import CSVLogger

        from lightning_transfer.plots import curves_figure, read_metrics, save_figure

        folder = run_log_dir(trainer)
        if not trainer.is_global_zero or folder is None:
            return
        csv_loggers = [logger for logger in trainer.loggers if isinstance(logger, CSVLogger)]
        for logger in trainer.loggers:
            logger.save()  # flush what is buffered: the CSV is otherwise written at teardown, after this hook
        source = (
            Path(csv_loggers[0].log_dir)
            if csv_loggers and (Path(csv_loggers[0].log_dir) / "metrics.csv").exists()
            else folder
        )
        try:
            metrics = read_metrics(source)
        except UserInputError:
            metrics = {}  # nothing logged yet (a run shorter than log_every_n_steps): the figure says so
        names = [name for name in self.metrics if name in metrics] if self.metrics else None
        self.path = save_figure(curves_figure(metrics, names, title=type(pl_module).__name__), folder / self.filename)


class EmbeddingProjectionPlot(pl.Callback):
    """Write ``embedding_projection.png``: the encoder features of up to ``max_samples`` validation
    examples, projected to 2-D by PCA and coloured by class
    (:func:`~lightning_transfer.plots.plot_embedding_projection`), into the run's log folder. The
    Trainer's ``limit_val_batches`` bounds the batches embedded as it bounds validation.

    Runs at the end of ``fit`` and, with ``every_n_epochs``, after every ``every_n_epochs``-th
    validation epoch (overwriting the file). Works with :class:`~lightning_transfer.SimCLRModule`
    (its ``backbone``) and :class:`~lightning_transfer.FineTuneModule` (its ``features``: images or
    pooled text); batches go through the DataModule's ``on_after_batch_transfer`` (normalization on
    the device) as in training. Process 0 alone computes and writes. The path is kept in :attr:`path`.
    A module with neither (:class:`~lightning_transfer.BertPretrainModule`: masked tokens, no classes
    to colour by) gets no plot and one info line, so the callback can sit in every recipe's list.
    """

    def __init__(
        self, every_n_epochs: int | None = None, max_samples: int = 2000, filename: str = "embedding_projection.png"
    ):
        if every_n_epochs is not None and every_n_epochs < 1:
            raise UserInputError(f"every_n_epochs must be >= 1 (or null: only at the end of fit), got {every_n_epochs}")
        if max_samples < 2:
            raise UserInputError(f"max_samples must be at least 2, got {max_samples}")
        self.every_n_epochs, self.max_samples, self.filename = every_n_epochs, max_samples, filename
        self.path: Path | None = None

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (
            self.every_n_epochs
            and not trainer.sanity_checking
            and (trainer.current_epoch + 1) % self.every_n_epochs == 0
        ):
            self.plot(trainer, pl_module)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.plot(trainer, pl_module)

    @staticmethod
    def _loader(trainer: pl.Trainer):
        loaders = trainer.val_dataloaders
        if isinstance(loaders, (list, tuple)):
            loaders = loaders[0] if loaders else None
        datamodule = getattr(trainer, "datamodule", None)
        if loaders is None and datamodule is not None:
            loaders = datamodule.val_dataloader()
        return loaders

    @staticmethod
    def _batch_limit(trainer: pl.Trainer, loader) -> int | None:
        """How many batches of ``loader`` ``trainer.limit_val_batches`` allows (``None``: all)."""
        limit = trainer.limit_val_batches
        if limit is None or (isinstance(limit, float) and limit >= 1.0):
            return None
        if isinstance(limit, int):
            return limit
        return max(1, int(len(loader) * limit)) if hasattr(loader, "__len__") else None

    def plot(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Path | None:
        """Extract the features and write the plot now (process 0); returns the path."""
        import warnings

        from lightning_transfer.evaluation import extract_features
        from lightning_transfer.plots import class_names_of, plot_embedding_projection

        folder = run_log_dir(trainer) or Path(trainer.default_root_dir)
        if not trainer.is_global_zero:
            return None
        if not (hasattr(pl_module, "features") or hasattr(pl_module, "backbone")):
            rank_zero_info(
                f"EmbeddingProjectionPlot: {type(pl_module).__name__} has no class features to embed (no `features` "
                "or `backbone`); no plot written"
            )
            return None
        loader = self._loader(trainer)
        limit = None if loader is None else self._batch_limit(trainer, loader)
        if loader is None or limit == 0 or (hasattr(loader, "__len__") and len(loader) == 0):
            warnings.warn(
                "EmbeddingProjectionPlot: no validation data to embed (no batches, or limit_val_batches=0); no plot written",
                UserWarning,
                stacklevel=2,
            )
            return None
        datamodule = getattr(trainer, "datamodule", None)

        def on_device(batch):
            batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
            if datamodule is not None:
                batch = datamodule.on_after_batch_transfer(batch, 0)
            return pl_module.on_after_batch_transfer(batch, 0)

        # nn.Module's __getattr__ types submodules as "Tensor | Module": name what they are
        embed: Callable[[dict], torch.Tensor] = (
            cast("Callable[[dict], torch.Tensor]", pl_module.features)
            if hasattr(pl_module, "features")
            else lambda batch: pl_module(batch["images"])  # SimCLR's forward: the encoder, in its memory format
        )
        batches = loader if limit is None else itertools.islice(loader, limit)
        features, labels = extract_features(pl_module, batches, on_device, pl_module.device, self.max_samples, embed)
        title = f"{type(pl_module).__name__} features, epoch {trainer.current_epoch}, step {trainer.global_step}"
        self.path = plot_embedding_projection(
            features, labels, folder / self.filename, title=title, class_names=class_names_of(datamodule)
        )
        return self.path
