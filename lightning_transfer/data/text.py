"""The two text DataModules: :class:`TextPretrainDataModule` (unlabeled text -> BERT pretraining
batches) and :class:`TextClassificationDataModule` (labeled text -> fine-tuning batches).

Pretraining pipeline (``TextPretrainDataModule``):

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
"""

from __future__ import annotations

import hashlib
import random
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader

from lightning_transfer.data.collators import (
    ClassificationCollator,
    PretrainingCollator,
)
from lightning_transfer.data.corpus import (
    LabeledSplits,
    Source,
    TxtDocuments,
    read_corpus,
    read_labeled,
    resolve_source,
    source_fingerprint,
)
from lightning_transfer.data.encoding import (
    EncodeClassification,
    encode_labels,
    tokenize_corpus,
)
from lightning_transfer.data.pretraining_examples import (
    check_max_seq_length,
    create_nsp_examples,
    empty_columns,
    example_features,
    pack_sequences,
)
from lightning_transfer.data.resumable import ResumableDataLoader
from lightning_transfer.data.sources import resolve_path
from lightning_transfer.data.subsets import stratified_split, stratified_subset
from lightning_transfer.data.text_cache import (
    CACHE_VERSION,
    cache_key,
    cached_tokenizer,
    has_examples,
    load_examples,
    save_examples,
)
from lightning_transfer.errors import UserInputError
from lightning_transfer.hparams import AttributeHparams

if TYPE_CHECKING:
    from tokenizers import Tokenizer

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


def _check_common(max_seq_length: int, batch_size: int, num_workers: int, num_proc: int) -> None:
    check_max_seq_length(max_seq_length)
    if batch_size < 1:
        raise UserInputError(f"batch_size must be at least 1, got {batch_size}")
    if num_workers < 0 or num_proc < 1:
        raise UserInputError(f"num_workers must be >= 0 and num_proc >= 1, got {num_workers} and {num_proc}")


def _load_tokenizer_path(path: str):
    """``load_tokenizer`` of :func:`~lightning_transfer.data.sources.resolve_path` (aliases such as
    ``minilm_demo``, ``~``); a missing path raises UserInputError."""
    from lightning_transfer.data.tokenizer import load_tokenizer

    return load_tokenizer(resolve_path(path))


class _LoaderMixin(AttributeHparams):
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

    def _loader(self, dataset, collate_fn, shuffle: bool, generator: torch.Generator | None = None) -> DataLoader:
        """Shuffled (training) loaders are :class:`ResumableDataLoader`: epoch-seeded order and masks,
        and a position that a checkpoint restores mid-epoch."""
        hp = self.hparams
        pin_memory = torch.cuda.is_available() if hp.pin_memory is None else hp.pin_memory
        loader_type, extra = (ResumableDataLoader, {"seed": hp.seed}) if shuffle else (DataLoader, {})
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


# ----------------------------------------------------------------------------------------------
# Pretraining DataModule
# ----------------------------------------------------------------------------------------------
class TextPretrainDataModule(_LoaderMixin, pl.LightningDataModule):
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

    After :meth:`setup`: ``train_dataset`` / ``val_dataset`` (``datasets.Dataset``), ``cache_path``
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
    ):
        super().__init__()
        if vocab_size is not None:
            raise UserInputError(RENAMED_VOCAB_SIZE)
        _check_common(max_seq_length, batch_size, num_workers, num_proc)
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
        self.train_dataset = None
        self.val_dataset = None
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
        if hp.tokenizer is not None:
            return _load_tokenizer_path(hp.tokenizer)
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

    def prepare_data(self) -> None:
        """Build the cache once (Lightning calls this on one process per node before ``setup``)."""
        self._build_or_load(load=False)

    def setup(self, stage: str | None = None) -> None:
        """Load the examples from the cache, building it first when missing (idempotent)."""
        if self.train_dataset is None:
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
        """Shuffled batches with fresh masks; under DDP Lightning swaps in a DistributedSampler."""
        self.setup()
        return self._loader(
            self.train_dataset,
            self._collator(fixed=False),
            shuffle=True,
            generator=torch.Generator().manual_seed(self.hparams.seed),
        )

    def val_dataloader(self) -> DataLoader:
        """Validation batches in a fixed order with a fixed mask per batch (empty when ``val_fraction=0``)."""
        self.setup()
        return self._loader(self.val_dataset, self._collator(fixed=True), shuffle=False)


