"""Decode + SimCLR augmentation per CPU core on the same image files: ours vs PIL + lightly.

What a DataLoader worker does for SimCLR, minus the worker machinery (``data_loading.py`` measures
that): read each file, decode it, make two augmented normalized views, stack them into a batch.

- **ours**, as :class:`~lightning_transfer.data.images.ImageDataModule` (``source="folder"``) runs it:
  :func:`~lightning_transfer.data.decode.decode_image_file` per file (torchvision's decoders, resized
  to the decode size and center-cropped square), then the collate function
  :class:`~lightning_transfer.data.images.BatchTransform` augments the uint8 batch twice with
  :class:`~lightning_transfer.data.augment.SimCLRAugmentation` (per-sample randomness).
  With ``--device cuda``: the files' bytes are read on the CPU, and
  :func:`~lightning_transfer.data.decode.decode_batch` decodes the batch on the GPU (one nvJPEG call)
  before the same augmentation runs there (the peer stays on the CPU: the ratio then says how many
  CPU cores of the peer one GPU stands for).
- **PIL + lightly**, as lightly's SimCLR examples run it (torchvision ``ImageFolder`` loader): per file
  ``Image.open(path).convert("RGB")`` and ``SimCLRTransform`` (both views), then the default collate
  (stacking each view).

Both: SimCLR's defaults (crop scale 0.08-1, jitter 0.8 with p=0.8, grayscale 0.2, blur p=0.5 with
sigma 0.1-2, flip), ImageNet normalization, the same files. Two workloads:

- ``96``: STL-10-like 96 x 96 JPEGs, 96 px crops (decoded at 96);
- ``224``: ImageNet-like 400 x 300 JPEGs, 224 px crops; ours decodes to 256 x 256 first
  (``decode_size=256``), lightly crops the full image.

The ``decode`` rows time the decoding alone against the PIL path that ``decode_image_file`` replaced
(``Image.open(...).convert("RGB")`` then the same resize + center crop), also for PNG and WebP copies
of the images (``--formats``). The files are photo-like (``_photos.py``: smooth shading, objects,
texture, noise), since decoding cost depends on the content.

One process, ``--threads 1`` by default (numbers per core), the sides alternating in rounds
(``_common.alternate``: one warm-up round excluded, median of the rounds), images per CPU-second of
this process (per wall-second with ``--device cuda``).

    python benchmarks/decode_augment.py --quick    # ~1-2 minutes on one core
    python benchmarks/decode_augment.py            # more images and rounds
    python benchmarks/decode_augment.py --device cuda --batch 256
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Clock, alternate, machine, pick_device, setup_threads
from _photos import write_photos

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# crop size, source width x height, decode size (ours)
WORKLOADS = {"96": (96, (96, 96), 96), "224": (224, (400, 300), 256)}


def lightly_transform(size: int):
    from lightly.transforms import SimCLRTransform

    return SimCLRTransform(
        input_size=size,
        cj_prob=0.8,
        cj_strength=1.0,
        cj_bright=0.8,
        cj_contrast=0.8,
        cj_sat=0.8,
        cj_hue=0.2,
        min_scale=0.08,
        random_gray_scale=0.2,
        gaussian_blur=0.5,
        sigmas=(0.1, 2.0),
        hf_prob=0.5,
        normalize={"mean": list(IMAGENET[0]), "std": list(IMAGENET[1])},
    )


def batches(items: list, batch: int) -> list[list]:
    return [items[i : i + batch] for i in range(0, len(items), batch)]


def pil_decode(path: Path, size: int) -> torch.Tensor:
    """The decode path before ``decode.py``: PIL, then the same resize + center crop."""
    from torchvision.transforms.v2 import functional as TF

    from lightning_transfer.data.decode import fit_square

    with Image.open(path) as image:
        return fit_square(TF.pil_to_tensor(image.convert("RGB")), size)


def decode_sides(paths: list[Path], decode_size: int) -> dict:
    from lightning_transfer.data.decode import decode_image_file

    def ours():
        for path in paths:
            decode_image_file(path, 3, decode_size)

    def pil():
        for path in paths:
            pil_decode(path, decode_size)

    return {"ours": (ours, len(paths)), "peer": (pil, len(paths))}


def augment_sides(paths: list[Path], size: int, decode_size: int, batch: int, device: torch.device) -> dict:
    from lightning_transfer.data.augment import SimCLRAugmentation
    from lightning_transfer.data.decode import decode_batch, decode_image_file
    from lightning_transfer.data.images import BatchTransform

    augment = SimCLRAugmentation(size, blur_prob=0.5, mean=IMAGENET[0], std=IMAGENET[1]).to(device)
    collate = BatchTransform(augment, views=2, name="train", deferred=False, seed=0)
    theirs = lightly_transform(size)
    groups = batches(paths, batch)

    def ours_cpu():
        for group in groups:
            collate([(decode_image_file(path, 3, decode_size), -1) for path in group])

    def ours_device():  # bytes read on the CPU (in the workers), decoded and augmented on the device
        for group in groups:
            images = decode_batch([path.read_bytes() for path in group], 3, decode_size, device)
            collate.apply(images, torch.zeros(len(group), dtype=torch.long, device=device), seed=0)

    def lightly():
        for group in groups:
            views = [theirs(Image.open(path).convert("RGB")) for path in group]
            torch.stack([v[0] for v in views]), torch.stack([v[1] for v in views])

    ours = ours_device if device.type == "cuda" else ours_cpu
    return {"ours": (ours, len(paths)), "peer": (lightly, len(paths))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and rounds (~1-2 minutes)")
    parser.add_argument("--device", default="cpu", help="where ours decodes and augments: cpu, cuda, auto")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both sides (0: torch's default)")
    parser.add_argument("--images", type=int, default=None, help="files per workload (default 64 quick, 256)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workloads", default="96,224", help=f"any of {','.join(WORKLOADS)}")
    parser.add_argument("--formats", default="jpeg,png,webp", help="formats of the decode-only rows")
    args = parser.parse_args()
    device = pick_device(args.device)
    threads = setup_threads(args.threads or None)
    reps = 3 if args.quick else 7
    count = args.images or (64 if args.quick else 256)
    clock = Clock(device)
    from lightly import __version__ as lightly_version
    from PIL import __version__ as pil_version
    from torchvision import __version__ as tv_version

    print(
        f"torch {torch.__version__}, torchvision {tv_version}, Pillow {pil_version}, lightly {lightly_version}; "
        f"{machine(device)}; {threads} thread(s); {reps} alternating rounds of {count} images, median; "
        f"img/s = images per {clock.unit}, 2 views each for decode+augment"
    )
    print(f"{'crop':>5} {'files':>12} {'work':>15} {'ours img/s':>11} {'peer img/s':>11} {'ours/peer':>10}  peer")
    suffix = {"jpeg": ("JPEG", {"quality": 90}), "png": ("PNG", {}), "webp": ("WEBP", {"quality": 90})}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.workloads.split(","):
            size, (width, height), decode_size = WORKLOADS[name]
            for fmt in args.formats.split(","):
                pil_format, options = suffix[fmt]
                paths = write_photos(Path(tmp) / f"{name}-{fmt}", count, width, height, pil_format, **options)
                rows = [("decode", decode_sides(paths, decode_size), "PIL decode + same resize/crop")]
                if fmt == "jpeg":
                    sides = augment_sides(paths, size, decode_size, args.batch, device)
                    rows.append(("decode+augment", sides, "PIL + lightly SimCLRTransform"))
                for work, sides, peer in rows:
                    rates = alternate(sides, reps, clock)
                    files = f"{fmt} {width}x{height}"
                    print(
                        f"{size:>5} {files:>12} {work:>15} {rates['ours']:>11.0f} {rates['peer']:>11.0f} "
                        f"{rates['ours'] / rates['peer']:>9.2f}x  {peer}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
