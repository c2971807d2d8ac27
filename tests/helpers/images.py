"""Small image folders written by the tests."""
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def write_image_folder(root: Path, classes=("cat", "dog"), per_class: int = 6, size: int = 20, seed: int = 0) -> Path:
    """``root/<class>/<i>.png`` RGB images whose mean brightness depends on the class."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 128, size=(size, size + 4, 3), dtype=np.uint8) + 100 * c
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def uint8_images(n: int, channels: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Random uint8 images with some gray pixels and channel ties (the hue formula's edge cases)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, height, width), generator=g, dtype=torch.uint8)
    if channels == 3:
        images[:, :, :2] = images[:, :1, :2]  # gray rows: all channels equal
        images[:, 1, 2:4] = images[:, 0, 2:4]  # red == green
        images[:, 2, 4:6] = images[:, 1, 4:6]  # green == blue
    return images


def float_images(n: int, channels: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """:func:`uint8_images` as floats in [0, 1]."""
    return uint8_images(n, channels, height, width, seed).float() / 255
