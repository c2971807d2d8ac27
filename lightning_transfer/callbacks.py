"""Callbacks shared by the modules.

:class:`PredictionWriter` writes what :meth:`FineTuneModule.predict_step
<lightning_transfer.modules.finetune.FineTuneModule.predict_step>` returns to a CSV file.
:class:`StopOnNonFiniteLoss` stops a run whose loss became NaN or infinite before that loss can
reach the weights, so the checkpoints already written stay good. :class:`BestCheckpoint` keeps the
best checkpoint by the metric the LightningModule names (its ``checkpoint_metric``), so one callback
list serves every recipe (``configs/base/callbacks.yaml``); :class:`LatestCheckpoint` keeps the newest
state in ``last.ckpt`` next to it.
"""

from __future__ import annotations

import csv
import itertools
import os
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO, cast

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BasePredictionWriter, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info

from lightning_transfer.errors import UserInputError

if TYPE_CHECKING:
    import torch


class PredictionWriter(BasePredictionWriter):
    """Write ``<output_dir>/predictions.csv`` after ``trainer.predict``: one row per example with
    ``index`` (its index in the predict dataset), ``prediction`` (the class id), ``label`` (when the
    batches carry labels) and ``prob_0 .. prob_{C-1}`` (the class probabilities).

    ``predict_step`` must return ``{"prediction": B, "probabilities": B x C[, "labels": B]}``. Under
    DDP each process writes its share, then process 0 merges them in index order, dropping the
    duplicates a ``DistributedSampler`` adds to even out the shares. With several predict
    dataloaders, dataloader ``i > 0`` goes to ``predictions_<i>.csv``.
    """

    def __init__(self, output_dir: str = "predictions", filename: str = "predictions.csv"):
        super().__init__(write_interval="batch")
        self.output_dir, self.filename = Path(output_dir), filename
        self._rows: dict[int, list[list[Any]]] = {}
        self._num_classes: dict[int, int] = {}
        self._has_labels: dict[int, bool] = {}

    def path(self, dataloader_idx: int = 0) -> Path:
        """Where the predictions of ``dataloader_idx`` go."""
        if dataloader_idx == 0:
            return self.output_dir / self.filename
        stem, dot, suffix = self.filename.rpartition(".")
        return self.output_dir / (
            f"{stem}_{dataloader_idx}{dot}{suffix}" if dot else f"{self.filename}_{dataloader_idx}"
        )

    def on_predict_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._rows, self._num_classes, self._has_labels = {}, {}, {}

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        probabilities = prediction["probabilities"].detach().float().cpu()
        predicted = prediction["prediction"].detach().cpu().tolist()
        labels = prediction.get("labels")
        labels = labels.detach().cpu().tolist() if labels is not None else None
        rows = self._rows.setdefault(dataloader_idx, [])
        if not batch_indices:  # a sampler Lightning cannot see through: number the rows in order
            batch_indices = range(len(rows), len(rows) + len(predicted))
        self._num_classes[dataloader_idx] = probabilities.shape[1]
        self._has_labels[dataloader_idx] = labels is not None
        for i, index in enumerate(batch_indices):
            label = [labels[i]] if labels is not None else []
            rows.append([int(index), predicted[i], *label, *probabilities[i].tolist()])

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        distributed = trainer.world_size > 1
        for dataloader_idx, rows in self._rows.items():
            final = self.path(dataloader_idx)
            final.parent.mkdir(parents=True, exist_ok=True)
            header = [
                "index",
                "prediction",
                *(["label"] if self._has_labels[dataloader_idx] else []),
                *(f"prob_{c}" for c in range(self._num_classes[dataloader_idx])),
            ]
            target = final.with_name(f"{final.name}.rank{trainer.global_rank}") if distributed else final
            _write_csv(target, header, sorted(rows, key=lambda row: row[0]))
        if not distributed:
            return
        trainer.strategy.barrier("prediction_writer")
        if trainer.is_global_zero:
            for dataloader_idx in self._rows:
                final = self.path(dataloader_idx)
                parts = sorted(final.parent.glob(f"{final.name}.rank*"))
                merged: dict[int, list[str]] = {}
                header = []
                for part in parts:
                    with part.open(newline="") as handle:
                        reader = csv.reader(handle)
                        header = next(reader)
                        for row in reader:
                            merged.setdefault(int(row[0]), row)
                    part.unlink()
                _write_csv(final, header, [merged[index] for index in sorted(merged)])
        trainer.strategy.barrier("prediction_writer_done")


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


