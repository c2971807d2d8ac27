import random
import re

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from lightning_transfer.data import text as text_module
from lightning_transfer.data.corpus import read_corpus, split_sentences
from lightning_transfer.data.sources import minilm_directory
from lightning_transfer.data.text import (
    PretrainingCollator,
    TextClassificationDataModule,
    TextPretrainDataModule,
    create_nsp_examples,
    pack_sequences,
)
from lightning_transfer.data.tokenizer import save_tokenizer, train_wordpiece
from lightning_transfer.errors import UserInputError

ANIMALS = ["cats", "dogs", "owls", "foxes", "bears", "wolves", "hares", "otters"]
CLS, SEP, PAD, MASK = 2, 3, 0, 4


def _synthetic_documents(n_docs=40, seed=0):
    """Documents whose sentences say where they come from: 'Document 3 sentence 7 ...'."""
    rng = random.Random(seed)
    return [
        " ".join(f"Document {d} sentence {k} tells about {rng.choice(ANIMALS)} and {rng.choice(ANIMALS)}." for k in range(rng.randint(2, 6)))
        for d in range(n_docs)
    ]


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n\n".join(_synthetic_documents()) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory, corpus_file):
    directory = tmp_path_factory.mktemp("tok")
    save_tokenizer(train_wordpiece([corpus_file.read_text()], vocab_size=200, min_frequency=1), directory)
    return directory


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


