"""Data loading: an ImageFolder against litdata shards, images/s with 0, 1 and 2 DataLoader workers.

Every contender turns the same photo-like JPEG files (``_photos.py``) into shuffled uint8 batches
``B x 3 x S x S`` (decoded, shorter side resized to ``S``, center-cropped): the loading half of a
training step, without augmentation (``decode_augment.py`` measures that).

- ``folder ours``: ``ImageDataModule(source="folder", augment_on="device").train_dataloader()``
  (:class:`~lightning_transfer.data.image_sources.ImageFolderDataset`: files decoded by
  :func:`~lightning_transfer.data.decode.decode_image_file`, torchvision's decoders).
- ``folder torchvision``: ``torchvision.datasets.ImageFolder`` (PIL loader, ``convert("RGB")``),
  ``PILToTensor`` + ``Resize(S)`` + ``CenterCrop(S)``, a plain ``DataLoader``: the peer.
- ``litdata``: the same folder written as shards by ``lightning_transfer.optimize.optimize`` (or by
  ``litdata.optimize`` directly where that module is missing: samples ``{"image": the file's bytes,
  "label"}``), read by a ``litdata.StreamingDataset(shuffle=True)`` and ``StreamingDataLoader`` whose
  collate function decodes with :func:`~lightning_transfer.data.decode.decode_encoded_image`.
- ``litdata ours``: ``ImageDataModule(source="litdata")``'s training stream over those shards
  (only where the DataModule has that source).

Timing: each round starts a fresh pass (iterator) of each loader in turn, waits for its first batch
(worker start-up and the first batch are not timed), then times the next ``--steps`` batches. With
``w`` workers that window is exact for steady state when ``steps`` is a multiple of ``w`` (the
workers' first batches arrive together). ``--workers 0``: CPU-seconds of this process (other
processes on a shared machine do not inflate it); with workers: wall seconds (the work happens in
the worker processes), so on a busy machine compare the ratios, not the rates. One warm-up round
excluded, median over the rounds; one torch thread in this process and in every worker (PyTorch's
worker default).

    python benchmarks/data_loading.py --quick     # ~2 minutes
    python benchmarks/data_loading.py             # more rounds and steps
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")  # before litdata is imported: no web request

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine
from _photos import write_photos

HELD_OUT = 2  # validation and test images each: the DataModule's splits, as small as allowed
# decode size, source width x height
WORKLOADS = {"96": (96, (96, 96)), "256": (256, (400, 300))}
COLUMNS = ("folder ours", "folder torchvision", "litdata", "litdata ours")


class DecodeItems:
    """The litdata loader's collate function: stored samples -> (uint8 batch, labels)."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, items: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        from lightning_transfer.data.decode import decode_encoded_image

        images = torch.stack([decode_encoded_image(item["image"], 3, self.size) for item in items])
        return images, torch.tensor([int(item["label"]) for item in items])


def _raw_sample(path: str) -> dict:
    return {"image": Path(path).read_bytes(), "label": int(Path(path).parent.name.removeprefix("class"))}


def write_shards(folder: Path, out: Path) -> Path:
    """The folder as litdata shards; returns the folder of the training split's litdata dataset."""
    try:
        from lightning_transfer.optimize import optimize
    except ImportError:
        optimize = None
    if optimize is not None:
        optimize(folder, out, kind="image", val_size=HELD_OUT, test_size=HELD_OUT, progress=False, start_method="fork")
        return out / "train"
    import litdata

    files = sorted(str(p) for p in folder.rglob("*.jpg"))
    litdata.optimize(
        fn=_raw_sample,
        inputs=files,
        output_dir=str(out / "train"),
        chunk_bytes="16MB",
        num_workers=1,
        start_method="fork",
        verbose=False,
    )
    return out / "train"


