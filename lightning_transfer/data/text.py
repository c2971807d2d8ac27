"""Text for BERT: pretraining examples (NSP pairs or packed sequences), dynamic MLM collation, and the
two DataModules, :class:`TextPretrainDataModule` and :class:`TextClassificationDataModule`.

Pretraining pipeline (``TextPretrainDataModule``):

1. read the corpus as documents (:func:`~lightning_transfer.data.corpus.read_corpus`) and split the
   *documents* into train / validation with ``seed``;
2. split each document into sentences (:func:`~lightning_transfer.data.corpus.split_sentences`) and
   tokenize them once with ``datasets.Dataset.map`` (batched, ``num_proc`` processes, progress bar);
3. build fixed-length examples: NSP pairs exactly as Google's ``create_pretraining_data.py``
   (:func:`create_nsp_examples`) or RoBERTa's FULL-SENTENCES packing (:func:`pack_sequences`);
4. save them under ``cache_dir`` with a key that hashes everything they depend on, so a second run
   loads them instead of tokenizing again;
5. mask dynamically in the collator (:class:`PretrainingCollator`): a new mask every time a batch is
   drawn, from a seeded generator.

A sentence longer than the model is not an error: in NSP pairs it is truncated like any over-long
pair (tokens removed from the longer side, at random from the front or the back); in packed
sequences it is cut into pieces of the maximal length so no token is lost.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import uuid
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader

from lightning_transfer.data.corpus import (
    LabeledSplits,
    Source,
    TxtDocuments,
    read_corpus,
    read_labeled,
    resolve_source,
    source_fingerprint,
    split_sentences,
)
from lightning_transfer.data.resumable import ResumableDataLoader
from lightning_transfer.data.sources import resolve_path
from lightning_transfer.data.subsets import stratified_split, stratified_subset
from lightning_transfer.errors import UserInputError

CACHE_VERSION = "text-pretrain-v1"
MIN_SEQ_LENGTH = 8
Segments = Sequence[Sequence[int]]  # one document: its sentences as token-id lists


# ----------------------------------------------------------------------------------------------
# Example construction (pure functions over token ids)
# ----------------------------------------------------------------------------------------------
def _empty_columns(word_ids: bool, nsp: bool) -> dict[str, list]:
    columns: dict[str, list] = {"input_ids": [], "token_type_ids": [], "special_tokens_mask": [], "length": []}
    if word_ids:
        columns["word_ids"] = []
    if nsp:
        columns["next_sentence_label"] = []
    return columns


def _word_ids(parts: Sequence[tuple[list[int] | None, Sequence[int] | None]]) -> list[int]:
    """Word ids for a sequence laid out as ``parts``: ``(None, None)`` is a special token (id -1),
    ``(tokens, starts)`` a run of tokens whose ``starts`` flags mark the first token of each word.
    The first token of each run starts a word (a run may begin mid-word after truncation)."""
    out, word = [], -1
    for tokens, starts in parts:
        if tokens is None:
            out.append(-1)
            continue
        for k, start in enumerate(starts):
            if start or k == 0:
                word += 1
            out.append(word)
    return out


def _truncate_pair(len_a: int, len_b: int, max_tokens: int, rng: random.Random) -> tuple[int, int, int, int]:
    """Google's ``truncate_seq_pair`` on lengths: drop one token at a time from the longer side, from
    its front or back with p=0.5, until ``len_a + len_b <= max_tokens``. Returns how many tokens to
    drop from (front of A, back of A, front of B, back of B)."""
    cut = [0, 0, 0, 0]
    while len_a + len_b > max_tokens:
        if len_a > len_b:
            cut[0 if rng.random() < 0.5 else 1] += 1
            len_a -= 1
        else:
            cut[2 if rng.random() < 0.5 else 3] += 1
            len_b -= 1
    return cut[0], cut[1], cut[2], cut[3]


def _progress(documents: Sequence, description: str | None):
    """``enumerate(documents)``, with a tqdm progress bar when ``description`` is given."""
    if description is None:
        return enumerate(documents)
    from tqdm.auto import tqdm

    return tqdm(enumerate(documents), total=len(documents), desc=description, unit="doc")


def create_nsp_examples(
    documents: Sequence[Segments],
    max_seq_length: int,
    cls_id: int,
    sep_id: int,
    rng: random.Random,
    short_seq_prob: float = 0.1,
    word_starts: Sequence[Sequence[Sequence[int]]] | None = None,
    progress: str | None = None,
) -> dict[str, list]:
    """Sentence-pair examples for MLM + next sentence prediction, as Google's
    ``create_instances_from_document`` (one pass over the data, i.e. ``dupe_factor=1``).

    For each document a target length is drawn (``max_seq_length - 3``, or with probability
    ``short_seq_prob`` a uniform length in ``[2, max_seq_length - 3]``); sentences accumulate into a
    chunk until it reaches the target or the document ends. Segment A is the chunk's first ``k``
    sentences (``k`` uniform in ``[1, len(chunk) - 1]``); segment B is the rest of the chunk
    (``next_sentence_label = 0``), or with p=0.5 -- always when the chunk has one sentence -- a run of
    sentences from a random start in another document (``label 1``), in which case the unused
    sentences of the chunk are put back. The pair is truncated to fit (:func:`_truncate_pair`).

    Args:
        documents: per document, its sentences as non-empty token-id lists (special tokens excluded).
        word_starts: same nesting as ``documents``, 1 where a token starts a word; when given, the
            output has ``word_ids`` (-1 at special tokens) for whole-word masking.
        rng: the only source of randomness; the same state gives the same examples.
        progress: show a progress bar over the documents with this description (``None``: none).

    About half of the pairs get label 1; more when documents are short, because a chunk of a single
    sentence (a one-sentence document, or the last sentence of one) can only take a random B.

    Returns:
        Columns ``input_ids`` (``[CLS] A [SEP] B [SEP]``), ``token_type_ids`` (0 for CLS, A and the
        first SEP, 1 for B and the last SEP), ``special_tokens_mask``, ``next_sentence_label``,
        ``length`` and optionally ``word_ids``; every sequence is at most ``max_seq_length`` long.
    """
    if max_seq_length < MIN_SEQ_LENGTH:
        raise UserInputError(f"max_seq_length must be at least {MIN_SEQ_LENGTH}, got {max_seq_length}")
    max_tokens = max_seq_length - 3
    columns = _empty_columns(word_starts is not None, nsp=True)

    def gather(doc: int, sentences: Sequence[int]) -> tuple[list[int], list[int] | None]:
        tokens = [t for j in sentences for t in documents[doc][j]]
        starts = [s for j in sentences for s in word_starts[doc][j]] if word_starts is not None else None
        return tokens, starts

    for doc_index, document in _progress(documents, progress):
        target = max_tokens
        if rng.random() < short_seq_prob:
            target = rng.randint(2, max_tokens)
        chunk: list[int] = []
        length = 0
        i = 0
        while i < len(document):
            chunk.append(i)
            length += len(document[i])
            if i == len(document) - 1 or length >= target:
                a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                tokens_a, starts_a = gather(doc_index, chunk[:a_end])
                if len(chunk) == 1 or rng.random() < 0.5:
                    is_random_next = 1
                    target_b = target - len(tokens_a)
                    for _ in range(10):  # Google's bounded retry; a one-document corpus reuses itself
                        random_doc = rng.randint(0, len(documents) - 1)
                        if random_doc != doc_index:
                            break
                    start = rng.randint(0, len(documents[random_doc]) - 1)
                    picked, picked_length = [], 0
                    for j in range(start, len(documents[random_doc])):
                        picked.append(j)
                        picked_length += len(documents[random_doc][j])
                        if picked_length >= target_b:
                            break
                    tokens_b, starts_b = gather(random_doc, picked)
                    i -= len(chunk) - a_end  # put the unused sentences back
                else:
                    is_random_next = 0
                    tokens_b, starts_b = gather(doc_index, chunk[a_end:])
                fa, ba, fb, bb = _truncate_pair(len(tokens_a), len(tokens_b), max_tokens, rng)
                tokens_a, tokens_b = tokens_a[fa : len(tokens_a) - ba], tokens_b[fb : len(tokens_b) - bb]
                ids = [cls_id, *tokens_a, sep_id, *tokens_b, sep_id]
                columns["input_ids"].append(ids)
                columns["token_type_ids"].append([0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1))
                columns["special_tokens_mask"].append([1] + [0] * len(tokens_a) + [1] + [0] * len(tokens_b) + [1])
                columns["next_sentence_label"].append(is_random_next)
                columns["length"].append(len(ids))
                if word_starts is not None:
                    starts_a, starts_b = starts_a[fa : len(starts_a) - ba], starts_b[fb : len(starts_b) - bb]
                    columns["word_ids"].append(
                        _word_ids([(None, None), (tokens_a, starts_a), (None, None), (tokens_b, starts_b), (None, None)])
                    )
                chunk, length = [], 0
            i += 1
    return columns


def pack_sequences(
    documents: Sequence[Segments],
    max_seq_length: int,
    cls_id: int,
    sep_id: int,
    word_starts: Sequence[Sequence[Sequence[int]]] | None = None,
    progress: str | None = None,
) -> dict[str, list]:
    """RoBERTa's FULL-SENTENCES packing: whole sentences, in corpus order, fill
    ``[CLS] ... [SEP]`` sequences of at most ``max_seq_length`` tokens, crossing document boundaries;
    an extra ``[SEP]`` separates two documents inside one sequence.

    A sentence that does not fit in what is left of the current sequence starts the next one; a
    sentence longer than ``max_seq_length - 2`` is cut into pieces of that length. Removing the
    special tokens from all sequences and concatenating them gives back the corpus tokens exactly, in
    order. Columns as :func:`create_nsp_examples`, without ``next_sentence_label`` (token types all 0).
    ``progress``: as :func:`create_nsp_examples`.
    """
    if max_seq_length < MIN_SEQ_LENGTH:
        raise UserInputError(f"max_seq_length must be at least {MIN_SEQ_LENGTH}, got {max_seq_length}")
    budget = max_seq_length - 2
    columns = _empty_columns(word_starts is not None, nsp=False)
    parts: list[tuple[list[int] | None, list[int] | None]] = []  # runs of tokens, (None, None) = inner SEP
    used = 0

    def flush() -> None:
        nonlocal parts, used
        if not parts:
            return
        ids = [cls_id]
        special = [1]
        for tokens, _ in parts:
            ids.extend(tokens if tokens is not None else [sep_id])
            special.extend([0] * len(tokens) if tokens is not None else [1])
        ids.append(sep_id)
        special.append(1)
        columns["input_ids"].append(ids)
        columns["token_type_ids"].append([0] * len(ids))
        columns["special_tokens_mask"].append(special)
        columns["length"].append(len(ids))
        if word_starts is not None:
            columns["word_ids"].append(_word_ids([(None, None), *parts, (None, None)]))
        parts, used = [], 0

    for doc_index, document in _progress(documents, progress):
        for sentence_index, sentence in enumerate(document):
            starts = word_starts[doc_index][sentence_index] if word_starts is not None else [0] * len(sentence)
            for offset in range(0, len(sentence), budget):
                piece, piece_starts = list(sentence[offset : offset + budget]), list(starts[offset : offset + budget])
                separator = 1 if (sentence_index == 0 and offset == 0 and parts) else 0
                if used + separator + len(piece) > budget:
                    flush()
                    separator = 0
                if separator:
                    parts.append((None, None))
                parts.append((piece, piece_starts))
                used += separator + len(piece)
    flush()
    return columns


# ----------------------------------------------------------------------------------------------
# Collators
# ----------------------------------------------------------------------------------------------
def _pad(rows: Sequence[Any], value: int, length: int) -> torch.Tensor:
    out = torch.full((len(rows), length), value, dtype=torch.long)
    for i, row in enumerate(rows):
        row = torch.as_tensor(np.asarray(row, dtype=np.int64))
        out[i, : len(row)] = row
    return out


def _mix_seed(*parts: object) -> int:
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class PretrainingCollator:
    """Pads a list of pretraining examples and masks them anew on every call.

    Output (Hugging Face key names), all ``int64`` ``B x L`` with ``L`` the longest example:
    ``input_ids`` (masked), ``attention_mask`` (0 at padding), ``token_type_ids``, ``labels`` (the
    original id where a token was selected for prediction, -100 elsewhere; never at special tokens or
    padding), plus ``next_sentence_label`` (``B``) when the examples have it.

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
            return torch.Generator().manual_seed(_mix_seed(self.seed, "val", zlib.crc32(input_ids.numpy().tobytes())))
        info = torch.utils.data.get_worker_info()
        key = (os.getpid(), info.seed if info is not None else None, self.epoch)
        if self._generator is None or self._generator_key != key:
            rank = torch.distributed.get_rank() if torch.distributed.is_available() and torch.distributed.is_initialized() else 0
            parts = (self.seed, rank, key[1]) if self.epoch is None else (self.seed, rank, key[1], "epoch", self.epoch)
            self._generator = torch.Generator().manual_seed(_mix_seed(*parts))
            self._generator_key = key
        return self._generator

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        from lightning_transfer.data.masking import mask_tokens, mask_whole_words

        length = max(len(e["input_ids"]) for e in examples)
        input_ids = _pad([e["input_ids"] for e in examples], self.pad_id, length)
        special = _pad([e["special_tokens_mask"] for e in examples], 1, length).bool()
        token_type_ids = _pad([e["token_type_ids"] for e in examples], 0, length)
        attention_mask = (torch.arange(length)[None, :] < torch.tensor([len(e["input_ids"]) for e in examples])[:, None]).long()
        generator = self._next_generator(input_ids)
        if self.whole_word_masking:
            word_ids = _pad([e["word_ids"] for e in examples], -1, length)
            inputs, labels = mask_whole_words(
                input_ids, word_ids, special, self.mask_id, self.vocab_size, self.mlm_probability, generator=generator
            )
        else:
            inputs, labels = mask_tokens(input_ids, special, self.mask_id, self.vocab_size, self.mlm_probability, generator=generator)
        batch = {"input_ids": inputs, "attention_mask": attention_mask, "token_type_ids": token_type_ids, "labels": labels}
        if "next_sentence_label" in examples[0]:
            batch["next_sentence_label"] = torch.tensor([int(e["next_sentence_label"]) for e in examples], dtype=torch.long)
        return batch


