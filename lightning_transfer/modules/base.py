"""The thin base every module shares: optimizer, parameter groups and a per-step LR schedule.

Subclasses take these keyword arguments (:data:`~lightning_transfer.optim.OPTIMIZATION_SETTINGS`),
call ``save_hyperparameters()`` and then :meth:`~OptimizedModule.validate_optimization_settings`
in their constructor, and may override :meth:`param_groups` (for example to give a probe or a head
its own LR):

``optimizer`` (lars/adamw/sgd/adam, any case), ``lr`` (> 0), ``weight_decay`` (>= 0), ``momentum``
(in [0, 1)), ``betas`` (two numbers in [0, 1)), ``warmup_steps`` (an integer >= 0; None:
``warmup_fraction`` of all steps), ``warmup_fraction`` (in [0, 1)), ``schedule``
(cosine/linear/constant) and ``min_lr_factor`` (in [0, 1]: the LR the schedule ends at, as a
fraction of ``lr``).

``compile`` (optional, default off) is an implementation setting: it changes speed, never results.
When a subclass has it among its hyperparameters and it is true, :meth:`on_train_start` compiles the
hot submodules (:attr:`OptimizedModule.compile_targets`) with ``torch.compile``, in place
(``nn.Module.compile``), so parameter names, state dicts and checkpoints stay those of the eager model.
Where ``torch.compile`` cannot run (no C++ compiler for CPU code, say), it warns once and trains eagerly.

:meth:`setup` (subclasses call ``super().setup(stage)`` first) trains in ``32-true`` where the requested
mixed precision would only be emulated by the CPU (:mod:`lightning_transfer.precision`).
"""

from __future__ import annotations

import os
import shutil
import warnings

import lightning.pytorch as pl
import torch
from torch import nn

from lightning_transfer.data.resumable import ResumeTrainLoaders
from lightning_transfer.hparams import AttributeHparams
from lightning_transfer.optim import (
    OPTIMIZATION_SETTINGS,
    build_optimizer,
    check_optimization_settings,
    resolve_warmup_steps,
    split_decay_groups,
    warmup_schedule,
)
from lightning_transfer.precision import fall_back_from_emulated_precision


def compile_unavailable_reason(device: torch.device) -> str | None:
    """Why ``torch.compile`` cannot run on ``device`` here, or None when it can (as far as a cheap check
    tells: CPU code needs a C++ compiler, CUDA code Triton)."""
    if not hasattr(torch, "compile") or not torch._dynamo.is_dynamo_supported():
        return f"torch {torch.__version__} has no working torch.compile on this platform"
    if device.type == "cpu":
        candidates = [os.environ.get("CXX", ""), "g++", "clang++", "c++"]
        if not any(name and shutil.which(name) for name in candidates):
            return "no C++ compiler (g++/clang++) is on PATH, which torch.compile needs for CPU code"
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "the triton package is not installed, which torch.compile needs for CUDA code"
    return None


class OptimizedModule(AttributeHparams, pl.LightningModule):
    #: Attribute names of the hot submodules ``compile=True`` compiles, where the subclass has them.
    compile_targets: tuple[str, ...] = ("encoder", "backbone", "projection")

    def compile_modules(self) -> list[str]:
        """Compile the :attr:`compile_targets` this module has, in place; returns their names (none,
        with a warning, when :func:`compile_unavailable_reason` gives a reason)."""
        reason = compile_unavailable_reason(self.device)
        if reason is not None:
            warnings.warn(f"compile=True ignored: {reason}; training runs eagerly", UserWarning, stacklevel=2)
            return []
        names = []
        for name in self.compile_targets:
            module = getattr(self, name, None)
            if isinstance(module, nn.Module) and module._compiled_call_impl is None:
                module.compile()
                names.append(name)
        return names

    def setup(self, stage: str) -> None:
        fall_back_from_emulated_precision(self.trainer)

    def configure_callbacks(self) -> list[pl.Callback]:
        return [ResumeTrainLoaders()]  # exact mid-epoch resume (lightning_transfer.data.resumable)

    def on_train_start(self) -> None:
        if self.hparams.get("compile"):
            self.compile_modules()

    def validate_optimization_settings(self) -> None:
        """Check the optimizer and schedule hyperparameters (:func:`~lightning_transfer.optim.check_optimization_settings`):
        a bad one raises :class:`~lightning_transfer.errors.UserInputError` naming it. Subclasses call
        this once in ``__init__``, after ``save_hyperparameters()`` and after filling in any default
        they resolve themselves, so a bad setting fails at construction, not when training starts."""
        check_optimization_settings(**{name: self.hparams[name] for name in OPTIMIZATION_SETTINGS})

    def param_groups(self) -> list[dict]:
        """Default: every trainable parameter, no weight decay on biases and norm weights."""
        return split_decay_groups(self.named_parameters(), self.hparams.weight_decay)

    def learning_rate(self) -> float:
        """The base LR handed to the optimizer (subclasses may scale it with the batch size)."""
        return self.hparams.lr

    def total_steps(self) -> int:
        """Optimizer steps of the whole run, as the Trainer estimates them."""
        return max(1, int(self.trainer.estimated_stepping_batches))

    def _may_fuse_optimizer(self) -> bool:
        """Lightning refuses to clip the gradients of a fused optimizer under mixed precision (the
        fused kernel unscales them itself), so gradient clipping + AMP gets the ``foreach`` one."""
        from lightning.pytorch.plugins.precision import MixedPrecision

        trainer = self._trainer
        if trainer is None:
            return True
        return not (trainer.gradient_clip_val and isinstance(trainer.precision_plugin, MixedPrecision))

    def configure_optimizers(self):
        hp = self.hparams
        total = self.total_steps()
        optimizer = build_optimizer(
            hp.optimizer,
            self.param_groups(),
            lr=self.learning_rate(),
            weight_decay=hp.weight_decay,
            momentum=hp.momentum,
            betas=tuple(hp.betas),
            allow_fused=self._may_fuse_optimizer(),
        )
        warmup = resolve_warmup_steps(hp.warmup_steps, hp.warmup_fraction, total)
        return {
            "optimizer": optimizer,
            "lr_scheduler": warmup_schedule(optimizer, warmup, total, hp.schedule, hp.min_lr_factor),
        }
