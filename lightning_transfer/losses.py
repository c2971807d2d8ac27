"""Pure loss functions: no modules, no state.

All losses compute their logits and reductions in float32, also under ``torch.autocast``, because
the softmax over a few thousand similarities divided by a small temperature is exactly where
bf16/fp16 lose the signal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lightning_transfer.distributed import gather_with_grad, is_distributed, rank


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5, gather: bool = True) -> torch.Tensor:
    """SimCLR's normalized temperature-scaled cross-entropy (Chen et al. 2020, eq. 1).

    ``z1[i]`` and ``z2[i]`` (shape ``N x D``, any scale) are two views of sample ``i``. With
    ``sim(u, v) = u.v / (|u| |v|)``, each of the ``2N`` views ``k`` is an anchor with loss

        l(k) = -log( exp(sim(z_k, z_pos(k)) / t) / sum_{j != k} exp(sim(z_k, z_j) / t) ),

    where ``pos(k)`` is its partner view and the sum runs over the other ``2N - 1`` views (the
    positive and ``2N - 2`` negatives). The result is the mean of ``l(k)`` over the ``2N`` anchors.

    With ``gather=True`` under an initialized process group, the negatives come from the views of
    every process and gradients flow back through the gather (summed over processes), so ``W``
    processes with DDP gradient averaging train exactly like one process on the concatenated batch
    of ``W * N`` samples. The returned value is the mean over this process's anchors.

    Raises ``ValueError`` for mismatched shapes, fewer than 2 samples overall, or ``temperature <= 0``.
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(
            f"nt_xent_loss needs two N x D tensors of the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"nt_xent_loss temperature must be > 0, got {temperature}")
    with torch.autocast(device_type=z1.device.type, enabled=False):
        dtype = torch.promote_types(z1.dtype, torch.float32)  # float32 at least; float64 stays float64
        z1 = F.normalize(z1.to(dtype), dim=1)
        z2 = F.normalize(z2.to(dtype), dim=1)
        n = z1.shape[0]
        offset = 0
        if gather and is_distributed():
            all1, all2 = gather_with_grad(z1), gather_with_grad(z2)
            offset = rank() * n
        else:
            all1, all2 = z1, z2
        total = all1.shape[0]
        if total < 2:
            raise ValueError("nt_xent_loss needs at least 2 samples in the (global) batch to have negatives")
        candidates = torch.cat([all1, all2], dim=0)  # (2T, D): views 1 of all samples, then views 2
        anchors = torch.cat([z1, z2], dim=0)  # (2N, D): this process's anchors
        logits = anchors @ candidates.T / temperature  # (2N, 2T)

        local = torch.arange(n, device=z1.device) + offset
        self_index = torch.cat([local, local + total])
        positive_index = torch.cat([local + total, local])
        rows = torch.arange(2 * n, device=z1.device)
        logits[rows, self_index] = float("-inf")  # an anchor is never its own negative
        return F.cross_entropy(logits, positive_index)
