"""What the two text DataModules share: :class:`TextDataModuleMixin` (DataLoader construction, the
tokenizer's vocabulary size and special ids), the check of their common settings and the loading of a
tokenizer path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader

from lightning_transfer.data.pretraining_examples import check_max_seq_length
from lightning_transfer.data.resumable import ResumableDataLoader
from lightning_transfer.data.sources import resolve_path
from lightning_transfer.errors import UserInputError
from lightning_transfer.hparams import AttributeHparams

if TYPE_CHECKING:
    from tokenizers import Tokenizer


def check_common_settings(max_seq_length: int, batch_size: int, num_workers: int, num_proc: int) -> None:
    check_max_seq_length(max_seq_length)
    if batch_size < 1:
        raise UserInputError(f"batch_size must be at least 1, got {batch_size}")
    if num_workers < 0 or num_proc < 1:
        raise UserInputError(f"num_workers must be >= 0 and num_proc >= 1, got {num_workers} and {num_proc}")


def load_tokenizer_path(path: str):
    """``load_tokenizer`` of :func:`~lightning_transfer.data.sources.resolve_path` (aliases such as
    ``minilm_demo``, ``~``); a missing path raises UserInputError."""
    from lightning_transfer.data.tokenizer import load_tokenizer

    return load_tokenizer(resolve_path(path))


class TextDataModuleMixin(AttributeHparams):
    """DataLoader construction and tokenizer facts shared by the text DataModules."""

    if TYPE_CHECKING:  # every DataModule using the mixin defines it

        @property
        def tokenizer(self) -> Tokenizer: ...

    @property
    def vocab_size(self) -> int:
        """The tokenizer's actual vocabulary size (what the model's embedding needs); not
        ``tokenizer_vocab_size``, the most tokens a trained tokenizer may have."""
        return self.tokenizer.get_vocab_size()

    @property
    def special_ids(self) -> dict[str, int]:
        """Ids of the special tokens: keys ``pad``, ``unk``, ``cls``, ``sep``, ``mask``."""
        from lightning_transfer.data.tokenizer import special_token_ids

        return special_token_ids(self.tokenizer)

    def _loader(
        self,
        dataset,
        collate_fn,
        shuffle: bool,
        generator: torch.Generator | None = None,
        sampler: torch.utils.data.Sampler | None = None,
    ) -> DataLoader:
        """Shuffled (training) loaders are :class:`ResumableDataLoader`: epoch-seeded order and masks,
        and a position that a checkpoint restores mid-epoch. ``sampler``: an evaluation loader's own."""
        hp = self.hparams
        pin_memory = torch.cuda.is_available() if hp.pin_memory is None else hp.pin_memory
        loader_type, extra = (ResumableDataLoader, {"seed": hp.seed}) if shuffle else (DataLoader, {"sampler": sampler})
        return loader_type(
            dataset,
            batch_size=hp.batch_size,
            shuffle=shuffle,
            num_workers=hp.num_workers,
            collate_fn=collate_fn,
            pin_memory=pin_memory,
            persistent_workers=bool(hp.persistent_workers and hp.num_workers > 0),
            generator=generator,
            **extra,
        )


__all__ = ["TextDataModuleMixin", "check_common_settings", "load_tokenizer_path"]
