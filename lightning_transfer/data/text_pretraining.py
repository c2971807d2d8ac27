""":class:`TextPretrainDataModule`: unlabeled text -> BERT pretraining batches.

The pipeline:

1. read the corpus as documents (:func:`~lightning_transfer.data.corpus.read_corpus`) and split the
   *documents* into train / validation with ``seed``;
2. split each document into sentences and tokenize them once
   (:func:`~lightning_transfer.data.encoding.tokenize_corpus`);
3. build fixed-length examples: NSP pairs exactly as Google's ``create_pretraining_data.py``
   (:func:`~lightning_transfer.data.pretraining_examples.create_nsp_examples`) or RoBERTa's
   FULL-SENTENCES packing (:func:`~lightning_transfer.data.pretraining_examples.pack_sequences`);
4. save them under ``cache_dir`` with a key that hashes everything they depend on
   (:mod:`lightning_transfer.data.text_cache`), so a second run loads them instead of tokenizing again;
5. mask dynamically in the collator (:class:`~lightning_transfer.data.collators.PretrainingCollator`):
   a new mask every time a batch is drawn, from a seeded generator.

``source="litdata", root=OUT`` skips steps 1-4: ``lightning-transfer optimize CORPUS OUT`` ran them
once and wrote the examples as litdata shards (:mod:`lightning_transfer.data.streaming_text`), which
the training loader streams (sharded per process and worker, resumable mid-epoch) through the same
collator.
"""

from __future__ import annotations

import hashlib
import random
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader

from lightning_transfer.data.collators import PretrainingCollator
from lightning_transfer.data.corpus import (
    Source,
    TxtDocuments,
    read_corpus,
    resolve_source,
    source_fingerprint,
)
from lightning_transfer.data.encoding import tokenize_corpus
from lightning_transfer.data.pretraining_examples import (
    create_nsp_examples,
    empty_columns,
    example_features,
    pack_sequences,
)
from lightning_transfer.data.sources import resolve_path
from lightning_transfer.data.text_cache import (
    CACHE_VERSION,
    cache_key,
    cached_tokenizer,
    has_examples,
    load_examples,
    save_examples,
)
from lightning_transfer.data.text_datamodule_base import (
    TextDataModuleMixin,
    check_common_settings,
    load_tokenizer_path,
)
from lightning_transfer.errors import UserInputError

RENAMED_VOCAB_SIZE = (
    "TextPretrainDataModule's vocab_size is now tokenizer_vocab_size (the size of the WordPiece tokenizer to "
    "train; the model's vocab_size follows the tokenizer): rename data.init_args.vocab_size to "
    "data.init_args.tokenizer_vocab_size"
)


