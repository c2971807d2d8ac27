"""Image sources: datasets of ``(uint8 C x H x W image, int label)`` pairs (label ``-1`` when
unknown) and the collate function that stacks them, for :class:`~lightning_transfer.data.images.ImageDataModule`
and the ``transfer`` command.

- :class:`TensorImageDataset`: images already in memory (MNIST demo, torchvision datasets).
- :class:`ImageFolderDataset`: an ImageFolder tree ``root/<class>/<image>`` (and unlabeled images,
  :func:`unlabeled_images`), decoded lazily by :func:`~lightning_transfer.data.decode.decode_image_file` (torchvision's decoders): resized so the shorter side
  is the decode size and center-cropped square. Unreadable files are skipped with a warning naming
  the file (a few bad files must not kill a long run); a folder with no readable image is an error.
  With ``decode=False`` it yields the files' encoded bytes instead, for decoding whole batches on
  the device (:func:`collate_encoded`, then :func:`decode_encoded` after the transfer).
- :class:`HFImageDataset`: a Hugging Face dataset with an image column, decoded the same way.
- :func:`collate_images`: stacks a batch, dropping the unreadable samples.
- :func:`collate_encoded` / :func:`decode_encoded`: the same in two halves for encoded bytes, the
  first in the DataLoader workers, the second on the device
  (:func:`~lightning_transfer.data.decode.decode_batch`: one nvJPEG call per batch on a GPU).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import torch
from torch.utils.data import Dataset

from lightning_transfer.data.decode import decode_batch, decode_image_file, fit_square
from lightning_transfer.errors import UserInputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class TensorImageDataset(Dataset):
    """In-memory uint8 images ``N x C x H x W`` with int64 labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        if len(images) == 0:
            raise UserInputError("the image dataset is empty")
        self.images, self.labels = images, labels.long()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])