def loaders(folder: Path, shards: Path, size: int, batch: int, workers: int) -> dict[str, Callable[[], object]]:
    """name -> a function making a fresh loader of uint8 batches."""
    from torch.utils.data import DataLoader
    from torchvision import datasets
    from torchvision.transforms import v2

    from lightning_transfer.data.images import IMAGE_SOURCES, ImageDataModule

    common = dict(
        image_size=size,
        decode_size=size,
        batch_size=batch,
        num_workers=workers,
        augment_on="device",
        val_size=HELD_OUT,
        test_size=HELD_OUT,
        seed=0,
    )

    def ours_folder():
        data = ImageDataModule(source="folder", root=str(folder), **common)
        data.setup("fit")
        return data.train_dataloader()

    def torchvision_folder():
        transform = v2.Compose([v2.PILToTensor(), v2.Resize(size, antialias=True), v2.CenterCrop(size)])
        dataset = datasets.ImageFolder(str(folder), transform=transform)
        return DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True)

    def litdata_stream():
        import litdata

        dataset = litdata.StreamingDataset(str(shards), shuffle=True, seed=0)
        return litdata.StreamingDataLoader(dataset, batch_size=batch, num_workers=workers, collate_fn=DecodeItems(size))

    def ours_litdata():
        data = ImageDataModule(source="litdata", root=str(shards.parent), **common)
        data.setup("fit")
        return data.train_dataloader()

    contenders = {"folder ours": ours_folder, "folder torchvision": torchvision_folder, "litdata": litdata_stream}
    if "litdata" in IMAGE_SOURCES and (shards.parent / "lightning_transfer.json").is_file():
        contenders["litdata ours"] = ours_litdata
    return contenders


def timed_pass(make_loader: Callable[[], object], steps: int, workers: int) -> float:
    """Seconds for ``steps`` batches of a fresh pass, after its first batch (see the module docstring)."""
    clock = time.perf_counter if workers else time.process_time
    loader = make_loader()
    iterator: Iterator = iter(loader)  # type: ignore[call-overload]
    try:
        next(iterator)
        start = clock()
        for _ in range(steps):
            try:
                next(iterator)
            except StopIteration:  # an epoch shorter than the round (litdata resuming a pass): go on
                iterator = iter(loader)  # type: ignore[call-overload]
                next(iterator)
        return clock() - start
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
        del iterator


def alternate_passes(contenders: dict, steps: int, workers: int, reps: int, images_per_step: int) -> dict:
    for make in contenders.values():  # warm-up round
        timed_pass(make, steps, workers)
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(reps):
        for name, make in contenders.items():
            rates[name].append(steps * images_per_step / timed_pass(make, steps, workers))
    return {name: statistics.median(values) for name, values in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and steps (~2 minutes)")
    parser.add_argument("--workers", default="0,1,2", help="DataLoader worker counts")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=None, help="timed batches per round (default 4 quick, 8)")
    parser.add_argument("--workloads", default="96,256", help=f"any of {','.join(WORKLOADS)}")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")  # torchvision's decoder deprecation notice, litdata's chatter
    reps = 3 if args.quick else 7
    steps = args.steps or (4 if args.quick else 8)
    worker_counts = [int(w) for w in args.workers.split(",")]
    images = (steps + 2) * args.batch + 2 * HELD_OUT  # one pass never runs out
    import litdata
    from torchvision import __version__ as tv_version

    print(
        f"torch {torch.__version__}, torchvision {tv_version}, litdata {litdata.__version__}; "
        f"{machine(torch.device('cpu'))}; {reps} alternating rounds of {steps} batches of {args.batch}, median; "
        f"img/s per CPU-second of this process with 0 workers, per wall-second with workers"
    )
    print(
        f"{'size':>5} {'files':>12} {'workers':>7}  "
        + "  ".join(f"{n:>18}" for n in COLUMNS)
        + "  ours/torchvision  litdata/torchvision"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.workloads.split(","):
            size, (width, height) = WORKLOADS[name]
            folder = Path(tmp) / f"folder-{name}"
            write_photos(folder, images, width, height, "JPEG", classes=4)
            shards = write_shards(folder, Path(tmp) / f"shards-{name}")
            for workers in worker_counts:
                contenders = loaders(folder, shards, size, args.batch, workers)
                rates = alternate_passes(contenders, steps, workers, reps, args.batch)
                cells = "  ".join(f"{rates[n]:>18.0f}" if n in rates else f"{'n/a':>18}" for n in COLUMNS)
                peer = rates["folder torchvision"]
                print(
                    f"{size:>5} {f'{width}x{height}':>12} {workers:>7}  {cells}  "
                    f"{rates['folder ours'] / peer:>15.2f}x  {rates['litdata'] / peer:>18.2f}x",
                    flush=True,
                )


if __name__ == "__main__":
    main()