# ------------------------------------------------------------------------------------------------
# Collator
# ------------------------------------------------------------------------------------------------
def _examples():
    rng = random.Random(0)
    out = []
    for n in (12, 30, 7):
        ids = [CLS] + [rng.randint(10, 99) for _ in range(n)] + [SEP]
        out.append(
            {
                "input_ids": np.array(ids),
                "token_type_ids": np.array([0] * (n // 2 + 1) + [1] * (n - n // 2 + 1)),
                "special_tokens_mask": np.array([1] + [0] * n + [1]),
                "word_ids": np.array([-1] + [k // 3 for k in range(n)] + [-1]),
                "next_sentence_label": n % 2,
            }
        )
    return out


def test_collator_pads_to_the_longest_and_labels_only_non_special_real_tokens():
    examples = _examples()
    batch = PretrainingCollator(PAD, MASK, 100, mlm_probability=0.5, seed=0)(examples)
    assert batch["input_ids"].shape == (3, 32) and batch["input_ids"].dtype == torch.long
    original = torch.full((3, 32), PAD)
    special = torch.ones(3, 32, dtype=torch.bool)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        original[i, :n] = torch.as_tensor(e["input_ids"])
        special[i, :n] = torch.as_tensor(e["special_tokens_mask"]).bool()
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (32 - n)
        assert batch["token_type_ids"][i, :n].tolist() == e["token_type_ids"].tolist()
        assert (batch["input_ids"][i, n:] == PAD).all() and (batch["token_type_ids"][i, n:] == 0).all()
    selected = batch["labels"] != -100
    assert selected.any() and not (selected & special).any()
    assert torch.equal(batch["labels"][selected], original[selected])
    assert torch.equal(batch["input_ids"][~selected], original[~selected])
    assert batch["next_sentence_label"].tolist() == [0, 0, 1]


def test_collator_draws_a_new_mask_each_time_but_validation_masks_are_fixed():
    examples = _examples()
    train = PretrainingCollator(PAD, MASK, 100, seed=0)
    assert not torch.equal(train(examples)["labels"], train(examples)["labels"])
    val = PretrainingCollator(PAD, MASK, 100, seed=0, fixed=True)
    first = val(examples)["labels"]
    assert torch.equal(first, val(examples)["labels"])
    assert torch.equal(first, PretrainingCollator(PAD, MASK, 100, seed=0, fixed=True)(examples)["labels"])


def test_whole_word_collator_masks_every_piece_of_a_selected_word():
    examples = _examples()
    batch = PretrainingCollator(PAD, MASK, 100, mlm_probability=0.3, whole_word_masking=True, seed=1)(examples)
    for i, e in enumerate(examples):
        selected = (batch["labels"][i, : len(e["word_ids"])] != -100).tolist()
        for word in set(e["word_ids"].tolist()) - {-1}:
            flags = {s for s, w in zip(selected, e["word_ids"].tolist()) if w == word}
            assert len(flags) == 1


def test_masks_are_reproducible_across_runs_and_new_every_epoch_with_workers():
    examples = _examples() * 2

    def epochs(n):
        loader = DataLoader(
            examples, batch_size=6, num_workers=1, collate_fn=PretrainingCollator(PAD, MASK, 100, seed=0),
            generator=torch.Generator().manual_seed(0),
        )
        return [next(iter(loader))["labels"] for _ in range(n)]

    first, second = epochs(2), epochs(1)
    assert torch.equal(first[0], second[0])
    assert not torch.equal(first[0], first[1])


# ------------------------------------------------------------------------------------------------
# TextPretrainDataModule
# ------------------------------------------------------------------------------------------------
def _decoded_sentences(tokenizer, ids):
    return [(int(d), int(k)) for d, k in re.findall(r"document (\d+) sentence (\d+)", tokenizer.decode(list(ids)))]


def test_datamodule_nsp_true_next_b_follows_a_in_the_document(tmp_path, corpus_file, tokenizer_dir):
    dm = TextPretrainDataModule(
        source=str(corpus_file), tokenizer=str(tokenizer_dir), max_seq_length=128, short_seq_prob=0.5,
        val_fraction=0.1, cache_dir=str(tmp_path), batch_size=4,
    )
    dm.setup()
    checked = 0
    for example in dm.train_dataset:
        ids = example["input_ids"].tolist()
        sep = ids.index(dm.special_ids["sep"])
        a = _decoded_sentences(dm.tokenizer, ids[1:sep])
        b = _decoded_sentences(dm.tokenizer, ids[sep + 1 : -1])
        assert a and b
        if example["next_sentence_label"] == 0:
            assert b[0] == (a[-1][0], a[-1][1] + 1)
            checked += 1
    assert checked >= 10
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels", "next_sentence_label"}


def test_datamodule_splits_train_and_validation_by_document(tmp_path, corpus_file, tokenizer_dir):
    dm = TextPretrainDataModule(source=str(corpus_file), tokenizer=str(tokenizer_dir), nsp=False, val_fraction=0.25, cache_dir=str(tmp_path))
    dm.setup()

    def documents(dataset):
        return {d for e in dataset for d, _ in _decoded_sentences(dm.tokenizer, e["input_ids"].tolist())}

    train, val = documents(dm.train_dataset), documents(dm.val_dataset)
    assert len(val) == 10 and not train & val and len(train | val) == 40


def test_datamodule_packing_reproduces_the_tokenized_corpus(tmp_path, corpus_file, tokenizer_dir):
    dm = TextPretrainDataModule(
        source=str(corpus_file), tokenizer=str(tokenizer_dir), nsp=False, max_seq_length=24, val_fraction=0.0, cache_dir=str(tmp_path)
    )
    dm.setup()
    packed = [t for e in dm.train_dataset for t, s in zip(e["input_ids"], e["special_tokens_mask"]) if not s]
    expected = [
        t
        for doc in read_corpus(corpus_file)
        for sentence in split_sentences(doc)
        for t in dm.tokenizer.encode(sentence, add_special_tokens=False).ids
    ]
    assert packed == expected
    assert len(dm.val_dataset) == 0 and "next_sentence_label" not in next(iter(dm.train_dataloader()))


def test_second_setup_loads_the_cache_without_tokenizing_again(tmp_path, corpus_file, tokenizer_dir, monkeypatch):
    kwargs = dict(source=str(corpus_file), tokenizer=str(tokenizer_dir), cache_dir=str(tmp_path), max_seq_length=32)
    first = TextPretrainDataModule(**kwargs)
    first.setup()
    assert not first.loaded_from_cache

    def fail(*args, **kwargs):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(text_module, "_tokenize_corpus", fail)
    second = TextPretrainDataModule(**kwargs)
    second.setup()
    assert second.loaded_from_cache and second.cache_path == first.cache_path
    assert second.train_dataset.with_format(None)["input_ids"][:] == first.train_dataset.with_format(None)["input_ids"][:]
    b1, b2 = next(iter(first.train_dataloader())), next(iter(second.train_dataloader()))
    assert all(torch.equal(b1[k], b2[k]) for k in b1)  # same seed: same order and same masks


def test_changed_tokenizer_or_corpus_or_settings_miss_the_cache(tmp_path, corpus_file, tokenizer_dir):
    other_tokenizer = tmp_path / "other_tok"
    save_tokenizer(train_wordpiece([corpus_file.read_text()], vocab_size=120, min_frequency=1), other_tokenizer)
    corpus = tmp_path / "copy.txt"
    corpus.write_text(corpus_file.read_text())
    base = dict(source=str(corpus), tokenizer=str(tokenizer_dir), cache_dir=str(tmp_path / "cache"), max_seq_length=32)
    paths = set()
    for change in ({}, {"tokenizer": str(other_tokenizer)}, {"max_seq_length": 48}, {"nsp": False}):
        dm = TextPretrainDataModule(**{**base, **change})
        dm.setup()
        assert not dm.loaded_from_cache
        paths.add(dm.cache_path)
    corpus.write_text(corpus_file.read_text() + "\n\nA brand new document about owls.\n")
    dm = TextPretrainDataModule(**base)
    dm.setup()
    assert not dm.loaded_from_cache
    paths.add(dm.cache_path)
    assert len(paths) == 5


def test_without_a_tokenizer_one_is_trained_once_and_reused(tmp_path, corpus_file):
    kwargs = dict(source=str(corpus_file), vocab_size=150, min_frequency=1, cache_dir=str(tmp_path), max_seq_length=32)
    first = TextPretrainDataModule(**kwargs)
    assert first.vocab_size <= 150 and first.special_ids["pad"] == 0
    first.setup()
    second = TextPretrainDataModule(**kwargs)
    second.setup()
    assert second.loaded_from_cache and second.tokenizer.to_str() == first.tokenizer.to_str()
    assert len(list(tmp_path.glob("tokenizer-*"))) == 1


def test_tokenizing_in_several_processes_gives_the_same_examples(tmp_path, corpus_file, tokenizer_dir):
    kwargs = dict(source=str(corpus_file), tokenizer=str(tokenizer_dir), max_seq_length=32, whole_word_masking=True)
    one = TextPretrainDataModule(cache_dir=str(tmp_path / "a"), num_proc=1, **kwargs)
    two = TextPretrainDataModule(cache_dir=str(tmp_path / "b"), num_proc=2, **kwargs)
    one.setup()
    two.setup()
    for column in ("input_ids", "word_ids", "next_sentence_label"):
        assert one.train_dataset.with_format(None)[column][:] == two.train_dataset.with_format(None)[column][:]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_seq_length": 7}, "max_seq_length must be at least 8"),
        ({"tokenizer": "/no/such/tokenizer.json"}, "does not exist"),
    ],
)
def test_pretrain_datamodule_rejects_bad_settings(tmp_path, kwargs, message):
    with pytest.raises(UserInputError, match=message):
        TextPretrainDataModule(cache_dir=str(tmp_path), **kwargs).setup()


# ------------------------------------------------------------------------------------------------
# Corpus reading
# ------------------------------------------------------------------------------------------------
DOCS = ["The first document. It has two sentences.", "Second document here.", "Third one!"]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".json", ".jsonl", ".parquet"])
def test_read_corpus_reads_table_files_one_document_per_row(tmp_path, suffix):
    frame = pd.DataFrame({"body": DOCS + [None], "id": [1, 2, 3, 4]})
    path = tmp_path / f"corpus{suffix}"
    {
        ".csv": lambda: frame.to_csv(path, index=False),
        ".tsv": lambda: frame.to_csv(path, sep="\t", index=False),
        ".json": lambda: frame.to_json(path, orient="records"),
        ".jsonl": lambda: frame.to_json(path, orient="records", lines=True),
        ".parquet": lambda: frame.to_parquet(path),
    }[suffix]()
    assert read_corpus(path, text_column="body") == DOCS


