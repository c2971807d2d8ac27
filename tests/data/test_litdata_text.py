"""TextPretrainDataModule(source="litdata"): ``optimize`` runs the DataModule's own pipeline on a toy
corpus the test writes; the shards hold its examples, stream once per epoch through the same
collator (masked anew every epoch), resume exactly mid-epoch, and refuse settings they were not
built with."""
from __future__ import annotations

import itertools
import random
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lightning_transfer import BertPretrainModule, TextPretrainDataModule
from lightning_transfer.data.streaming import ResumableStreamingDataLoader
from lightning_transfer.errors import UserInputError
from lightning_transfer.optimize import optimize

BUILD = dict(tokenizer_vocab_size=64, min_frequency=1, max_seq_length=16, nsp=True, val_fraction=0.1)


def toy_corpus(path: Path, documents: int = 24) -> Path:
    rng = random.Random(0)
    words = ["cat", "dog", "owl", "fox", "red", "big", "sees", "likes", "the", "river", "house", "field"]
    path.write_text("\n\n".join("\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(4, 9))) + " ."
                                          for _ in range(4)) for _ in range(documents)) + "\n")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return toy_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def shards(corpus, cache, tmp_path_factory) -> Path:
    return optimize(corpus, tmp_path_factory.mktemp("shards") / "out", start_method="fork", progress=False,
                    cache_dir=str(cache), **BUILD)


def litdata_dm(root: Path, **overrides) -> TextPretrainDataModule:
    return TextPretrainDataModule(source="litdata", root=str(root), batch_size=8, **{**BUILD, **overrides})


def test_shards_hold_the_datamodule_s_own_examples_and_tokenizer(corpus, cache, shards):
    reference = TextPretrainDataModule(source=str(corpus), batch_size=8, cache_dir=str(cache), **BUILD)
    reference.setup()
    dm = litdata_dm(shards)
    dm.setup()
    assert dm.tokenizer.to_str() == reference.tokenizer.to_str() and dm.vocab_size == reference.vocab_size
    assert len(dm.train_dataset) == len(reference.train_dataset) == 70 and len(dm.val_dataset) == 7
    rows = [int(dm.train_dataset[i]["row"]) for i in range(len(dm.train_dataset))]
    assert sorted(rows) == list(range(70)) and rows != sorted(rows)  # all of them, written shuffled
    for split, ours, theirs in (("train", dm.train_dataset, reference.train_dataset),
                                ("validation", dm.val_dataset, reference.val_dataset)):
        for i in range(len(ours)):
            example = ours[i]
            assert int(example["index"]) == i
            for column, value in theirs[int(example["row"])].items():
                assert np.array_equal(np.asarray(example[column]), np.asarray(value)), (split, i, column)


def test_the_stream_gives_every_example_once_per_epoch_masked_anew_and_the_same_in_a_second_run(shards):
    def epochs(n: int = 2):
        dm = litdata_dm(shards)
        dm.setup()
        loader = dm.train_dataloader()
        assert isinstance(loader, ResumableStreamingDataLoader) and len(loader) == 9  # 70 in batches of 8
        return dm, [list(loader) for _ in range(n)]

    dm, first = epochs()
    _, second = epochs()
    ids = dm.special_ids
    masks = {}
    for epoch, batches in enumerate(first):
        order = torch.cat([b["index"] for b in batches]).tolist()
        assert sorted(order) == list(range(70)), epoch
        for batch in batches:
            selected = batch["labels"] != -100
            original = torch.where(selected, batch["labels"], batch["input_ids"])
            special = torch.isin(original, torch.tensor([ids["cls"], ids["sep"], ids["pad"]]))
            assert not (selected & special).any() and selected.any()
            assert {"input_ids", "token_type_ids", "labels", "next_sentence_label", "index"} <= set(batch)
            for row, i in enumerate(batch["index"].tolist()):
                masks.setdefault(i, []).append(selected[row].clone())
    assert sum(not torch.equal(*pair) for pair in masks.values()) > 35  # new masks in epoch 2 for most examples
    for a, b in zip(itertools.chain(*first), itertools.chain(*second)):
        assert all(torch.equal(a[key], b[key]) for key in a)


class Crash(Exception):
    """Stands for a killed job."""


