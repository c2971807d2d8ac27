"""bf16 mixed precision on CPUs that only emulate bfloat16.

``bf16-mixed`` autocasts matmuls and convolutions to bfloat16. A CPU without native bf16 kernels (x86 without AVX-512 or AMX, e.g. an AVX2-only EPYC or Core) has no
oneDNN path for it: PyTorch falls back to reference kernels (``aten::_slow_conv2d_*``, an unblocked
gemm). Measured on a 2-core AVX2 EPYC, 2 threads: a 2048x512 @ 512x2048 linear layer, forward and
backward, takes 5.9 s in bf16 against 0.08 s in fp32 (70x); the SimCLR MNIST recipe's CNN step on
512 views takes 46 s against 2.7 s (17x). A recipe that takes minutes in fp32 then takes hours, and a
launcher's timeout kills it (under DDP the surviving processes report gloo's "Connection closed by
peer").

Mixed precision is a speed setting, so on such a CPU the modules train in ``32-true`` instead, with
one warning that says so (:func:`fall_back_from_emulated_precision`, called from every module's
``setup``). ``LIGHTNING_TRANSFER_KEEP_EMULATED_PRECISION=1`` keeps the requested precision (to test
bf16 code paths on a CPU, as the tests do). GPUs are never affected, and ``16-mixed`` is GPU-only in
Lightning.
"""

from __future__ import annotations

import os

import lightning.pytorch as pl
import torch
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.utilities import rank_zero_warn

KEEP_ENV = "LIGHTNING_TRANSFER_KEEP_EMULATED_PRECISION"


def cpu_emulates_bf16() -> bool:
    """True when this CPU has no native (oneDNN) bf16 matmul/convolution kernels, so that autocasting
    to bfloat16 runs PyTorch's slow reference kernels."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if check is None:  # a torch without the query: assume native kernels, keep what the user asked for
        return False
    return not torch.backends.mkldnn.is_available() or not bool(check())


def emulated_mixed_precision(trainer: pl.Trainer) -> str | None:
    """``"bf16-mixed"`` when the trainer would autocast to bf16 on a CPU that only emulates it and the
    user has not asked to keep it; otherwise None."""
    plugin = trainer.precision_plugin
    if not isinstance(plugin, MixedPrecision) or plugin.device != "cpu" or plugin.precision != "bf16-mixed":
        return None
    if os.environ.get(KEEP_ENV, "").strip().lower() in ("1", "true", "yes"):
        return None
    return plugin.precision if cpu_emulates_bf16() else None


def fall_back_from_emulated_precision(trainer: pl.Trainer) -> bool:
    """Switch ``trainer`` to ``32-true`` when :func:`emulated_mixed_precision` says its mixed precision
    is emulated here; warns once (rank zero) and returns True when it did. Call it from a module's
    ``setup``: Lightning sets up the strategy, and with it the precision plugin, after that hook."""
    precision = emulated_mixed_precision(trainer)
    if precision is None:
        return False
    trainer.strategy.precision_plugin = Precision()
    rank_zero_warn(
        f"precision={precision}: this CPU has no native bf16 kernels (no AVX-512/AMX), so "
        f"autocast would run emulated matmuls and convolutions 15-70x slower than float32; training in 32-true "
        f"instead. Set {KEEP_ENV}=1 to keep {precision}."
    )
    return True
