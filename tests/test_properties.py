"""Property tests (hypothesis) for the pure functions: NT-Xent, MLM masking, stratified subsets and
the text packers. Few examples each, no deadline: they run in the default suite."""
import random
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_transfer.data.masking import mask_tokens
from lightning_transfer.data.subsets import stratified_subset
from lightning_transfer.data.text import create_nsp_examples, pack_sequences
from lightning_transfer.losses import nt_xent_loss

FEW = settings(max_examples=30, deadline=None)
CLS, SEP, MASK, VOCAB = 2, 3, 4, 50


# ---------------------------------------------------------------------------------------------- NT-Xent
def naive_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's equation, one anchor at a time."""
    views = [F.normalize(v, dim=0) for v in torch.cat([z1, z2]).double()]
    n, total = len(z1), 0.0
    for i, anchor in enumerate(views):
        partner = (i + n) % (2 * n)
        logits = torch.stack([anchor @ other / temperature for k, other in enumerate(views) if k != i])
        positive = partner if partner < i else partner - 1  # index among the others
        total += -(logits[positive] - torch.logsumexp(logits, 0))
    return total / (2 * n)


embeddings = st.tuples(st.integers(2, 6), st.integers(2, 5), st.integers(0, 2**31 - 1), st.floats(0.05, 1.0))


@FEW
@given(embeddings)
def test_nt_xent_equals_a_naive_loop(shape):
    n, d, seed, temperature = shape
    g = torch.Generator().manual_seed(seed)
    z1, z2 = torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64)
    loss = nt_xent_loss(z1, z2, temperature, gather=False)  # computed in float32 whatever the input dtype
    torch.testing.assert_close(loss.double(), naive_nt_xent(z1, z2, temperature), rtol=1e-5, atol=1e-5)


@FEW
@given(embeddings, st.lists(st.floats(0.01, 100.0), min_size=12, max_size=12))
def test_nt_xent_is_invariant_to_positive_rescaling_and_symmetric_in_the_views(shape, factors):
    n, d, seed, temperature = shape
    g = torch.Generator().manual_seed(seed)
    z1, z2 = torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64)
    scale = torch.tensor(factors[: 2 * n], dtype=torch.float64)[:, None]
    loss = nt_xent_loss(z1, z2, temperature, gather=False)
    torch.testing.assert_close(nt_xent_loss(z1 * scale[:n], z2 * scale[n:], temperature, gather=False), loss)
    torch.testing.assert_close(nt_xent_loss(z2, z1, temperature, gather=False), loss)


# ---------------------------------------------------------------------------------------------- masking
@FEW
@given(st.integers(1, 4), st.integers(2, 24), st.floats(0.05, 0.95), st.integers(0, 2**31 - 1))
def test_mask_tokens_never_selects_specials_and_labels_mark_exactly_the_changed_positions(batch, length, p, seed):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, VOCAB, (batch, length), generator=g)
    special = torch.rand(batch, length, generator=g) < 0.3
    input_ids[special] = CLS
    original = input_ids.clone()
    inputs, labels = mask_tokens(input_ids, special, MASK, VOCAB, p, generator=g)
    selected = labels != -100
    assert torch.equal(input_ids, original)  # not modified in place
    assert not (selected & special).any()
    assert torch.equal(labels[selected], original[selected])
    assert torch.equal(inputs[~selected], original[~selected])
    assert ((inputs[selected] == MASK) | (inputs[selected] >= 0) & (inputs[selected] < VOCAB)).all()


# ---------------------------------------------------------------------------------------------- subsets
class_sizes = st.lists(st.integers(3, 12), min_size=2, max_size=5)


def _labels(sizes, seed):
    labels = [c for c, size in enumerate(sizes) for _ in range(size)]
    random.Random(seed).shuffle(labels)
    return labels


