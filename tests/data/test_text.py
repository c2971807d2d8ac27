import random
import re

import pandas as pd
import pytest
import torch

from lightning_transfer.data import text as text_module
from lightning_transfer.data.corpus import read_corpus, split_sentences
from lightning_transfer.data.sources import minilm_directory
from lightning_transfer.data.text import (
    TextClassificationDataModule,
    TextPretrainDataModule,
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

    monkeypatch.setattr(text_module, "tokenize_corpus", fail)
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
    kwargs = dict(source=str(corpus_file), tokenizer_vocab_size=150, min_frequency=1, cache_dir=str(tmp_path), max_seq_length=32)
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


def test_the_old_vocab_size_argument_fails_with_one_line_naming_tokenizer_vocab_size(tmp_path):
    with pytest.raises(UserInputError, match="rename data.init_args.vocab_size to data.init_args.tokenizer_vocab_size") as info:
        TextPretrainDataModule(vocab_size=8192, cache_dir=str(tmp_path))
    assert "\n" not in str(info.value)


def test_pretrain_hyperparameters_name_the_tokenizer_size_apart_from_the_model_vocab_size(tmp_path, corpus_file):
    dm = TextPretrainDataModule(source=str(corpus_file), tokenizer_vocab_size=150, min_frequency=1, cache_dir=str(tmp_path))
    assert dm.hparams.tokenizer_vocab_size == 150 and "vocab_size" not in dm.hparams
    assert dm.vocab_size == dm.tokenizer.get_vocab_size() <= 150  # the read-only size the model links to
