"""Pretraining examples built from token ids: pure functions, no tokenizer, no I/O.

- :func:`create_nsp_examples`: sentence pairs for MLM + next sentence prediction, exactly as Google's
  ``create_pretraining_data.py`` (``create_instances_from_document``, one pass over the data);
- :func:`pack_sequences`: RoBERTa's FULL-SENTENCES packing, crossing document boundaries.

Both return the same columns (``input_ids``, ``token_type_ids``, ``special_tokens_mask``, ``length``,
optionally ``word_ids`` for whole-word masking, and ``next_sentence_label`` for NSP pairs);
:func:`example_features` gives their ``datasets`` types. A sentence longer than the model is not an
error: in NSP pairs it is truncated like any over-long pair (tokens removed from the longer side, at
random from the front or the back); in packed sequences it is cut into pieces of the maximal length,
so no token is lost.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from lightning_transfer.errors import UserInputError

MIN_SEQ_LENGTH = 8
Segments = Sequence[Sequence[int]]  # one document: its sentences as token-id lists


def check_max_seq_length(max_seq_length: int) -> None:
    """Raise :class:`UserInputError` when ``max_seq_length`` leaves no room for a pair of segments."""
    if max_seq_length < MIN_SEQ_LENGTH:
        raise UserInputError(f"max_seq_length must be at least {MIN_SEQ_LENGTH}, got {max_seq_length}")


def empty_columns(word_ids: bool, nsp: bool) -> dict[str, list]:
    """The example columns, empty (``word_ids`` / ``next_sentence_label`` only when asked)."""
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
        assert starts is not None  # a run of tokens always comes with its word-start flags
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
    check_max_seq_length(max_seq_length)
    max_tokens = max_seq_length - 3
    columns = empty_columns(word_starts is not None, nsp=True)

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
                    assert starts_a is not None and starts_b is not None  # gather gives starts with word_starts
                    starts_a, starts_b = starts_a[fa : len(starts_a) - ba], starts_b[fb : len(starts_b) - bb]
                    columns["word_ids"].append(
                        _word_ids(
                            [(None, None), (tokens_a, starts_a), (None, None), (tokens_b, starts_b), (None, None)]
                        )
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
    check_max_seq_length(max_seq_length)
    budget = max_seq_length - 2
    columns = empty_columns(word_starts is not None, nsp=False)
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


def example_features(word_ids: bool, nsp: bool):
    """``datasets.Features`` of the example columns (int32 ids, int8 flags and labels)."""
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


__all__ = [
    "MIN_SEQ_LENGTH",
    "Segments",
    "check_max_seq_length",
    "create_nsp_examples",
    "empty_columns",
    "example_features",
    "pack_sequences",
]
