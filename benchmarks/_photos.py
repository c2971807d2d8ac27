"""Photo-like image files for the data benchmarks (not part of the package).

Decoders' cost depends on the content (entropy coding, how much detail survives quantization), so
the data benchmarks decode images with the structure of photos rather than random pixels: smooth
shading, a few soft-edged objects of one colour, fine texture and sensor-like noise. At JPEG quality
90 they come out at about 2.4 (400 x 300) to 3.2 (96 x 96) bits per pixel (ImageNet's JPEGs: about 3-6).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def photo(rng: np.random.Generator, width: int, height: int, noise: np.ndarray | None = None) -> np.ndarray:
    """One photo-like uint8 ``height x width x 3`` array. The shapes are drawn at a quarter of the
    resolution and upsampled (they are smooth anyway); ``noise``: a float32 texture at least as large
    as the image, cropped at a random place (saves drawing one per image)."""
    w, h = max(width // 4, 8), max(height // 4, 8)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    image = np.zeros((h, w, 3), np.float32)
    for _ in range(6):  # shading: low-frequency waves
        fx, fy = rng.uniform(-3, 3, 2) * 2 * np.pi / max(w, h)
        image += rng.uniform(20, 50, 3).astype(np.float32) * np.sin(fx * x + fy * y + rng.uniform(0, 6.3))[..., None]
    for _ in range(8):  # objects: soft-edged ellipses of one colour
        cx, cy, rx, ry = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(w / 20, w / 4), rng.uniform(h / 20, h / 4)
        mask = np.clip(1.5 - np.hypot((x - cx) / rx, (y - cy) / ry), 0, 1)[..., None]
        image = image * (1 - mask) + mask * (rng.uniform(0, 255, 3).astype(np.float32) - 128)
    small = Image.fromarray(np.clip(128 + image, 0, 255).astype(np.uint8))
    full = np.asarray(small.resize((width, height), Image.BICUBIC), dtype=np.float32)
    if noise is None:
        noise = noise_texture(np.random.default_rng(int(rng.integers(2**31))), width, height)
    top, left = rng.integers(0, noise.shape[0] - height + 1), rng.integers(0, noise.shape[1] - width + 1)
    return np.clip(full + noise[top : top + height, left : left + width], 0, 255).astype(np.uint8)


def noise_texture(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Fine texture (2-pixel grains) plus per-pixel noise, float32 ``2 height x 2 width x 3``."""
    grains = rng.normal(0, 8, (height + 1, width + 1, 3)).astype(np.float32).repeat(2, 0).repeat(2, 1)
    return grains[: 2 * height, : 2 * width] + rng.normal(0, 3, (2 * height, 2 * width, 3)).astype(np.float32)


def write_photos(
    folder: Path, count: int, width: int, height: int, fmt: str = "JPEG", classes: int = 1, seed: int = 0, **options
) -> list[Path]:
    """``count`` photo-like files ``folder/<class>/<i>.<ext>`` (an ImageFolder with ``classes`` classes),
    saved by PIL in ``fmt`` (``options``: e.g. ``quality=90``; JPEG defaults to quality 90)."""
    if fmt == "JPEG":
        options.setdefault("quality", 90)
    rng = np.random.default_rng(seed)
    noise = noise_texture(rng, width, height)
    extension = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}.get(fmt, fmt.lower())
    paths = []
    for i in range(count):
        directory = folder / f"class{i % classes}"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{i:05d}.{extension}"
        Image.fromarray(photo(rng, width, height, noise)).save(path, fmt, **options)
        paths.append(path)
    return paths
