"""Sizing the stages to ``--budget-minutes`` from a few timed steps on this machine.

The command times a few real steps of each stage (:class:`Timings`, measured by the pipeline with
:class:`StepTimer`), then :func:`make_plan` solves for the sizes. With ``t`` the measured seconds:

- a fine-tuning run costs ``trials * (fixed + steps * step(batch, strategy)) + test``: it trains
  and validates once per ``--lr-factors`` value (``trials``; ``fixed`` is a trial's set-up and
  validation pass) and tests the kept one (``test``); ``step`` is interpolated linearly in the
  batch size (an epoch's mean: its last batch may be short) between the two timed batch sizes, and
  a frozen encoder (``linear``) steps at the timed linear cost (LP-FT: the mean of both);
- every run trains about ``S`` optimizer steps, as whole epochs over its labeled subset
  (``epochs(k) = max(1, round(S / steps_per_epoch(k)))``, at least 2 for LP-FT). ``S`` is the
  default (100 for images, 60 for text) when all runs then fit in 70% of the remaining budget and
  leave time for a pretraining step, otherwise the largest ``S`` (shrinking by 20%) that does (at
  half, MiniLM's evaluation passes on the reviews left one epoch per run at 50 labels per class);
- pretraining gets the rest: ``P = (remaining - fine-tuning - fixed_pretrain) / t_pretrain_step``, at
  most ``--max-pretrain-steps``.

A budget that cannot run one step per stage is an error that says how many minutes it needs; one
that cuts fine-tuning below half its default steps gets a note under the plan, with the minutes that
would not.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import lightning.pytorch as pl
import torch

from lightning_transfer.errors import UserInputError

FINETUNE_SHARE = 0.7  # at most this share of the remaining budget goes to fine-tuning; pretraining gets the rest
MAX_PRETRAIN_STEPS = 200_000
RESERVE_SECONDS = 15.0  # the report, the plot and the exports at the end


class StepTimer(pl.Callback):
    """Wall time from one training batch's end to the next (synchronized on CUDA): the whole cycle of
    a step, with loading, decoding and augmentation, as the real stage pays it.

    ``min_steps`` steps are timed; when an epoch is short (at most ``epoch_limit`` batches) the fit
    runs into the second epoch, so that the cost of an epoch boundary is measured too, and then
    stops (``trainer.should_stop``). :meth:`seconds_per_step` spreads that cost over the epoch's steps."""

    def __init__(self, min_steps: int = 8, epoch_limit: int = 40) -> None:
        self.min_steps, self.epoch_limit = min_steps, epoch_limit
        self.ends: list[tuple[int, float]] = []  # (batch index in its epoch, time)
        self.batches_per_epoch = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if torch.cuda.is_available() and pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        self.ends.append((batch_idx, time.perf_counter()))
        self.batches_per_epoch = max(self.batches_per_epoch, batch_idx + 1)
        batches = trainer.num_training_batches
        short_epoch = isinstance(batches, int) and batches <= self.epoch_limit
        crossed = any(index == 0 for index, _ in self.ends[1:])
        if len(self.ends) >= self.min_steps and (crossed or not short_epoch):
            trainer.should_stop = True

    @property
    def steps(self) -> list[float]:
        """The cycle of every step after the first."""
        return [b - a for (_, a), (_, b) in zip(self.ends, self.ends[1:])]

    def seconds_per_step(self) -> float:
        """The median cycle of the steps within an epoch after the first few (warm-up: allocator, kernel
        selection), plus the extra cost of the epoch boundaries it saw spread over an epoch's steps."""
        within = [step for step, (index, _) in zip(self.steps, self.ends[1:]) if index != 0]
        settled = sorted(within[len(within) // 2 :] or within or self.steps)
        median = settled[len(settled) // 2]
        boundaries = [step for step, (index, _) in zip(self.steps, self.ends[1:]) if index == 0]
        if not boundaries:
            return median
        extra = max(0.0, sum(boundaries) / len(boundaries) - median)
        return median + extra / max(1, self.batches_per_epoch)


@dataclass
class Timings:
    """Seconds measured on this machine. Pretraining: ``pretrain_step``, ``pretrain_fixed`` (set-up
    and the final validation). Fine-tuning: ``finetune_step`` at batch sizes ``finetune_batches``
    (full fine-tuning), ``linear_step`` at the smaller one, ``finetune_fixed`` per trial (set-up and
    the validation pass) and ``finetune_test`` per run (the test pass of the kept trial)."""

    pretrain_step: float
    pretrain_fixed: float
    finetune_batches: tuple[int, int]
    finetune_step: tuple[float, float]
    linear_step: float
    finetune_fixed: float
    calibration: float = 0.0
    finetune_test: float = 0.0

    def step(self, batch: float, strategy: str) -> float:
        (b0, b1), (t0, t1) = self.finetune_batches, self.finetune_step
        full = t0 if b1 == b0 else t0 + (t1 - t0) * (batch - b0) / (b1 - b0)
        full = max(full, 1e-4)
        linear = min(full, self.linear_step * max(1.0, batch / b0))
        return {"linear": linear, "lp_ft": (linear + full) / 2}.get(strategy, full)


@dataclass(frozen=True)
class FinetuneRun:
    """One fine-tuning run of the grid, as planned."""

    init: str
    labels_per_class: int
    seed: int
    strategy: str
    batch_size: int
    epochs: int
    steps: int
    seconds: float
    lr_factor: float = 1.0  # a trial's multiple of the recipe's LR (one of --lr-factors); planned runs are at 1

    @property
    def name(self) -> str:
        return f"finetune-{self.init}-k{self.labels_per_class}-seed{self.seed}"


@dataclass
class Plan:
    """What the command will run, and its time estimate (seconds)."""

    budget_seconds: float
    pretrain_steps: int
    pretrain_batch_size: int
    finetune_steps: int
    runs: list[FinetuneRun]
    timings: Timings
    estimate: dict[str, float] = field(default_factory=dict)
    lr_trials: int = 1
    note: str = ""  # a line under the plan: what a tight budget cut and what would restore it

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> Plan:
        timings = value["timings"]
        timings = Timings(
            **{
                **timings,
                "finetune_batches": tuple(timings["finetune_batches"]),
                "finetune_step": tuple(timings["finetune_step"]),
            }
        )
        runs = [FinetuneRun(**run) for run in value["runs"]]
        return cls(**{**value, "timings": timings, "runs": runs})

    def describe(self) -> str:
        """The plan as the lines the command prints before it starts."""
        minutes = lambda seconds: f"{seconds / 60:.1f} min"  # noqa: E731
        lines = [
            f"plan for a budget of {minutes(self.budget_seconds)} (timed here: pretraining "
            f"{self.timings.pretrain_step:.3f} s/step, fine-tuning {self.timings.finetune_step[1]:.3f} s/step "
            f"at batch {self.timings.finetune_batches[1]}):",
            f"  pretraining: {self.pretrain_steps} steps of {self.pretrain_batch_size} per process, "
            f"~{minutes(self.estimate['pretraining'])}",
            f"  fine-tuning: {len(self.runs)} runs of ~{self.finetune_steps} steps"
            + (f", each at {self.lr_trials} LRs (validation picks)" if self.lr_trials > 1 else "")
            + f", ~{minutes(self.estimate['finetuning'])}",
        ]
        by_k: dict[int, list[FinetuneRun]] = {}
        for run in self.runs:
            by_k.setdefault(run.labels_per_class, []).append(run)
        for k, runs in sorted(by_k.items()):
            strategies = sorted({f"{r.init}: {r.strategy}" for r in runs})
            lines.append(
                f"    {k} labels/class: {runs[0].epochs} epochs x batch {runs[0].batch_size} "
                f"({', '.join(strategies)}; {len({r.seed for r in runs})} seeds)"
            )
        lines.append(
            f"  estimated total {minutes(self.estimate['total'])} (calibration {self.timings.calibration:.0f} s included)"
        )
        if self.note:
            lines.append(f"  note: {self.note}")
        return "\n".join(lines)


@dataclass(frozen=True)
class RunShape:
    """A run before sizing: what :func:`make_plan` needs to know of it."""

    init: str
    labels_per_class: int
    seed: int
    strategy: str
    batch_size: int
    examples_per_process: int


def _sized(shape: RunShape, target_steps: int, timings: Timings, trials: int) -> FinetuneRun:
    per_epoch = max(1, math.ceil(shape.examples_per_process / shape.batch_size))
    epochs = max(2 if shape.strategy == "lp_ft" else 1, round(target_steps / per_epoch))
    steps = epochs * per_epoch
    mean_batch = shape.examples_per_process / per_epoch  # the last batch of an epoch may be short
    trial = timings.finetune_fixed + steps * timings.step(mean_batch, shape.strategy)
    seconds = trials * trial + timings.finetune_test
    return FinetuneRun(
        shape.init,
        shape.labels_per_class,
        shape.seed,
        shape.strategy,
        shape.batch_size,
        epochs,
        steps,
        round(seconds, 3),
    )


def make_plan(
    budget_seconds: float,
    elapsed_seconds: float,
    timings: Timings,
    shapes: list[RunShape],
    default_finetune_steps: int,
    pretrain_batch_size: int,
    max_pretrain_steps: int | None = None,
    lr_trials: int = 1,
) -> Plan:
    """Size pretraining and fine-tuning to what is left of the budget (see the module docstring);
    ``lr_trials``: how many times each run trains (one per ``--lr-factors`` value).

    Raises:
        UserInputError: the budget cannot run one pretraining step and one epoch per fine-tuning run;
            the message says how many minutes would.
    """
    remaining = budget_seconds - elapsed_seconds - RESERVE_SECONDS

    def runs_for(target: int) -> list[FinetuneRun]:
        return [_sized(shape, target, timings, lr_trials) for shape in shapes]

    def cost(runs: list[FinetuneRun]) -> float:
        return sum(run.seconds for run in runs)

    def fits(target: int) -> bool:
        finetuning = cost(runs_for(target))
        left_for_pretraining = remaining - finetuning - timings.pretrain_fixed
        return finetuning <= FINETUNE_SHARE * remaining and left_for_pretraining >= timings.pretrain_step

    target = default_finetune_steps
    while target > 1 and not fits(target):
        target = max(1, int(target * 0.8))
    runs = runs_for(target)
    finetuning = cost(runs)
    pretrain_steps = int((remaining - finetuning - timings.pretrain_fixed) / timings.pretrain_step)
    if pretrain_steps < 1:
        needed = elapsed_seconds + RESERVE_SECONDS + cost(runs_for(1)) + timings.pretrain_fixed + timings.pretrain_step
        raise UserInputError(
            f"a budget of {budget_seconds / 60:g} minutes cannot run one step per stage on this machine: "
            f"that needs about {needed / 60:.1f} minutes here; pass --budget-minutes {math.ceil(needed / 60)} or more "
            "(or fewer --labels-per-class values, --seeds or --lr-factors)"
        )
    note = ""
    if target < default_finetune_steps // 2:  # the runs would learn little: say so, and what would not cut them
        needed = elapsed_seconds + RESERVE_SECONDS + cost(runs_for(default_finetune_steps)) / FINETUNE_SHARE
        note = (
            f"the budget cuts fine-tuning to ~{target} steps per run (the recipes' {default_finetune_steps}), too few "
            f"to trust the table; --budget-minutes {math.ceil(needed / 60)} gives every run its {default_finetune_steps} "
            "(or fewer --labels-per-class values, --seeds or --lr-factors)"
        )
    pretrain_steps = min(pretrain_steps, max_pretrain_steps or MAX_PRETRAIN_STEPS, MAX_PRETRAIN_STEPS)
    pretraining = timings.pretrain_fixed + pretrain_steps * timings.pretrain_step
    return Plan(
        budget_seconds=budget_seconds,
        pretrain_steps=pretrain_steps,
        pretrain_batch_size=pretrain_batch_size,
        finetune_steps=target,
        runs=runs,
        timings=timings,
        estimate={
            "pretraining": round(pretraining, 1),
            "finetuning": round(finetuning, 1),
            "total": round(elapsed_seconds + pretraining + finetuning + RESERVE_SECONDS, 1),
        },
        lr_trials=lr_trials,
        note=note,
    )
