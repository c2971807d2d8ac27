"""The folder ``lightning-transfer optimize`` writes, and random access to it.

Layout of ``OUT`` (one format for images and text; :mod:`lightning_transfer.optimize` writes it)::

    OUT/lightning_transfer.json   the manifest: format, version, kind, settings, per split its count
                                  (and, for images, every sample's label, in shard order)
    OUT/<split>/index.json        a litdata dataset per split (litdata.optimize), its chunks next to it
    OUT/<split>/chunk-*.bin       (images: train / val / test; text: train / validation)
    OUT/tokenizer.json            text only: the tokenizer the examples were built with

Every sample carries ``"index"``: its position in its split, 0 to count - 1, in the order the
samples were written. Held-out splits are separate litdata datasets, so a stream over ``train`` can
never reach a test sample. The manifest is written last, so a folder without one is an unfinished
run.

:func:`read_manifest` and :func:`split_path` check what they read and raise
:class:`~lightning_transfer.errors.UserInputError` with one line naming the file and the fix (missing
folder, missing or corrupt manifest or index, chunk files missing, counts that disagree).
:class:`ShardDataset` reads one split by position (random access; map-style, for evaluation and
small subsets); the training stream is in :mod:`lightning_transfer.data.streaming`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from lightning_transfer.errors import UserInputError

MANIFEST = "lightning_transfer.json"
FORMAT = "lightning-transfer/litdata"
FORMAT_VERSION = 1
LITDATA_INDEX = "index.json"
OPTIMIZE_HINT = "lightning-transfer optimize SRC {root} --overwrite"


def _redo(root: str | Path) -> str:
    return f"re-create it with: {OPTIMIZE_HINT.format(root=root)}"


def read_manifest(root: str | Path, kind: str) -> dict[str, Any]:
    """The manifest of ``root``, checked: it exists, parses, and has this format, version and ``kind``
    (``"image"`` or ``"text"``)."""
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise UserInputError(
            f"data.root={root}: no such folder; write litdata shards there first with: lightning-transfer optimize SRC {root}"
        )
    path = folder / MANIFEST
    if not path.is_file():
        raise UserInputError(
            f"{folder} has no {MANIFEST}, so it is not (or not yet completely) written by lightning-transfer "
            f"optimize; {_redo(root)}"
        )
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise UserInputError(f"{path} is not valid JSON ({type(err).__name__}: {err}); {_redo(root)}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserInputError(f"{path} is not a lightning-transfer litdata manifest; {_redo(root)}")
    if manifest.get("version") != FORMAT_VERSION:
        raise UserInputError(
            f"{path} has format version {manifest.get('version')}, this lightning-transfer reads version "
            f"{FORMAT_VERSION}; {_redo(root)}"
        )
    if manifest.get("kind") != kind:
        raise UserInputError(
            f"{folder} holds {manifest.get('kind')} shards, not {kind} shards; point data.root at the output of "
            f"lightning-transfer optimize --kind {kind}"
        )
    return manifest


def split_path(root: str | Path, manifest: dict[str, Any], split: str) -> str | None:
    """``root/split``, after checking that its litdata index parses, lists as many samples as the
    manifest says and that its chunk files exist; ``None`` for an empty split (none written)."""
    count = split_count(manifest, split)
    if count == 0:
        return None
    folder = Path(root).expanduser() / split
    index = folder / LITDATA_INDEX
    if not index.is_file():
        raise UserInputError(f"{index} is missing: the litdata index of the {split} split; {_redo(root)}")
    try:
        data = json.loads(index.read_text())
        chunks = data["chunks"]
        listed = sum(int(chunk["chunk_size"]) for chunk in chunks)
        files = [str(chunk["filename"]) for chunk in chunks]
        data["config"]["data_spec"]  # litdata needs it to read a sample back
    except (ValueError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise UserInputError(
            f"{index} is not a valid litdata index ({type(err).__name__}: {err}); {_redo(root)}"
        ) from None
    if listed != count:
        raise UserInputError(
            f"{index} lists {listed} samples but {MANIFEST} says the {split} split has {count}: the folder "
            f"mixes two optimize runs; {_redo(root)}"
        )
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        raise UserInputError(
            f"{folder} lacks {len(missing)} chunk file(s) that its index lists (first: {missing[0]}); {_redo(root)}"
        )
    return str(folder)


def split_count(manifest: dict[str, Any], split: str) -> int:
    try:
        return int(manifest["splits"][split]["count"])
    except (KeyError, TypeError, ValueError):
        raise UserInputError(
            f"the {MANIFEST} manifest has no {split} split; re-run lightning-transfer optimize"
        ) from None


def check_settings(manifest: dict[str, Any], wanted: dict[str, Any], root: str | Path) -> None:
    """Raise when a setting that decided the shards' content differs from the DataModule's: the
    shards cannot follow it silently (``wanted``: the DataModule's values by name)."""
    written = manifest.get("settings", {})
    for name, value in wanted.items():
        if name in written and written[name] != value:
            raise UserInputError(
                f"the shards in {root} were written with {name}={written[name]!r} but the DataModule has "
                f"{name}={value!r}; set data.{name}: {written[name]!r}, or write new shards with that setting "
                f"(lightning-transfer optimize)"
            )


class ShardDataset(Dataset):
    """One split of the shards, read by position (``0 <= i < count``): the stored sample dict.

    Each process (DataLoader workers included) opens its own ``litdata.StreamingDataset`` on first
    access; the dataset object itself pickles without it. A sample whose stored ``"index"`` is not
    its position raises :class:`UserInputError` (shards written out of order would give every
    position the wrong label). ``path=None``: an empty split."""

    def __init__(self, path: str | None, count: int):
        self.path, self.count = path, count
        self._dataset: Any = None
        self._pid: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_dataset": None, "_pid": None}

    def __len__(self) -> int:
        return self.count

    def read(self, position: int) -> dict[str, Any]:
        if not 0 <= position < self.count:
            raise IndexError(f"sample {position} is outside the split's {self.count} samples")
        if self._dataset is None or self._pid != os.getpid():
            from lightning_transfer.data.litdata_env import litdata

            self._dataset, self._pid = litdata.StreamingDataset(self.path), os.getpid()
        item = self._dataset[int(position)]
        if int(item["index"]) != position:
            raise UserInputError(
                f"{self.path} holds sample {int(item['index'])} at position {position}: its shards are out of "
                f"order; re-write them with lightning-transfer optimize --overwrite"
            )
        return item

    def __getitem__(self, position: int) -> Any:
        return self.read(position)


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "ShardDataset",
    "check_settings",
    "read_manifest",
    "split_count",
    "split_path",
]
