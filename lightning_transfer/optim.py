"""Optimizers, parameter groups and learning-rate schedules shared by every module.

- :func:`check_optimization_settings`: the one check of the optimizer and schedule settings that
  every module takes (``optimizer``, ``lr``, ``weight_decay``, ``momentum``, ``betas``, ``warmup_steps``,
  ``warmup_fraction``, ``schedule``, ``min_lr_factor``).
- :func:`split_decay_groups`: the standard "no weight decay on biases and normalization weights" split.
- :class:`LARS`: layer-wise adaptive rate scaling (You et al. 2017) as used by SimCLR, with groups
  that can opt out of both decay and adaptation (``lars_exclude=True``).
- :func:`warmup_schedule`: linear warmup then cosine / linear / constant, stepped per optimizer step.
- :func:`build_optimizer`: one place that turns ``name, lr, weight_decay, ...`` into an optimizer.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from lightning_transfer.errors import UserInputError, require

OPTIMIZERS = ("lars", "adamw", "sgd", "adam")  # matched case-insensitively
SCHEDULES = ("cosine", "linear", "constant")
#: The settings every module takes as keyword arguments, and :func:`check_optimization_settings` checks.
OPTIMIZATION_SETTINGS = (
    "optimizer",
    "lr",
    "weight_decay",
    "momentum",
    "betas",
    "warmup_steps",
    "warmup_fraction",
    "schedule",
    "min_lr_factor",
)


def _unknown(what: str, value: Any, choices: tuple[str, ...]) -> str:
    return f"unknown {what} {value!r}; choose one of {', '.join(choices)}"


def _is_number(value: Any) -> bool:
    """A finite real number (not a bool)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _in_unit_interval(value: Any) -> bool:
    """A number in [0, 1)."""
    return _is_number(value) and 0 <= value < 1


def check_optimization_settings(
    *,
    optimizer: Any,
    lr: Any,
    weight_decay: Any,
    momentum: Any,
    betas: Any,
    warmup_steps: Any,
    warmup_fraction: Any,
    schedule: Any,
    min_lr_factor: Any,
) -> None:
    """Raise :class:`~lightning_transfer.errors.UserInputError` with one line naming the first bad
    setting, what it must be and the value given; return None when all are usable.

    ``optimizer`` one of :data:`OPTIMIZERS` (any case); ``lr`` > 0; ``weight_decay`` >= 0;
    ``momentum`` in [0, 1); ``betas`` two numbers in [0, 1); ``warmup_steps`` None or an integer
    >= 0; ``warmup_fraction`` in [0, 1); ``schedule`` one of :data:`SCHEDULES`; ``min_lr_factor``
    in [0, 1]. Numbers must be finite."""
    require(
        isinstance(optimizer, str) and optimizer.lower() in OPTIMIZERS, _unknown("optimizer", optimizer, OPTIMIZERS)
    )
    require(schedule in SCHEDULES, _unknown("schedule", schedule, SCHEDULES))
    require(_is_number(lr) and lr > 0, f"lr must be a number > 0 (the base learning rate), got {lr!r}")
    require(
        _is_number(weight_decay) and weight_decay >= 0,
        f"weight_decay must be a number >= 0 (0 turns weight decay off), got {weight_decay!r}",
    )
    require(_in_unit_interval(momentum), f"momentum must be a number in [0, 1), got {momentum!r}")
    require(
        isinstance(betas, (tuple, list)) and len(betas) == 2 and all(map(_in_unit_interval, betas)),
        f"betas must be two numbers in [0, 1), e.g. [0.9, 0.999], got {betas!r}",
    )
    require(
        warmup_steps is None or (_is_number(warmup_steps) and warmup_steps >= 0 and float(warmup_steps).is_integer()),
        f"warmup_steps must be an integer >= 0, or null for warmup_fraction of all steps, got {warmup_steps!r}",
    )
    require(
        _in_unit_interval(warmup_fraction),
        f"warmup_fraction must be a number in [0, 1) (the fraction of all steps spent warming up), got {warmup_fraction!r}",
    )
    require(
        _is_number(min_lr_factor) and 0 <= min_lr_factor <= 1,
        f"min_lr_factor must be a number in [0, 1] (the final LR as a fraction of lr), got {min_lr_factor!r}",
    )


def is_no_decay(name: str, param: nn.Parameter) -> bool:
    """Biases and the 1-d weights of normalization layers (BatchNorm, LayerNorm, ...)."""
    return param.ndim <= 1 or name.endswith(".bias")


