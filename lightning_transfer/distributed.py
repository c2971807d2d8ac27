"""Process-group helpers, and an all-gather whose backward is correct.

Every function works without ``torch.distributed`` initialized (one process): then the gather is
the identity, the rank is 0 and the world size is 1.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def evaluation_sampler(dataset) -> torch.utils.data.Sampler | None:
    """Under DDP, a sampler that gives every process its share of ``dataset`` in order and *no*
    repeated example (Lightning's own for ``predict``), so that test metrics count each example
    once; ``None`` in one process. Lightning keeps a ``DistributedSampler`` it is given, and its
    default for evaluation pads the shares to one length with repeats (a test set of 15 images on
    2 processes would be scored as 16)."""
    if not is_distributed():
        return None
    from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

    return UnrepeatedDistributedSampler(dataset, shuffle=False)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather in forward; in backward, each process receives the *sum over processes* of the
    gradient with respect to its own slice.

    Why the sum: process r's embeddings appear in the loss of every process s (as negatives), so
    d(sum_s L_s)/d z_r = sum_s dL_s/d z_r. DDP then averages parameter gradients over processes,
    which turns sum_s L_s / W into the mean loss of one process on the concatenated batch. A
    backward that only keeps the local gradient (dL_r/d z_r) silently drops the other processes'
    terms; that is the classic SimCLR-under-DDP bug.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.batch_size = tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        grad = grad_output.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = dist.get_rank() * ctx.batch_size
        return grad[start : start + ctx.batch_size]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (same shape on every process) from all processes along dim 0, in
    rank order, keeping gradients flowing back to each process's own slice (see
    :class:`_GatherWithGrad`). Identity when not distributed."""
    if not is_distributed():
        return tensor
    return _GatherWithGrad.apply(tensor)


@torch.no_grad()
def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """all_gather for tensors that may differ in their first dimension across processes (padded
    internally). Used for monitors (kNN feature banks), never for losses."""
    if not is_distributed():
        return tensor
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(world_size())]
    dist.all_gather(sizes, size)
    max_size = int(max(s.item() for s in sizes))
    padded = tensor.new_zeros((max_size, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in range(world_size())]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)], dim=0)
