"""Integrity of the tokenized-corpus cache of TextPretrainDataModule: a same-size, same-mtime edit of
the corpus still misses the cache, and two processes building the same cache at once both end with
the same complete dataset (temporary directory + rename; the loser keeps the winner's copy).
(Changed tokenizer / corpus / settings missing the cache: tests/data/test_text_pretraining.py.)"""
import multiprocessing as mp
import os
import random

import pytest

from lightning_transfer.data.text import TextPretrainDataModule
from lightning_transfer.data.text_cache import (
    cache_key,
    cached_tokenizer,
    write_atomically,
)
from lightning_transfer.data.tokenizer import save_tokenizer, train_wordpiece

WORDS = ["cat", "dog", "owl", "fox", "sees", "likes", "the", "river", "house", "red", "big", "small"]


def _corpus(path, seed=0, documents=30):
    rng = random.Random(seed)
    path.write_text("\n\n".join("\n".join(" ".join(rng.choice(WORDS) for _ in range(6)) + " ." for _ in range(3))
                                for _ in range(documents)) + "\n")
    return path


@pytest.fixture
def corpus_and_tokenizer(tmp_path):
    corpus = _corpus(tmp_path / "corpus.txt")
    save_tokenizer(train_wordpiece([corpus.read_text()], vocab_size=40, min_frequency=1), tmp_path / "tok")
    return corpus, tmp_path / "tok"


def _settings(corpus, tokenizer, cache):
    return dict(source=str(corpus), tokenizer=str(tokenizer), cache_dir=str(cache), max_seq_length=16, val_fraction=0.1)


def test_an_edit_that_keeps_size_and_mtime_still_misses_the_cache(tmp_path, corpus_and_tokenizer):
    corpus, tokenizer = corpus_and_tokenizer
    first = TextPretrainDataModule(**_settings(corpus, tokenizer, tmp_path / "cache"))
    first.setup()
    stat = os.stat(corpus)
    text = corpus.read_text()
    corpus.write_text(text.replace("cat", "dog", 1) if "cat" in text else text.replace("dog", "cat", 1))
    os.utime(corpus, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(corpus).st_size == stat.st_size and os.stat(corpus).st_mtime_ns == stat.st_mtime_ns
    second = TextPretrainDataModule(**_settings(corpus, tokenizer, tmp_path / "cache"))
    second.setup()
    assert not second.loaded_from_cache and second.cache_path != first.cache_path


def _run_at_once(count, target, *args):
    """Start ``count`` forked processes of ``target(*args, barrier, results)`` (they wait for each other at
    the barrier, then put one result each); every process must exit 0. Returns their results."""
    context = mp.get_context("fork")
    barrier, results = context.Barrier(count), context.Queue()
    workers = [context.Process(target=target, args=(*args, barrier, results)) for _ in range(count)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    return outcomes


def _build(settings, barrier, results):
    data = TextPretrainDataModule(**settings)
    data._cache_key()  # tokenizer and fingerprint first, so the two builds overlap as much as possible
    barrier.wait(timeout=60)
    data.setup()
    results.put((str(data.cache_path), data.loaded_from_cache, data.train_dataset.with_format(None)["input_ids"][:],
                 data.val_dataset.with_format(None)["input_ids"][:]))


def test_two_processes_building_the_same_cache_at_once_both_get_the_same_complete_dataset(tmp_path, corpus_and_tokenizer):
    corpus, tokenizer = corpus_and_tokenizer
    settings = _settings(corpus, tokenizer, tmp_path / "cache")
    outcomes = _run_at_once(2, _build, settings)
    outcomes = [(path, train, val) for path, _, train, val in outcomes]  # either may have lost the race
    assert outcomes[0] == outcomes[1] and outcomes[0][1]
    reference = TextPretrainDataModule(**settings)
    reference.setup()
    assert reference.loaded_from_cache and str(reference.cache_path) == outcomes[0][0]
    assert reference.train_dataset.with_format(None)["input_ids"][:] == outcomes[0][1]
    leftovers = [p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith(".tmp-")]
    assert not leftovers


def _write_file(name, text):
    def write(directory):
        directory.mkdir()
        (directory / name).write_text(text)
    return write


def test_an_atomic_write_keeps_the_first_complete_copy_and_leaves_no_temporary_directory(tmp_path):
    target = tmp_path / "cache" / "entry"
    write_atomically(_write_file("done", "first"), target, complete="done")
    write_atomically(_write_file("done", "second"), target, complete="done")  # lost the race: discarded
    assert (target / "done").read_text() == "first"
    assert sorted(p.name for p in target.parent.iterdir()) == ["entry"]


def test_an_atomic_write_that_fails_leaves_neither_the_entry_nor_a_temporary_directory(tmp_path):
    def fail(directory):
        _write_file("done", "half")(directory)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(fail, tmp_path / "entry", complete="done")
    assert list(tmp_path.iterdir()) == []
    _write_file("partial", "x")(tmp_path / "entry")  # an incomplete entry in the way: an error, not a success
    with pytest.raises(OSError):
        write_atomically(_write_file("done", "x"), tmp_path / "entry", complete="done")


def test_a_cached_tokenizer_is_trained_once_then_read_back(tmp_path, corpus_and_tokenizer):
    corpus, _ = corpus_and_tokenizer
    calls = []

    def train():
        calls.append(1)
        return train_wordpiece([corpus.read_text()], vocab_size=40, min_frequency=1)

    first = cached_tokenizer(tmp_path / "tokenizer-x", train)
    second = cached_tokenizer(tmp_path / "tokenizer-x", train)
    assert len(calls) == 1 and first.to_str() == second.to_str()


def _train_tokenizer_at_once(directory, corpus, log, barrier, results):
    def train():
        with open(log, "a") as handle:  # one line per training, from whichever process trains
            handle.write(f"{os.getpid()}\n")
        return train_wordpiece([corpus.read_text()], vocab_size=40, min_frequency=1)

    barrier.wait(timeout=60)
    results.put(cached_tokenizer(directory, train).to_str())


def test_processes_that_start_together_train_the_tokenizer_once_and_all_read_it(tmp_path, corpus_and_tokenizer):
    # torchrun: every rank builds its DataModule and the CLI asks each for its vocabulary size at once
    corpus, _ = corpus_and_tokenizer
    log = tmp_path / "trainings.log"
    tokenizers = _run_at_once(3, _train_tokenizer_at_once, tmp_path / "cache" / "tokenizer-x", corpus, log)
    assert len(log.read_text().split()) == 1  # one process trained; the others waited for its file
    assert len(set(tokenizers)) == 1 and '"[MASK]"' in tokenizers[0]


def test_cache_keys_are_stable_and_change_with_any_part():
    assert cache_key("v1", "abc", 3, 0.5) == cache_key("v1", "abc", 3, 0.5)
    assert len({cache_key("v1", "abc", 3, 0.5), cache_key("v1", "abc", 4, 0.5), cache_key("v2", "abc", 3, 0.5)}) == 3
    assert len(cache_key("v1")) == 16 and int(cache_key("v1"), 16) >= 0

