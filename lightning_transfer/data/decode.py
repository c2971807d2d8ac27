"""Image decoding off PIL: encoded bytes -> uint8 ``C x size x size``, one image or a batch on a device.

:func:`decode_encoded_image` decodes one image; :func:`decode_batch` decodes a list of them into one
``B x C x size x size`` batch, on a GPU with one batched nvJPEG call for the JPEGs (the DALI-style
pipeline: the DataLoader workers only read bytes, the device decodes). Both give the pixels of the
old PIL path, ``Image.open(...).convert("RGB" or "L")``, then :func:`fit_square`:

- JPEG, PNG and WebP go through torchvision's native decoders (libjpeg-turbo, libpng, libwebp),
  faster than PIL on one core: decode + fit to size 1.3-2x for JPEG, 1.0-1.5x for PNG, 1.2-1.5x
  for WebP, the larger gains on smaller images (``benchmarks/decode_augment.py``). PNG and WebP give PIL's pixels exactly; JPEG may
  differ by a level or two where two libjpeg builds differ (IDCT, chroma upsampling). A colour JPEG
  asked for one channel is the decoder's luma (Y) plane, within 2 levels of PIL's
  ``convert("L")``, and about twice as fast as decoding the colours.
- Every other format PIL reads (GIF, where PIL is the faster decoder, BMP, TIFF, ...), a colour
  PNG asked for one channel (PIL is ~8% faster there), and any variant a native decoder rejects,
  go through PIL.
- Grayscale of a colour image is PIL's integer ITU-R 601-2 luma (computed by PIL), RGB of a gray
  image repeats the gray plane; alpha is dropped, not composited; palettes are expanded; an
  animation gives its first frame.
- 16-bit PNGs keep their high byte (``v >> 8``), as PIL does for 16-bit colour. (PIL clips a 16-bit
  *gray* PNG to 255 instead, making it almost white; here it is scaled like the colour ones.)
- The EXIF orientation is *not* applied, as before: the pixels are the stored ones.

torchvision 0.29 deprecates its decoders in favour of torchcodec; where they are gone (ImportError),
every image goes through PIL.

Unreadable data (empty, truncated, corrupt, not an image) raises ``ValueError``/``OSError``/
``RuntimeError``; the datasets turn that into a skipped sample with a warning.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TypeAlias

import torch

# An encoded image: a file's bytes, or a 1-D uint8 CPU tensor of them.
EncodedImage: TypeAlias = bytes | bytearray | memoryview | torch.Tensor

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_GRAY_COLOR_TYPES = (0, 4)  # IHDR colour type: gray, gray + alpha
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # frame headers (not DHT, JPG, DAC)


def fit_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the shorter side of a ``C x H x W`` image to ``size`` (antialiased) and center-crop
    ``size x size``."""
    from torchvision.transforms.v2 import functional as TF

    return TF.center_crop(TF.resize(image, size, antialias=True), [size, size])


def native_format(data: EncodedImage) -> str | None:
    """``"jpeg"``, ``"png"`` or ``"webp"`` from the magic bytes (the formats torchvision decodes
    natively and faster than PIL), else ``None``."""
    head = _head(data, 16)
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(_PNG_SIGNATURE):
        return "png"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    return None


def jpeg_components(data: EncodedImage) -> int | None:
    """The number of colour components of a JPEG (1 gray, 3 YCbCr/RGB, 4 CMYK/YCCK), read from its
    frame header (SOF0-SOF15) by walking the marker segments; ``None`` for data without one."""
    head = _head(data, 1 << 17)  # the frame header follows the APPn segments (EXIF: at most 64 KiB)
    i = 2
    while i + 9 < len(head):
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker in _SOF_MARKERS:
            return head[i + 9]  # FF Cn, length (2), precision (1), height (2), width (2), components (1)
        elif marker == 0xDA:  # start of scan before any frame header
            return None
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
        else:
            i += 2 + (head[i + 2] << 8 | head[i + 3])
    return None


def decode_encoded_image(data: EncodedImage, channels: int, size: int) -> torch.Tensor:
    """Decode one encoded image (``bytes`` or a 1-D uint8 tensor) to uint8 ``channels x size x size``
    (``channels`` 1 or 3; see the module docstring for the pixels). Raises ``ValueError``/``OSError``/
    ``RuntimeError`` for data no decoder reads."""
    return fit_square(decode_full(data, channels), size)


