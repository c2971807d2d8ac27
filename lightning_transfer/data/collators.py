"""Collators: lists of tokenized examples -> padded ``int64`` batches with Hugging Face key names.

- :class:`PretrainingCollator`: pads pretraining examples and masks them anew on every call
  (dynamic MLM masking, :mod:`lightning_transfer.data.masking`), from a seeded generator;
- :class:`ClassificationCollator`: pads fine-tuning examples and stacks their labels.

What only the data knows is worked out here, on the host, so that the training step never has to
read a tensor's values back from the device to learn it (a host-device synchronization): whether any
row is padded (:func:`attention_mask_for`: no ``attention_mask`` when none is, and the encoder attends
everywhere without building a mask) and where the MLM labels are (``mlm_positions``, whose length is
the number of selected tokens).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from lightning_transfer import distributed
from lightning_transfer.data.resumable import mix_seed


def _pad(rows: Sequence[Any], value: int, length: int) -> torch.Tensor:
    """``rows`` (int sequences of any length <= ``length``) as one int64 ``len(rows) x length`` tensor
    filled with ``value`` after each row."""
    out = torch.full((len(rows), length), value, dtype=torch.long)
    for i, row in enumerate(rows):
        row = torch.as_tensor(np.asarray(row, dtype=np.int64))
        out[i, : len(row)] = row
    return out


def attention_mask_for(lengths: Sequence[int], length: int) -> torch.Tensor | None:
    """int64 ``B x length``, 1 for the first ``lengths[i]`` positions of row ``i`` and 0 at the padding
    after them; ``None`` when no row is padded (every length is ``length``), which the models read as
    "attend everywhere" (decided here from Python ints: the training step need not look)."""
    if all(n == length for n in lengths):
        return None
    return (torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]).long()


def label_positions(labels: torch.Tensor) -> torch.Tensor:
    """int64 ``N``: the flat indices (row-major, into ``labels.flatten()``) of the positions with a
    label (not -100), ascending; ``N`` is the number of tokens selected for prediction."""
    from lightning_transfer.data.masking import IGNORE_INDEX

    return torch.nonzero(labels.flatten() != IGNORE_INDEX).squeeze(1)


class PretrainingCollator:
    """Pads a list of pretraining examples and masks them anew on every call.

    Output (Hugging Face key names), all ``int64`` ``B x L`` with ``L`` the longest example:
    ``input_ids`` (masked), ``attention_mask`` (0 at padding; left out when no row is padded, see
    :func:`attention_mask_for`), ``token_type_ids``, ``labels`` (the original id where a token was selected
    for prediction, -100 elsewhere; never at special tokens or padding), plus ``next_sentence_label``
    (``B``) when the examples have it, and ``mlm_positions`` (int64 ``N``, :func:`label_positions`:
    where ``labels`` is not -100, so that the model gathers those rows without asking the device how
    many there are).

    Randomness: a ``torch.Generator`` per process, seeded from (``seed``, the DataLoader worker seed,
    the distributed rank). PyTorch derives the worker seed from the DataLoader's ``generator`` anew for
    every epoch and worker, so with a seeded loader a run is reproducible and every epoch gets new
    masks; without workers one generator runs through all epochs. With ``fixed=True`` (validation)
    each batch is masked with a generator seeded from ``seed`` and the batch's token ids, so the same
    batch always gets the same mask and validation losses are comparable across epochs.
    """

    def __init__(
        self,
        pad_id: int,
        mask_id: int,
        vocab_size: int,
        mlm_probability: float = 0.15,
        whole_word_masking: bool = False,
        seed: int = 0,
        fixed: bool = False,
    ):
        self.pad_id, self.mask_id, self.vocab_size = pad_id, mask_id, vocab_size
        self.mlm_probability, self.whole_word_masking = mlm_probability, whole_word_masking
        self.seed, self.fixed = seed, fixed
        self.epoch: int | None = None  # set by ResumableDataLoader: masks then depend on (seed, epoch) only
        self._generator: torch.Generator | None = None
        self._generator_key: tuple | None = None

    def set_epoch(self, epoch: int) -> None:
        """Seed the masks of the coming pass from (``seed``, ``epoch``), so a run resumed mid-epoch
        masks every batch as the uninterrupted run did."""
        self.epoch = epoch

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_generator"], state["_generator_key"] = None, None
        return state

    def _next_generator(self, input_ids: torch.Tensor) -> torch.Generator:
        if self.fixed:
            return torch.Generator().manual_seed(mix_seed(self.seed, "val", zlib.crc32(input_ids.numpy().tobytes())))
        info = torch.utils.data.get_worker_info()
        key = (os.getpid(), info.seed if info is not None else None, self.epoch)
        if self._generator is None or self._generator_key != key:
            rank = distributed.rank()
            parts = (self.seed, rank, key[1]) if self.epoch is None else (self.seed, rank, key[1], "epoch", self.epoch)
            self._generator = torch.Generator().manual_seed(mix_seed(*parts))
            self._generator_key = key
        return self._generator

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        from lightning_transfer.data.masking import mask_tokens, mask_whole_words

        lengths = [len(e["input_ids"]) for e in examples]
        length = max(lengths)
        input_ids = _pad([e["input_ids"] for e in examples], self.pad_id, length)
        special = _pad([e["special_tokens_mask"] for e in examples], 1, length).bool()
        token_type_ids = _pad([e["token_type_ids"] for e in examples], 0, length)
        generator = self._next_generator(input_ids)
        if self.whole_word_masking:
            word_ids = _pad([e["word_ids"] for e in examples], -1, length)
            inputs, labels = mask_whole_words(
                input_ids, word_ids, special, self.mask_id, self.vocab_size, self.mlm_probability, generator=generator
            )
        else:
            inputs, labels = mask_tokens(
                input_ids, special, self.mask_id, self.vocab_size, self.mlm_probability, generator=generator
            )
        batch = {"input_ids": inputs, "token_type_ids": token_type_ids, "labels": labels}
        mask = attention_mask_for(lengths, length)
        if mask is not None:
            batch["attention_mask"] = mask
        batch["mlm_positions"] = label_positions(labels)
        if "next_sentence_label" in examples[0]:
            batch["next_sentence_label"] = torch.tensor(
                [int(e["next_sentence_label"]) for e in examples], dtype=torch.long
            )
        return batch


class ClassificationCollator:
    """Pads tokenized classification examples: ``input_ids`` (pad id), ``attention_mask`` (left out
    when no row is padded, see :func:`attention_mask_for`), ``token_type_ids`` (``B x L``, int64) and
    ``labels`` (``B``, int64 class ids)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        lengths = [len(e["input_ids"]) for e in examples]
        length = max(lengths)
        batch = {
            "input_ids": _pad([e["input_ids"] for e in examples], self.pad_id, length),
            "token_type_ids": _pad([e["token_type_ids"] for e in examples], 0, length),
            "labels": torch.tensor([int(e["labels"]) for e in examples], dtype=torch.long),
        }
        mask = attention_mask_for(lengths, length)
        if mask is not None:
            batch["attention_mask"] = mask
        return batch


__all__ = ["ClassificationCollator", "PretrainingCollator", "attention_mask_for", "label_positions"]
