"""Small image folders written by the tests."""
from pathlib import Path

import numpy as np
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
