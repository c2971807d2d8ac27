import random

import numpy as np

from lightning_transfer.data.pretraining_examples import (
    create_nsp_examples,
    pack_sequences,
)

CLS, SEP = 2, 3


def _int_documents(seed, n_docs, n_sentences, length=(1, 9)):
    rng = random.Random(seed)
    return [[[rng.randint(10, 99) for _ in range(rng.randint(*length))] for _ in range(n_sentences)] for _ in range(n_docs)]


# ------------------------------------------------------------------------------------------------
# NSP pairs and packing (pure functions)
# ------------------------------------------------------------------------------------------------
def test_nsp_pairs_have_cls_a_sep_b_sep_layout_token_types_and_fit_max_length():
    docs = _int_documents(0, 30, 12)
    columns = create_nsp_examples(docs, 32, CLS, SEP, random.Random(0), short_seq_prob=0.1)
    assert len(columns["input_ids"]) > 30
    for ids, types, special, length in zip(
        columns["input_ids"], columns["token_type_ids"], columns["special_tokens_mask"], columns["length"]
    ):
        assert len(ids) == length <= 32
        seps = [i for i, t in enumerate(ids) if t == SEP]
        assert ids[0] == CLS and len(seps) == 2 and seps[1] == len(ids) - 1
        assert seps[0] >= 2 and seps[1] - seps[0] >= 2  # A and B are not empty
        assert types == [0] * (seps[0] + 1) + [1] * (len(ids) - seps[0] - 1)
        assert special == [int(t in (CLS, SEP)) for t in ids]


def test_nsp_about_half_of_the_pairs_take_a_random_b():
    docs = _int_documents(1, 200, 40, length=(4, 8))
    labels = create_nsp_examples(docs, 64, CLS, SEP, random.Random(0), short_seq_prob=0.0)["next_sentence_label"]
    assert len(labels) > 800
    assert 0.45 < np.mean(labels) < 0.60


def test_nsp_random_b_comes_from_another_document_true_b_continues_a_and_no_sentence_is_dropped():
    # token 1000 * doc + sentence: every sentence is one identifiable token
    docs = [[[1000 * d + k] for k in range(8)] for d in range(1, 30)]
    columns = create_nsp_examples(docs, 16, CLS, SEP, random.Random(0), short_seq_prob=0.0)
    own_document = set()
    for ids, label in zip(columns["input_ids"], columns["next_sentence_label"]):
        sep = ids.index(SEP)
        a, b = ids[1:sep], ids[sep + 1 : -1]
        assert [t - a[0] for t in a] == list(range(len(a)))  # A is consecutive sentences of one document
        own_document.update(a)
        if label == 0:
            assert b[0] == a[-1] + 1 and [t - b[0] for t in b] == list(range(len(b)))
            own_document.update(b)
        else:
            assert b[0] // 1000 != a[0] // 1000
    # sentences left over when B is random are put back, so each one shows up with its own document
    assert own_document == {t for doc in docs for sentence in doc for t in sentence}


def test_nsp_truncates_a_sentence_longer_than_the_model():
    docs = [[[7] * 500, [8] * 3], [[9] * 4, [9] * 4]]
    columns = create_nsp_examples(docs, 16, CLS, SEP, random.Random(0))
    assert max(columns["length"]) <= 16 and 7 in columns["input_ids"][0]


def test_packing_loses_no_token_and_keeps_corpus_order():
    docs = _int_documents(2, 25, 6, length=(1, 30))  # some sentences longer than the model
    columns = pack_sequences(docs, 16, CLS, SEP)
    flat = [t for ids, special in zip(columns["input_ids"], columns["special_tokens_mask"]) for t, s in zip(ids, special) if not s]
    assert flat == [t for doc in docs for sentence in doc for t in sentence]
    assert max(columns["length"]) <= 16
    for ids in columns["input_ids"]:
        assert ids[0] == CLS and ids[-1] == SEP
    assert all(set(types) == {0} for types in columns["token_type_ids"])


def test_building_examples_shows_a_progress_bar_only_when_asked_and_gives_the_same_examples(capsys):
    docs = _int_documents(3, 8, 4, length=(1, 12))
    assert pack_sequences(docs, 16, CLS, SEP, progress="Packing train") == pack_sequences(docs, 16, CLS, SEP)
    assert create_nsp_examples(docs, 16, CLS, SEP, random.Random(0), progress="Building pairs") == \
        create_nsp_examples(docs, 16, CLS, SEP, random.Random(0))
    err = capsys.readouterr().err
    assert "Packing train" in err and "Building pairs" in err and f"{len(docs)}/{len(docs)}" in err


def test_packing_separates_documents_with_sep_and_moves_a_sentence_that_does_not_fit():
    docs = [[[11, 12], [13]], [[21, 22, 23]], [[31] * 5, [32] * 4]]
    columns = pack_sequences(docs, 10, CLS, SEP)  # room for 8 tokens between [CLS] and [SEP]
    assert columns["input_ids"] == [
        [CLS, 11, 12, 13, SEP, 21, 22, 23, SEP],
        [CLS, 31, 31, 31, 31, 31, SEP],
        [CLS, 32, 32, 32, 32, SEP],
    ]
    assert columns["special_tokens_mask"][0] == [1, 0, 0, 0, 1, 0, 0, 0, 1]


def test_whole_word_ids_group_word_pieces_and_mark_specials():
    docs = [[[10, 11, 12], [20, 21]], [[30]]]
    starts = [[[1, 0, 1], [1, 1]], [[1]]]
    columns = pack_sequences(docs, 16, CLS, SEP, word_starts=starts)
    assert columns["input_ids"] == [[CLS, 10, 11, 12, 20, 21, SEP, 30, SEP]]
    assert columns["word_ids"] == [[-1, 0, 0, 1, 2, 3, -1, 4, -1]]