@FEW
@given(class_sizes, st.integers(0, 1000), st.integers(0, 2**16))
def test_stratified_subset_takes_exactly_per_class_of_every_class_reproducibly_and_nested(sizes, order_seed, seed):
    labels = _labels(sizes, order_seed)
    per_class = min(sizes)
    picked = stratified_subset(labels, per_class=per_class, seed=seed)
    assert Counter(labels[i] for i in picked) == {c: per_class for c in range(len(sizes))}
    assert picked == sorted(set(picked)) and picked == stratified_subset(labels, per_class=per_class, seed=seed)
    for smaller in range(1, per_class):
        assert set(stratified_subset(labels, per_class=smaller, seed=seed)) <= set(picked)


@FEW
@given(class_sizes, st.integers(0, 1000), st.floats(0.05, 1.0))
def test_stratified_fraction_takes_the_rounded_total_spread_over_classes(sizes, order_seed, fraction):
    labels = _labels(sizes, order_seed)
    picked = stratified_subset(labels, fraction=fraction, seed=0)
    total = max(1, round(fraction * len(labels)))
    assert len(picked) == total
    counts = Counter(labels[i] for i in picked)
    if total >= len(sizes):
        assert set(counts) == set(range(len(sizes)))
    assert all(counts[c] <= size for c, size in enumerate(sizes))


# ---------------------------------------------------------------------------------------------- packers
def _documents(shape, start: int = 10):
    """Documents of sentences whose tokens are all distinct (consecutive ids from ``start``)."""
    docs, next_id = [], start
    for sentence_lengths in shape:
        doc = []
        for length in sentence_lengths:
            doc.append(list(range(next_id, next_id + length)))
            next_id += length
        docs.append(doc)
    return docs


corpus_shapes = st.lists(st.lists(st.integers(1, 30), min_size=1, max_size=5), min_size=1, max_size=6)


@FEW
@given(corpus_shapes, st.integers(8, 40))
def test_packing_loses_and_duplicates_no_token(shape, max_len):
    docs = _documents(shape)
    columns = pack_sequences(docs, max_len, CLS, SEP)
    tokens = [t for ids, special in zip(columns["input_ids"], columns["special_tokens_mask"])
              for t, s in zip(ids, special) if not s]
    assert tokens == [t for doc in docs for sentence in doc for t in sentence]
    assert all(len(ids) <= max_len and ids[0] == CLS and ids[-1] == SEP for ids in columns["input_ids"])


def _segments(ids, types, special):
    a = [t for t, ty, s in zip(ids, types, special) if not s and ty == 0]
    b = [t for t, ty, s in zip(ids, types, special) if not s and ty == 1]
    return a, b


@FEW
@given(corpus_shapes, st.integers(8, 40), st.integers(0, 2**16))
def test_nsp_pairs_never_duplicate_a_document_token_and_fit(shape, max_len, seed):
    docs = _documents(shape)
    columns = create_nsp_examples(docs, max_len, CLS, SEP, random.Random(seed), short_seq_prob=0.2)
    own = []
    for ids, types, special, label in zip(columns["input_ids"], columns["token_type_ids"], columns["special_tokens_mask"],
                                          columns["next_sentence_label"]):
        assert len(ids) <= max_len
        a, b = _segments(ids, types, special)
        assert a and b and a == sorted(a) and b == sorted(b)
        own += a + (b if label == 0 else [])
    assert len(own) == len(set(own))  # A segments and true-next B segments: each corpus token at most once


@FEW
@given(st.lists(st.integers(1, 12), min_size=2, max_size=6), st.integers(8, 20), st.integers(0, 2**16))
def test_nsp_pairs_of_one_token_sentences_cover_the_corpus_exactly_once(sentences_per_doc, max_len, seed):
    """Without truncation (one-token sentences fill a chunk exactly), the A segments and the true-next B
    segments, in order, are the corpus: no token lost, none duplicated."""
    docs = _documents([[1] * k for k in sentences_per_doc])
    columns = create_nsp_examples(docs, max_len, CLS, SEP, random.Random(seed), short_seq_prob=0.0)
    own = []
    for ids, types, special, label in zip(columns["input_ids"], columns["token_type_ids"], columns["special_tokens_mask"],
                                          columns["next_sentence_label"]):
        a, b = _segments(ids, types, special)
        own += a + (b if label == 0 else [])
    assert own == [t for doc in docs for sentence in doc for t in sentence]
