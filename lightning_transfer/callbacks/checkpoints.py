"""Checkpoints: :class:`BestCheckpoint` keeps the best checkpoint by the metric the LightningModule
names (its ``checkpoint_metric``), so one callback list serves every recipe
(``configs/base/callbacks.yaml``); :class:`LatestCheckpoint` keeps the newest state in ``last.ckpt``
next to it."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_transfer.errors import UserInputError

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