def test_read_corpus_txt_splits_documents_at_blank_lines_or_by_line_or_file(tmp_path):
    (tmp_path / "a.txt").write_text("One. Two.\nThree.\n\n \nFour.\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("Five.\n", encoding="utf-8")
    assert read_corpus(tmp_path) == ["One. Two.\nThree.", "Four.", "Five."]
    assert read_corpus(tmp_path, txt_documents="line") == ["One. Two.", "Three.", "Four.", "Five."]
    assert read_corpus(tmp_path / "a.txt", txt_documents="file") == ["One. Two.\nThree.\n\n \nFour."]


def test_read_corpus_demo_has_reviews_and_plot_summaries():
    documents = read_corpus("reviews_demo")
    assert len(documents) > 13000 and documents[0] == "A three-hour cinema master class."


def test_missing_text_column_lists_the_available_columns(tmp_path):
    pd.DataFrame({"review": ["x"], "stars": [5]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(UserInputError, match="no column 'text'; available columns: review, stars"):
        read_corpus(tmp_path / "t.csv")


def test_whitespace_only_corpus_is_an_error(tmp_path):
    (tmp_path / "empty.txt").write_text("  \n\n\t\n")
    with pytest.raises(UserInputError, match="no text"):
        read_corpus(tmp_path / "empty.txt")


def test_missing_file_is_reported_not_sent_to_the_hub(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        read_corpus(str(tmp_path / "nope.txt"))


def test_binary_file_is_an_error(tmp_path):
    (tmp_path / "blob.txt").write_bytes(b"\x89PNG\x00\x00\x01binary")
    with pytest.raises(UserInputError, match="binary"):
        read_corpus(tmp_path / "blob.txt")


def test_lines_that_are_not_utf8_are_skipped_with_a_counted_warning(tmp_path):
    (tmp_path / "mixed.txt").write_bytes("Good line.\nCaf\xe9 latin-1.\nAnother good one.\n".encode("latin-1"))
    with pytest.warns(UserWarning, match="skipped 1 of"):
        assert read_corpus(tmp_path / "mixed.txt", txt_documents="line") == ["Good line.", "Another good one."]


def test_offline_hub_dataset_fails_with_one_line_pointing_to_local_files():
    with pytest.raises(UserInputError) as info:
        read_corpus("someone/surely-not-cached-dataset")
    message = str(info.value)
    assert "\n" not in message and "network" in message and "local files" in message


# ------------------------------------------------------------------------------------------------
# TextClassificationDataModule
# ------------------------------------------------------------------------------------------------
def _rows(dataset):
    return sorted((tuple(e["input_ids"].tolist()), int(e["labels"])) for e in dataset)


def test_few_labels_change_only_the_training_set_not_val_or_test():
    few = TextClassificationDataModule(tokenizer=str(minilm_directory()), labels_per_class=5)
    more = TextClassificationDataModule(tokenizer=str(minilm_directory()), labels_per_class=50)
    few.setup()
    more.setup()
    assert len(few.train_dataset) == 10 and sorted(few.train_dataset["labels"][:].tolist()) == [0] * 5 + [1] * 5
    assert len(few.val_dataset) == 500 and len(few.test_dataset) == 1000
    assert _rows(few.val_dataset) == _rows(more.val_dataset) and _rows(few.test_dataset) == _rows(more.test_dataset)
    assert set(_rows(few.train_dataset)) <= set(_rows(more.train_dataset))
    assert few.num_classes == 2 and few.label_names == ["rotten", "fresh"]
    batch = next(iter(few.train_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"} and batch["labels"].shape == (10,)


def _pair_table(tmp_path, labels):
    n = len(labels)
    frame = pd.DataFrame({"premise": [f"premise number {i}" for i in range(n)], "hypothesis": [f"hypothesis {i}" for i in range(n)], "gold": labels})
    path = tmp_path / "pairs.jsonl"
    frame.to_json(path, orient="records", lines=True)
    return path


def test_sentence_pairs_with_string_labels_become_sorted_class_ids(tmp_path):
    path = _pair_table(tmp_path, ["neutral", "entail", "contra"] * 20)
    dm = TextClassificationDataModule(
        tokenizer=str(minilm_directory()), source=str(path), text_column="premise", text_pair_column="hypothesis",
        label_column="gold", val_size=6, test_size=0.1, max_seq_length=16,
    )
    dm.setup()
    assert dm.label_names == ["contra", "entail", "neutral"] and dm.num_classes == 3
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (48, 6, 6)
    batch = next(iter(dm.val_dataloader()))
    assert (batch["token_type_ids"] == 1).any(dim=1).all()
    assert batch["input_ids"].shape[1] <= 16


def test_source_splits_from_a_directory_are_kept(tmp_path):
    for name, n in (("train", 30), ("validation", 7), ("test", 5)):
        pd.DataFrame({"text": [f"{name} {i}" for i in range(n)], "label": [i % 2 for i in range(n)]}).to_csv(tmp_path / f"{name}.csv", index=False)
    dm = TextClassificationDataModule(tokenizer=str(minilm_directory()), source=str(tmp_path), labels_per_class=3)
    dm.setup()
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (6, 7, 5)


def test_unlabeled_texts_are_the_whole_training_pool_without_validation_or_test_texts(tmp_path):
    texts = [f"review number {i}" for i in range(40)]
    pd.DataFrame({"text": texts, "label": [i % 2 for i in range(40)]}).to_csv(tmp_path / "reviews.csv", index=False)
    dm = TextClassificationDataModule(tokenizer=str(minilm_directory()), source=str(tmp_path / "reviews.csv"),
                                      val_size=6, test_size=8, labels_per_class=2, max_seq_length=16)
    corpus = dm.unlabeled_texts()
    dm.setup()
    tokenizer = dm.tokenizer
    held_out = {tokenizer.decode([int(t) for t in row if t > 0], skip_special_tokens=True)
                for split in (dm.val_dataset, dm.test_dataset) for row in split["input_ids"]}
    assert len(corpus) == 40 - 6 - 8 and len(dm.train_dataset) == 4  # the corpus ignores the label subset
    assert not held_out & set(corpus) and set(corpus) | held_out == set(texts)


@pytest.mark.parametrize(
    "labels, kwargs, message",
    [
        ([0, 1, 3] * 10, {"num_classes": 2}, r"label 3 .* out of range"),
        ([0, 1, 0.5] * 10, {}, "not an integer class id"),
        ([0, 1] * 15, {"labels_per_class": 40}, "class '0' .* has only"),
        ([0, 1] * 15, {"label_column": "nope"}, "no column 'nope'; available columns: premise, hypothesis, gold"),
    ],
)
def test_classification_datamodule_rejects_bad_labels(tmp_path, labels, kwargs, message):
    path = _pair_table(tmp_path, labels)
    kwargs = {"label_column": "gold", **kwargs}
    with pytest.raises(UserInputError, match=message):
        TextClassificationDataModule(tokenizer=str(minilm_directory()), source=str(path), text_column="premise", **kwargs).setup()


def test_hub_dataset_splits_and_class_names_are_used_and_an_unlabeled_test_split_is_replaced(monkeypatch):
    import datasets

    features = datasets.Features({"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])})

    def split(n, labels):
        return datasets.Dataset.from_dict({"sentence": [f"sentence {i}" for i in range(n)], "label": labels}, features=features)

    hub = datasets.DatasetDict(
        {"train": split(40, [i % 2 for i in range(40)]), "validation": split(6, [0, 1] * 3), "test": split(4, [-1] * 4)}
    )
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config=None, **kwargs: hub)
    dm = TextClassificationDataModule(tokenizer=str(minilm_directory()), source="glue_like", text_column="sentence", test_size=10)
    dm.setup()
    assert dm.label_names == ["neg", "pos"]
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (30, 6, 10)
    assert read_corpus("glue_like", text_column="sentence", hub_split="validation")[0] == "sentence 0"