def _split_documents(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded document-level split: ``round(n * val_fraction)`` documents (at least one when
    ``val_fraction > 0``) go to validation; both lists sorted, so corpus order is kept."""
    n_val = round(n * val_fraction)
    if val_fraction > 0:
        n_val = max(n_val, 1)
    if n - n_val < 1:
        raise UserInputError(
            f"the corpus has {n} document(s): none is left for training after the validation split; "
            f"set val_fraction=0, add documents, or for plain text one document per line with txt_documents='line'"
        )
    order = np.random.default_rng(seed).permutation(n)
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


class TextPretrainDataModule(TextDataModuleMixin, pl.LightningDataModule):
    """Unlabeled text -> BERT pretraining batches (MLM, plus NSP when ``nsp=True``).

    Args:
        source: ``"reviews_demo"``, a text/table file, a directory of them, or a Hub dataset name
            (see :mod:`lightning_transfer.data.corpus`).
        text_column: column holding the text in tables and Hub datasets.
        tokenizer: path to a ``tokenizer.json``, a directory with one, or a ``vocab.txt``. ``None``
            trains a WordPiece tokenizer (``tokenizer_vocab_size``, ``lowercase``, ``min_frequency``) on
            the training documents and keeps it under ``cache_dir``, so later runs reuse it.
        tokenizer_vocab_size: the most tokens the trained tokenizer may have (ignored when
            ``tokenizer`` is given); a small corpus gives fewer. The model's size is the tokenizer's
            actual one, the read-only :attr:`vocab_size`.
        lowercase: lowercase when training the tokenizer.
        max_seq_length: longest sequence in tokens, special tokens included (at least 8).
        nsp: ``True``: Google-style ``[CLS] A [SEP] B [SEP]`` pairs with ``next_sentence_label``;
            ``False``: RoBERTa-style packing of full sentences across documents.
        short_seq_prob: NSP only: probability of a shorter random target length (BERT's 0.1).
        mlm_probability: fraction of non-special tokens selected for prediction.
        whole_word_masking: select whole words instead of single word pieces.
        val_fraction: fraction of the *documents* held out for validation (seeded); 0 for none.
        batch_size, num_workers, pin_memory (None: when CUDA is available), persistent_workers: DataLoader.
        num_proc: processes for tokenization (``datasets.map``).
        cache_dir: where the tokenized examples (and a trained tokenizer) are stored.
        seed: document split, pair construction, shuffling and masking.
        txt_documents: how plain-text files are cut into documents: ``blank_line``, ``line``, ``file``.
        hub_config, hub_split: configuration name and split of a Hub dataset.
        min_frequency: minimum count of a merge when training the tokenizer.
        vocab_size: the old name of ``tokenizer_vocab_size``; any value raises UserInputError naming it.
        root: with ``source="litdata"``: the folder ``lightning-transfer optimize`` wrote. Its examples
            and tokenizer are used as they are: ``max_seq_length``, ``nsp``, ``short_seq_prob`` (with
            NSP), ``whole_word_masking`` and ``val_fraction`` must be those it was written with
            (UserInputError otherwise), a ``tokenizer`` given too must be its tokenizer, and the
            settings that only build examples (``tokenizer_vocab_size``, ``lowercase``,
            ``min_frequency``, ``txt_documents``, ``text_column``, ``num_proc``, ``cache_dir``) are
            not used. ``seed`` orders the stream and seeds the masks.

    After :meth:`setup`: ``train_dataset`` / ``val_dataset`` (``datasets.Dataset``; with
    ``source="litdata"`` a :class:`~lightning_transfer.data.shards.ShardDataset` of the same rows plus
    ``index`` and ``row``), ``cache_path``
    and ``loaded_from_cache`` (True when the examples were read from ``cache_path`` instead of being
    built). ``tokenizer``, ``vocab_size`` and ``special_ids`` are available right after construction
    (loading or training the tokenizer on first use); a model with ``vocab_size=None`` takes it in ``setup``.

    Raises:
        UserInputError: ``max_seq_length < 8``, a tokenizer path that does not exist, a corpus that is
            empty after cleaning, and the reading errors of :func:`read_corpus`.
    """

    def __init__(
        self,
        source: str = "reviews_demo",
        text_column: str = "text",
        tokenizer: str | None = None,
        tokenizer_vocab_size: int = 8192,
        lowercase: bool = True,
        max_seq_length: int = 128,
        nsp: bool = True,
        short_seq_prob: float = 0.1,
        mlm_probability: float = 0.15,
        whole_word_masking: bool = False,
        val_fraction: float = 0.05,
        batch_size: int = 32,
        num_workers: int = 0,
        num_proc: int = 1,
        cache_dir: str = "~/.cache/lightning_transfer/text",
        seed: int = 0,
        pin_memory: bool | None = None,
        persistent_workers: bool = False,
        txt_documents: TxtDocuments = "blank_line",
        hub_config: str | None = None,
        hub_split: str = "train",
        min_frequency: int = 2,
        vocab_size: int | None = None,
        root: str | None = None,
    ):
        super().__init__()
        if vocab_size is not None:
            raise UserInputError(RENAMED_VOCAB_SIZE)
        if (source == "litdata") != (root is not None):
            raise UserInputError(
                "source=litdata reads the folder written by lightning-transfer optimize: set data.root to it"
                if root is None
                else f"data.root is for source=litdata (shards written by lightning-transfer optimize), not {source!r}"
            )
        check_common_settings(max_seq_length, batch_size, num_workers, num_proc)
        if not 0 <= val_fraction < 1:
            raise UserInputError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if not 0 < mlm_probability < 1:
            raise UserInputError(f"mlm_probability must be in (0, 1), got {mlm_probability}")
        if not 0 <= short_seq_prob <= 1:
            raise UserInputError(f"short_seq_prob must be in [0, 1], got {short_seq_prob}")
        if tokenizer is not None and not resolve_path(tokenizer).exists():
            raise UserInputError(
                f"tokenizer path {tokenizer} does not exist; pass a tokenizer.json, a vocab.txt or a directory with one"
            )
        if tokenizer is None and tokenizer_vocab_size < 16:
            raise UserInputError(
                f"tokenizer_vocab_size must be at least 16 to train a tokenizer, got {tokenizer_vocab_size}"
            )
        self.save_hyperparameters(ignore=["vocab_size"])
        self.cache_root = Path(cache_dir).expanduser()
        self.train_dataset: Any = None  # datasets.Dataset, or a ShardDataset with source="litdata"
        self.val_dataset: Any = None
        self.cache_path: Path | None = None
        self.loaded_from_cache = False
        self._tokenizer = None
        self._source: Source | None = None
        self._fingerprint: str | None = None
        self._documents: list[str] | None = None

    # -- tokenizer -------------------------------------------------------------------------
    @property
    def tokenizer(self):
        """The ``tokenizers.Tokenizer`` (loaded, or trained and cached, on first access)."""
        if self._tokenizer is None:
            self._tokenizer = self._prepare_tokenizer()
        return self._tokenizer

    def _corpus(self) -> tuple[Source, str]:
        hp = self.hparams
        if self._source is None:
            self._source = resolve_source(hp.source, hp.hub_config)
            self._fingerprint = source_fingerprint(self._source, hp.text_column, hp.txt_documents, hp.hub_split)
        assert self._fingerprint is not None  # set together with _source
        return self._source, self._fingerprint

    def _read_documents(self) -> list[str]:
        hp = self.hparams
        if self._documents is None:
            source, _ = self._corpus()
            self._documents = read_corpus(
                source, hp.text_column, txt_documents=hp.txt_documents, hub_config=hp.hub_config, hub_split=hp.hub_split
            )
        return self._documents

    def _prepare_tokenizer(self):
        from lightning_transfer.data.tokenizer import train_wordpiece

        hp = self.hparams
        if self._litdata:
            from lightning_transfer.data.streaming_text import shard_tokenizer

            return shard_tokenizer(hp.root, hp.tokenizer)
        if hp.tokenizer is not None:
            return load_tokenizer_path(hp.tokenizer)
        _, fingerprint = self._corpus()
        key = cache_key(
            CACHE_VERSION,
            "tokenizer",
            fingerprint,
            hp.seed,
            hp.val_fraction,
            hp.tokenizer_vocab_size,
            hp.lowercase,
            hp.min_frequency,
        )

        def train():
            documents = self._read_documents()
            train_index, _ = _split_documents(len(documents), hp.val_fraction, hp.seed)
            return train_wordpiece(
                [documents[i] for i in train_index],
                vocab_size=hp.tokenizer_vocab_size,
                lowercase=hp.lowercase,
                min_frequency=hp.min_frequency,
                show_progress=True,
            )

        return cached_tokenizer(self.cache_root / f"tokenizer-{key}", train)

    # -- examples --------------------------------------------------------------------------
    def _cache_key(self) -> str:
        hp = self.hparams
        _, fingerprint = self._corpus()
        return cache_key(
            CACHE_VERSION,
            fingerprint,
            hashlib.blake2b(self.tokenizer.to_str().encode(), digest_size=16).hexdigest(),
            hp.max_seq_length,
            hp.nsp,
            hp.short_seq_prob if hp.nsp else None,
            hp.seed,
            hp.val_fraction,
            hp.whole_word_masking,
        )

    def _build(self, key: str):
        import datasets

        hp = self.hparams
        documents = self._read_documents()
        train_index, val_index = _split_documents(len(documents), hp.val_fraction, hp.seed)
        segments, starts = tokenize_corpus(documents, self.tokenizer.to_str(), hp.whole_word_masking, hp.num_proc, key)
        ids = self.special_ids
        splits = {}
        for name, index in (("train", train_index), ("validation", val_index)):
            kept = [i for i in index if segments[i]]
            if name == "train" and not kept:
                raise UserInputError(
                    f"the corpus {hp.source} has no tokens after tokenization; check the text and the tokenizer"
                )
            docs = [segments[i] for i in kept]
            doc_starts = [starts[i] for i in kept] if starts is not None else None
            if not docs:
                columns = empty_columns(hp.whole_word_masking, hp.nsp)
            elif hp.nsp:
                rng = random.Random(f"{CACHE_VERSION}/nsp/{hp.seed}/{name}")
                columns = create_nsp_examples(
                    docs,
                    hp.max_seq_length,
                    ids["cls"],
                    ids["sep"],
                    rng,
                    hp.short_seq_prob,
                    word_starts=doc_starts,
                    progress=f"Building {name} NSP pairs",
                )
            else:
                columns = pack_sequences(
                    docs,
                    hp.max_seq_length,
                    ids["cls"],
                    ids["sep"],
                    word_starts=doc_starts,
                    progress=f"Packing {name} sequences",
                )
            if not columns["input_ids"]:
                continue  # datasets cannot reload an empty saved split; load() recreates it
            splits[name] = datasets.Dataset.from_dict(columns, features=example_features(hp.whole_word_masking, hp.nsp))
            if name == "train" and hp.nsp and np.mean(columns["next_sentence_label"]) > 0.75:
                warnings.warn(
                    f"{np.mean(columns['next_sentence_label']):.0%} of the NSP pairs have a random B (label 1): most "
                    f"documents of {hp.source} have a single sentence, which can only pair with a random one; "
                    f"consider nsp=False (packed sequences) for this corpus",
                    UserWarning,
                    stacklevel=2,
                )
        return datasets.DatasetDict(splits)

    def _build_or_load(self, load: bool) -> None:
        hp = self.hparams
        key = self._cache_key()
        path = self.cache_root / f"pretrain-{key}"
        from_cache = has_examples(path)
        if not from_cache:
            save_examples(self._build(key), path)
            self._documents = None  # free the raw text
        if load:
            self.train_dataset, self.val_dataset = load_examples(path, hp.whole_word_masking, hp.nsp)
            self.cache_path, self.loaded_from_cache = path, from_cache

    @property
    def _litdata(self) -> bool:
        return self.hparams.source == "litdata"

    def prepare_data(self) -> None:
        """Build the cache once (Lightning calls this on one process per node before ``setup``);
        nothing to build for ``source="litdata"``."""
        if not self._litdata:
            self._build_or_load(load=False)

    def setup(self, stage: str | None = None) -> None:
        """Load the examples from the cache, building it first when missing (idempotent); for
        ``source="litdata"`` open the shards (map-style, read by index; training streams them)."""
        if self.train_dataset is None and self._litdata:
            from lightning_transfer.data.streaming_text import EXAMPLE_SETTINGS, open_text_shards

            settings = {name: self.hparams[name] for name in EXAMPLE_SETTINGS}
            self.train_dataset, self.val_dataset = open_text_shards(self.hparams.root, settings)
        elif self.train_dataset is None:
            self._build_or_load(load=True)

    # -- loaders ---------------------------------------------------------------------------
    def _collator(self, fixed: bool) -> PretrainingCollator:
        hp, ids = self.hparams, self.special_ids
        return PretrainingCollator(
            ids["pad"],
            ids["mask"],
            self.vocab_size,
            hp.mlm_probability,
            hp.whole_word_masking,
            seed=hp.seed,
            fixed=fixed,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches with fresh masks; under DDP Lightning swaps in a DistributedSampler. With
        ``source="litdata"`` the litdata stream, built here, where the process group exists."""
        self.setup()
        if self._litdata:
            return self._stream_loader()
        return self._loader(
            self.train_dataset,
            self._collator(fixed=False),
            shuffle=True,
            generator=torch.Generator().manual_seed(self.hparams.seed),
        )

    def _stream_loader(self) -> DataLoader:
        from lightning_transfer.data.streaming_text import StreamPretrainingBatches, text_stream_loader

        hp, ids = self.hparams, self.special_ids
        batches = StreamPretrainingBatches(
            hp.seed,
            pad_id=ids["pad"],
            mask_id=ids["mask"],
            vocab_size=self.vocab_size,
            mlm_probability=hp.mlm_probability,
            whole_word_masking=hp.whole_word_masking,
        )
        assert self.train_dataset is not None and self.train_dataset.path is not None  # setup() opened the shards
        return text_stream_loader(
            self.train_dataset.path,
            len(self.train_dataset),
            batches,
            batch_size=hp.batch_size,
            num_workers=hp.num_workers,
            pin_memory=torch.cuda.is_available() if hp.pin_memory is None else hp.pin_memory,
        )

    def val_dataloader(self) -> DataLoader:
        """Validation batches in a fixed order with a fixed mask per batch (empty when ``val_fraction=0``)."""
        self.setup()
        return self._loader(self.val_dataset, self._collator(fixed=True), shuffle=False)


__all__ = ["TextPretrainDataModule"]
