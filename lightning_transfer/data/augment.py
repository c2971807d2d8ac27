"""SimCLR's view augmentation, the recipe: what is drawn for each image, and in which order it is applied.

Check it against the paper: Chen et al. 2020, "A Simple Framework for Contrastive Learning of
Visual Representations", Appendix A (data augmentation details). The defaults of
:class:`SimCLRAugmentation` are the paper's values for ImageNet at colour strength ``s = 1``.

The recipe runs on a whole ``B x C x H x W`` uint8 batch, yet every random choice (crop box, flip,
jitter factors and their order, grayscale, blur sigma) is drawn per sample, unlike
``torchvision.transforms.v2`` on a batch tensor, which draws once for the whole batch.

Randomness: all parameters of a batch are drawn up front by :meth:`SimCLRAugmentation.sample_params`
from ``generator`` (on the generator's device; torch's default CPU generator when ``generator`` is
None), then moved to the images' device. A CPU generator therefore gives the same augmentation
whether the images live on the CPU or on a GPU; a CUDA generator draws on its GPU (one small
device-to-host copy per batch).

How fast it runs lives apart and changes no number: the batched per-sample kernels (each equal to
torchvision's kernel of the same name on one image) are :mod:`lightning_transfer.data._augment_kernels`,
the chunked, in-place execution of a batch is :mod:`lightning_transfer.data._augment_plan`, and
``benchmarks/augmentation.py`` measures both against lightly's per-image PIL pipeline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lightning_transfer.data._augment_kernels import sample_resized_crop_boxes
from lightning_transfer.data._augment_plan import Steps, augment_batch, to_device
from lightning_transfer.errors import require

__all__ = ["AugmentationParams", "EvalTransform", "SimCLRAugmentation", "blur_kernel_size", "two_views"]


@dataclass
class AugmentationParams:
    """Every random choice of one batch, one row per sample (CPU tensors).

    ``boxes`` (B x 4 int64: top, left, height, width), ``flip``/``jitter``/``grayscale``/``blur``/
    ``solarize`` (B bool), ``angle`` (B float, rotation in radians), ``factors`` (B x 4 float:
    brightness, contrast, saturation multipliers and hue shift), ``order`` (B x 4 int64, a
    permutation of 0..3 = the order the four jitter ops are applied in), ``sigma`` (B float, the
    blur's standard deviation in pixels).
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


def blur_kernel_size(image_size: int, fraction: float = 0.1) -> int:
    """SimCLR's blur kernel side: ``2 * (int(fraction * image_size) // 2) + 1`` (23 at 224, 3 at 32).

    The paper: "the kernel size is set to be 10% of the image height/width"; odd, so it has a centre."""
    return 2 * (int(fraction * image_size) // 2) + 1


class SimCLRAugmentation(torch.nn.Module):
    """SimCLR's view augmentation for a batch, every random choice drawn per sample.

    The steps, in this order, with the paper's values as defaults (Appendix A, colour strength s=1):

    1. random resized crop (``crop_scale=(0.08, 1)`` of the area, aspect ratio
       ``crop_ratio=(3/4, 4/3)`` drawn log-uniformly), resized to ``image_size`` (bilinear),
       "always followed by a random horizontal flip with 50% probability" (``flip_prob=0.5``);
    2. colour jitter with probability ``jitter_prob=0.8``: brightness, contrast and saturation
       factors ``U(1 - 0.8s, 1 + 0.8s)`` (``brightness=contrast=saturation=0.8``) and a hue shift
       ``U(-0.2s, 0.2s)`` (``hue=0.2``), applied in a random order drawn per sample (the paper's
       ``ColorJitter``, torchvision semantics: clamped to [0, 1] after each op). For a strength
       ``s`` other than 1, scale the four values;
    3. colour dropping: grayscale with probability ``grayscale_prob=0.2``;
    4. Gaussian blur with probability ``blur_prob=0.5``, sigma ``U(0.1, 2.0)`` (``blur_sigma``),
       kernel side ``blur_kernel_fraction=0.1`` of ``image_size`` (:func:`blur_kernel_size`).
       SimCLR omits the blur on CIFAR-10 (Appendix B.9): pass ``blur_prob=0`` for 32 px images;
    5. not in SimCLR (off by default): solarization with probability ``solarize_prob`` (0.2 on one
       view in BYOL), and a rotation of the crop window by ``U(-rotation, rotation)`` degrees about
       its centre (small angles suit digits and documents, where flips are wrong), part of the
       same single resampling as the crop;
    6. normalization ``(x - mean) / std`` per channel (both default to 0.5, giving [-1, 1]).

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
        for name, p in (
            ("flip_prob", flip_prob),
            ("jitter_prob", jitter_prob),
            ("grayscale_prob", grayscale_prob),
            ("blur_prob", blur_prob),
            ("solarize_prob", solarize_prob),
        ):
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
        return (
            f"image_size={self.image_size}, crop_scale={self.crop_scale}, flip_prob={self.flip_prob}, "
            f"jitter_prob={self.jitter_prob}, jitter=({b}, {c}, {s}, {h}), grayscale_prob={self.grayscale_prob}, "
            f"blur_prob={self.blur_prob}, blur_kernel_size={self.blur_kernel_size}, "
            f"solarize_prob={self.solarize_prob}, rotation={self.rotation}"
        )

    def sample_params(
        self, n: int, height: int, width: int, generator: torch.Generator | None = None
    ) -> AugmentationParams:
        """Draw every random choice for ``n`` images of ``height x width`` in one call: 36 uniforms
        per image (22 for the crop box, then jitter factors, blur sigma, jitter order, and the five
        coin flips), plus one for the rotation angle when it is on."""
        device = generator.device if generator is not None else torch.device("cpu")
        u = torch.rand(n, 36, generator=generator, device=device, dtype=torch.float64).cpu()
        boxes = sample_resized_crop_boxes(n, height, width, self.crop_scale, self.crop_ratio, uniforms=u[:, :22])
        lo = torch.tensor(
            [max(0.0, 1.0 - s) for s in self.jitter_strength[:3]] + [-self.jitter_strength[3]], dtype=torch.float64
        )
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
        if n == 0:
            return torch.empty(0, c, self.image_size, self.image_size, device=images.device)
        mean, std = _mean_and_std(self.mean, self.std, c, images.device)
        return augment_batch(images, self.sample_params(n, height, width, generator), self._steps(), mean, std)

    def _steps(self) -> Steps:
        """The steps of the docstring's list that can change an image with these settings."""
        jitter_ops = tuple(i for i, s in enumerate(self.jitter_strength) if s > 0) if self.jitter_prob > 0 else ()
        return Steps(
            image_size=self.image_size,
            flip=self.flip_prob > 0,
            rotate=self.rotation > 0,
            jitter_ops=jitter_ops,
            grayscale=self.grayscale_prob > 0,
            blur_kernel_size=self.blur_kernel_size if self.blur_prob > 0 else 1,
            solarize=self.solarize_prob > 0,
        )


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
            x = F.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False, antialias=True
            ).clamp_(0.0, 1.0)
        mean, std = _mean_and_std(self.mean, self.std, x.shape[1], x.device)
        return (x - mean) / std


def two_views(
    augment: torch.nn.Module, images: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent augmentations of the same batch (the positive pairs of SimCLR).

    ``augment(images, generator)`` is called twice; the generator advances between the calls, so
    the views differ and the pair is reproducible from the generator's seed.
    """
    return augment(images, generator), augment(images, generator)


def _mean_and_std(mean, std, channels: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``1 x C x 1 x 1`` mean and std (0.5 when None; one value is broadcast to every channel)."""
    values = []
    for name, v in (("mean", mean), ("std", std)):
        v = (0.5,) if v is None else tuple(v)
        require(len(v) in (1, channels), f"{name} needs 1 or {channels} values, got {len(v)}")
        values.append(
            to_device(torch.tensor(v, dtype=torch.float32), device).expand(channels).reshape(1, channels, 1, 1)
        )
    return values[0], values[1]


def _check_images(images: torch.Tensor) -> None:
    require(
        isinstance(images, torch.Tensor) and images.dim() == 4,
        f"augmentation needs a B x C x H x W tensor, got {getattr(images, 'shape', type(images))}",
    )
    require(images.shape[1] in (1, 3), f"augmentation needs 1 or 3 channels, got {images.shape[1]}")
    require(
        images.dtype == torch.uint8 or images.is_floating_point(),
        f"augmentation needs uint8 (or float in [0, 1]) images, got {images.dtype}",
    )