class ThroughputReport(pl.Callback):
    """Measure training speed: samples/s (images for image batches, sequences for text) and tokens/s
    (non-padding tokens) over all processes, plus the peak CUDA memory of this process.

    The first ``warmup_steps`` steps are not timed (allocator growth, cuDNN autotuning, compilation);
    the device is synchronized at both ends of the timed window. At the end of ``fit`` process 0
    prints one line ``throughput: steps=... samples/s=... tokens/s=... peak_mem_gib=...`` and the values
    stay in :attr:`summary`. Add it with ``--trainer.callbacks+=lightning_transfer.callbacks.ThroughputReport``.

    Lightning's own ``lightning.pytorch.callbacks.ThroughputMonitor`` is another tool: it logs a
    moving-window throughput (and FLOP utilization) to the loggers as training goes, from a
    ``batch_size_fn`` (and ``length_fn``, which counts padding unless you write it not to) given in
    Python; it reports no peak memory and prints no end-of-run summary.
    """

    def __init__(self, warmup_steps: int = 20, label: str = ""):
        self.warmup_steps, self.label = warmup_steps, label
        self.summary: dict[str, float] = {}
        self._start: float | None = None
        self._steps = self._samples = self._tokens = 0

    @staticmethod
    def _sync(pl_module: pl.LightningModule) -> None:
        import torch

        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    @staticmethod
    def batch_counts(batch: Any) -> tuple[int, int]:
        """(samples, tokens) of one of our batches; tokens is 0 for images."""
        if isinstance(batch, dict):
            if "views" in batch:
                return len(batch["views"][0]), 0
            if "input_ids" in batch:
                mask = batch.get("attention_mask")
                tokens = int(mask.sum()) if mask is not None else batch["input_ids"].numel()
                return batch["input_ids"].shape[0], tokens
            for key in ("images", "raw", "labels"):
                if key in batch:
                    return len(batch[key]), 0
        return (len(batch[0]) if isinstance(batch, (list, tuple)) else len(batch)), 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import torch

        self._start, self._steps, self._samples, self._tokens = None, 0, 0, 0
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._start is None and trainer.global_step >= self.warmup_steps:
            self._sync(pl_module)
            self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._start is not None:
            samples, tokens = self.batch_counts(batch)
            self._steps, self._samples, self._tokens = self._steps + 1, self._samples + samples, self._tokens + tokens

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import torch

        if self._start is None or not self._steps:
            return
        self._sync(pl_module)
        elapsed = time.perf_counter() - self._start
        world = trainer.world_size
        self.summary = {
            "steps": self._steps,
            "seconds": elapsed,
            "samples_per_s": self._samples * world / elapsed,
            "tokens_per_s": self._tokens * world / elapsed,
        }
        if pl_module.device.type == "cuda":
            self.summary["peak_mem_gib"] = torch.cuda.max_memory_allocated(pl_module.device) / 2**30
        if trainer.is_global_zero:
            values = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.summary.items())
            print(f"throughput{(' ' + self.label) if self.label else ''}: {values}", flush=True)


class ThroughputMonitor(ThroughputReport):
    """Deprecated name of :class:`ThroughputReport` (it read like Lightning's own
    ``lightning.pytorch.callbacks.ThroughputMonitor``, a different callback)."""

    def __init__(self, warmup_steps: int = 20, label: str = ""):
        import warnings

        warnings.warn(
            "lightning_transfer.callbacks.ThroughputMonitor is now ThroughputReport; the old name will be removed",
            FutureWarning,
            stacklevel=2,
        )
        super().__init__(warmup_steps, label)