def unlabeled_images(root: str | Path) -> list[Path]:
    """Every image file under ``root`` (any depth, sorted); a missing or image-less folder is a
    :class:`UserInputError`."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserInputError(f"unlabeled image folder {root} does not exist; pass a folder of images")
    files = [f for f in sorted(root.rglob("*")) if f.suffix.lower() in IMAGE_EXTENSIONS]
    if not files:
        raise UserInputError(
            f"no images found in the unlabeled folder {root} (looked for {', '.join(IMAGE_EXTENSIONS)})"
        )
    return files


class ImageFolderDataset(Dataset):
    """``root/<class>/<image>`` decoded lazily, then the images under ``unlabeled_root`` (label -1).
    Unreadable images come back as ``None`` (with a warning naming the file) and are dropped by the
    collate function.

    ``decode=False``: items are ``(the file's encoded bytes, label)``, to be decoded by
    :func:`decode_encoded` (on the device); only a file that cannot be read comes back as ``None``
    here, an undecodable one is skipped there. Bytes, not tensors: Lightning moves tensors to the
    device, while nvJPEG reads its input from the CPU; and a worker sends a list of ``bytes`` in one
    pickle, where every tensor would cost a shared-memory segment."""

    def __init__(
        self,
        root: str | Path,
        channels: int,
        size: int,
        unlabeled_root: str | Path | None = None,
        decode: bool = True,
    ):
        root = Path(root).expanduser()
        if not root.is_dir():
            raise UserInputError(
                f"image folder {root} does not exist; set data.root to a folder laid out as <root>/<class>/<image>"
            )
        self.classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        files: list[tuple[Path, int]] = []
        for label, name in enumerate(self.classes):
            files += [(f, label) for f in sorted((root / name).rglob("*")) if f.suffix.lower() in IMAGE_EXTENSIONS]
        if not files:  # a flat folder of unlabeled images also works
            files = [(f, -1) for f in sorted(root.iterdir()) if f.suffix.lower() in IMAGE_EXTENSIONS]
            self.classes = []
        if unlabeled_root is not None:  # after the labeled files, so that the labeled indices do not move
            files += [(f, -1) for f in unlabeled_images(unlabeled_root)]
        if not files:
            raise UserInputError(
                f"no images found in {root} (looked for {', '.join(IMAGE_EXTENSIONS)} in <root>/<class>/ or <root>/)"
            )
        self.files, self.channels, self.size, self.decode = files, channels, size, decode
        self.skipped = 0  # distinct unreadable files met so far (in this process), each warned about once
        self._skipped_files: set[Path] = set()
        self.labels = torch.tensor([label for _, label in files])
        self._check_some_readable()

    def _check_some_readable(self, sample: int = 8) -> None:
        errors = []
        for path, _ in self.files[:sample]:
            try:
                decode_image_file(path, self.channels, self.size)
                return
            except Exception as err:  # noqa: BLE001 - any decoder failure means unreadable
                errors.append(f"{path.name}: {err}")
        raise UserInputError(
            f"cannot read any of the first {len(errors)} images in the folder ({errors[0]}); are these image files?"
        )

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | bytes, int] | None:
        path, label = self.files[index]
        try:
            if not self.decode:
                return path.read_bytes(), label
            return decode_image_file(path, self.channels, self.size), label
        except Exception as err:  # noqa: BLE001 - any read or decoder failure means unreadable: skipped and counted
            if path in self._skipped_files:  # warned once already (an earlier epoch)
                return None
            self._skipped_files.add(path)
            self.skipped += 1
            warnings.warn(
                f"skipped unreadable image {path} ({type(err).__name__}: {err}); {self.skipped} of "
                f"{len(self.files)} images skipped so far in this process",
                stacklevel=1,
            )
            return None


class HFImageDataset(Dataset):
    """A Hugging Face ``datasets.Dataset`` with a PIL image column, decoded like a folder image."""

    def __init__(self, dataset, image_column: str, label_column: str | None, channels: int, size: int):
        missing = [c for c in (image_column, label_column) if c and c not in dataset.column_names]
        if missing:
            raise UserInputError(
                f"column {missing[0]!r} not in the dataset; available: {', '.join(dataset.column_names)}"
            )
        self.dataset, self.image_column, self.label_column = dataset, image_column, label_column
        self.channels, self.size = channels, size
        self.labels = torch.tensor(dataset[label_column]) if label_column else torch.full((len(dataset),), -1)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | None:
        from torchvision.transforms.v2 import functional as TF

        try:
            image = self.dataset[index][self.image_column].convert("L" if self.channels == 1 else "RGB")
        except Exception as err:  # noqa: BLE001 - the Hub dataset's own decoder failed: skipped, as in a folder
            warnings.warn(f"skipped unreadable image at index {index} ({err})", stacklevel=1)
            return None
        return fit_square(TF.pil_to_tensor(image), self.size), int(self.labels[index])


def collate_images(
    samples: Sequence[tuple[torch.Tensor, int] | None], keep_size: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack uint8 images and labels, dropping unreadable (``None``) samples.

    ``keep_size`` (training batches): the places of dropped samples are filled with readable
    samples of the same batch, in order, so that the batch keeps its size. Under DDP every process
    must then bring batches of one size to the collectives (SimCLR's all-gather of embeddings);
    an evaluation batch keeps only what it read, so that no test image counts twice."""
    readable = _readable(samples, keep_size)
    images = torch.stack([s[0] for s in readable])
    labels = torch.tensor([s[1] for s in readable], dtype=torch.long)
    return images, labels


def collate_encoded(
    samples: Sequence[tuple[bytes, int] | None], keep_size: bool = False
) -> tuple[list[bytes], torch.Tensor]:
    """The loader half of a batch decoded on the device: ``(encoded images, int64 labels)``, dropping
    the unreadable (``None``) samples as :func:`collate_images` does (``keep_size`` alike)."""
    readable = _readable(samples, keep_size)
    return [s[0] for s in readable], torch.tensor([s[1] for s in readable], dtype=torch.long)


def decode_encoded(
    encoded: Sequence[bytes | torch.Tensor],
    labels: torch.Tensor,
    channels: int,
    size: int,
    device: torch.device | str = "cpu",
    keep_size: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The device half: :func:`~lightning_transfer.data.decode.decode_batch` of a
    :func:`collate_encoded` batch -> ``(uint8 B x channels x size x size, labels)`` on ``device``.

    Images no decoder reads are dropped with a warning (each is decoded alone to find them; the
    whole batch goes in one call otherwise), and ``keep_size`` fills their places as
    :func:`collate_images` does; a batch with no readable image is a :class:`UserInputError`.
    ``labels``: one row per image, kept in step with the images (a ``B x 2`` tensor of labels and
    sample ids works too)."""
    try:
        return decode_batch(encoded, channels, size, device), labels
    except ValueError:
        pass
    samples: list[tuple[torch.Tensor, torch.Tensor] | None] = []
    for i, (data, label) in enumerate(zip(encoded, labels)):
        try:
            samples.append((decode_batch([data], channels, size, device)[0], label))
        except ValueError as err:
            warnings.warn(f"skipped an unreadable image, {i} of its batch ({err.__cause__ or err})", stacklevel=2)
            samples.append(None)
    readable = _readable(samples, keep_size)
    return torch.stack([s[0] for s in readable]), torch.stack([s[1] for s in readable])


_Sample = TypeVar("_Sample")


def _readable(samples: Sequence[_Sample | None], keep_size: bool) -> list[_Sample]:
    """The readable (not ``None``) samples; with ``keep_size`` the places of the others filled with
    readable ones of the same batch, in order."""
    readable = [s for s in samples if s is not None]
    if not readable:
        raise UserInputError("a whole batch of images was unreadable; check the image files (see the warnings above)")
    if keep_size and len(readable) < len(samples):
        readable += [readable[i % len(readable)] for i in range(len(samples) - len(readable))]
    return readable
