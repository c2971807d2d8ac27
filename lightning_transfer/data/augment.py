"""Batched SimCLR augmentation with an independent random draw for every sample.

Peers (lightly, solo-learn) run torchvision/PIL transforms one image at a time inside DataLoader
workers, which makes the augmentation the bottleneck of SimCLR on small and mid-size images.
:class:`SimCLRAugmentation` augments a whole ``B x C x H x W`` uint8 batch with a few tensor ops
per step, yet every random choice (crop box, flip, jitter factors and their order, grayscale,
blur sigma) is drawn per sample, unlike ``torchvision.transforms.v2`` on a batch tensor, which draws
once for the whole batch.

The pieces are public, batched, per-sample functions that match the torchvision kernels of the
same name on one image (the tests check each against torchvision):

- :func:`sample_resized_crop_boxes`: ``RandomResizedCrop.get_params`` for ``n`` samples at once.
- :func:`resized_crop`: crop + bilinear resize (+ optional horizontal flip) in one ``grid_sample``.
- :func:`adjust_brightness_`, :func:`adjust_contrast_`, :func:`adjust_saturation_`,
  :func:`adjust_hue_`, :func:`rgb_to_grayscale_`, :func:`solarize_`: in-place colour ops on float
  images in [0, 1] with one factor per sample.
- :func:`gaussian_blur`: separable Gaussian blur with one sigma per sample.

Randomness: all parameters for a batch are drawn up front from ``generator`` (on the generator's
device; torch's default CPU generator when ``generator`` is None), then moved to the images'
device. A CPU generator therefore gives the same augmentation parameters whether the images live
on the CPU or on a GPU; a CUDA generator draws on its GPU (one small device-to-host copy per batch).

Speed notes (how fast, never what is computed). The CPU is the case that matters (DataLoader
workers), and there the cost is memory passes and per-op overhead, so:

- a batch is processed in chunks of about 4 MB of output, each sorted so that the samples sharing
  an op (the same jitter order, grayscale, blur) are contiguous and every op runs in place on a
  slice, once per group rather than once per sample; the output is written back in input order;
- chunk-sized buffers are reused: a fresh multi-megabyte tensor costs page faults on every call;
- the hue rotation never builds an HSV image and uses no ``torch.where`` (not vectorized on CPU);
- the blur is a few matrix multiplies with a banded, reflect-folded convolution matrix per sample;
  Gaussian taps below 1e-10 are zeroed so that it never computes with (slow) denormal floats.

``benchmarks/augmentation.py`` measures it against lightly's per-image PIL pipeline.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from lightning_transfer.errors import require

__all__ = [
    "SimCLRAugmentation",
    "AugmentationParams",
    "EvalTransform",
    "two_views",
    "sample_resized_crop_boxes",
    "resized_crop",
    "adjust_brightness_",
    "adjust_contrast_",
    "adjust_saturation_",
    "adjust_hue_",
    "rgb_to_grayscale_",
    "solarize_",
    "gaussian_blur",
    "blur_kernel_size",
]

# ITU-R 601-2 luma weights, the ones torchvision and PIL use for grayscale.
_LUMA = (0.2989, 0.587, 0.114)
# CPU chunk size in output elements (4 MiB of float32): large enough to amortize per-op overhead,
# small enough that glibc serves the temporaries from its heap instead of fresh mmap'ed pages.
_CPU_CHUNK_ELEMENTS = 1 << 20
# Kernel taps below this are zeroed: exp(-x^2/2s^2) underflows to denormals for small sigma, and
# denormal arithmetic is ~10x slower on x86. The change to the output is below 1e-9.
_TAP_FLOOR = 1e-10
# Width of the output blocks of the banded blur matmuls.
_BLUR_BLOCK = 32


# ----------------------------------------------------------------------------------------------
# Crop boxes and resampling
# ----------------------------------------------------------------------------------------------


def sample_resized_crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
    uniforms: torch.Tensor | None = None,
) -> torch.Tensor:
    """Crop boxes distributed like torchvision's ``RandomResizedCrop.get_params``, for ``n`` samples.

    For each sample, up to 10 tries draw an area fraction ``U(scale)`` and a log-aspect ratio
    ``U(log ratio)``; the box side lengths are ``round(sqrt(area * ratio))`` (width) and
    ``round(sqrt(area / ratio))`` (height) and the first try that fits in the image wins, placed
    uniformly at integer offsets. When no try fits, the fallback is torchvision's: the largest
    centred box whose aspect ratio is clamped into ``ratio``. The 10 tries are drawn for every
    sample at once (no Python loop over samples or tries).

    Returns an ``int64`` tensor ``n x 4`` of ``(top, left, box_height, box_width)`` on the
    generator's device (CPU when ``generator`` is None). ``uniforms`` (``n x 22`` in [0, 1),
    float64) replaces the random draw; :class:`SimCLRAugmentation` uses it to draw all of a batch's
    parameters in one call.
    """
    require(height > 0 and width > 0, f"crop needs a non-empty image, got {height}x{width}")
    require(0 < scale[0] <= scale[1], f"crop scale must satisfy 0 < min <= max, got {scale}")
    require(0 < ratio[0] <= ratio[1], f"crop ratio must satisfy 0 < min <= max, got {ratio}")
    if uniforms is None:
        device = generator.device if generator is not None else torch.device("cpu")
        uniforms = torch.rand(n, 22, generator=generator, device=device, dtype=torch.float64)
    u = uniforms.to(torch.float64)
    area = float(height * width)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    target_area = area * (scale[0] + (scale[1] - scale[0]) * u[:, 0:10])  # n x 10 tries
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[:, 10:20])
    w = torch.round(torch.sqrt(target_area * aspect))
    h = torch.round(torch.sqrt(target_area / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.int8).argmax(dim=1, keepdim=True)  # index of the first fitting try
    any_fit = fits.any(dim=1)
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)

    # torchvision's fallback: a centred box with the aspect ratio clamped into `ratio`.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fb_w, fb_h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        fb_h, fb_w = height, int(round(height * ratio[1]))
    else:
        fb_w, fb_h = width, height
    w = torch.where(any_fit, w, torch.full_like(w, fb_w))
    h = torch.where(any_fit, h, torch.full_like(h, fb_h))
    top = torch.floor(u[:, 20] * (height - h + 1)).clamp_(max=height - h)
    left = torch.floor(u[:, 21] * (width - w + 1)).clamp_(max=width - w)
    top = torch.where(any_fit, top, torch.floor((height - h) / 2))
    left = torch.where(any_fit, left, torch.floor((width - w) / 2))
    return torch.stack([top, left, h, w], dim=1).to(torch.int64)


def _source_coordinates(start: torch.Tensor, length: torch.Tensor, size: int, extent: int) -> torch.Tensor:
    """Normalized grid_sample coordinates (align_corners=False) of ``size`` outputs per sample.

    Output pixel ``k`` of a crop ``[start, start + length)`` reads source position
    ``start + (k + 0.5) * length / size - 0.5``, clamped into the crop like a resize of the cropped
    image does at its borders; ``extent`` is the full image side used for normalization.
    """
    k = torch.arange(size, device=start.device, dtype=torch.float64)
    start = start.to(torch.float64)[:, None]
    length = length.to(torch.float64)[:, None]
    src = start + (k + 0.5) * (length / size) - 0.5
    src = torch.minimum(torch.maximum(src, start), start + length - 1)
    return (2 * src + 1) / extent - 1


def resized_crop(
    images: torch.Tensor,
    boxes: torch.Tensor,
    size: int,
    flip: torch.Tensor | None = None,
) -> torch.Tensor:
    """Crop each image to its box and resize it to ``size x size`` (bilinear), flipping where asked.

    ``images``: ``B x C x H x W``, uint8 (scaled to [0, 1]) or floating (kept as is).
    ``boxes``: ``B x 4`` integer ``(top, left, box_height, box_width)`` inside the image.
    ``flip``: optional ``B`` bool, mirror the result horizontally where True.
    Returns float32 (or the input's floating dtype) ``B x C x size x size``.

    Equals ``torchvision.transforms.v2.functional.resized_crop(..., antialias=False)`` (bilinear,
    half-pixel centres, borders clamped inside the crop) followed by ``torch.flip``, up to float
    rounding. Like SimCLR's reference implementation (TF ``resize`` without antialiasing), crops
    larger than the output are not low-pass filtered; pre-resize very large images.
    """
    require(images.dim() == 4, f"resized_crop needs B x C x H x W images, got shape {tuple(images.shape)}")
    n, _, height, width = images.shape
    require(boxes.shape == (n, 4), f"resized_crop needs B x 4 boxes, got {tuple(boxes.shape)} for B={n}")
    dtype = images.dtype if images.is_floating_point() else torch.float32
    gx, gy = _crop_coordinates(boxes, size, height, width, flip)
    out = _resample(images.to(dtype), gx.to(images.device, dtype), gy.to(images.device, dtype))
    if not images.is_floating_point():
        out.mul_(1.0 / 255.0)  # on the (smaller) output; torch.mul(uint8, float) is 10x slower than .float()
    return out


def _crop_coordinates(
    boxes: torch.Tensor, size: int, height: int, width: int, flip: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``B x size`` normalized x (flipped where asked) and y sampling coordinates of the boxes."""
    gy = _source_coordinates(boxes[:, 0], boxes[:, 2], size, height)
    gx = _source_coordinates(boxes[:, 1], boxes[:, 3], size, width)
    if flip is not None:
        gx = torch.where(flip.to(gx.device)[:, None], gx.flip(1), gx)
    return gx, gy


def _resample(
    images: torch.Tensor,
    gx: torch.Tensor,
    gy: torch.Tensor,
    grid: torch.Tensor | None = None,
    angle: torch.Tensor | None = None,
) -> torch.Tensor:
    """Bilinear samples of float ``images`` at the separable grid ``(gx[b, u], gy[b, v])``;
    ``grid`` (``B x size x size x 2``) is an optional buffer to build the grid in.

    ``angle`` (``B`` radians, optional) turns each sampling grid about its centre, in pixel units
    (non-square images rotate rigidly): on a full-image box this equals torchvision's
    ``rotate(image, degrees(angle))`` (counter-clockwise, bilinear), except that samples outside
    the image repeat its border instead of reading 0."""
    n, size = gx.shape
    if grid is None:
        grid = torch.empty(n, size, size, 2, device=images.device, dtype=images.dtype)
    if angle is None:
        grid[..., 0] = gx[:, None, :]
        grid[..., 1] = gy[:, :, None]
    else:
        height, width = images.shape[-2:]
        cx, cy = gx.mean(1, keepdim=True), gy.mean(1, keepdim=True)
        dx = ((gx - cx) * (width / 2))[:, None, :]  # B x 1 x size, pixels
        dy = ((gy - cy) * (height / 2))[:, :, None]  # B x size x 1
        cos, sin = angle.cos()[:, None, None], angle.sin()[:, None, None]
        grid[..., 0] = (cos * dx - sin * dy) * (2 / width) + cx[:, :, None]
        grid[..., 1] = (sin * dx + cos * dy) * (2 / height) + cy[:, :, None]
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


# ----------------------------------------------------------------------------------------------
# Colour operations: float images in [0, 1], one factor per sample, in place, clamped like torchvision
# ----------------------------------------------------------------------------------------------


def _per_sample(factors: torch.Tensor | float, images: torch.Tensor) -> torch.Tensor:
    """Factors as a ``B x 1 x 1 x 1`` tensor on the images' device and dtype."""
    if (isinstance(factors, torch.Tensor) and factors.dim() == 4 and factors.dtype == images.dtype
            and factors.shape[0] == images.shape[0]):
        return factors  # already shaped by the caller (the augmentation's hot loop)
    f = torch.as_tensor(factors, dtype=images.dtype, device=images.device).reshape(-1)
    if f.numel() == 1:
        f = f.expand(images.shape[0])
    require(f.numel() == images.shape[0], f"need one factor per image, got {f.numel()} for {images.shape[0]} images")
    return f.view(-1, 1, 1, 1)


def _luma_weights(like: torch.Tensor) -> torch.Tensor:
    key = (like.dtype, like.device)
    if key not in _LUMA_CACHE:
        _LUMA_CACHE[key] = torch.tensor(_LUMA, dtype=like.dtype, device=like.device)
    return _LUMA_CACHE[key]


_LUMA_CACHE: dict = {}


def _luma(images: torch.Tensor) -> torch.Tensor:
    """``B x 1 x H x W`` grayscale (ITU-R 601-2) of ``B x 3 x H x W`` float images."""
    n, _, height, width = images.shape
    weights = _luma_weights(images)
    # A (3,) @ (B, 3, HW) product reads the three planes once (a chain of adds reads them twice).
    return torch.matmul(weights, images.reshape(n, 3, height * width)).view(n, 1, height, width)


def adjust_brightness_(images: torch.Tensor, factors: torch.Tensor | float) -> torch.Tensor:
    """``x <- clamp(f * x, 0, 1)`` per sample (torchvision ``adjust_brightness``); returns ``images``."""
    return images.mul_(_per_sample(factors, images)).clamp_(0.0, 1.0)


def adjust_contrast_(images: torch.Tensor, factors: torch.Tensor | float) -> torch.Tensor:
    """``x <- clamp(f * x + (1 - f) * mean(gray(x)), 0, 1)`` per sample, the mean over the whole image.

    torchvision ``adjust_contrast`` on float images; for one channel the image is its own gray.
    Returns ``images``.
    """
    f = _per_sample(factors, images)
    means = images.mean(dim=(2, 3))  # B x C; mean of the luma = luma of the channel means
    if images.shape[1] == 3:
        mean = means @ _luma_weights(images)
    else:
        mean = means[:, 0]
    # mul_ + add_ rather than lerp/addcmul: those take a slow path with a broadcast B x 1 x 1 x 1 operand.
    return images.mul_(f).add_((1.0 - f) * mean.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)


def adjust_saturation_(images: torch.Tensor, factors: torch.Tensor | float) -> torch.Tensor:
    """``x <- clamp(f * x + (1 - f) * gray(x), 0, 1)`` per sample (torchvision ``adjust_saturation``).

    A no-op on one-channel images, like torchvision and PIL. Returns ``images``.
    """
    if images.shape[1] == 1:
        return images
    f = _per_sample(factors, images)
    return torch.lerp(_luma(images), images, f, out=images).clamp_(0.0, 1.0)


def adjust_hue_(images: torch.Tensor, factors: torch.Tensor | float) -> torch.Tensor:
    """Rotate the HSV hue of each sample by ``factor`` turns (in [-0.5, 0.5]); returns ``images``.

    Same result as torchvision ``adjust_hue`` (rgb -> hsv, ``h <- (h + f) mod 1``, hsv -> rgb)
    without building the HSV image: a hue rotation keeps each pixel's max ``V`` and min ``m``, so
    with the hue ``h`` in sextants ``[0, 6)`` and ``t_a = clamp(|h - a| - 1, 0, 1)`` the result is
    ``R = m + (V - m) t_3``, ``G = V - (V - m) t_2``, ``B = V - (V - m) t_4``. Only arithmetic,
    no ``torch.where`` (which is not vectorized on the CPU). A no-op on one-channel images.
    """
    if images.shape[1] == 1:
        return images
    shift = _per_sample(factors, images).view(-1, 1, 1) * 6.0
    r, g, b = images.unbind(1)
    # One allocation for the planes of scratch; every op below writes in place or with out=, per
    # plane (ops broadcasting a B x 1 x H x W plane over the channels are slow on the CPU).
    vmax, chroma, hue, scratch, is_max = images.new_empty(5, *r.shape).unbind(0)
    torch.amax(images, dim=1, out=vmax)
    torch.amin(images, dim=1, out=chroma)
    torch.sub(vmax, chroma, out=chroma)
    # Hue in sextants: 4 + (r - g) / c where blue is the max, replaced by 2 + (b - r) / c where
    # green is, then by (g - b) / c where red is. The formulas agree (mod 6) where two channels tie
    # for the max, so the order of the replacements does not matter.
    torch.sub(r, g, out=hue).add_(chroma, alpha=4.0)
    torch.sub(b, r, out=scratch).add_(chroma, alpha=2.0).sub_(hue)
    hue.addcmul_(torch.ge(g, vmax, out=is_max), scratch)
    torch.sub(g, b, out=scratch).sub_(hue)
    hue.addcmul_(torch.ge(r, vmax, out=is_max), scratch)
    # Gray pixels (chroma 0) get hue 0 and keep their value: c = 1e-30 changes nothing else.
    hue.div_(chroma.clamp_(min=1e-30)).add_(shift)
    hue.sub_(torch.mul(hue, 1.0 / 6.0, out=scratch).floor_(), alpha=6.0)  # mod 6; remainder() is 10x slower
    # With t_a = clamp(|h - a|, 1, 2): R = (V - 2c) + c t_3, G = (V + c) - c t_2, B = (V + c) - c t_4,
    # i.e. R = m + c clamp(|h - 3| - 1, 0, 1) etc. Written over the input channels.
    for centre, channel in ((3.0, r), (2.0, g), (4.0, b)):
        torch.sub(hue, centre, out=channel)
    images.abs_().clamp_(1.0, 2.0)
    low = torch.add(vmax, chroma, alpha=-2.0, out=scratch)
    high = torch.add(vmax, chroma, out=is_max)
    torch.addcmul(low, chroma, r, out=r)
    torch.addcmul(high, chroma, g, value=-1.0, out=g)
    torch.addcmul(high, chroma, b, value=-1.0, out=b)
    return images


def rgb_to_grayscale_(images: torch.Tensor) -> torch.Tensor:
    """Replace every channel by the ITU-R 601-2 luma (torchvision ``rgb_to_grayscale``, 3 outputs).

    A no-op on one-channel images. Returns ``images``.
    """
    if images.shape[1] == 1:
        return images
    return images.copy_(_luma(images).expand_as(images))


def solarize_(images: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """``x <- 1 - x`` where ``x >= threshold`` (torchvision ``solarize`` on floats); returns ``images``."""
    return images.copy_(torch.where(images >= threshold, 1.0 - images, images))


# ----------------------------------------------------------------------------------------------
# Gaussian blur
# ----------------------------------------------------------------------------------------------


def blur_kernel_size(image_size: int, fraction: float = 0.1) -> int:
    """SimCLR's blur kernel side: ``2 * (int(fraction * image_size) // 2) + 1`` (23 at 224, 3 at 32)."""
    return 2 * (int(fraction * image_size) // 2) + 1


def _gaussian_taps(sigma: torch.Tensor, kernel_size: int, dtype: torch.dtype) -> torch.Tensor:
    """``B x kernel_size`` normalized Gaussian taps (torchvision's), tiny taps zeroed."""
    radius = kernel_size // 2
    x = torch.arange(-radius, radius + 1, device=sigma.device, dtype=torch.float64)
    taps = torch.exp(-0.5 * (x[None, :] / sigma.to(torch.float64)[:, None]) ** 2)
    taps = taps / taps.sum(dim=1, keepdim=True)
    return torch.where(taps < _TAP_FLOOR, torch.zeros_like(taps), taps).to(dtype)


def _reflect_toeplitz(taps: torch.Tensor, length: int) -> torch.Tensor:
    """``B x L x L`` matrices ``M`` with ``(x @ M)[q] = sum_d taps[d] x[reflect(q + d - r)]``.

    The 1-D convolution with reflect padding (mirror without repeating the edge, like
    ``F.pad(mode="reflect")``) as one matrix per sample: the padding is folded into the edge rows,
    so the image is never copied into a padded buffer.
    """
    n, k = taps.shape
    radius = k // 2
    dst = torch.arange(length, device=taps.device)
    src = dst[None, :] + torch.arange(k, device=taps.device)[:, None] - radius  # k x L
    src = src.abs()
    src = torch.minimum(src, 2 * (length - 1) - src)
    matrix = taps.new_zeros(n, length * length)
    matrix.index_add_(1, (src * length + dst).reshape(-1), taps[:, :, None].expand(n, k, length).reshape(n, -1))
    return matrix.view(n, length, length)


def gaussian_blur(
    images: torch.Tensor, sigma: torch.Tensor | float, kernel_size: int, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Separable Gaussian blur of float ``B x C x H x W`` images with one ``sigma`` per sample.

    Matches torchvision ``gaussian_blur(image, [k, k], [s, s])``: taps ``exp(-x^2 / 2 s^2)`` for
    ``x`` in ``-r..r`` (``k = 2r + 1``, odd), normalized to sum 1, reflect padding. Each 1-D pass
    is a few batched matmuls, one per block of 32 output columns (rows) against the band of the
    per-sample convolution matrix that block needs (``32 + 2r`` taps per output instead of ``W``),
    which runs at matrix-multiply speed where a grouped convolution does not. Writes into ``out``
    (a contiguous tensor of the same shape, possibly ``images`` itself) or a new tensor, and
    returns it.
    """
    require(kernel_size % 2 == 1 and kernel_size > 0, f"blur kernel size must be odd and positive, got {kernel_size}")
    require(images.dim() == 4 and images.is_floating_point(), "gaussian_blur needs float B x C x H x W images")
    n, c, height, width = images.shape
    radius = kernel_size // 2
    require(radius < min(height, width), f"blur kernel {kernel_size} too large for {height}x{width} images")
    images = images.contiguous()
    if out is None:
        out = torch.empty_like(images)
    require(out.shape == images.shape and out.is_contiguous(),
            "gaussian_blur out must be a contiguous tensor shaped like images")
    if radius == 0 or n == 0:
        return out.copy_(images)
    sig = torch.as_tensor(sigma, dtype=torch.float64, device=images.device).reshape(-1).expand(n)
    taps = _gaussian_taps(sig, kernel_size, images.dtype)
    along_w = _reflect_toeplitz(taps, width)
    along_h = along_w if height == width else _reflect_toeplitz(taps, height)

    rows = torch.empty_like(images)  # horizontal pass: (C*H rows) x W per sample
    source, target = images.view(n, c * height, width), rows.view(n, c * height, width)
    for q0 in range(0, width, _BLUR_BLOCK):
        q1 = min(width, q0 + _BLUR_BLOCK)
        lo, hi = max(0, q0 - radius), min(width, q1 + radius)
        torch.bmm(source[:, :, lo:hi], along_w[:, lo:hi, q0:q1], out=target[:, :, q0:q1])
    for p0 in range(0, height, _BLUR_BLOCK):  # vertical pass: band^T @ rows, per channel
        p1 = min(height, p0 + _BLUR_BLOCK)
        lo, hi = max(0, p0 - radius), min(height, p1 + radius)
        band = along_h[:, lo:hi, p0:p1].transpose(1, 2)[:, None].expand(n, c, p1 - p0, hi - lo)
        torch.bmm(band.reshape(n * c, p1 - p0, hi - lo), rows[:, :, lo:hi].view(n * c, hi - lo, width),
                  out=out[:, :, p0:p1].view(n * c, p1 - p0, width))
    return out


# ----------------------------------------------------------------------------------------------
# The augmentation
# ----------------------------------------------------------------------------------------------


@dataclass
class AugmentationParams:
    """Every random choice of one batch, one row per sample (CPU tensors).

    ``boxes`` (B x 4 int64: top, left, height, width), ``flip``/``jitter``/``grayscale``/``blur``/
    ``solarize`` (B bool), ``angle`` (B float, rotation in radians), ``factors`` (B x 4 float:
    brightness, contrast, saturation multipliers and hue shift), ``order`` (B x 4 int64, a
    permutation of 0..3 = the order the four jitter ops are applied in), ``sigma`` (B float, the blur's standard deviation in pixels).
    """

    boxes: torch.Tensor
    flip: torch.Tensor
    jitter: torch.Tensor
    factors: torch.Tensor
    order: torch.Tensor
    grayscale: torch.Tensor
    blur: torch.Tensor
    sigma: torch.Tensor
    solarize: torch.Tensor
    angle: torch.Tensor


_JITTER_OPS = (adjust_brightness_, adjust_contrast_, adjust_saturation_, adjust_hue_)


class SimCLRAugmentation(torch.nn.Module):
    """SimCLR's view augmentation for a batch, every random choice drawn per sample.

    The pipeline and defaults are SimCLR's (Chen et al. 2020, Appendix A, colour strength s=1):

    1. random resized crop, area fraction ``U(0.08, 1)``, aspect ratio ``U_log(3/4, 4/3)``, resized
       to ``image_size`` (bilinear), and horizontal flip with probability 0.5;
    2. with probability 0.8, colour jitter: brightness, contrast, saturation factors
       ``U(1 - 0.8, 1 + 0.8)`` and hue shift ``U(-0.2, 0.2)``, applied in a random order drawn per
       sample (torchvision ``ColorJitter`` semantics, clamped to [0, 1] after each op);
    3. random grayscale with probability 0.2;
    4. Gaussian blur with probability 0.5, sigma ``U(0.1, 2.0)``, kernel side 10% of
       ``image_size`` (rounded to odd, :func:`blur_kernel_size`). SimCLR omits the blur on CIFAR-10
       (Appendix B.9): pass ``blur_prob=0`` for 32 px images;
    5. optional solarization (``solarize_prob``; 0 in SimCLR, 0.2 on one view in BYOL);
    6. optional rotation of the crop window by ``U(-rotation, rotation)`` degrees about its centre
       (0 in SimCLR; small angles suit digits and documents, where flips are wrong), part of the
       same single resampling as the crop;
    7. normalization ``(x - mean) / std`` per channel (both default to 0.5, giving [-1, 1]).

    ``forward(images, generator=None)``: ``images`` is a ``B x C x H x W`` uint8 tensor (C = 1 or
    3, any H and W; floating images are accepted and read as [0, 1]) on any device; returns float32
    ``B x C x image_size x image_size`` on the same device. On one-channel images the jitter is
    brightness and contrast only (saturation, hue and grayscale are no-ops). ``generator`` makes
    the result reproducible; see the module docstring for where parameters are drawn.

    Deviations from torchvision/lightly, documented rather than hidden: the resize does not
    antialias (as SimCLR's TF code), and jitter/blur run on floats (PIL rounds to uint8 after
    every step).
    """

    def __init__(
        self,
        image_size: int,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip_prob: float = 0.5,
        jitter_prob: float = 0.8,
        brightness: float = 0.8,
        contrast: float = 0.8,
        saturation: float = 0.8,
        hue: float = 0.2,
        grayscale_prob: float = 0.2,
        blur_prob: float = 0.5,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        blur_kernel_fraction: float = 0.1,
        solarize_prob: float = 0.0,
        rotation: float = 0.0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        require(image_size > 0, f"image_size must be positive, got {image_size}")
        require(0 < crop_scale[0] <= crop_scale[1], f"crop_scale must satisfy 0 < min <= max, got {crop_scale}")
        require(0 < crop_ratio[0] <= crop_ratio[1], f"crop_ratio must satisfy 0 < min <= max, got {crop_ratio}")
        for name, p in (("flip_prob", flip_prob), ("jitter_prob", jitter_prob), ("grayscale_prob", grayscale_prob),
                        ("blur_prob", blur_prob), ("solarize_prob", solarize_prob)):
            require(0.0 <= p <= 1.0, f"{name} must be in [0, 1], got {p}")
        for name, s in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            require(s >= 0, f"{name} must be >= 0, got {s}")
        require(0.0 <= hue <= 0.5, f"hue must be in [0, 0.5], got {hue}")
        require(0.0 <= rotation <= 180.0, f"rotation must be in [0, 180] degrees, got {rotation}")
        require(0 < blur_sigma[0] <= blur_sigma[1], f"blur_sigma must satisfy 0 < min <= max, got {blur_sigma}")
        self.image_size = int(image_size)
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
        self.crop_ratio = (float(crop_ratio[0]), float(crop_ratio[1]))
        self.flip_prob = flip_prob
        self.jitter_prob = jitter_prob
        self.jitter_strength = (brightness, contrast, saturation, hue)
        self.grayscale_prob = grayscale_prob
        self.blur_prob = blur_prob
        self.blur_sigma = (float(blur_sigma[0]), float(blur_sigma[1]))
        self.blur_kernel_size = blur_kernel_size(self.image_size, blur_kernel_fraction)
        self.solarize_prob = solarize_prob
        self.rotation = float(rotation)
        self.mean = tuple(mean) if mean is not None else None
        self.std = tuple(std) if std is not None else None
        if self.std is not None:
            require(all(s > 0 for s in self.std), f"std must be positive, got {self.std}")

    def extra_repr(self) -> str:
        b, c, s, h = self.jitter_strength
        return (f"image_size={self.image_size}, crop_scale={self.crop_scale}, flip_prob={self.flip_prob}, "
                f"jitter_prob={self.jitter_prob}, jitter=({b}, {c}, {s}, {h}), grayscale_prob={self.grayscale_prob}, "
                f"blur_prob={self.blur_prob}, blur_kernel_size={self.blur_kernel_size}, "
                f"solarize_prob={self.solarize_prob}, rotation={self.rotation}")

    def sample_params(
        self, n: int, height: int, width: int, generator: torch.Generator | None = None
    ) -> AugmentationParams:
        """Draw every random choice for ``n`` images of ``height x width`` in one call."""
        device = generator.device if generator is not None else torch.device("cpu")
        u = torch.rand(n, 36, generator=generator, device=device, dtype=torch.float64).cpu()
        boxes = sample_resized_crop_boxes(n, height, width, self.crop_scale, self.crop_ratio, uniforms=u[:, :22])
        lo = torch.tensor([max(0.0, 1.0 - s) for s in self.jitter_strength[:3]] + [-self.jitter_strength[3]],
                          dtype=torch.float64)
        hi = torch.tensor([1.0 + s for s in self.jitter_strength[:3]] + [self.jitter_strength[3]], dtype=torch.float64)
        factors = lo + (hi - lo) * u[:, 22:26]
        sigma = self.blur_sigma[0] + (self.blur_sigma[1] - self.blur_sigma[0]) * u[:, 26]
        order = u[:, 27:31].argsort(dim=1)
        angle = torch.zeros(n)
        if self.rotation > 0:  # a separate draw: the other parameters stay those of rotation=0
            v = torch.rand(n, generator=generator, device=device, dtype=torch.float64).cpu()
            angle = (math.radians(self.rotation) * (2 * v - 1)).to(torch.float32)
        return AugmentationParams(
            boxes=boxes,
            flip=u[:, 31] < self.flip_prob,
            jitter=u[:, 32] < self.jitter_prob,
            factors=factors.to(torch.float32),
            order=order,
            grayscale=u[:, 33] < self.grayscale_prob,
            blur=u[:, 34] < self.blur_prob,
            sigma=sigma.to(torch.float32),
            solarize=u[:, 35] < self.solarize_prob,
            angle=angle,
        )

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_images(images)
        n, c, height, width = images.shape
        device, size = images.device, self.image_size
        if n == 0:
            return torch.empty(0, c, size, size, device=device)
        chunk = n if device.type != "cpu" else max(1, _CPU_CHUNK_ELEMENTS // (c * size**2))
        plan = self._plan(self.sample_params(n, height, width, generator), chunk, height, width, device)
        scale, shift = _normalization(self.mean, self.std, c, device)
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
            x = _resample(source[:m], plan.gx[start:stop], plan.gy[start:stop], grid[:m], angle)
            if value_scale != 1.0:
                x.mul_(value_scale)
            self._colour_and_blur(x, plan, index, start)
            x.mul_(scale).add_(shift)  # (x - mean) / std
            torch.index_select(x.view(m, -1), 0, plan.inverse[start:stop] - start, out=out[start:stop].view(m, -1))
        return out

    def _plan(self, params: AugmentationParams, chunk: int, height: int, width: int, device) -> _Plan:
        """Sort every chunk by blur, grayscale and jitter order, so that the samples sharing an op
        are contiguous and each op runs in place on a slice; find those runs once for the batch."""
        n = params.flip.shape[0]
        chunk_id = torch.arange(n) // chunk
        jitter_code = self._jitter_code(params)
        key = params.blur.long() * 1024 + params.grayscale.long() * 512 + jitter_code
        order = torch.argsort(chunk_id * 2048 + key, stable=True)
        p = _take(params, order)
        jitter_code = jitter_code[order]
        order = order.to(device)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(n, device=device)
        gx, gy = _crop_coordinates(p.boxes, self.image_size, height, width, p.flip if self.flip_prob > 0 else None)
        return _Plan(
            order=order,
            inverse=inverse,
            gx=gx.to(device, torch.float32),
            gy=gy.to(device, torch.float32),
            factors=p.factors.to(device).view(n, 4, 1, 1, 1),
            sigma=p.sigma.to(device),
            solarize=p.solarize,
            angle=p.angle.to(device) if self.rotation > 0 else None,
            jitter_runs=_runs_per_chunk(jitter_code, chunk),
            gray_runs=_runs_per_chunk(p.grayscale.long(), chunk),
            blur_runs=_runs_per_chunk(p.blur.long(), chunk),
        )

    def _colour_and_blur(self, x: torch.Tensor, plan: _Plan, index: int, start: int) -> None:
        """Jitter, grayscale, blur and solarize the sorted chunk ``x`` (float, [0, 1]) in place."""
        active = [i for i, s in enumerate(self.jitter_strength) if s > 0] if self.jitter_prob > 0 else []
        for code, a, b in plan.jitter_runs[index]:
            if code < 256 and active:
                factors = plan.factors[start + a:start + b]
                for o in (code // 64, code // 16 % 4, code // 4 % 4, code % 4):  # the order's base-4 digits
                    if o in active:
                        _JITTER_OPS[o](x[a:b], factors[:, o])
        if x.shape[1] == 3 and self.grayscale_prob > 0:
            for gray, a, b in plan.gray_runs[index]:
                if gray:
                    rgb_to_grayscale_(x[a:b])
        if self.blur_prob > 0 and self.blur_kernel_size > 1:
            for blur, a, b in plan.blur_runs[index]:
                if blur:
                    gaussian_blur(x[a:b], plan.sigma[start + a:start + b], self.blur_kernel_size, out=x[a:b])
        if self.solarize_prob > 0:
            rows = plan.solarize[start:start + x.shape[0]].nonzero().squeeze(1)
            if rows.numel():
                idx = rows.to(x.device)
                x.index_copy_(0, idx, solarize_(x.index_select(0, idx)))

    def _jitter_code(self, p: AugmentationParams) -> torch.Tensor:
        """Jitter order as one integer (base 4 digits of the permutation), 256 for no jitter."""
        code = (p.order * torch.tensor([64, 16, 4, 1])).sum(dim=1)
        return torch.where(p.jitter, code, torch.full_like(code, 256))


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
    return AugmentationParams(**{k: v[index] for k, v in vars(p).items()})


def _check_images(images: torch.Tensor) -> None:
    require(isinstance(images, torch.Tensor) and images.dim() == 4,
            f"augmentation needs a B x C x H x W tensor, got {getattr(images, 'shape', type(images))}")
    require(images.shape[1] in (1, 3), f"augmentation needs 1 or 3 channels, got {images.shape[1]}")
    require(images.dtype == torch.uint8 or images.is_floating_point(),
            f"augmentation needs uint8 (or float in [0, 1]) images, got {images.dtype}")


def _norm_tensors(mean, std, channels: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``1 x C x 1 x 1`` mean and std (0.5 when None; one value is broadcast to every channel)."""
    values = []
    for name, v in (("mean", mean), ("std", std)):
        v = (0.5,) if v is None else tuple(v)
        require(len(v) in (1, channels), f"{name} needs 1 or {channels} values, got {len(v)}")
        values.append(torch.tensor(v, dtype=torch.float32, device=device).expand(channels).reshape(1, channels, 1, 1))
    return values[0], values[1]


def _normalization(mean, std, channels: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(1 / std, -mean / std)``: normalizing in place is then ``x.mul_(scale).add_(shift)``."""
    m, s = _norm_tensors(mean, std, channels, device)
    return 1.0 / s, -m / s


class EvalTransform(torch.nn.Module):
    """Deterministic transform for validation and probe images: resize (if needed) and normalize.

    ``forward(images)``: uint8 (or float in [0, 1]) ``B x C x H x W``; returns float32
    ``B x C x image_size x image_size``, ``(x / 255 - mean) / std``. Images whose side differs from
    ``image_size`` are resized to ``image_size x image_size`` (bilinear, antialiased), the same
    square geometry the augmentation's crops are resized to. ``mean``/``std`` default to 0.5.
    """

    def __init__(self, image_size: int, mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__()
        require(image_size > 0, f"image_size must be positive, got {image_size}")
        self.image_size = int(image_size)
        self.mean = tuple(mean) if mean is not None else None
        self.std = tuple(std) if std is not None else None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _check_images(images)
        x = images.to(torch.float32)
        if not images.is_floating_point():
            x = x.mul_(1.0 / 255.0)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                              align_corners=False, antialias=True).clamp_(0.0, 1.0)
        mean, std = _norm_tensors(self.mean, self.std, x.shape[1], x.device)
        return (x - mean) / std


def two_views(
    augment: torch.nn.Module, images: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent augmentations of the same batch (the positive pairs of SimCLR).

    ``augment(images, generator)`` is called twice; the generator advances between the calls, so
    the views differ and the pair is reproducible from the generator's seed.
    """
    return augment(images, generator), augment(images, generator)
