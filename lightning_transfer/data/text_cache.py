"""The on-disk cache of the pretraining DataModule: a trained tokenizer and the built examples.

Each entry is a directory under ``cache_dir`` named by :func:`cache_key` of everything its content
depends on (corpus fingerprint, tokenizer, settings, :data:`CACHE_VERSION`), so a changed input
misses the cache instead of reading stale data. Entries are written by :func:`write_atomically`:
a reader sees a complete directory or none, and when several processes build the same entry at once
(one per node, or runs sharing a cache) the first rename wins and everyone reads the winner.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from lightning_transfer.data.pretraining_examples import empty_columns, example_features
from lightning_transfer.data.resumable import mix_seed

if TYPE_CHECKING:
    from tokenizers import Tokenizer

CACHE_VERSION = "text-pretrain-v1"  # change it when the examples built from the same inputs change
EXAMPLES_MARKER = "dataset_dict.json"  # written last by datasets.DatasetDict.save_to_disk
TOKENIZER_FILE = "tokenizer.json"


def cache_key(*parts: object) -> str:
    """16 hex digits naming a cache entry: the stable hash :func:`mix_seed` of ``parts``."""
    return f"{mix_seed(*parts):016x}"


def write_atomically(write: Callable[[Path], object], path: Path, complete: str) -> None:
    """Build the directory ``path`` with ``write(tmp)`` in a temporary sibling, then rename it.

    Readers see a complete directory or none. When the rename fails because another process
    finished first (``path / complete`` exists), its copy is kept and ours discarded; any other
    failure is raised. The temporary directory never outlives the call."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        write(tmp)
        try:
            os.rename(tmp, path)
        except OSError:
            if not (path / complete).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cached_tokenizer(directory: Path, train: Callable[[], Tokenizer]) -> Tokenizer:
    """The tokenizer saved in ``directory``; when there is none, ``train()`` one and save it there
    first (atomically). Always read back from disk, so concurrent runs all use the winner's file.

    Processes that start together (``torchrun``: every rank builds its DataModule, and the CLI asks it
    for its vocabulary size before any process group exists) take a file lock beside ``directory``:
    one trains, the others wait for its file instead of training the same tokenizer again."""
    from filelock import FileLock

    from lightning_transfer.data.tokenizer import load_tokenizer, save_tokenizer

    if not (directory / TOKENIZER_FILE).exists():
        directory.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(directory.parent / f".{directory.name}.lock")):
            if not (directory / TOKENIZER_FILE).exists():  # not written while this process waited
                trained = train()
                write_atomically(lambda tmp: save_tokenizer(trained, tmp), directory, TOKENIZER_FILE)
    return load_tokenizer(directory / TOKENIZER_FILE)


def has_examples(path: Path) -> bool:
    """True when ``path`` holds a complete examples entry."""
    return (path / EXAMPLES_MARKER).exists()


def save_examples(dataset_dict, path: Path) -> None:
    """Write a ``datasets.DatasetDict`` of examples to ``path`` atomically (first writer wins)."""
    write_atomically(lambda tmp: dataset_dict.save_to_disk(str(tmp)), path, EXAMPLES_MARKER)


def load_examples(path: Path, word_ids: bool, nsp: bool):
    """``(train, validation)`` datasets in numpy format from the entry at ``path``; a split that was
    empty (not saved: ``datasets`` cannot reload an empty split) comes back empty, with the columns."""
    import datasets

    loaded = datasets.load_from_disk(str(path))
    empty = datasets.Dataset.from_dict(empty_columns(word_ids, nsp), features=example_features(word_ids, nsp))
    validation = loaded.get("validation", empty)
    return loaded["train"].with_format("numpy"), validation.with_format("numpy")


__all__ = [
    "CACHE_VERSION",
    "cache_key",
    "cached_tokenizer",
    "has_examples",
    "load_examples",
    "save_examples",
    "write_atomically",
]
