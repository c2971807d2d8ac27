"""How a batch of SimCLR views is computed fast: chunks sorted by op, in-place runs, reused buffers.

:func:`augment_batch` applies a batch's drawn parameters (an
:class:`~lightning_transfer.data.augment.AugmentationParams`) in the recipe's order: crop + flip +
rotation in one resampling, colour jitter in each sample's own order, grayscale, blur, solarize,
normalization. What is drawn, and that order, is the recipe in :mod:`lightning_transfer.data.augment`;
this module only decides how the work is laid out, never what it computes (each sample's result
is what the per-image kernels give it on its own: ``tests/data/test_augment.py`` replays every
sample with torchvision's kernels).

Speed notes. The CPU is the case that matters (DataLoader workers), and there the cost is memory
passes and per-op overhead, so:

- a batch is processed in chunks of about 4 MB of output, each sorted so that the samples sharing
  an op (the same jitter order, grayscale, blur) are contiguous and every op runs in place on a
  slice, once per group rather than once per sample; the output is written back in input order;
- chunk-sized buffers are reused: a fresh multi-megabyte tensor costs page faults on every call.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from lightning_transfer.data._augment_kernels import (
    adjust_brightness_,
    adjust_contrast_,
    adjust_hue_,
    adjust_saturation_,
    crop_coordinates,
    gaussian_blur,
    resample,
    rgb_to_grayscale_,
    solarize_,
)

if TYPE_CHECKING:
    from lightning_transfer.data.augment import AugmentationParams

# CPU chunk size in output elements (4 MiB of float32): large enough to amortize per-op overhead,
# small enough that glibc serves the temporaries from its heap instead of fresh mmap'ed pages.
_CPU_CHUNK_ELEMENTS = 1 << 20
# The jitter ops by their index in AugmentationParams.factors and .order.
_JITTER_OPS = (adjust_brightness_, adjust_contrast_, adjust_saturation_, adjust_hue_)


@dataclass(frozen=True)
class Steps:
    """The output size and the steps the recipe has switched on. A step that is off is skipped for
    every sample; one that is on runs on the samples whose draw selects it.

    ``jitter_ops``: the indices (0 brightness, 1 contrast, 2 saturation, 3 hue) of the jitter ops
    with a non-zero strength, empty when the jitter is off; ``blur_kernel_size`` 1 means no blur.
    """

    image_size: int
    flip: bool
    rotate: bool
    jitter_ops: tuple[int, ...]
    grayscale: bool
    blur_kernel_size: int
    solarize: bool


def augment_batch(
    images: torch.Tensor, params: AugmentationParams, steps: Steps, mean: torch.Tensor, std: torch.Tensor
) -> torch.Tensor:
    """The views of ``images`` (``B x C x H x W``, uint8 or float in [0, 1], ``B > 0``) for the
    drawn ``params`` (CPU tensors, one row per image): float32 ``B x C x size x size`` on the
    images' device, normalized with ``mean`` and ``std`` (``1 x C x 1 x 1``)."""
    n, c, height, width = images.shape
    device, size = images.device, steps.image_size
    chunk = n if device.type != "cpu" else max(1, _CPU_CHUNK_ELEMENTS // (c * size**2))
    plan = _make_plan(params, steps, chunk, height, width, device)
    scale, shift = 1.0 / std, -mean / std
    value_scale = 1.0 if images.is_floating_point() else 1.0 / 255.0
    out = torch.empty(n, c, size, size, device=device, dtype=torch.float32)
    # Float copies of the sorted input chunk, allocated once: a fresh multi-megabyte buffer per
    # chunk costs more in page faults on the CPU than the conversion itself.
    sorted_input = images.new_empty(min(n, chunk), c, height, width)
    source = torch.empty(sorted_input.shape, device=device, dtype=torch.float32)
    grid = torch.empty(min(n, chunk), size, size, 2, device=device, dtype=torch.float32)
    for index, start in enumerate(range(0, n, chunk)):
        stop = min(n, start + chunk)
        m = stop - start
        torch.index_select(images, 0, plan.order[start:stop], out=sorted_input[:m])
        source[:m].copy_(sorted_input[:m])
        angle = plan.angle[start:stop] if plan.angle is not None else None
        x = resample(source[:m], plan.gx[start:stop], plan.gy[start:stop], grid[:m], angle)
        if value_scale != 1.0:
            x.mul_(value_scale)
        _colour_and_blur(x, plan, steps, index, start)
        x.mul_(scale).add_(shift)  # (x - mean) / std
        torch.index_select(x.view(m, -1), 0, plan.inverse[start:stop] - start, out=out[start:stop].view(m, -1))
    return out


@dataclass
class _Plan:
    """A batch's parameters in processing order (``order[k]`` = original index of sorted sample
    ``k``; ``inverse`` undoes it) and the runs of equal ops within each chunk."""

    order: torch.Tensor
    inverse: torch.Tensor
    gx: torch.Tensor
    gy: torch.Tensor
    factors: torch.Tensor
    sigma: torch.Tensor
    solarize: torch.Tensor
    angle: torch.Tensor | None
    jitter_runs: list
    gray_runs: list
    blur_runs: list


def _make_plan(params: AugmentationParams, steps: Steps, chunk: int, height: int, width: int, device) -> _Plan:
    """Sort every chunk by blur, grayscale and jitter order, so that the samples sharing an op
    are contiguous and each op runs in place on a slice; find those runs once for the batch."""
    n = params.flip.shape[0]
    chunk_id = torch.arange(n) // chunk
    jitter_code = _jitter_code(params)
    key = params.blur.long() * 1024 + params.grayscale.long() * 512 + jitter_code
    order = torch.argsort(chunk_id * 2048 + key, stable=True)
    p = _take(params, order)
    jitter_code = jitter_code[order]
    order = to_device(order, device)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(n, device=device)
    gx, gy = crop_coordinates(p.boxes, steps.image_size, height, width, p.flip if steps.flip else None)
    return _Plan(
        order=order,
        inverse=inverse,
        gx=to_device(gx.float(), device),
        gy=to_device(gy.float(), device),
        factors=to_device(p.factors, device).view(n, 4, 1, 1, 1),
        sigma=to_device(p.sigma, device),
        solarize=p.solarize,
        angle=to_device(p.angle, device) if steps.rotate else None,
        jitter_runs=_runs_per_chunk(jitter_code, chunk),
        gray_runs=_runs_per_chunk(p.grayscale.long(), chunk),
        blur_runs=_runs_per_chunk(p.blur.long(), chunk),
    )


def _colour_and_blur(x: torch.Tensor, plan: _Plan, steps: Steps, index: int, start: int) -> None:
    """Jitter, grayscale, blur and solarize the sorted chunk ``x`` (float, [0, 1]) in place."""
    active = steps.jitter_ops
    for code, a, b in plan.jitter_runs[index]:
        if code < 256 and active:
            factors = plan.factors[start + a : start + b]
            for o in (code // 64, code // 16 % 4, code // 4 % 4, code % 4):  # the order's base-4 digits
                if o in active:
                    _JITTER_OPS[o](x[a:b], factors[:, o])
    if x.shape[1] == 3 and steps.grayscale:
        for gray, a, b in plan.gray_runs[index]:
            if gray:
                rgb_to_grayscale_(x[a:b])
    if steps.blur_kernel_size > 1:
        for blur, a, b in plan.blur_runs[index]:
            if blur:
                gaussian_blur(x[a:b], plan.sigma[start + a : start + b], steps.blur_kernel_size, out=x[a:b])
    if steps.solarize:
        rows = plan.solarize[start : start + x.shape[0]].nonzero().squeeze(1)
        if rows.numel():
            idx = to_device(rows, x.device)
            x.index_copy_(0, idx, solarize_(x.index_select(0, idx)))


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """A host-planned tensor on ``device``. To a GPU through pinned memory with ``non_blocking``: a
    copy from pageable memory would make the host wait for the device (a synchronization per batch)."""
    device = torch.device(device)
    if device.type != "cuda" or tensor.device == device:
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def _jitter_code(p: AugmentationParams) -> torch.Tensor:
    """Jitter order as one integer (base 4 digits of the permutation), 256 for no jitter."""
    code = (p.order * torch.tensor([64, 16, 4, 1])).sum(dim=1)
    return torch.where(p.jitter, code, torch.full_like(code, 256))


def _runs_per_chunk(values: torch.Tensor, chunk: int) -> list[list[tuple[int, int, int]]]:
    """For each chunk of ``chunk`` consecutive samples, the runs ``(value, a, b)`` of equal values
    in it, ``a`` and ``b`` relative to the chunk's start."""
    n = values.shape[0]
    chunk_id = torch.arange(n) // chunk
    _, counts = torch.unique_consecutive(chunk_id * (int(values.max()) + 1) + values, return_counts=True)
    per_chunk: list[list[tuple[int, int, int]]] = [[] for _ in range((n + chunk - 1) // chunk)]
    value_list, stop = values.tolist(), 0
    for count in counts.tolist():
        start, stop = stop, stop + count
        per_chunk[start // chunk].append((value_list[start], start % chunk, start % chunk + count))
    return per_chunk


def _take(p: AugmentationParams, index) -> AugmentationParams:
    """The parameters of the samples selected by ``index`` (a slice or a CPU index tensor)."""
    return dataclasses.replace(p, **{k: v[index] for k, v in vars(p).items()})
