"""Text and labels to ids, for the text DataModules.

- :func:`tokenize_corpus`: documents -> sentences -> token ids (and word-start flags), once, with
  ``datasets.Dataset.map`` (batched, ``num_proc`` processes, progress bar);
- :class:`EncodeClassification`: a ``datasets.map`` function, labeled text (or pairs) -> model inputs;
- :func:`encode_labels`: raw labels of every split -> class ids ``0..C-1``.

The ``datasets.map`` functions hold the tokenizer as JSON, so they pickle cheaply into worker
processes, and tokenize without the tokenizer's own truncation or padding unless they set it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from lightning_transfer.data.corpus import split_sentences
from lightning_transfer.errors import UserInputError

if TYPE_CHECKING:
    from tokenizers import Tokenizer


def _plain_tokenizer(tokenizer_json: str) -> Tokenizer:
    """A copy of the tokenizer without truncation or padding."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_json)
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


class _TokenizeDocuments:
    """``datasets.map`` function: documents -> sentences -> token ids (and word-start flags).
    Holds the tokenizer as JSON so it pickles cheaply into ``num_proc`` workers."""

    def __init__(self, tokenizer_json: str, word_starts: bool):
        self.tokenizer_json, self.word_starts = tokenizer_json, word_starts
        self._tokenizer: Tokenizer | None = None

    def __getstate__(self) -> dict:
        return {"tokenizer_json": self.tokenizer_json, "word_starts": self.word_starts, "_tokenizer": None}

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        if self._tokenizer is None:
            self._tokenizer = _plain_tokenizer(self.tokenizer_json)
        sentences, owners = [], []
        for owner, text in enumerate(batch["text"]):
            for sentence in split_sentences(text):
                sentences.append(sentence)
                owners.append(owner)
        encodings = self._tokenizer.encode_batch(sentences, add_special_tokens=False)
        segments: list[list[list[int]]] = [[] for _ in batch["text"]]
        starts: list[list[list[int]]] = [[] for _ in batch["text"]]
        for owner, encoding in zip(owners, encodings):
            if not encoding.ids:
                continue
            segments[owner].append(encoding.ids)
            if self.word_starts:
                words = encoding.word_ids
                starts[owner].append([int(k == 0 or w is None or w != words[k - 1]) for k, w in enumerate(words)])
        out = {"segments": segments}
        if self.word_starts:
            out["word_starts"] = starts
        return out


def tokenize_corpus(documents: list[str], tokenizer_json: str, word_starts: bool, num_proc: int, fingerprint: str):
    """Sentence-split and tokenize every document once with ``datasets.Dataset.map`` (progress bar,
    ``num_proc`` processes). Returns ``(segments, starts or None)`` per document, in order."""
    import datasets

    features = {"segments": datasets.List(datasets.List(datasets.Value("int32")))}
    if word_starts:
        features["word_starts"] = datasets.List(datasets.List(datasets.Value("int8")))
    tokenized = datasets.Dataset.from_dict({"text": documents}).map(
        _TokenizeDocuments(tokenizer_json, word_starts),
        batched=True,
        batch_size=256,
        num_proc=num_proc if num_proc > 1 and len(documents) > 1 else None,
        remove_columns=["text"],
        features=datasets.Features(features),
        new_fingerprint=fingerprint,
        desc="Tokenizing corpus",
    )
    segments = tokenized["segments"][:]
    return segments, (tokenized["word_starts"][:] if word_starts else None)


def encode_labels(
    values_by_split: dict[str, list],
    label_column: str = "label",
    num_classes: int | None = None,
    label_names: list[str] | None = None,
) -> tuple[dict[str, list[int]], list[str]]:
    """Map raw labels of every split to class ids ``0..C-1`` consistently across splits.

    Strings: classes are the sorted distinct strings (or ``label_names`` when it covers them).
    Numbers (ints, bools, or floats holding whole numbers): used as ids; ``C`` is ``num_classes`` or
    ``max + 1``. Returns ``(ids by split, class names)``.

    Raises:
        UserInputError: a missing label, a non-integer number, a negative id or one ``>= num_classes``,
            a mix of strings and numbers, or string classes that do not match ``num_classes``.
    """
    values = [v for split in values_by_split.values() for v in split]
    missing = sum(1 for v in values if v is None or (isinstance(v, float) and math.isnan(v)))
    if missing:
        raise UserInputError(f"{missing} rows have no label in column {label_column!r}; drop or fill them")
    if values and all(isinstance(v, str) for v in values):
        names = sorted(set(values))
        if label_names is not None and set(names) <= set(label_names):
            names = list(label_names)
        if num_classes is not None and num_classes != len(names):
            raise UserInputError(
                f"num_classes={num_classes} but column {label_column!r} has {len(names)} classes: {names}"
            )
        index = {name: i for i, name in enumerate(names)}
        return {split: [index[v] for v in vs] for split, vs in values_by_split.items()}, names
    for v in values:
        if isinstance(v, str) or not isinstance(v, (int, float, np.integer, np.floating, bool, np.bool_)):
            raise UserInputError(
                f"label {v!r} in column {label_column!r} is neither an integer class id nor a class name (mixed types?)"
            )
        if float(v) != int(v):
            raise UserInputError(f"label {v!r} in column {label_column!r} is not an integer class id")
    ids = {split: [int(v) for v in vs] for split, vs in values_by_split.items()}
    flat = [v for vs in ids.values() for v in vs]
    count = num_classes if num_classes is not None else (max(flat) + 1 if flat else 0)
    bad = [v for v in flat if not 0 <= v < count]
    if bad:
        raise UserInputError(
            f"label {bad[0]} in column {label_column!r} is out of range: class ids must be in [0, {count}) "
            f"(set num_classes, or use class names)"
        )
    names = (
        list(label_names) if label_names is not None and len(label_names) == count else [str(i) for i in range(count)]
    )
    return ids, names


class EncodeClassification:
    """``datasets.map`` function: text (and pair) -> ``input_ids``/``token_type_ids`` with special
    tokens, truncated (longest first) to ``max_length``."""

    def __init__(self, tokenizer_json: str, max_length: int, has_pair: bool):
        self.tokenizer_json, self.max_length, self.has_pair = tokenizer_json, max_length, has_pair
        self._tokenizer: Tokenizer | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_tokenizer": None}

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        if self._tokenizer is None:
            self._tokenizer = _plain_tokenizer(self.tokenizer_json)
            self._tokenizer.enable_truncation(self.max_length, strategy="longest_first")
        inputs = list(zip(batch["text"], batch["text_pair"])) if self.has_pair else batch["text"]
        encodings = self._tokenizer.encode_batch(inputs, add_special_tokens=True)
        return {"input_ids": [e.ids for e in encodings], "token_type_ids": [e.type_ids for e in encodings]}


__all__ = ["EncodeClassification", "encode_labels", "tokenize_corpus"]
