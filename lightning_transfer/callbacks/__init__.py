"""Callbacks shared by the modules, one idea per file; every name is importable from here
(``class_path: lightning_transfer.callbacks.BestCheckpoint`` in the configs).

- :mod:`~lightning_transfer.callbacks.checkpoints`: :class:`BestCheckpoint` keeps the best checkpoint
  by the metric the LightningModule names (its ``checkpoint_metric``), so one callback list serves
  every recipe (``configs/base/callbacks.yaml``); :class:`LatestCheckpoint` keeps the newest state in
  ``last.ckpt`` next to it.
- :mod:`~lightning_transfer.callbacks.non_finite_loss`: :class:`StopOnNonFiniteLoss` stops a run whose
  loss became NaN or infinite before any checkpoint holds weights trained on it, checking on the device
  (no host-device synchronization per step).
- :mod:`~lightning_transfer.callbacks.predictions`: :class:`PredictionWriter` writes what
  :meth:`FineTuneModule.predict_step <lightning_transfer.modules.finetune.FineTuneModule.predict_step>`
  returns to a CSV file.
- :mod:`~lightning_transfer.callbacks.plotting`: :class:`TrainingCurvesPlot` and
  :class:`EmbeddingProjectionPlot`, figures next to the logs.
- :mod:`~lightning_transfer.callbacks.log_folder`: :func:`run_log_dir` and
  :func:`loggers_sharing_one_version` (one ``version_N`` folder for all of a run's loggers).
- :mod:`~lightning_transfer.callbacks.throughput`: :class:`ThroughputReport` and
  :class:`HostSyncCounter`, training speed.
"""

from __future__ import annotations

from lightning_transfer.callbacks.checkpoints import (
    CHECKPOINT_MODES,
    BestCheckpoint,
    LatestCheckpoint,
    best_checkpoint_filename,
)
from lightning_transfer.callbacks.log_folder import loggers_sharing_one_version, run_log_dir
from lightning_transfer.callbacks.non_finite_loss import NonFiniteLossError, StopOnNonFiniteLoss
from lightning_transfer.callbacks.plotting import EmbeddingProjectionPlot, TrainingCurvesPlot
from lightning_transfer.callbacks.predictions import PredictionWriter
from lightning_transfer.callbacks.throughput import HostSyncCounter, ThroughputMonitor, ThroughputReport

__all__ = [
    "CHECKPOINT_MODES",
    "BestCheckpoint",
    "EmbeddingProjectionPlot",
    "HostSyncCounter",
    "LatestCheckpoint",
    "NonFiniteLossError",
    "PredictionWriter",
    "StopOnNonFiniteLoss",
    "ThroughputMonitor",
    "ThroughputReport",
    "TrainingCurvesPlot",
    "best_checkpoint_filename",
    "loggers_sharing_one_version",
    "run_log_dir",
]
