"""Batched, per-sample image kernels of the SimCLR augmentation: how fast, never what is computed.

Each function applies one torchvision kernel to a ``B x C x H x W`` batch with one parameter per
sample and matches the torchvision kernel of the same name on one image (``tests/data/
test_augment_kernels.py`` checks each against torchvision); what the augmentation draws and in which
order it applies these kernels is the recipe in :mod:`lightning_transfer.data.augment`.

- :func:`sample_resized_crop_boxes`: ``RandomResizedCrop.get_params`` for ``n`` samples at once.
- :func:`resized_crop`: crop + bilinear resize (+ optional horizontal flip) in one ``grid_sample``
  (:func:`crop_coordinates` and :func:`resample`, the two halves, also rotate the sampling grid).
- :func:`adjust_brightness_`, :func:`adjust_contrast_`, :func:`adjust_saturation_`,
  :func:`adjust_hue_`, :func:`rgb_to_grayscale_`, :func:`solarize_`: in-place colour ops on float
  images in [0, 1] with one factor per sample.
- :func:`gaussian_blur`: separable Gaussian blur with one sigma per sample.

Speed notes. The CPU is the case that matters (DataLoader workers), and there the cost is memory
passes and per-op overhead, so:

- the hue rotation never builds an HSV image and uses no ``torch.where`` (not vectorized on CPU);
- the blur is a few matrix multiplies with a banded, reflect-folded convolution matrix per sample;
  Gaussian taps below 1e-10 are zeroed so that it never computes with (slow) denormal floats.

How a batch is cut into chunks and sorted so that each kernel runs in place on a slice is
:mod:`lightning_transfer.data._augment_plan`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lightning_transfer.errors import require

# ITU-R 601-2 luma weights, the ones torchvision and PIL use for grayscale.
_LUMA = (0.2989, 0.587, 0.114)
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
    float64) replaces the random draw; :class:`~lightning_transfer.data.augment.SimCLRAugmentation`
    uses it to draw all of a batch's parameters in one call.
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
        fb_w, fb_h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fb_h, fb_w = height, round(height * ratio[1])
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
    gx, gy = crop_coordinates(boxes, size, height, width, flip)
    out = resample(images.to(dtype), gx.to(images.device, dtype), gy.to(images.device, dtype))
    if not images.is_floating_point():
        out.mul_(1.0 / 255.0)  # on the (smaller) output; torch.mul(uint8, float) is 10x slower than .float()
    return out


def crop_coordinates(
    boxes: torch.Tensor, size: int, height: int, width: int, flip: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``B x size`` normalized x (flipped where asked) and y sampling coordinates of the boxes."""
    gy = _source_coordinates(boxes[:, 0], boxes[:, 2], size, height)
    gx = _source_coordinates(boxes[:, 1], boxes[:, 3], size, width)
    if flip is not None:
        gx = torch.where(flip.to(gx.device)[:, None], gx.flip(1), gx)
    return gx, gy


def resample(
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
    if (
        isinstance(factors, torch.Tensor)
        and factors.dim() == 4
        and factors.dtype == images.dtype
        and factors.shape[0] == images.shape[0]
    ):
        return factors  # already shaped by the caller (the batch plan's hot loop)
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
    require(
        out.shape == images.shape and out.is_contiguous(),
        "gaussian_blur out must be a contiguous tensor shaped like images",
    )
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
        torch.bmm(
            band.reshape(n * c, p1 - p0, hi - lo),
            rows[:, :, lo:hi].view(n * c, hi - lo, width),
            out=out[:, :, p0:p1].view(n * c, p1 - p0, width),
        )
    return out
