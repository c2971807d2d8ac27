"""BERT masking: rates within binomial error, specials untouched, labels right, reproducible."""
from __future__ import annotations

import math

import pytest
import torch

from lightning_transfer.data.masking import mask_tokens, mask_whole_words
from lightning_transfer.errors import UserInputError

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
VOCAB = 1000


def batch(rows: int = 512, length: int = 128, seed: int = 0):
    """[CLS] w... [SEP] [PAD]...: ordinary ids in [5, VOCAB), padding of random length."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, VOCAB, (rows, length), generator=generator)
    lengths = torch.randint(length // 2, length + 1, (rows,), generator=generator)
    positions = torch.arange(length)[None, :]
    input_ids[positions >= lengths[:, None]] = PAD
    input_ids[:, 0] = CLS
    input_ids[torch.arange(rows), lengths - 1] = SEP
    special = (input_ids == PAD) | (input_ids == CLS) | (input_ids == SEP)
    return input_ids, special


def within_binomial(count: int, trials: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(count - trials * p) <= sigmas * math.sqrt(trials * p * (1 - p))


def test_selection_rate_and_80_10_10_split_match_binomial_expectations():
    input_ids, special = batch()
    original = input_ids.clone()
    inputs, labels = mask_tokens(input_ids, special, MASK, VOCAB, 0.15, generator=torch.Generator().manual_seed(0),
                                 exclude_ids=(UNK,))
    assert torch.equal(input_ids, original)  # not modified in place
    selected = labels != -100
    candidates = int((~special).sum())
    assert within_binomial(int(selected.sum()), candidates, 0.15)
    n = int(selected.sum())
    masked = selected & (inputs == MASK)
    kept = selected & (inputs == original)
    replaced = selected & (inputs != MASK) & (inputs != original)
    allowed = VOCAB - 5  # random ids avoid PAD, UNK, CLS, SEP and MASK
    assert within_binomial(int(masked.sum()), n, 0.8)
    assert within_binomial(int(replaced.sum()), n, 0.1 * (1 - 1 / allowed))
    assert within_binomial(int(kept.sum()), n, 0.1 + 0.1 / allowed)
    assert torch.equal(labels[selected], original[selected])
    assert torch.equal(inputs[~selected], original[~selected])  # only selected positions change
    assert not selected[special].any()
    assert (inputs[replaced] >= 5).all()  # never a special token as the random replacement


def test_random_replacements_are_uniform_over_the_non_special_vocabulary():
    vocab = 12
    input_ids = torch.full((400, 50), 7)
    input_ids[:, 0], input_ids[:, -1], input_ids[:, -5:-1] = CLS, SEP, PAD
    special = torch.zeros_like(input_ids, dtype=torch.bool)
    special[:, 0] = special[:, -5:] = True
    inputs, labels = mask_tokens(input_ids, special, MASK, vocab, mlm_probability=1.0,
                                 generator=torch.Generator().manual_seed(3))
    replaced = inputs[(inputs != MASK) & (labels != -100)]
    counts = torch.bincount(replaced, minlength=vocab)
    allowed = [UNK, 5, 6, 7, 8, 9, 10, 11]  # PAD, CLS, SEP (seen at special positions) and MASK are excluded
    assert counts[[PAD, CLS, SEP, MASK]].sum() == 0
    n = int((labels != -100).sum()) * 0.1  # about this many random draws, each id 1/8 of them
    for token in allowed:
        expected = n / len(allowed) + (int((labels != -100).sum()) * 0.1 if token == 7 else 0)  # "kept" 7s count too
        assert abs(int(counts[token]) - expected) < 6 * math.sqrt(expected), token


def test_same_generator_seed_reproduces_the_masking_and_another_seed_does_not():
    input_ids, special = batch(rows=16)
    first = mask_tokens(input_ids, special, MASK, VOCAB, generator=torch.Generator().manual_seed(42))
    again = mask_tokens(input_ids, special, MASK, VOCAB, generator=torch.Generator().manual_seed(42))
    other = mask_tokens(input_ids, special, MASK, VOCAB, generator=torch.Generator().manual_seed(43))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[1], other[1])


def test_probability_zero_selects_nothing_and_one_selects_every_non_special_token():
    input_ids, special = batch(rows=8)
    inputs, labels = mask_tokens(input_ids, special.long(), MASK, VOCAB, mlm_probability=0.0)
    assert torch.equal(inputs, input_ids) and (labels == -100).all()
    _, labels = mask_tokens(input_ids, special.long(), MASK, VOCAB, mlm_probability=1.0)
    assert torch.equal(labels != -100, ~special)


def test_bad_arguments_raise_user_input_error():
    input_ids, special = batch(rows=2)
    with pytest.raises(UserInputError, match="special_tokens_mask"):
        mask_tokens(input_ids, special[:, :-1], MASK, VOCAB)
    with pytest.raises(UserInputError, match="mlm_probability"):
        mask_tokens(input_ids, special, MASK, VOCAB, mlm_probability=1.5)
    with pytest.raises(UserInputError, match="mask_token_id"):
        mask_tokens(input_ids, special, VOCAB, VOCAB)


def words_batch(rows: int = 400, seed: int = 0):
    """Pairs ``[CLS] A [SEP] B [SEP]`` whose words have 1-3 sub-tokens; word ids restart in B, as
    ``Encoding.word_ids`` does."""
    generator = torch.Generator().manual_seed(seed)
    all_ids, all_words = [], []
    for _ in range(rows):
        ids, words = [CLS], [-1]
        for _segment in range(2):
            for word in range(int(torch.randint(3, 12, (1,), generator=generator))):
                pieces = int(torch.randint(1, 4, (1,), generator=generator))
                ids += torch.randint(5, VOCAB, (pieces,), generator=generator).tolist()
                words += [word] * pieces
            ids.append(SEP)
            words.append(-1)
        all_ids.append(ids)
        all_words.append(words)
    length = max(map(len, all_ids))
    input_ids = torch.tensor([ids + [PAD] * (length - len(ids)) for ids in all_ids])
    word_ids = torch.tensor([words + [-1] * (length - len(words)) for words in all_words])
    special = word_ids == -1
    return input_ids, word_ids, special


def word_spans(word_ids_row: torch.Tensor) -> list[list[int]]:
    """Positions of each word: maximal runs of one id (naive reference)."""
    spans, previous = [], -1
    for position, word in enumerate(word_ids_row.tolist()):
        if word >= 0 and word == previous:
            spans[-1].append(position)
        elif word >= 0:
            spans.append([position])
        previous = word
    return spans


def test_whole_word_masking_selects_all_tokens_of_a_word_or_none():
    input_ids, word_ids, special = words_batch()
    original = input_ids.clone()
    inputs, labels = mask_whole_words(input_ids, word_ids, special, MASK, VOCAB, 0.15,
                                      generator=torch.Generator().manual_seed(0))
    assert torch.equal(input_ids, original)
    selected = labels != -100
    chosen_words = total_words = 0
    first_segment_word0, second_segment_word0 = [], []
    for row in range(len(input_ids)):
        spans = word_spans(word_ids[row])
        for span in spans:
            flags = selected[row, span]
            assert flags.all() or not flags.any()  # a word is masked whole or not at all
            chosen_words += int(flags.all())
        total_words += len(spans)
        word0 = [span for span in spans if word_ids[row, span[0]] == 0]
        first_segment_word0.append(bool(selected[row, word0[0][0]]))
        second_segment_word0.append(bool(selected[row, word0[1][0]]))
    assert within_binomial(chosen_words, total_words, 0.15)
    # word 0 of segment A and word 0 of segment B are different words, selected independently
    assert first_segment_word0 != second_segment_word0
    assert not selected[special].any()
    assert torch.equal(labels[selected], original[selected])
    assert within_binomial(int((inputs[selected] == MASK).sum()), int(selected.sum()), 0.8)


def test_whole_word_selection_rate_per_word_matches_mlm_probability():
    rows, words, pieces = 2000, 30, 3  # [CLS] then 30 words of 3 tokens each
    word_ids = torch.cat([torch.full((rows, 1), -1), torch.arange(words).repeat_interleave(pieces).expand(rows, -1)], 1)
    input_ids = torch.randint(5, VOCAB, word_ids.shape).masked_fill(word_ids == -1, CLS)
    _, labels = mask_whole_words(input_ids, word_ids, word_ids == -1, MASK, VOCAB, 0.15,
                                 generator=torch.Generator().manual_seed(1))
    chosen = (labels[:, 1:] != -100).view(rows, words, pieces)
    assert (chosen.all(-1) | ~chosen.any(-1)).all()
    assert within_binomial(int(chosen[..., 0].sum()), rows * words, 0.15)


def test_whole_word_masking_is_reproducible_with_a_seeded_generator():
    input_ids, word_ids, special = words_batch(rows=20)
    first = mask_whole_words(input_ids, word_ids, special, MASK, VOCAB, generator=torch.Generator().manual_seed(5))
    again = mask_whole_words(input_ids, word_ids, special, MASK, VOCAB, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
