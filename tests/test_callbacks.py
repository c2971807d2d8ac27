"""lightning_transfer.callbacks.ThroughputMonitor (PredictionWriter is tested with fine-tuning)."""
import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from lightning_transfer.callbacks import ThroughputMonitor
from tests.helpers.ddp import ListDataset, bert_module, bert_rows


def test_throughput_monitor_counts_sequences_and_non_padding_tokens_after_warmup(capsys):
    rows = bert_rows(n=12)
    monitor = ThroughputMonitor(warmup_steps=1, label="bert")
    trainer = pl.Trainer(accelerator="cpu", max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, callbacks=[monitor])
    trainer.fit(bert_module(), DataLoader(ListDataset(rows), batch_size=4))
    summary = monitor.summary
    assert summary["steps"] == 2  # step 0 is warm-up
    tokens = sum(int(r["attention_mask"].sum()) for r in rows[4:12])
    assert summary["tokens_per_s"] * summary["seconds"] == pytest.approx(tokens)
    assert summary["samples_per_s"] * summary["seconds"] == pytest.approx(8)
    assert "throughput bert: steps=2" in capsys.readouterr().out
    assert ThroughputMonitor.batch_counts({"views": (torch.zeros(5, 3), torch.zeros(5, 3)), "labels": torch.zeros(5)}) == (5, 0)
