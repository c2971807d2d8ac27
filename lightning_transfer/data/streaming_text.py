"""Pretraining examples from litdata shards (``TextPretrainDataModule(source="litdata", root=OUT)``).

``lightning-transfer optimize CORPUS OUT`` (:mod:`lightning_transfer.optimize`) runs the
DataModule's own pipeline (tokenizer, document split, NSP pairs or packing) and writes its examples,
ready to collate: ``{"index", "input_ids", "token_type_ids", "special_tokens_mask", "length"}``, plus
``word_ids`` (whole-word masking) and ``next_sentence_label`` (NSP), the arrays as NumPy int32 / int8,
in the order the DataModule built them, with the tokenizer next to them (``OUT/tokenizer.json``).
Masking stays in the collator (:class:`~lightning_transfer.data.collators.PretrainingCollator`):
the shards hold no mask, every epoch masks anew.

- :func:`open_text_shards`: the train / validation splits as map-style :class:`ShardDataset`
  (validation is read by index, as before), after checking that the settings that shaped the
  examples match the DataModule's.
- :func:`shard_tokenizer`: the shards' tokenizer (a ``tokenizer`` the user names must equal it).
- :func:`text_stream_loader`: the training stream (:mod:`lightning_transfer.data.streaming`),
  batched by :class:`StreamPretrainingBatches`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lightning_transfer.data.collators import PretrainingCollator
from lightning_transfer.data.resumable import mix_seed
from lightning_transfer.data.shards import ShardDataset, check_settings, read_manifest, split_count, split_path
from lightning_transfer.errors import UserInputError

TEXT_SPLITS = ("train", "validation")
EXAMPLE_SETTINGS = ("max_seq_length", "nsp", "short_seq_prob", "whole_word_masking", "val_fraction")
"""The DataModule settings that shape the examples: they must equal the ones the shards were built with."""
TOKENIZER_FILE = "tokenizer.json"


def open_text_shards(root: str, settings: dict[str, Any]) -> tuple[ShardDataset, ShardDataset]:
    """``(train, validation)`` of the shards in ``root``; ``settings``: the DataModule's values of
    :data:`EXAMPLE_SETTINGS` (``short_seq_prob`` only matters, and is only compared, with NSP)."""
    manifest = read_manifest(root, "text")
    wanted = {name: settings[name] for name in EXAMPLE_SETTINGS if name != "short_seq_prob" or settings["nsp"]}
    check_settings(manifest, wanted, root)
    train, validation = (ShardDataset(split_path(root, manifest, s), split_count(manifest, s)) for s in TEXT_SPLITS)
    if len(train) == 0:
        raise UserInputError(f"the shards in {root} have no training example; write them again from a larger corpus")
    return train, validation


def shard_tokenizer(root: str, tokenizer: str | None = None):
    """The tokenizer the shards were built with (``root/tokenizer.json``). A ``tokenizer`` path the
    user gives too must have the same vocabulary: the shards hold token ids of theirs."""
    from lightning_transfer.data.text_datamodule_base import load_tokenizer_path
    from lightning_transfer.data.tokenizer import load_tokenizer

    read_manifest(root, "text")
    path = Path(root).expanduser() / TOKENIZER_FILE
    if not path.is_file():
        raise UserInputError(
            f"{path} is missing: the shards' tokenizer; write the shards again (lightning-transfer optimize)"
        )
    stored = load_tokenizer(path)
    if tokenizer is not None:
        given = load_tokenizer_path(tokenizer)
        if given.get_vocab(with_added_tokens=True) != stored.get_vocab(with_added_tokens=True):
            raise UserInputError(
                f"data.tokenizer={tokenizer} is not the tokenizer the shards in {root} were built with; drop "
                f"data.tokenizer (the shards bring theirs) or write the shards with it (optimize --tokenizer)"
            )
    return stored


class StreamPretrainingBatches:
    """The stream's collate function: ``(example, epoch)`` pairs -> the
    :class:`~lightning_transfer.data.collators.PretrainingCollator` batch, plus ``"index"`` (the
    examples' positions in the train split, int64).

    Each batch is masked by the collator's ``fixed`` mode (a generator seeded from its seed and the
    batch's token ids) with the seed ``mix_seed("mask", seed, epoch)``: new masks every epoch, and a
    pure function of the batch, so a resumed run masks it as the uninterrupted one did, whatever
    the number of workers. ``collator``: the keyword arguments of ``PretrainingCollator`` but
    ``seed`` and ``fixed``."""

    def __init__(self, seed: int, **collator: Any):
        self.seed, self.collator = seed, collator

    def __call__(self, rows: list[tuple[dict[str, Any], int]]) -> dict[str, torch.Tensor]:
        examples, epoch = [example for example, _ in rows], rows[0][1]
        masking = PretrainingCollator(**self.collator, seed=mix_seed("mask", self.seed, epoch), fixed=True)
        batch = masking(examples)
        batch["index"] = torch.tensor([int(e["index"]) for e in examples], dtype=torch.long)
        return batch


def text_stream_loader(
    path: str, count: int, batches: StreamPretrainingBatches, *, batch_size: int, num_workers: int, pin_memory: bool
):
    """The training stream over the train split at ``path``, shuffled from ``(seed, epoch)``; in one
    process the last batch may be partial, under DDP litdata drops it (see
    :mod:`lightning_transfer.data.streaming`)."""
    from lightning_transfer.data.streaming import (
        EpochTaggedStream,
        ResumableStreamingDataLoader,
        check_stream_not_empty,
    )

    dataset = EpochTaggedStream(path, shuffle=True, seed=batches.seed)
    loader = ResumableStreamingDataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory, collate_fn=batches
    )
    check_stream_not_empty(loader, path, count)
    return loader


__all__ = [
    "EXAMPLE_SETTINGS",
    "TEXT_SPLITS",
    "TOKENIZER_FILE",
    "StreamPretrainingBatches",
    "open_text_shards",
    "shard_tokenizer",
    "text_stream_loader",
]