class HostSyncCounter(pl.Callback):
    """Count host-device synchronizations per training step on a CUDA device.

    Turns on ``torch.cuda.set_sync_debug_mode("warn")`` for the training loop (off again at the end),
    so that torch warns at every synchronizing CUDA call (``.item()``, ``bool(tensor)``, a copy to the
    host, ...), and counts those warnings between the start and the end of each training step (after
    ``warmup_steps``; logging and checkpointing between steps are not counted). At the end of ``fit``
    process 0 prints ``host_syncs: steps=... per_step=... first=<the first synchronizing call site>``;
    the values stay in :attr:`summary`. Without CUDA nothing is counted (the CPU never synchronizes).
    """

    MARKER = "called a synchronizing CUDA operation"  # torch's sync debug warning

    def __init__(self, warmup_steps: int = 5, label: str = ""):
        self.warmup_steps, self.label = warmup_steps, label
        self.summary: dict[str, Any] = {}
        self._syncs = self._steps = 0
        self._first: str | None = None
        self._in_step = False
        self._previous: Callable[..., None] | None = None  # warnings.showwarning before ours

    def count(self, message: str, filename: str = "", lineno: int = 0) -> None:
        """Record one warning (the hook torch's warnings go through); only sync warnings inside a step count."""
        if self._in_step and self.MARKER in str(message):
            self._syncs += 1
            self._first = self._first or f"{filename}:{lineno}"

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import warnings

        import torch

        self._syncs = self._steps = 0
        if pl_module.device.type != "cuda":
            return
        torch.cuda.set_sync_debug_mode("warn")
        self._previous = warnings.showwarning
        warnings.simplefilter("always", UserWarning)  # every occurrence, not once per call site

        def showwarning(
            message: Warning | str,
            category: type[Warning],
            filename: str,
            lineno: int,
            file: TextIO | None = None,
            line: str | None = None,
        ) -> None:
            self.count(str(message), filename, lineno)
            if self.MARKER not in str(message):
                previous = self._previous
                assert previous is not None  # set until on_train_end puts it back as warnings.showwarning
                previous(message, category, filename, lineno, file, line)

        warnings.showwarning = showwarning

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._in_step = trainer.global_step >= self.warmup_steps

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._in_step:
            self._steps += 1
        self._in_step = False

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import warnings

        import torch

        if self._previous is not None:
            torch.cuda.set_sync_debug_mode("default")
            warnings.showwarning, self._previous = self._previous, None
        if not self._steps:
            return
        self.summary = {"steps": self._steps, "per_step": self._syncs / self._steps, "first": self._first}
        if trainer.is_global_zero:
            print(
                f"host_syncs{(' ' + self.label) if self.label else ''}: steps={self._steps} "
                f"per_step={self.summary['per_step']:.2f} first={self._first}",
                flush=True,
            )


class NonFiniteLossError(UserInputError):
    """The training loss became NaN or infinite (raised by :class:`StopOnNonFiniteLoss`)."""


class StopOnNonFiniteLoss(pl.Callback):
    """Stop training at the first NaN or infinite training loss, *before* its backward pass and
    optimizer step: the weights in memory and every checkpoint already written are those of the last
    good step. Raises :class:`NonFiniteLossError` (one line from the CLI) naming the step, epoch and
    batch. Under DDP every process stops together (the decision is reduced over processes).

    Lightning's alternatives do not do this: ``EarlyStopping(check_finite=True)`` needs a monitored
    metric and acts at epoch or validation end, after the NaN has reached the weights;
    ``Trainer(detect_anomaly=True)`` slows every step down and raises only inside backward.
    """

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss) -> None:
        import torch

        bad = not bool(torch.isfinite(loss.detach()).all())
        if trainer.world_size > 1:
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            return
        value = loss.detach().float().flatten()[0].item()
        epoch_loop = trainer.fit_loop.epoch_loop
        raise NonFiniteLossError(
            f"the training loss is {value} at step {trainer.global_step} (epoch {trainer.current_epoch}, batch "
            f"{epoch_loop.batch_idx}); training stopped before this step changed the weights, and the checkpoints "
            "saved so far are kept; lower the learning rate, clip gradients (trainer.gradient_clip_val) or check the "
            "data, then resume with --ckpt_path <last good checkpoint>"
        )


