"""Images from litdata shards (``ImageDataModule(source="litdata", root=OUT)``).

``lightning-transfer optimize`` (:mod:`lightning_transfer.optimize`) writes a labeled image folder as
shards of samples ``{"index", "label", "image": the file's encoded bytes, "path": the file relative to
the folder}``, with the train / val / test split already drawn exactly as
``ImageDataModule(source="folder")`` draws it (same seed, same sizes, same images; the manifest
records them, and for every position the image's index in the folder). The training images are
written in a shuffled order (litdata mixes batches only within chunks); :attr:`ImageShards.train_order`
lists them in the folder's order, so that label subsets and the kNN bank pick the images
``source="folder"`` picks. Bytes are decoded only when read, with
:func:`~lightning_transfer.data.decode.decode_encoded_image`, so one set of shards serves every image
size. An unreadable sample is skipped with a warning naming its file, as the folder source does, and
training batches keep their size (:func:`~lightning_transfer.data.image_sources.collate_images`).

- :func:`open_image_shards`: the three splits as map-style :class:`ShardImageDataset` (random access:
  validation, test, the kNN bank, label subsets), with labels and class names from the manifest.
- :func:`image_stream_loader`: the training stream over the whole train split
  (:mod:`lightning_transfer.data.streaming`), batched by :class:`StreamImageBatches`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lightning_transfer.data.decode import decode_encoded_image
from lightning_transfer.data.image_sources import collate_images
from lightning_transfer.data.resumable import mix_seed
from lightning_transfer.data.shards import (
    ShardDataset,
    check_settings,
    read_manifest,
    split_count,
    split_path,
)
from lightning_transfer.errors import UserInputError

IMAGE_SPLITS = ("train", "val", "test")


def decode_sample(item: dict[str, Any], channels: int, size: int) -> tuple[torch.Tensor, int] | None:
    """``(uint8 channels x size x size, label)``; ``None`` with a warning naming the file when its
    bytes do not decode."""
    try:
        return decode_encoded_image(item["image"], channels, size), int(item["label"])
    except (ValueError, OSError, RuntimeError) as err:
        warnings.warn(
            f"skipped unreadable image {item.get('path', '?')} (sample {int(item['index'])} of the shards; "
            f"{type(err).__name__}: {err})",
            stacklevel=1,
        )
        return None


class ShardImageDataset(ShardDataset):
    """One split, by position: ``(uint8 image, label)`` or ``None`` when unreadable (dropped by the
    collate function). ``labels``: every sample's label from the manifest, without reading a shard."""

    def __init__(self, path: str | None, labels: torch.Tensor, channels: int, size: int):
        super().__init__(path, len(labels))
        self.labels, self.channels, self.size = labels, channels, size

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int] | None:
        return decode_sample(self.read(position), self.channels, self.size)


@dataclass
class ImageShards:
    train: ShardImageDataset
    val: ShardImageDataset
    test: ShardImageDataset
    classes: list[str]
    train_path: str
    train_order: list[int]  # the train split's positions, in the order of the images in the folder


def open_image_shards(root: str, channels: int, size: int, split_settings: dict[str, Any]) -> ImageShards:
    """The splits of ``root``. ``split_settings`` (``seed``, ``val_size``, ``test_size``) must be those
    the shards were split with, else :class:`UserInputError` (the held-out images are fixed when the
    shards are written)."""
    manifest = read_manifest(root, "image")
    check_settings(manifest, split_settings, root)
    datasets = {}
    for split in IMAGE_SPLITS:
        labels = manifest["splits"][split].get("labels", [])
        if len(labels) != split_count(manifest, split):
            raise UserInputError(f"the manifest of {root} has {len(labels)} labels for its {split} split's samples")
        datasets[split] = ShardImageDataset(
            split_path(root, manifest, split), torch.tensor(labels, dtype=torch.long), channels, size
        )
    path = datasets["train"].path
    if path is None:
        raise UserInputError(
            f"the shards in {root} have no training image; write them again with smaller held-out splits"
        )
    source = manifest["splits"]["train"].get("source_index") or list(range(len(datasets["train"])))
    order = sorted(range(len(source)), key=source.__getitem__)
    classes = list(manifest.get("classes", []))
    return ImageShards(datasets["train"], datasets["val"], datasets["test"], classes, path, order)


class StreamImageBatches:
    """The stream's collate function: ``(sample, epoch)`` pairs -> what
    :class:`~lightning_transfer.data.images.BatchTransform` gives, plus ``"index"`` (the batch's
    sample ids, int64).

    Decodes the bytes (skipping unreadable samples, batches keep their size), then hands the batch
    to ``transform`` with the seed ``mix_seed("augment", transform.seed, epoch, first sample id)``:
    a pure function of the batch, so a resumed run augments it as the uninterrupted one did."""

    def __init__(self, transform: Any, channels: int, size: int):
        self.transform, self.channels, self.size = transform, channels, size

    def __call__(self, rows: list[tuple[dict[str, Any], int]]) -> dict[str, Any]:
        items, epoch = [item for item, _ in rows], rows[0][1]
        samples = [decode_sample(item, self.channels, self.size) for item in items]
        images, labels = collate_images(samples, keep_size=True)
        # the same filling rule applied to the ids: "index" names the images actually in the batch
        ids = [None if s is None else (torch.tensor(int(item["index"])), 0) for s, item in zip(samples, items)]
        index, _ = collate_images(ids, keep_size=True)
        seed = mix_seed("augment", self.transform.seed, epoch, int(items[0]["index"]))
        batch = self.transform.finish(images, labels, seed)
        batch["index"] = index
        return batch


def image_stream_loader(
    path: str,
    count: int,
    transform: Any,
    channels: int,
    size: int,
    *,
    batch_size: int,
    num_workers: int,
    pin_memory: bool,
    seed: int,
    drop_last: bool,
):
    """The training stream over the train split at ``path``: shuffled from ``(seed, epoch)``, sharded
    per process and worker. ``drop_last=False`` keeps a last partial batch in one process; under DDP
    litdata drops it anyway (see :mod:`lightning_transfer.data.streaming`)."""
    from lightning_transfer.data.streaming import (
        EpochTaggedStream,
        ResumableStreamingDataLoader,
        check_stream_not_empty,
    )

    dataset = EpochTaggedStream(path, shuffle=True, seed=seed, drop_last=True if drop_last else None)
    loader = ResumableStreamingDataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=pin_memory,
        collate_fn=StreamImageBatches(transform, channels, size),
    )
    check_stream_not_empty(loader, str(Path(path)), count)
    return loader


__all__ = [
    "IMAGE_SPLITS",
    "ImageShards",
    "ShardImageDataset",
    "StreamImageBatches",
    "decode_sample",
    "image_stream_loader",
    "open_image_shards",
]
