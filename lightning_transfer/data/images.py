"""The :class:`ImageDataModule` and its batch transform.

Every source ends up as a dataset of ``(uint8 C x H x W image, int label)`` pairs (label ``-1`` when
unknown; the datasets are in :mod:`lightning_transfer.data.image_sources`, whose names this module
re-exports). Batches stay uint8 through the DataLoader; the augmentation runs once per *batch* with
per-sample randomness (:mod:`lightning_transfer.data.augment`), either in the loader workers or, on
a GPU, on the device in :meth:`ImageDataModule.on_after_batch_transfer`, with the same views either
way (:class:`BatchTransform` gives every batch its seed).

Sources:
- ``mnist_demo``: the 5,000 offline MNIST digits (DESIGN.md), stratified seeded train/val/test split.
- ``cifar10`` / ``cifar100`` / ``stl10``: torchvision datasets under ``root`` (downloaded when
  ``download=True`` and the network allows; offline a clear error).
- ``folder``: an ImageFolder tree ``root/<class>/<image>``; decoded lazily, resized so the shorter
  side is ``decode_size`` and center-cropped square. Unreadable files are skipped with a warning
  naming the file (a few bad files must not kill a long run); a folder with no readable image is
  an error.
- ``hf``: a Hugging Face dataset (Hub name, or ``imagefolder`` with ``data_dir``), columns
  ``image_column`` / ``label_column``.
- ``litdata``: the shards that ``lightning-transfer optimize FOLDER OUT`` wrote into ``root=OUT``
  (:mod:`lightning_transfer.data.streaming_images`): the folder's images as encoded bytes, split into
  train / val / test when written, exactly as ``folder`` splits them with the same ``seed``,
  ``val_size`` and ``test_size`` (which must then match the shards'). Training on the whole train
  split streams it (litdata's ``StreamingDataLoader``: sharded per process and worker, resumable
  mid-epoch); validation, test, the kNN bank and label subsets read the shards by index.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from lightning_transfer import distributed
from lightning_transfer.data.augment import EvalTransform, SimCLRAugmentation
from lightning_transfer.data.image_sources import (
    IMAGE_EXTENSIONS,
    HFImageDataset,
    ImageFolderDataset,
    TensorImageDataset,
    collate_encoded,
    collate_images,
    decode_encoded,
    decode_image_file,
    unlabeled_images,
)
from lightning_transfer.data.resumable import ResumableDataLoader, mix_seed
from lightning_transfer.data.sources import load_mnist_demo
from lightning_transfer.data.subsets import stratified_split, stratified_subset
from lightning_transfer.errors import UserInputError
from lightning_transfer.hparams import AttributeHparams

IMAGE_SOURCES = ("mnist_demo", "cifar10", "cifar100", "stl10", "folder", "hf", "litdata")
NORMALIZATION = {  # (mean, std) per source, per channel
    "mnist_demo": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "stl10": ((0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713)),
}
IMAGENET_NORMALIZATION = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
MODES = ("simclr", "supervised")

__all__ = [  # with the image sources of lightning_transfer.data.image_sources, importable from here too
    "IMAGENET_NORMALIZATION",
    "IMAGE_EXTENSIONS",
    "IMAGE_SOURCES",
    "MODES",
    "NORMALIZATION",
    "BatchTransform",
    "HFImageDataset",
    "ImageDataModule",
    "ImageFolderDataset",
    "TensorImageDataset",
    "collate_images",
    "decode_image_file",
    "holdout_split",
    "unlabeled_images",
]


def holdout_split(
    labels: torch.Tensor, val_size: int | float, test_size: int | float, seed: int, has_test: bool = False
) -> tuple[list[int] | None, list[int], list[int]]:
    """``(test, val, train)`` index lists of a pool with these ``labels`` (-1: unlabeled), stratified
    and seeded (:func:`~lightning_transfer.data.subsets.stratified_split`, test drawn first);
    ``test`` is ``None`` when the source has its own test split (``has_test``).

    A pool that mixes labeled and unlabeled images (STL-10's train+unlabeled, a folder plus
    ``unlabeled_root``) draws validation and test from the labeled ones only, so that the monitors
    measure something; every unlabeled image goes to training. A wholly unlabeled pool splits as it
    is. ``lightning-transfer optimize`` splits with this same function, so ``source="litdata"`` holds
    out the images ``source="folder"`` would."""
    labeled = labels[labels >= 0]
    mixed = 0 < len(labeled) < len(labels)
    candidates = torch.nonzero(labels >= 0).flatten().tolist() if mixed else list(range(len(labels)))
    sizes = [val_size] if has_test else [test_size, val_size]
    parts = [[candidates[i] for i in part] for part in stratified_split(labels[candidates].tolist(), sizes, seed=seed)]
    if mixed:
        parts[-1] = sorted(parts[-1] + torch.nonzero(labels < 0).flatten().tolist())
    if has_test:
        val_idx, train_idx = parts
        return None, val_idx, train_idx
    test_idx, val_idx, train_idx = parts
    return test_idx, val_idx, train_idx


class BatchTransform:
    """Collate, then (optionally) transform the uint8 batch into the model's input dict.

    ``views=2`` gives ``{"views": (v1, v2), "labels"}`` (SimCLR); ``views=1`` gives
    ``{"images", "labels"}``. With ``deferred=True`` the transform is left to
    ``on_after_batch_transfer`` and the batch carries ``{"raw", "transform", "labels"}`` (plus
    ``"seed"`` for a random transform).

    Randomness, one path wherever the transform runs: a random (training) transform has a
    ``seed``. Every batch draws its own seed from a generator seeded with (``seed``, DataLoader
    worker seed, epoch, process rank), and that batch's augmentation draws from a generator with
    the batch's seed, here (``deferred=False``) or after the transfer (:meth:`apply` with the
    batch's ``"seed"``). So the views do not depend on where they are made, each process of a DDP
    run draws its own (Lightning seeds every process alike), and a resumed run augments every batch
    as the uninterrupted one did: :class:`~lightning_transfer.data.resumable.ResumableDataLoader`
    calls :meth:`set_epoch` and replays the epoch's batches. ``seed=None``: a deterministic
    transform (evaluation); a random one would draw from torch's global generator.
    """

    def __init__(self, transform: torch.nn.Module, views: int, name: str, deferred: bool, seed: int | None = None):
        self.transform, self.views, self.name, self.deferred = transform, views, name, deferred
        self.seed, self.epoch = seed, 0
        self._generator: torch.Generator | None = None
        self._generator_key: tuple | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_generator": None, "_generator_key": None}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batch_seed(self) -> int | None:
        """The next batch's seed from this process's stream; None without ``seed``."""
        if self.seed is None:
            return None
        info = torch.utils.data.get_worker_info()
        key = (os.getpid(), info.seed if info is not None else None, self.epoch, distributed.rank())
        if self._generator is None or self._generator_key != key:
            self._generator = torch.Generator().manual_seed(mix_seed("augment", self.seed, *key[1:]))
            self._generator_key = key
        return int(torch.randint(0, 2**62, (), generator=self._generator))

    def __call__(self, samples) -> dict[str, Any]:
        keep_size = self.seed is not None  # training batches keep their size
        first = next((s for s in samples if s is not None), None)
        if first is not None and isinstance(first[0], bytes):  # encoded: decoded on the device
            encoded, labels = collate_encoded(samples, keep_size=keep_size)
            batch: dict[str, Any] = {"encoded": encoded, "transform": self.name, "labels": labels}
            batch["keep_size"] = keep_size
            seed = self._batch_seed()
            if seed is not None:
                batch["seed"] = seed
            return batch
        images, labels = collate_images(samples, keep_size=keep_size)
        return self.finish(images, labels, self._batch_seed())

    def finish(self, images: torch.Tensor, labels: torch.Tensor, seed: int | None) -> dict[str, Any]:
        """A collated uint8 batch -> the model's input dict (:meth:`apply`), or with ``deferred`` the
        batch that :meth:`apply` takes after the transfer. ``seed``: the batch's seed, from the
        class's per-process stream or, for the litdata stream, from the batch itself."""
        if self.deferred:
            batch = {"raw": images, "transform": self.name, "labels": labels}
            if seed is not None:
                batch["seed"] = seed
            return batch
        return self.apply(images, labels, seed)

    def apply(self, images: torch.Tensor, labels: torch.Tensor, seed: int | None = None) -> dict[str, Any]:
        """The model's input dict; ``seed``: the batch's seed (see the class docstring)."""
        transform: Callable[[torch.Tensor], torch.Tensor] = self.transform
        if seed is not None:
            transform = partial(self.transform, generator=torch.Generator().manual_seed(int(seed)))
        if self.views == 2:
            return {"views": (transform(images), transform(images)), "labels": labels}
        return {"images": transform(images), "labels": labels}