class ClassificationCollator:
    """Pads tokenized classification examples: ``input_ids`` (pad id), ``attention_mask``,
    ``token_type_ids`` (``B x L``, int64) and ``labels`` (``B``, int64 class ids)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        length = max(len(e["input_ids"]) for e in examples)
        lengths = torch.tensor([len(e["input_ids"]) for e in examples])
        return {
            "input_ids": _pad([e["input_ids"] for e in examples], self.pad_id, length),
            "attention_mask": (torch.arange(length)[None, :] < lengths[:, None]).long(),
            "token_type_ids": _pad([e["token_type_ids"] for e in examples], 0, length),
            "labels": torch.tensor([int(e["labels"]) for e in examples], dtype=torch.long),
        }


# ----------------------------------------------------------------------------------------------
# Tokenization through datasets.map
# ----------------------------------------------------------------------------------------------
def _plain_tokenizer(tokenizer_json: str):
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
        self._tokenizer = None

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


def _tokenize_corpus(documents: list[str], tokenizer_json: str, word_starts: bool, num_proc: int, fingerprint: str):
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


def _save_atomically(dataset_dict, path: Path) -> None:
    """Write to a temporary sibling directory, then rename: readers see a complete cache or none. If
    another process finished first, its copy is kept and ours discarded."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        dataset_dict.save_to_disk(str(tmp))
        try:
            os.rename(tmp, path)
        except OSError:
            if not (path / "dataset_dict.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _split_documents(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded document-level split: ``round(n * val_fraction)`` documents (at least one when
    ``val_fraction > 0``) go to validation; both lists sorted, so corpus order is kept."""
    n_val = int(round(n * val_fraction))
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
    if max_seq_length < MIN_SEQ_LENGTH:
        raise UserInputError(f"max_seq_length must be at least {MIN_SEQ_LENGTH}, got {max_seq_length}")
    if batch_size < 1:
        raise UserInputError(f"batch_size must be at least 1, got {batch_size}")
    if num_workers < 0 or num_proc < 1:
        raise UserInputError(f"num_workers must be >= 0 and num_proc >= 1, got {num_workers} and {num_proc}")


def _load_tokenizer_path(path: str):
    """``load_tokenizer`` with aliases (``minilm_demo``) resolved and ``~`` expanded (a missing path
    raises UserInputError)."""
    from lightning_transfer.data.tokenizer import load_tokenizer

    return load_tokenizer(resolve_path(path))


class _LoaderMixin:
    """DataLoader construction and tokenizer facts shared by the text DataModules."""

    @property
    def vocab_size(self) -> int:
        """The tokenizer's vocabulary size (what the model's embedding needs)."""
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
            trains a WordPiece tokenizer (``vocab_size``, ``lowercase``, ``min_frequency``) on the
            training documents and keeps it under ``cache_dir``, so later runs reuse it.
        vocab_size: size of the trained tokenizer (ignored when ``tokenizer`` is given).
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

    After :meth:`setup`: ``train_dataset`` / ``val_dataset`` (``datasets.Dataset``), ``cache_path``
    and ``loaded_from_cache`` (True when the examples were read from ``cache_path`` instead of being
    built). ``tokenizer``, ``vocab_size`` and ``special_ids`` are available right after construction
    (loading or training the tokenizer on first use), so a CLI can link ``vocab_size`` to the model.

    Raises:
        UserInputError: ``max_seq_length < 8``, a tokenizer path that does not exist, a corpus that is
            empty after cleaning, and the reading errors of :func:`read_corpus`.
    """

    def __init__(
        self,
        source: str = "reviews_demo",
        text_column: str = "text",
        tokenizer: str | None = None,
        vocab_size: int = 8192,
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
    ):
        super().__init__()
        _check_common(max_seq_length, batch_size, num_workers, num_proc)
        if not 0 <= val_fraction < 1:
            raise UserInputError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if not 0 < mlm_probability < 1:
            raise UserInputError(f"mlm_probability must be in (0, 1), got {mlm_probability}")
        if not 0 <= short_seq_prob <= 1:
            raise UserInputError(f"short_seq_prob must be in [0, 1], got {short_seq_prob}")
        if tokenizer is not None and not resolve_path(tokenizer).exists():
            raise UserInputError(f"tokenizer path {tokenizer} does not exist; pass a tokenizer.json, a vocab.txt or a directory with one")
        if tokenizer is None and vocab_size < 16:
            raise UserInputError(f"vocab_size must be at least 16 to train a tokenizer, got {vocab_size}")
        self.save_hyperparameters()
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
        from lightning_transfer.data.tokenizer import load_tokenizer, save_tokenizer, train_wordpiece

        hp = self.hparams
        if hp.tokenizer is not None:
            return _load_tokenizer_path(hp.tokenizer)
        _, fingerprint = self._corpus()
        key = _mix_key(CACHE_VERSION, "tokenizer", fingerprint, hp.seed, hp.val_fraction, hp.vocab_size, hp.lowercase, hp.min_frequency)
        directory = self.cache_root / f"tokenizer-{key}"
        if not (directory / "tokenizer.json").exists():
            documents = self._read_documents()
            train_index, _ = _split_documents(len(documents), hp.val_fraction, hp.seed)
            trained = train_wordpiece(
                [documents[i] for i in train_index], vocab_size=hp.vocab_size, lowercase=hp.lowercase, min_frequency=hp.min_frequency,
                show_progress=True,
            )
            self.cache_root.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_root / f".tmp-{directory.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            try:
                save_tokenizer(trained, tmp)
                try:
                    os.rename(tmp, directory)
                except OSError:
                    if not (directory / "tokenizer.json").exists():
                        raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        # Always read the winner back, so concurrent runs all use the same file.
        return load_tokenizer(directory / "tokenizer.json")

    # -- examples --------------------------------------------------------------------------
    def _cache_key(self) -> str:
        hp = self.hparams
        _, fingerprint = self._corpus()
        return _mix_key(
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
        segments, starts = _tokenize_corpus(documents, self.tokenizer.to_str(), hp.whole_word_masking, hp.num_proc, key)
        ids = self.special_ids
        splits = {}
        for name, index in (("train", train_index), ("validation", val_index)):
            kept = [i for i in index if segments[i]]
            if name == "train" and not kept:
                raise UserInputError(f"the corpus {hp.source} has no tokens after tokenization; check the text and the tokenizer")
            docs = [segments[i] for i in kept]
            doc_starts = [starts[i] for i in kept] if starts is not None else None
            if not docs:
                columns = _empty_columns(hp.whole_word_masking, hp.nsp)
            elif hp.nsp:
                rng = random.Random(f"{CACHE_VERSION}/nsp/{hp.seed}/{name}")
                columns = create_nsp_examples(
                    docs, hp.max_seq_length, ids["cls"], ids["sep"], rng, hp.short_seq_prob, word_starts=doc_starts,
                    progress=f"Building {name} NSP pairs",
                )
            else:
                columns = pack_sequences(docs, hp.max_seq_length, ids["cls"], ids["sep"], word_starts=doc_starts,
                                         progress=f"Packing {name} sequences")
            if not columns["input_ids"]:
                continue  # datasets cannot reload an empty saved split; load() recreates it
            splits[name] = datasets.Dataset.from_dict(columns, features=_example_features(hp.whole_word_masking, hp.nsp))
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
        import datasets

        key = self._cache_key()
        path = self.cache_root / f"pretrain-{key}"
        from_cache = (path / "dataset_dict.json").exists()
        if not from_cache:
            _save_atomically(self._build(key), path)
            self._documents = None  # free the raw text
        if load:
            loaded = datasets.load_from_disk(str(path))
            features = _example_features(self.hparams.whole_word_masking, self.hparams.nsp)
            empty = datasets.Dataset.from_dict(_empty_columns(self.hparams.whole_word_masking, self.hparams.nsp), features=features)
            self.train_dataset = loaded["train"].with_format("numpy")
            self.val_dataset = (loaded["validation"] if "validation" in loaded else empty).with_format("numpy")
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
            ids["pad"], ids["mask"], self.vocab_size, hp.mlm_probability, hp.whole_word_masking, seed=hp.seed, fixed=fixed
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches with fresh masks; under DDP Lightning swaps in a DistributedSampler."""
        self.setup()
        return self._loader(self.train_dataset, self._collator(fixed=False), shuffle=True, generator=torch.Generator().manual_seed(self.hparams.seed))

    def val_dataloader(self) -> DataLoader:
        """Validation batches in a fixed order with a fixed mask per batch (empty when ``val_fraction=0``)."""
        self.setup()
        return self._loader(self.val_dataset, self._collator(fixed=True), shuffle=False)


def _example_features(word_ids: bool, nsp: bool):
    import datasets

    features = {
        "input_ids": datasets.List(datasets.Value("int32")),
        "token_type_ids": datasets.List(datasets.Value("int8")),
        "special_tokens_mask": datasets.List(datasets.Value("int8")),
        "length": datasets.Value("int32"),
    }
    if word_ids:
        features["word_ids"] = datasets.List(datasets.Value("int32"))
    if nsp:
        features["next_sentence_label"] = datasets.Value("int8")
    return datasets.Features(features)


def _mix_key(*parts: object) -> str:
    return hashlib.blake2b(json.dumps([str(p) for p in parts]).encode(), digest_size=10).hexdigest()


# ----------------------------------------------------------------------------------------------
# Fine-tuning DataModule
# ----------------------------------------------------------------------------------------------
def encode_labels(
    values_by_split: dict[str, list], label_column: str = "label", num_classes: int | None = None, label_names: list[str] | None = None
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
    missing = sum(1 for v in values if v is None or (isinstance(v, float) and v != v))
    if missing:
        raise UserInputError(f"{missing} rows have no label in column {label_column!r}; drop or fill them")
    if values and all(isinstance(v, str) for v in values):
        names = sorted(set(values))
        if label_names is not None and set(names) <= set(label_names):
            names = list(label_names)
        if num_classes is not None and num_classes != len(names):
            raise UserInputError(f"num_classes={num_classes} but column {label_column!r} has {len(names)} classes: {names}")
        index = {name: i for i, name in enumerate(names)}
        return {split: [index[v] for v in vs] for split, vs in values_by_split.items()}, names
    for v in values:
        if isinstance(v, str) or not isinstance(v, (int, float, np.integer, np.floating, bool, np.bool_)):
            raise UserInputError(f"label {v!r} in column {label_column!r} is neither an integer class id nor a class name (mixed types?)")
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
    names = list(label_names) if label_names is not None and len(label_names) == count else [str(i) for i in range(count)]
    return ids, names


class _EncodeClassification:
    """``datasets.map`` function: text (and pair) -> ``input_ids``/``token_type_ids`` with special
    tokens, truncated (longest first) to ``max_length``."""

    def __init__(self, tokenizer_json: str, max_length: int, has_pair: bool):
        self.tokenizer_json, self.max_length, self.has_pair = tokenizer_json, max_length, has_pair
        self._tokenizer = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_tokenizer": None}

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        if self._tokenizer is None:
            self._tokenizer = _plain_tokenizer(self.tokenizer_json)
            self._tokenizer.enable_truncation(self.max_length, strategy="longest_first")
        inputs = list(zip(batch["text"], batch["text_pair"])) if self.has_pair else batch["text"]
        encodings = self._tokenizer.encode_batch(inputs, add_special_tokens=True)
        return {"input_ids": [e.ids for e in encodings], "token_type_ids": [e.type_ids for e in encodings]}


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
        raw: LabeledSplits = read_labeled(hp.source, hp.text_column, hp.text_pair_column, hp.label_column, hub_config=hp.hub_config)
        splits = dict(raw.splits)
        for name in ("validation", "test"):
            labels = splits.get(name, {}).get("label")
            if labels and all(isinstance(v, (int, np.integer)) and v < 0 for v in labels):
                del splits[name]  # e.g. GLUE test sets: labels withheld (-1); carve one from train instead
        ids, self.label_names = encode_labels({k: v["label"] for k, v in splits.items()}, hp.label_column, hp.num_classes, raw.label_names)
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
        self.train_dataset, self.val_dataset, self.test_dataset = datasets_["train"], datasets_["validation"], datasets_["test"]

    def _tokenize(self, text: list[str], pair: list[str] | None, labels: list[int], name: str):
        import datasets

        hp = self.hparams
        columns = {"text": text, "text_pair": pair if pair is not None else [""] * len(text), "labels": labels}
        return (
            datasets.Dataset.from_dict(columns)
            .map(
                _EncodeClassification(self._tokenizer.to_str(), hp.max_seq_length, pair is not None),
                batched=True,
                num_proc=hp.num_proc if hp.num_proc > 1 and len(text) > 1 else None,
                remove_columns=["text", "text_pair"],
                keep_in_memory=True,
                new_fingerprint=_mix_key("classification", name, len(text), hp.seed, hp.max_seq_length),
                desc=f"Tokenizing {name}",
            )
            .with_format("numpy")
        )

    def _collator(self) -> ClassificationCollator:
        return ClassificationCollator(self.special_ids["pad"])

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.train_dataset, self._collator(), shuffle=True, generator=torch.Generator().manual_seed(self.hparams.seed))

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.val_dataset, self._collator(), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.test_dataset, self._collator(), shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """The test split, in order."""
        return self.test_dataloader()
