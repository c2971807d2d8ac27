"""The thin base every module shares: optimizer, parameter groups and a per-step LR schedule.

Subclasses call ``save_hyperparameters()`` with these names among their arguments and may
override :meth:`param_groups` (for example to give a probe or a head its own LR):

``optimizer`` (lars/adamw/sgd/adam), ``lr``, ``weight_decay``, ``momentum``, ``betas``,
``warmup_steps`` (None: ``warmup_fraction`` of all steps), ``warmup_fraction``, ``schedule``
(cosine/linear/constant) and ``min_lr_factor``.
"""
from __future__ import annotations

import lightning.pytorch as pl

from lightning_transfer.optim import build_optimizer, resolve_warmup_steps, split_decay_groups, warmup_schedule


class OptimizedModule(pl.LightningModule):
    def param_groups(self) -> list[dict]:
        """Default: every trainable parameter, no weight decay on biases and norm weights."""
        return split_decay_groups(self.named_parameters(), self.hparams.weight_decay)

    def learning_rate(self) -> float:
        """The base LR handed to the optimizer (subclasses may scale it with the batch size)."""
        return self.hparams.lr

    def total_steps(self) -> int:
        """Optimizer steps of the whole run, as the Trainer estimates them."""
        return max(1, int(self.trainer.estimated_stepping_batches))

    def configure_optimizers(self):
        hp = self.hparams
        total = self.total_steps()
        optimizer = build_optimizer(hp.optimizer, self.param_groups(), lr=self.learning_rate(),
                                    weight_decay=hp.weight_decay, momentum=hp.momentum, betas=tuple(hp.betas))
        warmup = resolve_warmup_steps(hp.warmup_steps, hp.warmup_fraction, total)
        return {"optimizer": optimizer,
                "lr_scheduler": warmup_schedule(optimizer, warmup, total, hp.schedule, hp.min_lr_factor)}