class ImageDataModule(AttributeHparams, pl.LightningDataModule):
    """Images for SimCLR pretraining (``mode="simclr"``: two augmented views per image) and for
    supervised fine-tuning (``mode="supervised"``: one lightly augmented view).

    Splits are fixed by ``seed``: sources with a test split keep it and carve ``val_size`` out of
    train; the others (``mnist_demo``, ``folder``, ``hf`` without splits) draw ``test_size`` and
    ``val_size`` stratified (ints are counts, floats fractions). ``labels_per_class`` /
    ``label_fraction`` keep a stratified seeded subset of the *training* labels only, drawn with
    ``subset_seed`` (default ``seed``): vary it to average over label draws with fixed val/test sets.

    ``source="litdata"``: ``root`` is a folder written by ``lightning-transfer optimize``; ``seed``,
    ``val_size`` and ``test_size`` must be those it was written with (the held-out images are in their
    own shards; a mismatch is a UserInputError), and the splits, label subsets and bank are then
    those of ``source="folder"`` on the original folder. Batches of the training stream also carry
    ``"index"``: each image's position in the train split.

    ``unlabeled_root`` (``source="folder"``, ``mode="simclr"``): a folder of unlabeled images (any
    layout) that joins the *training* pool only; validation and test are drawn from the labeled images
    exactly as without it, so a pretraining run and a fine-tuning run with the same ``seed`` hold out
    the same test images. Supervised mode ignores it.

    ``augment`` overrides :class:`SimCLRAugmentation` arguments (for example
    ``{"flip_prob": 0.0, "blur_prob": 0.0}``). ``decode_size``: the square size folder and Hub images
    are decoded to before the random crop (default ``image_size``; 256 for 224 px crops keeps
    detail). ``augment_on``: ``"loader"`` (in the DataLoader
    workers), ``"device"`` (in ``on_after_batch_transfer``) or ``"auto"`` (device on GPU or without
    workers, loader otherwise); it changes the speed, not the views.

    ``decode_on`` (``source="folder"``): ``"loader"`` decodes each file in the DataLoader workers;
    ``"device"`` has the workers only read the files' bytes and decodes whole batches on the device
    (:func:`~lightning_transfer.data.decode.decode_batch`: one nvJPEG call for a batch of JPEGs on a
    GPU), then augments there too; ``"auto"``: the device on a CUDA trainer, the loader otherwise.
    Unlike ``augment_on`` it may change pixels by a level or two (nvJPEG's IDCT, resizing on the GPU).
    """

    def __init__(
        self,
        source: str = "mnist_demo",
        root: str = "data",
        mode: str = "simclr",
        unlabeled_root: str | None = None,
        image_size: int | None = None,
        decode_size: int | None = None,
        channels: int | None = None,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        val_size: int | float = 500,
        test_size: int | float = 1000,
        labels_per_class: int | None = None,
        label_fraction: float | None = None,
        seed: int = 0,
        subset_seed: int | None = None,
        augment: dict | None = None,
        augment_on: str = "auto",
        decode_on: str = "auto",
        knn_bank_size: int = 5000,
        download: bool = True,
        hf_name: str | None = None,
        hf_config: str | None = None,
        image_column: str = "image",
        label_column: str | None = "label",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        drop_last: bool = True,
    ):
        super().__init__()
        if source not in IMAGE_SOURCES:
            raise UserInputError(f"unknown image source {source!r}; choose one of {', '.join(IMAGE_SOURCES)}")
        if mode not in MODES:
            raise UserInputError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        if augment_on not in ("auto", "loader", "device"):
            raise UserInputError(f"augment_on must be auto, loader or device, got {augment_on!r}")
        if decode_on not in ("auto", "loader", "device"):
            raise UserInputError(f"decode_on must be auto, loader or device, got {decode_on!r}")
        if decode_on == "device" and (source != "folder" or augment_on == "loader"):
            raise UserInputError(
                "decode_on=device needs source=folder and the augmentation on the device (augment_on auto or device)"
            )
        if labels_per_class is not None and label_fraction is not None:
            raise UserInputError("set labels_per_class or label_fraction, not both")
        if unlabeled_root is not None and source != "folder":
            raise UserInputError(f"unlabeled_root works with source=folder, not {source!r}")
        self.save_hyperparameters()
        defaults = {"mnist_demo": (28, 1), "cifar10": (32, 3), "cifar100": (32, 3), "stl10": (96, 3)}
        default_size, default_channels = defaults.get(source, (224, 3))
        self.image_size = image_size or default_size
        self.num_channels = channels or default_channels
        norm = NORMALIZATION.get(source, IMAGENET_NORMALIZATION if self.num_channels == 3 else ((0.5,), (0.5,)))
        self.mean = tuple(mean) if mean is not None else norm[0]
        self.std = tuple(std) if std is not None else norm[1]
        self.train_set: Subset | None = None
        self.val_set: Subset | None = None
        self.test_set: Dataset | None = None  # a Subset of the pool, or the source's own test split
        self.num_classes: int | None = None
        self.class_names: list[str] = []
        self._stream_path: str | None = None  # source="litdata", training on the whole train split: streamed

    # ----------------------------------------------------------------- transforms
    def train_augmentation(self) -> SimCLRAugmentation:
        """SimCLR's augmentation (blur off below 64 px), or a light crop + flip for supervised mode."""
        settings: dict[str, Any] = {"blur_prob": 0.5 if self.image_size >= 64 else 0.0}
        if self.hparams.mode == "supervised":
            settings = {"crop_scale": (0.5, 1.0), "jitter_prob": 0.0, "grayscale_prob": 0.0, "blur_prob": 0.0}
        settings.update(self.hparams.augment or {})
        return SimCLRAugmentation(self.image_size, mean=self.mean, std=self.std, **settings)

    def eval_transform(self) -> EvalTransform:
        return EvalTransform(self.image_size, mean=self.mean, std=self.std)

    def _decode_on_device(self) -> bool:
        if self.hparams.source != "folder" or self.hparams.decode_on == "loader":
            return False
        on_cuda = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        return self.hparams.decode_on == "device" or (on_cuda and self.hparams.augment_on != "loader")

    def _augment_on_device(self) -> bool:
        if self._decode_on_device():
            return True
        if self.hparams.augment_on != "auto":
            return self.hparams.augment_on == "device"
        on_gpu = self.trainer is not None and self.trainer.strategy.root_device.type != "cpu"
        return on_gpu or self.hparams.num_workers == 0

    # ----------------------------------------------------------------- sources
    def _load(self) -> tuple[Dataset, Dataset | None, torch.Tensor]:
        """Return ``(train_pool, given_test_or_None, train_pool_labels)``."""
        source, root, c = self.hparams.source, self.hparams.root, self.num_channels
        size = self.hparams.decode_size or self.image_size
        if source == "mnist_demo":
            images, labels = load_mnist_demo()
            return TensorImageDataset(images, labels), None, labels
        if source in ("cifar10", "cifar100", "stl10"):
            return self._load_torchvision(source, root)
        if source == "folder":
            unlabeled = self.hparams.unlabeled_root if self.hparams.mode == "simclr" else None
            dataset = ImageFolderDataset(root, c, size, unlabeled_root=unlabeled, decode=not self._decode_on_device())
            self.class_names = dataset.classes
            return dataset, None, dataset.labels
        return self._load_hf()

    def _load_torchvision(self, source: str, root: str):
        import torchvision

        def fetch(factory, **kwargs):
            try:
                return factory(root=root, download=self.hparams.download, **kwargs)
            except (RuntimeError, OSError) as err:
                raise UserInputError(
                    f"{source} is not in {root} and could not be downloaded ({type(err).__name__}: {str(err).splitlines()[0]}); "
                    f"download it once with internet (data.download=true) or point data.root at a copy"
                ) from None

        def as_tensor(ds, attr_labels: str):
            data = torch.as_tensor(ds.data)
            if data.shape[-1] == 3:  # NHWC (CIFAR) -> NCHW
                data = data.permute(0, 3, 1, 2).contiguous()
            return TensorImageDataset(data, torch.as_tensor(getattr(ds, attr_labels)))

        if source == "stl10":
            train = as_tensor(
                fetch(
                    torchvision.datasets.STL10, split="train+unlabeled" if self.hparams.mode == "simclr" else "train"
                ),
                "labels",
            )
            test = as_tensor(fetch(torchvision.datasets.STL10, split="test"), "labels")
        else:
            factory = torchvision.datasets.CIFAR10 if source == "cifar10" else torchvision.datasets.CIFAR100
            train = as_tensor(fetch(factory, train=True), "targets")
            test = as_tensor(fetch(factory, train=False), "targets")
        return train, test, train.labels

    def _load_hf(self):
        import datasets

        name = self.hparams.hf_name
        if not name:
            raise UserInputError("source=hf needs data.hf_name (a Hub dataset name, or 'imagefolder' with data.root)")
        try:
            loaded = datasets.load_dataset(
                name, self.hparams.hf_config, data_dir=self.hparams.root if name == "imagefolder" else None
            )
        except Exception as err:  # noqa: BLE001 - offline, missing, malformed: all one message
            raise UserInputError(
                f"could not load Hugging Face dataset {name!r} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                "it needs the network or a local HF cache; offline use source=folder with a local ImageFolder"
            ) from None
        size = self.hparams.decode_size or self.image_size

        def wrap(split: str) -> HFImageDataset:
            return HFImageDataset(
                loaded[split], self.hparams.image_column, self.hparams.label_column, self.num_channels, size
            )

        train = wrap("train")
        test = wrap("test") if "test" in loaded else None
        return train, test, train.labels

    # ----------------------------------------------------------------- splits
    def _load_shards(self) -> tuple[Dataset, Subset, Subset, torch.Tensor, int, list[int]]:
        """``source="litdata"``: ``(train pool, val, test, train pool labels, number of classes, the
        train pool's positions in the order of the original folder)``."""
        from lightning_transfer.data.streaming_images import open_image_shards

        hp = self.hparams
        settings = {"seed": hp.seed, "val_size": hp.val_size, "test_size": hp.test_size}
        shards = open_image_shards(hp.root, self.num_channels, hp.decode_size or self.image_size, settings)
        self.class_names = shards.classes
        self._stream_path = shards.train_path
        every = torch.cat([shards.train.labels, shards.val.labels, shards.test.labels])
        classes = int(every.max()) + 1 if len(every) and int(every.max()) >= 0 else 0
        held_out = [Subset(split, list(range(len(split)))) for split in (shards.val, shards.test)]
        return shards.train, held_out[0], held_out[1], shards.train.labels, classes, shards.train_order

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        seed = self.hparams.seed
        if self.hparams.source == "litdata":  # split when the shards were written
            pool, self.val_set, self.test_set, labels, self.num_classes, train_idx = self._load_shards()
        else:
            pool, given_test, labels = self._load()
            labeled = labels[labels >= 0]
            self.num_classes = int(labeled.max()) + 1 if len(labeled) else 0
            test_idx, val_idx, train_idx = holdout_split(
                labels, self.hparams.val_size, self.hparams.test_size, seed, has_test=given_test is not None
            )
            self.test_set = given_test if test_idx is None else Subset(pool, test_idx)
            self.val_set = Subset(pool, val_idx)
        train_labels = labels[train_idx].tolist()
        if self.hparams.labels_per_class is not None or self.hparams.label_fraction is not None:
            keep = stratified_subset(
                train_labels,
                per_class=self.hparams.labels_per_class,
                fraction=self.hparams.label_fraction,
                seed=seed if self.hparams.subset_seed is None else self.hparams.subset_seed,
            )
            train_idx = [train_idx[i] for i in keep]
            self._stream_path = None  # a label subset is small: read by index, in a ResumableDataLoader
        self.train_set = Subset(pool, train_idx)
        self._train_labels = labels[train_idx]
        if len(self.train_set) < self.hparams.batch_size and self.hparams.drop_last:
            raise UserInputError(
                f"batch_size {self.hparams.batch_size} is larger than the {len(self.train_set)} training images and "
                "drop_last is on, so no batch would be made; lower data.batch_size"
            )

    # ----------------------------------------------------------------- loaders
    def _loader(
        self,
        dataset: Dataset,
        transform: BatchTransform,
        shuffle: bool,
        batch_size: int,
        drop_last: bool,
        sampler: torch.utils.data.Sampler | None = None,
    ) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=workers,
            pin_memory=self.hparams.pin_memory,
            persistent_workers=self.hparams.persistent_workers and workers > 0,
            collate_fn=transform,
        )

    def _transform(self, name: str) -> BatchTransform:
        train = name == "train"
        views = 2 if train and self.hparams.mode == "simclr" else 1
        transform = self.train_augmentation() if train else self.eval_transform()
        seed = self.hparams.seed if train else None
        return BatchTransform(transform, views, name, deferred=self._augment_on_device(), seed=seed)

    def train_dataloader(self) -> DataLoader:
        transform = self._transform("train")
        workers = self.hparams.num_workers
        if self._stream_path is not None:  # source="litdata": built here, where the process group exists
            from lightning_transfer.data.streaming_images import image_stream_loader

            assert self.train_set is not None  # _stream_path is set by setup()
            return image_stream_loader(
                self._stream_path,
                len(self.train_set),
                transform,
                self.num_channels,
                self.hparams.decode_size or self.image_size,
                batch_size=self.hparams.batch_size,
                num_workers=workers,
                pin_memory=self.hparams.pin_memory,
                seed=self.hparams.seed,
                drop_last=self.hparams.drop_last,
            )
        return ResumableDataLoader(
            self.train_set,
            batch_size=self.hparams.batch_size,
            shuffle=True,
            drop_last=self.hparams.drop_last,
            num_workers=workers,
            pin_memory=self.hparams.pin_memory,
            persistent_workers=self.hparams.persistent_workers and workers > 0,
            collate_fn=transform,
            seed=self.hparams.seed,
        )

    def _scored_loader(self, dataset: Dataset) -> DataLoader:
        """Validation / test: in supervised mode every example is scored once, also under DDP
        (:func:`~lightning_transfer.distributed.evaluation_sampler`); SimCLR's monitors keep
        Lightning's sampler (their kNN gathers need equal shares)."""
        sampler = distributed.evaluation_sampler(dataset) if self.hparams.mode == "supervised" else None
        return self._loader(dataset, self._transform("eval"), False, self._eval_batch_size, False, sampler)

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None, "call setup() first"
        return self._scored_loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        assert self.test_set is not None, "call setup() first"
        return self._scored_loader(self.test_set)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def eval_train_dataloader(self) -> DataLoader:
        """The training images without augmentation (eval transform, fixed order): for frozen-feature
        evaluation such as the linear evaluation protocol."""
        assert self.train_set is not None, "call setup() first"
        return self._loader(self.train_set, self._transform("eval"), False, self._eval_batch_size, False)

    def bank_dataloader(self) -> DataLoader | None:
        """Clean (eval-transformed) labeled training images, at most ``knn_bank_size``, for the
        kNN monitor of SSL pretraining. ``None`` when there are no labels."""
        labeled = torch.nonzero(self._train_labels >= 0).flatten()
        if not len(labeled) or self.hparams.knn_bank_size <= 0:
            return None
        order = torch.randperm(len(labeled), generator=torch.Generator().manual_seed(self.hparams.seed))
        bank = labeled[order[: self.hparams.knn_bank_size]].sort().values.tolist()  # a seeded random sample
        assert self.train_set is not None  # _train_labels above exists only after setup()
        return self._loader(Subset(self.train_set, bank), self._transform("eval"), False, self._eval_batch_size, False)

    @property
    def _eval_batch_size(self) -> int:
        return self.hparams.eval_batch_size or self.hparams.batch_size

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, dict) and "encoded" in batch:  # decode_on=device: decode the batch here
            device = batch["labels"].device
            size = self.hparams.decode_size or self.image_size
            images, labels = decode_encoded(
                batch["encoded"], batch["labels"], self.num_channels, size, device, keep_size=batch["keep_size"]
            )
            batch = {"raw": images, "labels": labels, "transform": batch["transform"], "seed": batch.get("seed")}
        if isinstance(batch, dict) and "raw" in batch:  # deferred: transform on the device
            transform = self._device_transforms(batch["raw"].device)[batch["transform"]]
            out = transform.apply(batch["raw"], batch["labels"], batch.get("seed"))
            if "index" in batch:  # the litdata stream's sample ids
                out["index"] = batch["index"]
            return out
        return batch

    def _device_transforms(self, device: torch.device) -> dict[str, BatchTransform]:
        cached = getattr(self, "_on_device", None)
        if cached is None or cached[0] != device:
            transforms = {name: self._transform(name) for name in ("train", "eval")}
            for t in transforms.values():
                t.transform.to(device)
            self._on_device = (device, transforms)
        return self._on_device[1]