def decode_full(data: EncodedImage, channels: int) -> torch.Tensor:
    """Decode one encoded image to uint8 ``channels x H x W`` at its own size (on the CPU)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if isinstance(data, torch.Tensor) and (data.dtype != torch.uint8 or data.dim() != 1):
        raise ValueError(f"encoded image tensors are 1-D uint8, got {data.dim()}-D {data.dtype}")
    if len(data) == 0:
        raise ValueError("empty image data")
    fmt = native_format(data)
    if fmt == "png" and channels == 1 and not _is_gray_png(data):
        fmt = None  # PIL's decode + convert("L") in one pass is ~8% faster than libpng's RGB + that convert
    if fmt is not None:
        try:
            return _decode_native(_as_tensor(data), fmt, channels)
        except (RuntimeError, ImportError):  # a variant the native decoder rejects, or no decoder: PIL decides
            pass
    return _decode_pil(_as_bytes(data), channels)


def decode_batch(
    datas: Sequence[EncodedImage], channels: int, size: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Decode encoded images into one uint8 batch ``B x channels x size x size`` on ``device``.

    On a CUDA device the gray and colour JPEGs are decoded together by one
    ``torchvision.io.decode_jpeg(list, device=...)`` call (nvJPEG); the other images (CMYK JPEGs
    included, and every JPEG of a batch nvJPEG fails on) are decoded on the CPU and moved; :func:`fit_square` then runs on the device. On the CPU every image is exactly
    :func:`decode_encoded_image`. nvJPEG's pixels may differ from libjpeg-turbo's by a few levels.
    Raises ``ValueError`` naming the first unreadable image (``datas`` empty: ``ValueError`` too)."""
    if len(datas) == 0:
        raise ValueError("no images to decode")
    device = torch.device(device)
    decoded: list[torch.Tensor | None] = [None] * len(datas)
    if device.type == "cuda":
        _decode_jpegs_on_device(datas, channels, device, decoded)
    squares = []
    for i, data in enumerate(datas):
        image = decoded[i]
        if image is None:
            try:
                image = decode_full(data, channels).to(device, non_blocking=True)
            except (ValueError, OSError, RuntimeError) as err:
                raise ValueError(f"image {i} of the batch is unreadable ({type(err).__name__}: {err})") from err
        squares.append(fit_square(image, size))
    return torch.stack(squares)


def decode_image_file(path: str | Path, channels: int, size: int) -> torch.Tensor:
    """Read an image file as uint8 ``channels x size x size`` (see :func:`decode_encoded_image`)."""
    return decode_encoded_image(Path(path).read_bytes(), channels, size)


def _decode_jpegs_on_device(
    datas: Sequence[EncodedImage], channels: int, device: torch.device, decoded: list[torch.Tensor | None]
) -> None:
    """Fill ``decoded`` at the JPEGs' places with one batched nvJPEG call; leave them ``None`` when
    nvJPEG fails (the CPU path then decodes them one by one, or names the unreadable one)."""
    # nvJPEG decodes gray and YCbCr JPEGs; CMYK/YCCK ones (about 20 in ImageNet's train set) stay on the CPU.
    jpegs = [i for i, data in enumerate(datas) if native_format(data) == "jpeg" and jpeg_components(data) in (1, 3)]
    if not jpegs:
        return
    try:
        from torchvision.io import ImageReadMode, decode_jpeg

        mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
        with warnings.catch_warnings():  # torchvision 0.29+ announces a move of its decoders to torchcodec
            warnings.simplefilter("ignore")
            images = decode_jpeg([_as_tensor(datas[i]) for i in jpegs], mode=mode, device=device)
    except (RuntimeError, ImportError):
        return
    for i, image in zip(jpegs, images):
        decoded[i] = image


def _decode_native(data: torch.Tensor, fmt: str, channels: int) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2 import functional as TF

    # One channel from the decoder where it is PIL's gray too: a gray PNG, or a JPEG's luma plane.
    # (libpng's RGB -> gray and libwebp's have other coefficients and rounding than PIL's.)
    mode = ImageReadMode.GRAY if channels == 1 and fmt in ("jpeg", "png") else ImageReadMode.RGB
    with warnings.catch_warnings():  # torchvision 0.29+ announces a move of its decoders to torchcodec
        warnings.simplefilter("ignore")
        image = decode_image(data, mode=mode, apply_exif_orientation=False)
    if image.dim() == 4:  # an animation: its first frame, as PIL opens it
        image = image[0]
    if image.dtype != torch.uint8:  # 16-bit PNG: the high byte
        image = TF.to_dtype(image, torch.uint8, scale=True)
    if channels == 1 and image.shape[0] == 3:
        image = _pil_luma(image)
    return image


def _pil_luma(rgb: torch.Tensor) -> torch.Tensor:
    """PIL's ``convert("L")`` of a uint8 RGB ``3 x H x W`` CPU image (ITU-R 601-2 luma in 16-bit fixed
    point, ``(19595 R + 38470 G + 7471 B + 2^15) >> 16``), by PIL itself: its C loop is 2-3x faster
    than the same integer formula in torch ops, and bit-exact by construction."""
    from PIL import Image
    from torchvision.transforms.v2 import functional as TF

    hwc = rgb.permute(1, 2, 0).contiguous().numpy()  # the decoders return a CHW view of HWC memory: no copy
    return TF.pil_to_tensor(Image.fromarray(hwc).convert("L"))


def _decode_pil(data: bytes, channels: int) -> torch.Tensor:
    from PIL import Image
    from torchvision.transforms.v2 import functional as TF

    with Image.open(io.BytesIO(data)) as image:
        return TF.pil_to_tensor(image.convert("L" if channels == 1 else "RGB"))


def _is_gray_png(data: EncodedImage) -> bool:
    return len(data) > 25 and int(data[25]) in _PNG_GRAY_COLOR_TYPES  # the IHDR colour type byte


def _head(data: EncodedImage, n: int) -> bytes:
    return data[:n].contiguous().numpy().tobytes() if isinstance(data, torch.Tensor) else bytes(data[:n])


def _as_tensor(data: EncodedImage) -> torch.Tensor:
    if isinstance(data, torch.Tensor):
        return data.contiguous()
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _as_bytes(data: EncodedImage) -> bytes:
    return data.contiguous().numpy().tobytes() if isinstance(data, torch.Tensor) else bytes(data)