class TextClassificationDataModule(_LoaderMixin, pl.LightningDataModule):
    """Labeled text (single sentences or sentence pairs) -> fine-tuning batches, with fixed seeded
    splits and optional few-label training subsets.

    Args:
        tokenizer: the pretrained encoder's tokenizer (``tokenizer.json`` file or directory, or ``vocab.txt``).
        source: ``"reviews_demo"`` (review snippets, 1 = fresh, 0 = rotten), a table file
            (``.csv``/``.tsv``/``.json``/``.jsonl``/``.parquet``), a directory of them (files named
            ``train.*``/``validation.*``/``test.*`` are used as those splits), or a Hub dataset name.
        text_column, text_pair_column, label_column: columns; ``text_pair_column`` makes pair inputs
            ``[CLS] text [SEP] pair [SEP]``. String labels become ids in sorted order (``label_names``).
        num_classes: number of classes for integer labels (default: largest label + 1).
        max_seq_length: truncation length in tokens, special tokens included (at least 8).
        val_size, test_size: held-out sizes drawn stratified from the training pool when the source
            has no such split: an int count or a fraction. Default: 500 / 1000 for the demo, 10% / 10%
            otherwise. The test part is drawn first, so it does not change with ``val_size``.
        labels_per_class / label_fraction: train on a stratified seeded subset of the training split
            (at most one of them). Validation and test stay the same whatever these are.
        seed: the val/test split; subset_seed: the few-label subset (default ``seed``).
        batch_size, num_workers, num_proc, pin_memory, persistent_workers: as the pretraining DataModule.
        hub_config: configuration name of a Hub dataset.

    After :meth:`setup`: ``train_dataset``, ``val_dataset``, ``test_dataset`` (``datasets.Dataset``
    with ``input_ids``, ``token_type_ids``, ``labels``), ``label_names`` and ``num_classes``.
    """

    def __init__(
        self,
        tokenizer: str,
        source: str = "reviews_demo",
        text_column: str = "text",
        text_pair_column: str | None = None,
        label_column: str = "label",
        num_classes: int | None = None,
        max_seq_length: int = 128,
        val_size: int | float | None = None,
        test_size: int | float | None = None,
        labels_per_class: int | None = None,
        label_fraction: float | None = None,
        seed: int = 0,
        subset_seed: int | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        num_proc: int = 1,
        pin_memory: bool | None = None,
        persistent_workers: bool = False,
        hub_config: str | None = None,
    ):
        super().__init__()
        _check_common(max_seq_length, batch_size, num_workers, num_proc)
        if labels_per_class is not None and label_fraction is not None:
            raise UserInputError("give at most one of labels_per_class and label_fraction")
        if num_classes is not None and num_classes < 2:
            raise UserInputError(f"num_classes must be at least 2, got {num_classes}")
        self.save_hyperparameters()
        self._tokenizer = _load_tokenizer_path(tokenizer)
        self.train_dataset = self.val_dataset = self.test_dataset = None
        self.label_names: list[str] | None = None

    @property
    def tokenizer(self):
        """The ``tokenizers.Tokenizer`` loaded from ``tokenizer``."""
        return self._tokenizer

    @property
    def num_classes(self) -> int:
        """Number of classes (reads the labels on first use)."""
        if self.label_names is None:
            self.setup()
        assert self.label_names is not None  # setup() sets it
        return len(self.label_names)

    def _split_sizes(self) -> tuple[int | float, int | float]:
        hp = self.hparams
        demo = hp.source == "reviews_demo"
        return (
            hp.val_size if hp.val_size is not None else (500 if demo else 0.1),
            hp.test_size if hp.test_size is not None else (1000 if demo else 0.1),
        )

    def _split(self) -> tuple[dict, dict, dict[str, list[int]]]:
        """Read the source and split it: ``(splits, label ids by split, row indices into the train
        pool of each split carved from it)``; ``"train"`` is the whole pool before any label subset."""
        hp = self.hparams
        raw: LabeledSplits = read_labeled(
            hp.source, hp.text_column, hp.text_pair_column, hp.label_column, hub_config=hp.hub_config
        )
        splits: dict[str, dict[str, Any]] = dict(raw.splits)  # a split's "label" is always a list
        for name in ("validation", "test"):
            labels = splits.get(name, {}).get("label")
            if labels and all(isinstance(v, (int, np.integer)) and v < 0 for v in labels):
                del splits[name]  # e.g. GLUE test sets: labels withheld (-1); carve one from train instead
        ids, self.label_names = encode_labels(
            {k: v["label"] for k, v in splits.items()}, hp.label_column, hp.num_classes, raw.label_names
        )
        val_size, test_size = self._split_sizes()
        wanted = [name for name in ("test", "validation") if name not in splits]
        sizes = [test_size if name == "test" else val_size for name in wanted]
        try:
            parts = stratified_split(ids["train"], sizes, seed=hp.seed)
        except UserInputError as error:
            raise UserInputError(f"{error} (val_size={val_size}, test_size={test_size})") from None
        indices = dict(zip(wanted, parts[:-1]))
        indices["train"] = parts[-1]
        return splits, ids, indices

    def unlabeled_texts(self) -> list[str]:
        """Every text of the training pool with its label dropped, *before* the few-label subset;
        no validation or test text. The leak-free corpus for MLM pretraining on the task's own
        text (task-adaptive pretraining, Gururangan et al. 2020); pair columns are included."""
        splits, _, indices = self._split()
        pool = splits["train"]
        texts = [pool["text"][i] for i in indices["train"]]
        if self.hparams.text_pair_column:
            texts += [pool["text_pair"][i] for i in indices["train"]]
        return texts

    def setup(self, stage: str | None = None) -> None:
        """Read, split, subset and tokenize (idempotent)."""
        if self.train_dataset is not None:
            return
        hp = self.hparams
        splits, ids, indices = self._split()
        pool, pool_ids = splits["train"], ids["train"]
        train_index = indices["train"]
        if hp.labels_per_class is not None or hp.label_fraction is not None:
            keep = stratified_subset(
                [pool_ids[i] for i in train_index],
                per_class=hp.labels_per_class,
                fraction=hp.label_fraction,
                seed=hp.seed if hp.subset_seed is None else hp.subset_seed,
                class_names=self.label_names,
            )
            train_index = [train_index[i] for i in keep]
        indices["train"] = train_index
        datasets_ = {}
        for name in ("train", "validation", "test"):
            rows: Sequence[int]
            if name in indices:
                rows = indices[name]
                source_split, labels = pool, [pool_ids[i] for i in rows]
            else:
                source_split, labels = splits[name], ids[name]
                rows = range(len(labels))
            if not rows:
                raise UserInputError(f"the {name} split is empty; adjust val_size / test_size or add data")
            text = [source_split["text"][i] for i in rows]
            pair = [source_split["text_pair"][i] for i in rows] if hp.text_pair_column else None
            datasets_[name] = self._tokenize(text, pair, labels, name)
        self.train_dataset, self.val_dataset, self.test_dataset = (
            datasets_["train"],
            datasets_["validation"],
            datasets_["test"],
        )

    def _tokenize(self, text: list[str], pair: list[str] | None, labels: list[int], name: str):
        import datasets

        hp = self.hparams
        columns = {"text": text, "text_pair": pair if pair is not None else [""] * len(text), "labels": labels}
        return (
            datasets.Dataset.from_dict(columns)
            .map(
                EncodeClassification(self._tokenizer.to_str(), hp.max_seq_length, pair is not None),
                batched=True,
                num_proc=hp.num_proc if hp.num_proc > 1 and len(text) > 1 else None,
                remove_columns=["text", "text_pair"],
                keep_in_memory=True,
                new_fingerprint=cache_key("classification", name, len(text), hp.seed, hp.max_seq_length),
                desc=f"Tokenizing {name}",
            )
            .with_format("numpy")
        )

    def _collator(self) -> ClassificationCollator:
        return ClassificationCollator(self.special_ids["pad"])

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(
            self.train_dataset,
            self._collator(),
            shuffle=True,
            generator=torch.Generator().manual_seed(self.hparams.seed),
        )

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.val_dataset, self._collator(), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.test_dataset, self._collator(), shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """The test split, in order."""
        return self.test_dataloader()


__all__ = [  # the collators, example builders and encode_labels are re-exported from their own modules
    "ClassificationCollator",
    "PretrainingCollator",
    "TextClassificationDataModule",
    "TextPretrainDataModule",
    "create_nsp_examples",
    "encode_labels",
    "pack_sequences",
]