# ----------------------------------------------------------------------------- the best checkpoint
CHECKPOINT_MODES = ("min", "max")


def best_checkpoint_filename(metric: str) -> str:
    """The file name template of :class:`BestCheckpoint` for ``metric``:
    ``epoch=E-step=S-<name>=<value>`` with ``<name>`` the metric's last ``/`` part, e.g.
    ``epoch=3-step=120-knn_acc=0.8125.ckpt`` for ``val/knn_acc``."""
    return f"epoch={{epoch}}-step={{step}}-{metric.rsplit('/', 1)[-1]}={{{metric}:.4f}}"


class BestCheckpoint(ModelCheckpoint):
    """The best-model checkpoint of every recipe (``configs/base/callbacks.yaml``): a
    ``ModelCheckpoint`` that takes the metric to monitor and its mode from the LightningModule's
    ``checkpoint_metric`` class attribute, e.g. ``checkpoint_metric = ("val/knn_acc", "max")``, so one
    callback list fits every module. Defaults: the best one kept, named by
    :func:`best_checkpoint_filename` (``epoch=3-step=120-knn_acc=0.8125.ckpt``), and no ``last.ckpt``
    (``save_last=False``): Lightning rewrites a monitored callback's ``last.ckpt`` only at the steps where
    it saved a top-k checkpoint, so that file would stop at the best epoch once the metric stops
    improving. The newest state is :class:`LatestCheckpoint`'s ``last.ckpt``, rewritten at every save point.

    ``monitor``, ``mode`` and ``filename`` given here win over the module's; ``monitor`` without
    ``mode`` takes the module's mode only for the module's own metric. The choice is made in
    :meth:`setup`, before Lightning reads ``monitor``/``mode``, and resets the mode-dependent state
    (``kth_value``: +inf for ``min``, -inf for ``max``). After it the ``state_key`` names the resolved
    metric and mode, as a ``ModelCheckpoint(monitor=..., mode=...)`` of the same values would: a
    resumed fit (``--ckpt_path``) restores ``best_model_path`` and, when it writes into the same
    checkpoint folder, ``best_model_score`` (Lightning's rule; the CLI starts a new ``version_N``
    folder, where the best is tracked afresh). Fitting a module without ``checkpoint_metric`` and
    without ``monitor`` raises :class:`UserInputError`.
    """

    def __init__(
        self,
        dirpath: str | Path | None = None,
        filename: str | None = None,
        monitor: str | None = None,
        verbose: bool = False,
        save_last: bool | Literal["link"] | None = False,
        save_top_k: int = 1,
        save_on_exception: bool = False,
        save_weights_only: bool = False,
        mode: Literal["min", "max"] | None = None,
        auto_insert_metric_name: bool = False,
        every_n_train_steps: int | None = None,
        train_time_interval: timedelta | None = None,
        every_n_epochs: int | None = None,
        save_on_train_epoch_end: bool | None = None,
        enable_version_counter: bool = True,
    ):
        if mode is not None and mode not in CHECKPOINT_MODES:
            raise UserInputError(f"BestCheckpoint mode must be 'min' or 'max' (or null: the module's), got {mode!r}")
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            monitor=monitor,
            verbose=verbose,
            save_last=save_last,
            # Lightning refuses top-k > 1 without a monitor; the monitor is known in setup()
            save_top_k=save_top_k if monitor is not None or save_top_k <= 1 else 1,
            save_on_exception=save_on_exception,
            save_weights_only=save_weights_only,
            mode=mode or "min",
            auto_insert_metric_name=auto_insert_metric_name,
            every_n_train_steps=every_n_train_steps,
            train_time_interval=train_time_interval,
            every_n_epochs=every_n_epochs,
            save_on_train_epoch_end=save_on_train_epoch_end,
            enable_version_counter=enable_version_counter,
        )
        self.save_top_k = save_top_k
        self._requested = (monitor, mode, filename)  # None: the module's (metric and mode) or derived (filename)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.resolve(pl_module, required=stage == "fit")
        super().setup(trainer, pl_module, stage)

    def resolve(self, pl_module: pl.LightningModule, required: bool = True) -> None:
        """Set ``monitor``, ``mode`` and ``filename`` for ``pl_module`` (see the class docstring);
        with ``required=False`` a module that declares no metric leaves them as they are."""
        import torch

        monitor, mode, filename = self._requested
        name = type(pl_module).__name__
        declared = getattr(pl_module, "checkpoint_metric", None)
        if declared is not None and not (
            isinstance(declared, (tuple, list))
            and len(declared) == 2
            and isinstance(declared[0], str)
            and declared[1] in CHECKPOINT_MODES
        ):
            raise UserInputError(f"{name}.checkpoint_metric must be (metric name, 'min' or 'max'), got {declared!r}")
        if monitor is None:
            if declared is None:
                if not required:
                    return
                raise UserInputError(
                    f"BestCheckpoint does not know which metric of {name} to monitor: set the class attribute "
                    f"{name}.checkpoint_metric = ('val/<metric>', 'min' or 'max'), or give the callback monitor and "
                    "mode (init_args: {monitor: val/<metric>, mode: min or max})"
                )
            monitor = declared[0]
        if mode is None:
            if declared is None or declared[0] != monitor:
                raise UserInputError(
                    f"BestCheckpoint(monitor={monitor!r}) needs mode 'min' or 'max': {name} declares no mode for "
                    f"{monitor!r} (its checkpoint_metric: {declared!r})"
                )
            mode = declared[1]
        if self.best_k_models and (monitor, mode) != (self.monitor, self.mode):
            raise UserInputError(
                f"this BestCheckpoint already keeps the best {self.monitor!r} ({self.mode}) and cannot switch to "
                f"{monitor!r} ({mode}); use a new BestCheckpoint for another module"
            )
        self.monitor = monitor
        if mode != self.mode:
            self.mode = mode
            self.kth_value = torch.tensor(torch.inf if mode == "min" else -torch.inf)
        self.filename = filename if filename is not None else best_checkpoint_filename(monitor)