class RecordIds(Callback):
    def __init__(self, crash_at: int | None = None):
        self.ids: dict[int, list[int]] = {}
        self.crash_at = crash_at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.crash_at:
            raise Crash(f"killed before step {self.crash_at}")
        self.ids[trainer.global_step] = batch["index"].tolist()


def test_bert_pretraining_killed_mid_epoch_resumes_with_the_uninterrupted_samples_masks_and_weights(tmp_path, shards):
    """Dropout and masking on: the resumed run draws what the uninterrupted one drew."""

    def fit(callbacks, ckpt_path=None):
        module = BertPretrainModule(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                    max_position_embeddings=16, lr=1e-3, warmup_steps=2)
        trainer = pl.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_progress_bar=False,
                             enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                             default_root_dir=str(tmp_path), callbacks=callbacks,
                             enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks))
        trainer.fit(module, litdata_dm(shards), ckpt_path=ckpt_path)
        return module

    pl.seed_everything(0)
    record = RecordIds()
    full = fit([record])
    assert sorted(record.ids) == list(range(18))
    pl.seed_everything(0)
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=12, save_top_k=-1)
    with pytest.raises(Crash):
        fit([saver, RecordIds(crash_at=12)])  # mid-epoch 1
    (checkpoint,) = (tmp_path / "ckpt").glob("*.ckpt")
    pl.seed_everything(1234)
    resumed_record = RecordIds()
    resumed = fit([resumed_record], ckpt_path=str(checkpoint))
    assert resumed_record.ids == {step: record.ids[step] for step in range(12, 18)}
    for name, value in resumed.state_dict().items():
        torch.testing.assert_close(value, full.state_dict()[name], rtol=0, atol=0, msg=name)


# ---------------------------------------------------------------------------------------------- bad input
def one_line_error(make, match: str) -> None:
    with pytest.raises(UserInputError, match=match) as caught:
        make()
    assert "\n" not in str(caught.value)


def test_settings_the_shards_were_not_built_with_are_refused(shards, tmp_path):
    one_line_error(lambda: litdata_dm(shards, max_seq_length=32).setup(),
                   r"written with max_seq_length=16 .* max_seq_length=32; set data.max_seq_length: 16")
    one_line_error(lambda: litdata_dm(shards, nsp=False).setup(), r"written with nsp=True")
    one_line_error(lambda: litdata_dm(shards, whole_word_masking=True).setup(), r"whole_word_masking=False")
    other = tmp_path / "other_tokenizer.json"
    from lightning_transfer.data.tokenizer import train_wordpiece

    train_wordpiece(["a completely different corpus of words"] * 3, vocab_size=40, min_frequency=1).save(str(other))
    one_line_error(lambda: litdata_dm(shards, tokenizer=str(other)).tokenizer, r"not the tokenizer the shards")


def test_a_wrong_root_is_a_one_line_error(shards, tmp_path):
    one_line_error(lambda: TextPretrainDataModule(source="litdata"), r"source=litdata .* set data.root")
    one_line_error(lambda: TextPretrainDataModule(source="reviews_demo", root=str(shards)), r"data.root is for")
    one_line_error(lambda: litdata_dm(tmp_path / "nowhere").setup(), r"no such folder")
    images = tmp_path / "images"
    images.mkdir()
    (images / "lightning_transfer.json").write_text('{"format": "lightning-transfer/litdata", "version": 1, '
                                                    '"kind": "image"}')
    one_line_error(lambda: litdata_dm(images).setup(), r"holds image shards, not text shards")


def test_stream_masks_are_a_function_of_the_seed_the_epoch_and_the_batch(shards):
    from lightning_transfer.data.streaming_text import StreamPretrainingBatches

    dm = litdata_dm(shards)
    dm.setup()
    ids = dm.special_ids
    rows = [dm.train_dataset[i] for i in range(8)]

    def labels(seed: int, epoch: int) -> torch.Tensor:
        batches = StreamPretrainingBatches(seed, pad_id=ids["pad"], mask_id=ids["mask"], vocab_size=dm.vocab_size,
                                           mlm_probability=0.3, whole_word_masking=False)
        return batches([(row, epoch) for row in rows])["labels"]

    assert torch.equal(labels(0, 1), labels(0, 1))  # a resumed run masks the batch as the first run did
    assert not torch.equal(labels(0, 1), labels(0, 2))  # the same batch in another epoch: new masks
    assert not torch.equal(labels(0, 1), labels(1, 1))
