""":class:`TextClassificationDataModule`: labeled text (single sentences or sentence pairs) -> fine-tuning
batches, with fixed seeded validation / test splits and optional few-label training subsets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader

from lightning_transfer.data.collators import ClassificationCollator
from lightning_transfer.data.corpus import LabeledSplits, read_labeled
from lightning_transfer.data.encoding import EncodeClassification, encode_labels
from lightning_transfer.data.length_sorted import LengthSortedSampler
from lightning_transfer.data.subsets import stratified_split, stratified_subset
from lightning_transfer.data.text_cache import cache_key
from lightning_transfer.data.text_datamodule_base import (
    TextDataModuleMixin,
    check_common_settings,
    load_tokenizer_path,
)
from lightning_transfer.distributed import evaluation_sampler
from lightning_transfer.errors import UserInputError


class TextClassificationDataModule(TextDataModuleMixin, pl.LightningDataModule):
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
        check_common_settings(max_seq_length, batch_size, num_workers, num_proc)
        if labels_per_class is not None and label_fraction is not None:
            raise UserInputError("give at most one of labels_per_class and label_fraction")
        if num_classes is not None and num_classes < 2:
            raise UserInputError(f"num_classes must be at least 2, got {num_classes}")
        self.save_hyperparameters()
        self._tokenizer = load_tokenizer_path(tokenizer)
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

    def _evaluation_loader(self, dataset) -> DataLoader:
        """Every example scored once, also under DDP, in batches of about one length (:class:`LengthSortedSampler`)."""
        return self._loader(
            dataset, self._collator(), shuffle=False, sampler=LengthSortedSampler(token_lengths(dataset))
        )

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
        return self._evaluation_loader(self.val_dataset)

    def test_dataloader(self) -> DataLoader:
        self.setup()
        return self._evaluation_loader(self.test_dataset)

    def predict_dataloader(self) -> DataLoader:
        """The test split, in order (each example once, also under DDP): the list that ``trainer.predict``
        returns lines up with the dataset's rows, as a user pairing them with the texts expects."""
        self.setup()
        dataset = self.test_dataset
        return self._loader(dataset, self._collator(), shuffle=False, sampler=evaluation_sampler(dataset))


def token_lengths(dataset) -> list[int]:
    """The number of tokens of each row of a tokenized ``datasets.Dataset`` (its ``input_ids``)."""
    import pyarrow.compute as pc

    return pc.list_value_length(dataset.with_format("arrow")["input_ids"]).to_pylist()


__all__ = ["TextClassificationDataModule"]
