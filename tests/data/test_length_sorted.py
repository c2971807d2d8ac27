"""Text evaluation in batches of about one length (lightning_transfer.data.length_sorted): every example
scored once, far less padding, and the same metrics as scoring each text alone; predictions in the
dataset's order.
(Under two DDP processes: tests/test_ddp.py, scenario ``finetune_text``.)"""

from __future__ import annotations

import csv
import random

import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from lightning_transfer import FineTuneModule
from lightning_transfer.callbacks.predictions import PredictionWriter
from lightning_transfer.data.length_sorted import LengthSortedSampler
from lightning_transfer.data.sources import minilm_directory
from lightning_transfer.data.text_classification import TextClassificationDataModule, token_lengths
from tests.helpers.ddp import tiny_trainer


@pytest.mark.parametrize("world", [1, 2, 3])
def test_the_processes_share_every_example_once_longest_first(world):
    rng = random.Random(world)
    lengths = [rng.randint(3, 60) for _ in range(101)]
    shares = [list(LengthSortedSampler(lengths, num_replicas=world, rank=r)) for r in range(world)]
    assert sorted(sum(shares, [])) == list(range(101))  # each once: no repeats, none left out
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    for r, share in enumerate(shares):
        assert len(LengthSortedSampler(lengths, num_replicas=world, rank=r)) == len(share)
        assert [lengths[i] for i in share] == sorted((lengths[i] for i in share), reverse=True)
        ties = [i for i in share if lengths[i] == lengths[share[0]]]
        assert ties == sorted(ties)  # equal lengths in index order
    # at each step the processes' rows are about as long as each other: neighbours in one sorted list
    for step in range(min(map(len, shares))):
        rows = [lengths[share[step]] for share in shares]
        ranked = sorted(lengths, reverse=True)
        assert ranked[step * world] == rows[0] and min(rows) >= ranked[step * world + world - 1]


def _reviews(tmp_path, n: int = 120):
    """Reviews of 2 to 60 words, the label a word that the text says: a tiny model can tell them apart."""
    rng = random.Random(0)
    words = ["film", "plot", "actor", "scene", "story", "music", "camera", "script"]
    rows = []
    for i in range(n):
        label = i % 2
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 59)))
        rows.append({"text": f"{['bad', 'good'][label]} {text}", "label": label})
    path = tmp_path / "reviews.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture
def data(tmp_path):
    dm = TextClassificationDataModule(
        tokenizer=str(minilm_directory()),
        source=str(_reviews(tmp_path)),
        val_size=30,
        test_size=40,
        batch_size=8,
        max_seq_length=64,
        num_workers=0,
    )
    dm.setup()
    return dm


def _padded_tokens(loader) -> tuple[int, int]:
    """(tokens the model reads, tokens that are text) over a loader's batches."""
    read = real = 0
    for batch in loader:
        read += batch["input_ids"].numel()
        real += int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
    return read, real


def test_evaluation_batches_hold_every_example_once_with_little_padding(data):
    for dataset, loader in ((data.val_dataset, data.val_dataloader()), (data.test_dataset, data.test_dataloader())):
        assert isinstance(loader.sampler, LengthSortedSampler)
        assert sorted(loader.sampler) == list(range(len(dataset)))
        lengths = token_lengths(dataset)
        assert lengths == [len(row) for row in dataset.with_format(None)["input_ids"]]
        assert [lengths[i] for i in loader.sampler] == sorted(lengths, reverse=True)
        read, real = _padded_tokens(loader)
        in_order, _ = _padded_tokens(DataLoader(dataset, batch_size=8, collate_fn=data._collator()))
        # measured: 172 and 214 tokens of padding, against 628 and 894 in dataset order
        assert read - real < 0.35 * (in_order - real), (read, real, in_order)


def test_sorted_evaluation_gives_the_metrics_and_predictions_of_each_text_scored_alone(data, tmp_path):
    torch.manual_seed(0)
    module = FineTuneModule(
        encoder_config=dict(
            vocab_size=data.vocab_size,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=64,
        ),
        init="scratch",
        num_classes=2,
        strategy="full",
        lr=3e-3,
        warmup_steps=0,
        schedule="constant",
    )
    tiny_trainer(max_epochs=6).fit(module, data)
    tested = tiny_trainer().test(module, data, verbose=False)[0]
    writer = PredictionWriter(output_dir=str(tmp_path / "predictions"))
    returned = tiny_trainer(callbacks=[writer]).predict(module, data)

    # the reference: each test text alone, in dataset order (a batch of one has no padding)
    module.eval()
    collate = data._collator()
    alone, labels = [], []
    with torch.no_grad():
        for row in data.test_dataset:
            batch = collate([row])
            logits = module(batch)
            alone.append(int(logits.argmax(-1)))
            labels.append(int(row["labels"]))
    accuracy = sum(p == y for p, y in zip(alone, labels)) / len(labels)
    assert accuracy > 0.6  # it learned something: the predictions are not one constant class
    assert tested["test/acc"] == pytest.approx(accuracy, abs=1e-6)
    with (tmp_path / "predictions" / "predictions.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["index"]) for r in rows] == list(range(len(labels)))
    assert [int(r["prediction"]) for r in rows] == alone
    assert [int(r["label"]) for r in rows] == labels
    # predict keeps the dataset's order: what trainer.predict returns lines up with the rows
    assert torch.cat([batch["prediction"] for batch in returned]).tolist() == alone
    assert torch.cat([batch["labels"] for batch in returned]).tolist() == labels
