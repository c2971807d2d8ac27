"""Callbacks shared by the modules.

:class:`PredictionWriter` writes what :meth:`FineTuneModule.predict_step
<lightning_transfer.modules.finetune.FineTuneModule.predict_step>` returns to a CSV file.
:class:`StopOnNonFiniteLoss` stops a run whose loss became NaN or infinite before that loss can
reach the weights, so the checkpoints already written stay good.
"""
from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any, Sequence

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BasePredictionWriter

from lightning_transfer.errors import UserInputError


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
        return self.output_dir / (f"{stem}_{dataloader_idx}{dot}{suffix}" if dot else f"{self.filename}_{dataloader_idx}")

    def on_predict_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._rows, self._num_classes, self._has_labels = {}, {}, {}

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: Any,
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
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
            header = ["index", "prediction", *(["label"] if self._has_labels[dataloader_idx] else []),
                      *(f"prob_{c}" for c in range(self._num_classes[dataloader_idx]))]
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
                header: list[str] = []
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


class ThroughputMonitor(pl.Callback):
    """Measure training speed: samples/s (images for image batches, sequences for text) and tokens/s
    (non-padding tokens) over all processes, plus the peak CUDA memory of this process.

    The first ``warmup_steps`` steps are not timed (allocator growth, cuDNN autotuning, compilation);
    the device is synchronized at both ends of the timed window. At the end of ``fit`` process 0
    prints one line ``throughput: steps=... samples/s=... tokens/s=... peak_mem_gib=...`` and the values
    stay in :attr:`summary`. Add it with ``--trainer.callbacks+=lightning_transfer.callbacks.ThroughputMonitor``.
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

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._start is None and trainer.global_step >= self.warmup_steps:
            self._sync(pl_module)
            self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
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
        self.summary = {"steps": self._steps, "seconds": elapsed, "samples_per_s": self._samples * world / elapsed,
                        "tokens_per_s": self._tokens * world / elapsed}
        if pl_module.device.type == "cuda":
            self.summary["peak_mem_gib"] = torch.cuda.max_memory_allocated(pl_module.device) / 2**30
        if trainer.is_global_zero:
            values = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.summary.items())
            print(f"throughput{(' ' + self.label) if self.label else ''}: {values}", flush=True)


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
