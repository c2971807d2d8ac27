"""Stopping on a bad loss: :class:`StopOnNonFiniteLoss` stops a run whose loss became NaN or infinite
before any checkpoint can hold weights trained on it, without a host-device synchronization per step."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch

from lightning_transfer.errors import UserInputError


class NonFiniteLossError(UserInputError):
    """The training loss became NaN or infinite (raised by :class:`StopOnNonFiniteLoss`)."""


class StopOnNonFiniteLoss(pl.Callback):
    """Stop training after a NaN or infinite training loss; every checkpoint written stays good.

    Each step, before its backward pass, the loss is checked *on the device*: the first non-finite
    loss (its value, and which step, epoch and batch it came from) is recorded there, and nothing is
    read back, so the check never makes the host wait for the device. The record is read (one
    host-device synchronization) at the end of every ``check_every_n_steps``-th step (``None``: the
    Trainer's ``log_every_n_steps``, the steps after which Lightning reads the logged values back to
    write the loggers, so the device is waited for there anyway), before any checkpoint is written
    (``on_save_checkpoint``), and when training ends. If it holds a bad loss,
    :class:`NonFiniteLossError` (one line from the CLI) names that step, epoch and batch and the run
    stops. So:

    - no checkpoint holds weights trained on a non-finite loss: the save that would write one
      raises instead (also a save on exception, e.g. ``ModelCheckpoint(save_on_exception=True)``);
      every checkpoint on disk is from before the bad step, and a resume from the newest one
      loses only the steps after it;
    - the run stops at most ``check_every_n_steps`` steps after the bad one, whose update (and
      those after it) the weights in memory may hold. With ``check_every_n_steps=1`` the record is
      read every step *before* the backward pass (a synchronization per step, the price) and
      training stops before the bad step's backward pass and optimizer step: the weights in memory
      are those of the last good step.

    Under DDP every process stops together (the decision is reduced over processes at each read).

    Lightning's alternatives do not do this: ``EarlyStopping(check_finite=True)`` needs a monitored
    metric and acts at epoch or validation end, after the NaN has reached the weights (and the
    checkpoints saved meanwhile); ``Trainer(detect_anomaly=True)`` slows every step down and raises
    only inside backward.
    """

    def __init__(self, check_every_n_steps: int | None = None):
        if check_every_n_steps is not None and (
            isinstance(check_every_n_steps, bool) or not isinstance(check_every_n_steps, int) or check_every_n_steps < 1
        ):
            raise UserInputError(
                f"StopOnNonFiniteLoss check_every_n_steps must be a positive integer (or null: the Trainer's "
                f"log_every_n_steps), got {check_every_n_steps!r}"
            )
        self.check_every_n_steps = check_every_n_steps
        self._reset()

    def _reset(self) -> None:
        self._steps: list[tuple[int, int, int]] = []  # (global step, epoch, batch) of each loss since the last read
        self._first_bad: torch.Tensor | None = None  # on the device: index into _steps of the first bad loss, or -1
        self._bad_value: torch.Tensor | None = None  # on the device: that loss (float32)
        self._checked_at = -1

    def _interval(self, trainer: pl.Trainer) -> int:
        return self.check_every_n_steps or max(1, int(getattr(trainer, "log_every_n_steps", 1) or 1))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reset()

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        loss = loss.detach()
        if self._first_bad is None or self._bad_value is None:
            # written on the device (no copy from the host)
            self._first_bad = torch.full((), -1, dtype=torch.long, device=loss.device)
            self._bad_value = torch.zeros((), dtype=torch.float32, device=loss.device)
        new = ~torch.isfinite(loss).all() & (self._first_bad < 0)  # device bool: this is the first bad loss
        self._first_bad = torch.where(new, len(self._steps), self._first_bad)
        self._bad_value = torch.where(new, loss.float().flatten()[0], self._bad_value)
        self._steps.append((trainer.global_step, trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_idx))
        if self._interval(trainer) == 1:
            self._raise_if_bad(trainer, "at its check", before_backward=True)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step  # optimizer steps taken, this one included
        interval = self._interval(trainer)
        if interval > 1 and step % interval == 0 and step != self._checked_at:
            self._checked_at = step  # once per optimizer step (several batches under gradient accumulation)
            self._raise_if_bad(trainer, "at its check every check_every_n_steps steps")

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._raise_if_bad(trainer, "before a checkpoint with weights trained on it was written")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._raise_if_bad(trainer, "when training ended")

    def _raise_if_bad(self, trainer: pl.Trainer, when: str, before_backward: bool = False) -> None:
        """Read the device record (one synchronization); raise when it holds a non-finite loss. Every
        process calls this at the same points (a collective under DDP)."""
        if self._first_bad is None or self._bad_value is None:
            bad, index, value = False, -1, 0.0
        else:
            index_value = torch.stack((self._first_bad.float(), self._bad_value))  # one read for both
            index_f, value = index_value.tolist()
            index = int(index_f)
            bad = index >= 0
        if trainer.world_size > 1:
            bad = bool(trainer.strategy.reduce_boolean_decision(bad, all=False))
        if not bad:
            if self._first_bad is not None:
                self._steps.clear()
                self._first_bad.fill_(-1)  # indices restart with the cleared list
            return
        if index >= 0:
            step, epoch, batch = self._steps[index]
            what = f"the training loss is {value} at step {step} (epoch {epoch}, batch {batch})"
            later = self._steps[-1][0] - step  # the last step whose loss was recorded, minus the bad one
            if before_backward and index == len(self._steps) - 1:
                when = "before this step changed the weights"
            elif later == 0:
                when = f"after that step's update, {when}"
            else:
                when = f"{later} step(s) later, {when}"
        else:
            what = "the training loss became non-finite on another process"
        raise NonFiniteLossError(
            f"{what}; training stopped {when}, and the checkpoints saved so far are kept; lower the learning "
            "rate, clip gradients (trainer.gradient_clip_val) or check the data, then resume with --ckpt_path "
            "<last good checkpoint>"
        )