def split_decay_groups(
    named_parameters: Iterable[tuple[str, nn.Parameter]],
    weight_decay: float,
    name: str | None = None,
    keep_frozen: bool = False,
    **extra,
) -> list[dict]:
    """Two param groups: with ``weight_decay`` and without (biases, norm weights, see
    :func:`is_no_decay`), in that order, each left out when it would be empty; the no-decay group is
    also marked ``lars_exclude=True``.

    Frozen parameters (``requires_grad=False``) are left out unless ``keep_frozen`` (gradual
    unfreezing needs parameters that are frozen *now* in the optimizer from the start). ``name``
    names the groups ``name`` and ``name.no_decay`` (LearningRateMonitor needs unique names).
    ``extra`` keys are copied into both groups (``lr=...`` for example)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for param_name, param in named_parameters:
        if not (param.requires_grad or keep_frozen):
            continue
        (no_decay if is_no_decay(param_name, param) else decay).append(param)
    decay_name, no_decay_name = ({}, {}) if name is None else ({"name": name}, {"name": f"{name}.no_decay"})
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay, **decay_name, **extra})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "lars_exclude": True, **no_decay_name, **extra})
    return groups


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al. 2017).

    For each parameter ``w`` with gradient ``g``: ``g <- g + wd * w``, then the local rate
    ``trust = eta * |w| / |g|`` (1 when either norm is 0) scales the update,
    ``v <- m * v + trust * g``, ``w <- w - lr * v``. Groups with ``lars_exclude=True`` (biases and
    norm weights, as in SimCLR) skip both the decay and the adaptation.
    """

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        eps: float = 1e-8,
        nesterov: bool = False,
    ):
        if lr < 0:
            raise ValueError(f"LARS lr must be >= 0, got {lr}")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            trust_coefficient=trust_coefficient,
            eps=eps,
            nesterov=nesterov,
            lars_exclude=False,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if not group["lars_exclude"]:
                    if group["weight_decay"] != 0:
                        grad = grad.add(p, alpha=group["weight_decay"])
                    param_norm = torch.linalg.vector_norm(p)
                    grad_norm = torch.linalg.vector_norm(grad)
                    trust = torch.where(
                        (param_norm > 0) & (grad_norm > 0),
                        group["trust_coefficient"] * param_norm / (grad_norm + group["eps"]),
                        torch.ones_like(param_norm),
                    )
                    grad = grad.mul(trust)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.clone(grad).detach()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(grad)
                update = state["momentum_buffer"]
                if group["nesterov"]:
                    update = grad.add(update, alpha=group["momentum"])
                p.add_(update, alpha=-group["lr"])
        return loss


FUSED_DEVICES = ("cpu", "cuda", "mps", "xpu")  # where torch has fused (single-kernel) Adam/AdamW


def adam_implementation(param_groups: list[dict], allow_fused: bool = True) -> dict[str, bool]:
    """``{"fused": True}`` when ``allow_fused`` and every parameter is a floating-point tensor on a
    device with torch's fused Adam kernel (one kernel for all parameters; ~3x faster than ``foreach``
    on CPU), else ``{"foreach": True}``. An implementation choice only: the update is the same."""
    if not allow_fused or not all(
        isinstance(group, dict) and isinstance(group["params"], (list, tuple)) for group in param_groups
    ):
        return {"foreach": True}  # parameters given as an iterator: do not consume it here
    params = [p for group in param_groups for p in group["params"]]
    fused = bool(params) and all(p.is_floating_point() and p.device.type in FUSED_DEVICES for p in params)
    return {"fused": True} if fused else {"foreach": True}


def build_optimizer(
    name: str,
    param_groups: list[dict],
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
    allow_fused: bool = True,
) -> torch.optim.Optimizer:
    """Create optimizer ``name`` (one of :data:`OPTIMIZERS`) over ``param_groups``. Groups keep
    their own ``weight_decay``/``lr`` when they set one; ``weight_decay`` is the default.
    ``allow_fused=False`` keeps Adam/AdamW off the fused kernel (see :func:`adam_implementation`).
    An unknown ``name`` raises :class:`~lightning_transfer.errors.UserInputError` (modules check it,
    with the other settings, at construction: :func:`check_optimization_settings`)."""
    name = name.lower()
    if name == "lars":
        return LARS(param_groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(param_groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name in ("adamw", "adam"):
        adam = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
        return adam(
            param_groups,
            lr=lr,
            betas=betas,
            weight_decay=weight_decay,
            **adam_implementation(param_groups, allow_fused),
        )
    raise UserInputError(_unknown("optimizer", name, OPTIMIZERS))


def warmup_factor(
    step: int, warmup_steps: int, total_steps: int, schedule: str = "cosine", min_factor: float = 0.0
) -> float:
    """LR multiplier at optimizer step ``step`` (0-based): linear warmup from ``1/warmup_steps`` to
    1 over ``warmup_steps``, then ``cosine``: ``min + (1 - min) * (1 + cos(pi * p)) / 2``,
    ``linear``: ``min + (1 - min) * (1 - p)`` or ``constant``: 1, with ``p`` the fraction of the
    post-warmup steps done (clamped to [0, 1])."""
    if schedule not in SCHEDULES:
        raise UserInputError(_unknown("schedule", schedule, SCHEDULES))
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(max((step - warmup_steps) / max(1, total_steps - warmup_steps), 0.0), 1.0)
    if schedule == "cosine":
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))
    return min_factor + (1 - min_factor) * (1 - progress)


def warmup_schedule(
    optimizer: torch.optim.Optimizer,
    warmup_steps: int,
    total_steps: int,
    schedule: str = "cosine",
    min_factor: float = 0.0,
) -> dict:
    """A Lightning ``lr_scheduler`` config dict stepping :func:`warmup_factor` every optimizer step."""
    lr_lambda = lambda step: warmup_factor(step, warmup_steps, total_steps, schedule, min_factor)  # noqa: E731
    return {"scheduler": LambdaLR(optimizer, lr_lambda), "interval": "step", "frequency": 1}


def resolve_warmup_steps(warmup_steps: int | None, warmup_fraction: float, total_steps: int) -> int:
    """An explicit ``warmup_steps`` wins; else ``warmup_fraction`` of ``total_steps``."""
    if warmup_steps is not None:
        return int(warmup_steps)
    return int(round(warmup_fraction * total_steps))
