"""Image decoding (data/decode.py) against PIL, the decoder of the old path: open, convert("RGB"/"L"),
then the same fit_square. PNG, GIF, WebP, BMP, TIFF agree exactly; JPEG within what two libjpeg
builds may differ by."""

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_transfer.data.decode import decode_batch, decode_encoded_image, fit_square, jpeg_components

HEIGHT, WIDTH, SIZE = 40, 56, 32  # not square: the decode resizes the shorter side and crops


def photo(seed: int = 0, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """A smooth colour image with mild noise (so JPEG works as on photos), uint8 H x W x 3."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    phases = rng.uniform(0, 2 * np.pi, 3)
    smooth = np.stack([np.sin(5 * x + phases[0]), np.cos(4 * y + phases[1]), np.sin(3 * (x + y) + phases[2])], -1)
    pixels = 127.5 + 110 * smooth + rng.normal(0, 6, smooth.shape)
    return pixels.clip(0, 255).astype(np.uint8)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def pil_reference(data: bytes, channels: int, size: int = SIZE) -> torch.Tensor:
    """The old decode path: PIL's decoder and conversion, then fit_square."""
    with Image.open(io.BytesIO(data)) as image:
        array = np.asarray(image.convert("L" if channels == 1 else "RGB"))
    tensor = torch.from_numpy(array.copy()).reshape(array.shape[0], array.shape[1], channels).permute(2, 0, 1)
    return fit_square(tensor, size)


def png_16bit(pixels: np.ndarray) -> bytes:
    """A 16-bit PNG (gray H x W or RGB H x W x 3, uint16) written by hand: PIL cannot write 16-bit colour."""
    height, width = pixels.shape[:2]
    color_type = 2 if pixels.ndim == 3 else 0
    rows = b"".join(b"\x00" + pixels[i].astype(">u2").tobytes() for i in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def with_transparency(image: Image.Image) -> Image.Image:
    image.info["transparency"] = 3
    return image


RGB = Image.fromarray(photo())
RGBA = Image.fromarray(np.dstack([photo(), photo(1)[..., 0]]))
CMYK = Image.frombytes(
    "CMYK", (WIDTH, HEIGHT), np.dstack([255 - photo(), photo(2)[..., :1] // 2]).tobytes()
)  # ink in K
LOSSLESS = {
    "png rgb": lambda: encode(RGB, "PNG"),
    "png rgba": lambda: encode(RGBA, "PNG"),
    "png gray": lambda: encode(RGB.convert("L"), "PNG"),
    "png gray+alpha": lambda: encode(RGB.convert("LA"), "PNG"),
    "png palette": lambda: encode(RGB.convert("P"), "PNG"),
    "png palette+transparency": lambda: encode(with_transparency(RGB.convert("P")), "PNG"),
    "png 1-bit": lambda: encode(RGB.convert("1"), "PNG"),
    "gif": lambda: encode(RGB.convert("P"), "GIF"),
    "webp lossless": lambda: encode(RGB, "WEBP", lossless=True),
    "webp lossy": lambda: encode(RGB, "WEBP", quality=80),
    "webp rgba": lambda: encode(RGBA, "WEBP", lossless=True),
    "bmp": lambda: encode(RGB, "BMP"),
    "tiff": lambda: encode(RGB, "TIFF"),
}
JPEGS = {
    "baseline 4:2:0": lambda: encode(RGB, "JPEG", quality=90),
    "baseline 4:4:4": lambda: encode(RGB, "JPEG", quality=90, subsampling=0),
    "progressive": lambda: encode(RGB, "JPEG", quality=75, progressive=True),
    "grayscale": lambda: encode(RGB.convert("L"), "JPEG", quality=90),
    "cmyk": lambda: encode(CMYK, "JPEG", quality=90),
}


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("name", list(LOSSLESS))
def test_png_gif_webp_bmp_and_tiff_decode_exactly_like_pil(name, channels):
    data = LOSSLESS[name]()
    out = decode_encoded_image(data, channels, SIZE)
    assert out.shape == (channels, SIZE, SIZE) and out.dtype == torch.uint8
    assert torch.equal(out, pil_reference(data, channels))


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("name", list(JPEGS))
def test_jpeg_decodes_like_pil_up_to_libjpeg_rounding(name, channels):
    # Two libjpeg builds may round the IDCT and the chroma upsampling differently; a colour JPEG to
    # one channel is the decoder's luma plane (not PIL's RGB -> L of the rounded RGB): a level or two.
    data = JPEGS[name]()
    out = decode_encoded_image(data, channels, SIZE)
    assert out.shape == (channels, SIZE, SIZE) and out.dtype == torch.uint8
    diff = (out.int() - pil_reference(data, channels).int()).abs()
    assert diff.max() <= 3 and diff.float().mean() < 0.1


def test_16bit_png_keeps_the_high_byte_also_for_gray_where_pil_would_clip():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 65536, (HEIGHT, WIDTH)).astype(np.uint16)
    colour = rng.integers(0, 65536, (HEIGHT, WIDTH, 3)).astype(np.uint16)
    expected_gray = torch.from_numpy((gray >> 8).astype(np.uint8))[None]
    expected_colour = torch.from_numpy((colour >> 8).astype(np.uint8)).permute(2, 0, 1)
    assert torch.equal(decode_encoded_image(png_16bit(gray), 1, SIZE), fit_square(expected_gray, SIZE))
    assert torch.equal(
        decode_encoded_image(png_16bit(gray), 3, SIZE), fit_square(expected_gray.expand(3, -1, -1), SIZE)
    )
    assert torch.equal(decode_encoded_image(png_16bit(colour), 3, SIZE), fit_square(expected_colour, SIZE))
    assert torch.equal(decode_encoded_image(png_16bit(colour), 3, SIZE), pil_reference(png_16bit(colour), 3))


def test_an_animated_gif_gives_its_first_frame():
    frames = [Image.fromarray(photo(seed)).convert("P") for seed in range(3)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert torch.equal(decode_encoded_image(data, 3, SIZE), pil_reference(encode(frames[0], "GIF"), 3))


def test_the_exif_orientation_is_not_applied_as_in_the_old_pil_path():
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    data = encode(RGB, "JPEG", quality=95, exif=exif)
    out = decode_encoded_image(data, 3, SIZE).int()
    assert (out - pil_reference(data, 3).int()).abs().max() <= 3
    from PIL import ImageOps

    with Image.open(io.BytesIO(data)) as image:
        upright = torch.from_numpy(np.asarray(ImageOps.exif_transpose(image)).copy()).permute(2, 0, 1)
    assert (out - fit_square(upright, SIZE).int()).abs().float().mean() > 20


def test_bytes_bytearray_memoryview_and_a_uint8_tensor_decode_alike():
    for data in (JPEGS["baseline 4:2:0"](), LOSSLESS["png rgb"](), LOSSLESS["bmp"]()):
        expected = decode_encoded_image(data, 3, SIZE)
        tensor = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        for form in (bytearray(data), memoryview(data), tensor, torch.cat([tensor, tensor])[: len(data)]):
            assert torch.equal(decode_encoded_image(form, 3, SIZE), expected)


@pytest.mark.parametrize("name", ["jpeg", "progressive jpeg", "png", "webp", "gif", "bmp"])
def test_truncated_and_corrupt_data_raise(name):
    data = {
        "jpeg": JPEGS["baseline 4:2:0"],
        "progressive jpeg": JPEGS["progressive"],
        "png": LOSSLESS["png rgb"],
        "webp": LOSSLESS["webp lossy"],
        "gif": LOSSLESS["gif"],
        "bmp": LOSSLESS["bmp"],
    }[name]()
    for broken in (data[: len(data) // 2], data[:20], data[:3]):
        with pytest.raises((ValueError, OSError, RuntimeError)):
            decode_encoded_image(broken, 3, SIZE)
        with pytest.raises((ValueError, OSError, RuntimeError)):
            decode_encoded_image(torch.frombuffer(bytearray(broken), dtype=torch.uint8), 3, SIZE)


def test_empty_data_not_an_image_and_bad_arguments_raise():
    for empty in (b"", torch.empty(0, dtype=torch.uint8)):
        with pytest.raises(ValueError, match="empty"):
            decode_encoded_image(empty, 3, SIZE)
    with pytest.raises(OSError):
        decode_encoded_image(b"RIFF\x00\x00\x00\x00WAVEfmt this is sound, not an image", 3, SIZE)
    with pytest.raises(ValueError, match="1-D uint8"):
        decode_encoded_image(torch.zeros(10, dtype=torch.int64), 3, SIZE)
    with pytest.raises(ValueError, match="channels"):
        decode_encoded_image(LOSSLESS["png rgb"](), 2, SIZE)


def test_jpeg_components_reads_the_frame_header_behind_exif_and_icc_segments():
    # decode_batch sends only 1- and 3-component JPEGs to nvJPEG; CMYK ones decode on the CPU.
    exif = Image.Exif()
    exif[0x010E] = "a long image description " * 1000  # a 25 KB APP1 segment before the frame header
    names = ("baseline 4:2:0", "progressive", "grayscale", "cmyk")
    assert [jpeg_components(JPEGS[name]()) for name in names] == [3, 3, 1, 4]
    assert jpeg_components(encode(RGB, "JPEG", exif=exif)) == 3
    assert jpeg_components(encode(RGB.convert("L"), "JPEG", icc_profile=bytes(5000))) == 1
    data = JPEGS["cmyk"]()
    assert jpeg_components(torch.frombuffer(bytearray(data), dtype=torch.uint8)) == 4
    assert jpeg_components(data[:12]) is None and jpeg_components(LOSSLESS["png rgb"]()) is None


def mixed_batch() -> list[bytes]:
    """Every path of the decoder, at different sizes and aspect ratios."""
    return [
        encode(Image.fromarray(photo(0, 40, 56)), "JPEG", quality=90),
        encode(Image.fromarray(photo(1, 64, 48)), "PNG"),
        encode(Image.fromarray(photo(2, 36, 36)).convert("P"), "GIF"),
        encode(Image.fromarray(photo(3, 50, 70)), "JPEG", quality=80, progressive=True),
        encode(Image.fromarray(photo(4, 30, 44)), "BMP"),
        encode(Image.fromarray(photo(5, 48, 40)), "WEBP", quality=80),
        encode(Image.fromarray(photo(6, 40, 40)).convert("L"), "PNG"),
    ]


@pytest.mark.parametrize("channels", [3, 1])
def test_decode_batch_on_the_cpu_is_decode_encoded_image_per_image(channels):
    datas = mixed_batch()
    batch = decode_batch(datas, channels, SIZE)
    assert batch.shape == (len(datas), channels, SIZE, SIZE) and batch.dtype == torch.uint8
    assert torch.equal(batch, torch.stack([decode_encoded_image(d, channels, SIZE) for d in datas]))
    tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
    assert torch.equal(decode_batch(tensors, channels, SIZE, device="cpu"), batch)


def test_decode_batch_names_the_unreadable_image_and_rejects_an_empty_list():
    datas = mixed_batch()
    datas[3] = datas[3][:100]
    with pytest.raises(ValueError, match="image 3 of the batch"):
        decode_batch(datas, 3, SIZE)
    with pytest.raises(ValueError, match="no images"):
        decode_batch([], 3, SIZE)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="decoding on the device needs CUDA")
@pytest.mark.parametrize("channels", [3, 1])
def test_decode_batch_on_cuda_matches_the_cpu_up_to_nvjpeg_rounding(channels):
    datas = mixed_batch()
    on_gpu = decode_batch(datas, channels, SIZE, device="cuda")
    assert on_gpu.device.type == "cuda" and on_gpu.shape == (len(datas), channels, SIZE, SIZE)
    diff = (on_gpu.cpu().int() - decode_batch(datas, channels, SIZE).int()).abs()
    assert diff.max() <= 6 and diff.float().mean() < 0.5