class LatestCheckpoint(ModelCheckpoint):
    """The newest state of a fit in one file, ``<checkpoints>/last.ckpt``, rewritten in place at every
    save point of a default ``ModelCheckpoint``: the end of every training epoch when validation runs
    once at the end of each epoch (or never), else the end of every validation; the same points at which
    :class:`BestCheckpoint` compares its metric, so ``last.ckpt`` is never older than the best file. A
    resume from it (``--ckpt_path <run>/checkpoints/last.ckpt`` or ``ckpt_path="last"``, which looks for
    ``last*.ckpt`` in the checkpoint folder) loses no finished epoch or validation, and fine-tuning from a
    pretraining run's ``last.ckpt`` gets its final model. ``every_n_epochs``, ``every_n_train_steps``,
    ``train_time_interval`` and ``save_on_train_epoch_end`` change the save points as for ``ModelCheckpoint``.

    It is ``ModelCheckpoint(filename="last", monitor=None, save_top_k=1, enable_version_counter=False)``:
    no metric, the one newest file kept under one name (no ``last-v1.ckpt``, also when a resumed fit
    writes into the folder it resumed from); its path is in :attr:`best_model_path` (Lightning's name
    for the file a ``ModelCheckpoint`` without monitor keeps). Lightning's own ``save_last=True``
    would not do: with a monitor it rewrites ``last.ckpt`` only when a top-k checkpoint was saved at that
    step. Another callback that writes ``last.ckpt`` into the same folder (``save_last`` on) is refused
    at the start of ``fit``: the two would alternate between ``last.ckpt`` and ``last-v1.ckpt``.
    """

    def __init__(
        self,
        dirpath: str | Path | None = None,
        filename: str = ModelCheckpoint.CHECKPOINT_NAME_LAST,
        verbose: bool = False,
        every_n_train_steps: int | None = None,
        train_time_interval: timedelta | None = None,
        every_n_epochs: int | None = None,
        save_on_train_epoch_end: bool | None = None,
    ):
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            monitor=None,
            verbose=verbose,
            save_last=False,
            save_top_k=1,
            every_n_train_steps=every_n_train_steps,
            train_time_interval=train_time_interval,
            every_n_epochs=every_n_epochs,
            save_on_train_epoch_end=save_on_train_epoch_end,
            enable_version_counter=False,
        )

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        mine = os.path.abspath(self.format_checkpoint_name({}))
        for other in trainer.checkpoint_callbacks:
            if other is self or not isinstance(other, ModelCheckpoint) or not other.save_last:
                continue
            theirs = os.path.abspath(other.format_checkpoint_name({}, filename=other.CHECKPOINT_NAME_LAST))
            if theirs == mine:
                raise UserInputError(
                    f"{type(other).__name__}(save_last={other.save_last!r}) and LatestCheckpoint both write {mine}: "
                    f"set save_last to false on the {type(other).__name__} (LatestCheckpoint keeps last.ckpt current), "
                    "or give one of them another dirpath"
                )


