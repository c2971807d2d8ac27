"""lightning_transfer.callbacks: ThroughputReport, HostSyncCounter and loggers_sharing_one_version
(PredictionWriter is tested with fine-tuning)."""
import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from lightning_transfer.callbacks import ThroughputReport
from tests.helpers.ddp import ListDataset, bert_module, bert_rows


def test_throughput_report_counts_sequences_and_non_padding_tokens_after_warmup(capsys):
    rows = bert_rows(n=12)
    monitor = ThroughputReport(warmup_steps=1, label="bert")
    trainer = pl.Trainer(accelerator="cpu", max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, callbacks=[monitor])
    trainer.fit(bert_module(), DataLoader(ListDataset(rows), batch_size=4))
    summary = monitor.summary
    assert summary["steps"] == 2  # step 0 is warm-up
    tokens = sum(int(r["attention_mask"].sum()) for r in rows[4:12])
    assert summary["tokens_per_s"] * summary["seconds"] == pytest.approx(tokens)
    assert summary["samples_per_s"] * summary["seconds"] == pytest.approx(8)
    assert "throughput bert: steps=2" in capsys.readouterr().out
    assert ThroughputReport.batch_counts({"views": (torch.zeros(5, 3), torch.zeros(5, 3)), "labels": torch.zeros(5)}) == (5, 0)


def test_the_old_throughput_monitor_name_still_works_and_says_it_is_deprecated():
    from lightning_transfer.callbacks import ThroughputMonitor

    with pytest.warns(FutureWarning, match="ThroughputReport"):
        monitor = ThroughputMonitor(warmup_steps=3, label="old")
    assert isinstance(monitor, ThroughputReport) and (monitor.warmup_steps, monitor.label) == (3, "old")


def test_host_sync_counter_counts_sync_warnings_inside_training_steps_only(capsys):
    """The counting of HostSyncCounter (on a GPU torch emits the warnings; here the module emits torch's
    own message): two per step inside steps 1..3, none for what happens between steps (validation)."""
    import warnings

    from lightning_transfer.callbacks import HostSyncCounter

    counter = HostSyncCounter(warmup_steps=1, label="bert")
    message = f"{HostSyncCounter.MARKER} (test)"

    class Syncing(pl.Callback):
        def on_before_backward(self, trainer, pl_module, loss):  # inside the step
            for _ in range(2):
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    warnings.warn(message, UserWarning)
                counter.count(str(caught[0].message), caught[0].filename, caught[0].lineno)

        def on_validation_batch_end(self, *args):  # between steps: never counted
            counter.count(message)

    trainer = pl.Trainer(accelerator="cpu", max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=1, val_check_interval=2, num_sanity_val_steps=0,
                         callbacks=[Syncing(), counter])
    rows = bert_rows(n=16)
    trainer.fit(bert_module(), DataLoader(ListDataset(rows), batch_size=4), DataLoader(ListDataset(rows[:4]), batch_size=4))
    assert counter.summary["steps"] == 3 and counter.summary["per_step"] == 2.0
    assert counter.summary["first"].startswith(__file__)
    assert "host_syncs bert: steps=3 per_step=2.00" in capsys.readouterr().out


def test_tensorboard_and_csv_loggers_on_one_folder_share_the_next_free_version(tmp_path):
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from lightning_transfer.callbacks import loggers_sharing_one_version

    (tmp_path / "lightning_logs" / "version_0").mkdir(parents=True)  # an earlier run
    args = [{"save_dir": str(tmp_path)}, {"save_dir": str(tmp_path)}, {"save_dir": str(tmp_path), "version": 7},
            {"save_dir": str(tmp_path / "elsewhere")}]
    loggers = [TensorBoardLogger(**args[0]), CSVLogger(**args[1]), CSVLogger(**args[2]), CSVLogger(**args[3])]
    shared = loggers_sharing_one_version(loggers, args)
    assert [type(logger) for logger in shared] == [type(logger) for logger in loggers]
    assert [logger.version for logger in shared] == [1, 1, 7, 0]  # an explicit version and another folder are kept
    assert shared[1].log_dir == shared[0].log_dir == str(tmp_path / "lightning_logs" / "version_1")
    alone = [CSVLogger(tmp_path / "alone")]
    assert loggers_sharing_one_version(alone, [{}]) is alone
