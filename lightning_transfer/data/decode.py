"""Image decoding off PIL: encoded bytes -> uint8 ``C x size x size``.

:func:`decode_encoded_image` decodes one image with torchvision's native decoders
(``torchvision.io.decode_image``: libjpeg-turbo, libpng, GIF, WebP), converts it to RGB or grayscale in
the decoder, scales 16-bit PNGs to 8 bits, resizes the shorter side to ``size`` and center-crops a
square (:func:`fit_square`). Formats those decoders do not read (BMP, TIFF, ...) fall back to PIL,
so every file the folder source accepted before still decodes. Unreadable data raises
``ValueError``/``OSError``/``RuntimeError``; the datasets turn that into a skipped sample.

Both the folder source (files read in the DataLoader workers) and the litdata source (encoded bytes
from the shards) decode here.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch

# The magic numbers of the formats torchvision decodes natively.
_NATIVE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"RIFF")


def fit_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the shorter side of a ``C x H x W`` image to ``size`` (antialiased) and center-crop
    ``size x size``."""
    from torchvision.transforms.v2 import functional as TF

    return TF.center_crop(TF.resize(image, size, antialias=True), [size, size])


def _is_native(data: bytes | torch.Tensor) -> bool:
    head = bytes(data[:8].tolist()) if isinstance(data, torch.Tensor) else bytes(data[:8])
    return head.startswith(_NATIVE_SIGNATURES)


def _decode_native(data: torch.Tensor, channels: int) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2 import functional as TF

    mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
    with warnings.catch_warnings():  # torchvision 0.29+ announces a move of its decoders to torchcodec
        warnings.simplefilter("ignore")
        image = decode_image(data, mode=mode)
    if image.dtype != torch.uint8:  # 16-bit PNG
        image = TF.to_dtype(image, torch.uint8, scale=True)
    return image


def _decode_pil(data: bytes, channels: int) -> torch.Tensor:
    from PIL import Image
    from torchvision.transforms.v2 import functional as TF

    with Image.open(io.BytesIO(data)) as image:
        return TF.pil_to_tensor(image.convert("L" if channels == 1 else "RGB"))


def decode_encoded_image(data: bytes | torch.Tensor, channels: int, size: int) -> torch.Tensor:
    """Decode encoded image bytes (``bytes`` or a 1-D uint8 tensor) to uint8 ``channels x size x size``.

    JPEG, PNG (8 and 16 bit, palette, alpha), GIF and WebP go through torchvision's decoders; any
    other format PIL reads goes through PIL. Raises ``ValueError``/``OSError``/``RuntimeError`` for
    data no decoder reads."""
    if len(data) == 0:
        raise ValueError("empty image data")
    if _is_native(data):
        tensor = data if isinstance(data, torch.Tensor) else torch.frombuffer(bytearray(data), dtype=torch.uint8)
        try:
            return fit_square(_decode_native(tensor, channels), size)
        except RuntimeError:  # a variant the native decoder rejects (CMYK JPEG on old libjpeg, APNG, ...)
            pass
    raw = bytes(data.numpy().tobytes()) if isinstance(data, torch.Tensor) else bytes(data)
    return fit_square(_decode_pil(raw, channels), size)


def decode_image_file(path: str | Path, channels: int, size: int) -> torch.Tensor:
    """Read an image file as uint8 ``channels x size x size`` (see :func:`decode_encoded_image`)."""
    return decode_encoded_image(Path(path).read_bytes(), channels, size)
