import random
import re

import pytest
import torch

from lightning_transfer.data import text_pretraining
from lightning_transfer.data.corpus import read_corpus, split_sentences
from lightning_transfer.data.text_pretraining import TextPretrainDataModule
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
    # attention_mask only when a row is padded; mlm_positions: where labels != -100 (collators.py)
    assert set(batch) - {"attention_mask"} == {"input_ids", "token_type_ids", "labels", "next_sentence_label", "mlm_positions"}


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

    monkeypatch.setattr(text_pretraining, "tokenize_corpus", fail)
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


def test_the_old_vocab_size_argument_fails_with_one_line_naming_tokenizer_vocab_size(tmp_path):
    with pytest.raises(UserInputError, match="rename data.init_args.vocab_size to data.init_args.tokenizer_vocab_size") as info:
        TextPretrainDataModule(vocab_size=8192, cache_dir=str(tmp_path))
    assert "\n" not in str(info.value)


def test_pretrain_hyperparameters_name_the_tokenizer_size_apart_from_the_model_vocab_size(tmp_path, corpus_file):
    dm = TextPretrainDataModule(source=str(corpus_file), tokenizer_vocab_size=150, min_frequency=1, cache_dir=str(tmp_path))
    assert dm.hparams.tokenizer_vocab_size == 150 and "vocab_size" not in dm.hparams
    assert dm.vocab_size == dm.tokenizer.get_vocab_size() <= 150  # the read-only size the model links to
