"""Stopping on a bad loss: :class:`StopOnNonFiniteLoss` stops a run whose loss became NaN or infinite
before that loss can reach the weights, so the checkpoints already written stay good."""

from __future__ import annotations

import lightning.pytorch as pl

from lightning_transfer.errors import UserInputError


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
