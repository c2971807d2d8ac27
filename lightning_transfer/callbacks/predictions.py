"""Writing predictions: :class:`PredictionWriter` writes what :meth:`FineTuneModule.predict_step
<lightning_transfer.modules.finetune.FineTuneModule.predict_step>` returns to a CSV file."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BasePredictionWriter


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