# ----------------------------------------------------------------------------- plots next to the logs
def run_log_dir(trainer: pl.Trainer) -> Path | None:
    """The folder of this run's logs (``trainer.log_dir`` without its collective, so one process
    alone may call it): the first logger's ``log_dir`` (TensorBoard/CSV) or ``save_dir``; ``None``
    without a logger."""
    if not trainer.loggers:
        return None
    first = trainer.loggers[0]
    folder = getattr(first, "log_dir", None) or first.save_dir
    return Path(folder) if folder is not None else None


def loggers_sharing_one_version(loggers: list[Any], init_args: list[dict[str, Any]]) -> list[Any]:
    """``loggers`` with each TensorBoard/CSV logger that writes under the same folder as the first
    one (``save_dir/name``) and was given no version built again, from its ``init_args``, with the
    first one's version. So ``metrics.csv``, the event files, the checkpoints and the plots of a run
    all land in one ``version_N`` folder; each logger would otherwise pick the next free version on
    its own (TensorBoard ``version_0``, CSV ``version_1``). Lightning fixes a logger's version when
    it is constructed, hence the new instance.

    ``init_args[i]``: the keyword arguments ``loggers[i]`` was constructed with (the
    ``lightning-transfer`` CLI passes its config's, before it creates the Trainer). In your own
    code, pass the version yourself: ``CSVLogger(root, version=tensorboard.version)``."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    versioned = [i for i, logger in enumerate(loggers) if isinstance(logger, (CSVLogger, TensorBoardLogger))]
    if len(versioned) < 2:
        return loggers
    first = loggers[versioned[0]]
    shared = list(loggers)
    for i in versioned[1:]:
        logger = loggers[i]
        if init_args[i].get("version") is None and Path(logger.root_dir).resolve() == Path(first.root_dir).resolve():
            shared[i] = type(logger)(**{**init_args[i], "version": first.version})
    return shared


class TrainingCurvesPlot(pl.Callback):
    """At the end of ``fit``, process 0 writes ``training_curves.png`` (see
    :func:`~lightning_transfer.plots.plot_training_curves`) into the run's log folder, from the
    CSVLogger's ``metrics.csv`` or, without one, the TensorBoard event files. ``metrics``: the names
    to draw (default: every logged metric but learning rates and bookkeeping). The path written is
    kept in :attr:`path`. The PNG goes to the first logger's folder (``trainer.log_dir``, where the
    checkpoints are); for it to sit next to ``metrics.csv`` give TensorBoard and CSV loggers one
    ``save_dir`` and one version (:func:`loggers_sharing_one_version`; the CLI does that)."""

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
            else lambda batch: cast("torch.nn.Module", pl_module.backbone)(batch["images"])
        )
        batches = loader if limit is None else itertools.islice(loader, limit)
        features, labels = extract_features(pl_module, batches, on_device, pl_module.device, self.max_samples, embed)
        title = f"{type(pl_module).__name__} features, epoch {trainer.current_epoch}, step {trainer.global_step}"
        self.path = plot_embedding_projection(
            features, labels, folder / self.filename, title=title, class_names=class_names_of(datamodule)
        )
        return self.path
