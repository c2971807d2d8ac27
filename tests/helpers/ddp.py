"""Two-process CPU/gloo runs for tests/test_ddp.py.

:func:`run_two_processes` starts ``world`` processes that behave like ``torchrun`` children
(``LOCAL_RANK``/``NODE_RANK``/``WORLD_SIZE`` set, so ``Trainer(strategy="ddp")`` joins them instead of
launching its own), opens the gloo process group with a short timeout (a rank stuck in a collective
fails instead of hanging the suite), runs :func:`worker` and waits at most ``deadline`` seconds.

Each scenario of :func:`worker` writes ``<out>/<scenario>_rank<r>.pt`` as soon as it finishes, so one
scenario that fails or hangs leaves the others' results for their own tests.
"""
from __future__ import annotations

import os
import socket
import time
import traceback
from datetime import timedelta
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lightning_transfer.data.collators import ClassificationCollator
from lightning_transfer.data.length_sorted import LengthSortedSampler

SCENARIOS = ("seeding", "simclr", "bert", "finetune", "finetune_text", "resume_rng", "simclr_probe")


# ----------------------------------------------------------------------------- picklable pieces
class TinyBackbone(nn.Module):
    """Flatten + Linear: a BatchNorm-free encoder, so per-process statistics cannot differ from the
    single-process run."""

    def __init__(self, in_features: int = 48, feature_dim: int = 8):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_features, feature_dim))
        self.feature_dim = feature_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


class ViewsDataset(Dataset):
    """Precomputed SimCLR views (no augmentation): ``{"views": (v1, v2), "labels", "index"}``."""

    def __init__(self, views1: torch.Tensor, views2: torch.Tensor, labels: torch.Tensor):
        self.views1, self.views2, self.labels = views1, views2, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"views": (self.views1[i], self.views2[i]), "labels": self.labels[i], "index": i}


class ListDataset(Dataset):
    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


class RecordLosses(pl.Callback):
    """Keeps the loss of every training step (this process's value)."""

    def __init__(self):
        self.losses: list[float] = []
        self.indices: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss.detach()))
        if isinstance(batch, dict) and "index" in batch:
            self.indices += [int(i) for i in batch["index"]]


class LogOnRankZeroOnly(pl.Callback):
    """Logs a key on process 0 only (plain float, no sync): must not make the other process wait."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_rank == 0:
            pl_module.log("debug/rank0_only", 1.0, rank_zero_only=True)


class Crash(Exception):
    """Stands for a killed job."""


class CrashAtStep(pl.Callback):
    """Raise when step ``step`` is about to start, i.e. after the step-``step`` checkpoint is written
    (ModelCheckpoint runs last in ``on_train_batch_end``). Every process raises at the same point."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise Crash(f"killed before step {self.step}")


class SeedPerRank(pl.Callback):
    """Gives each process its own global random stream when training starts. On resume this runs
    before the loader restores the random state from the checkpoint, at its first new batch (whether
    Lightning or the module's ``ResumeTrainLoaders`` callback loaded the loader state)."""

    def on_train_start(self, trainer, pl_module):
        torch.manual_seed(100 + trainer.global_rank)


class RecordRngState(pl.Callback):
    """The global torch random state when each step starts (draws nothing itself)."""

    def __init__(self):
        self.states: dict[int, torch.Tensor] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.states[trainer.global_step] = torch.get_rng_state()


def tiny_trainer(**overrides) -> pl.Trainer:
    settings = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, max_epochs=1)
    settings.update(overrides)
    return pl.Trainer(**settings)


# ----------------------------------------------------------------------------- inputs shared by parent and workers
def simclr_module(num_classes: int = 0):
    from lightning_transfer import SimCLRModule

    return SimCLRModule(backbone=TinyBackbone(), projection_layers=1, projection_dim=4, temperature=0.5,
                        optimizer="sgd", lr=8.0, lr_scaling="linear", weight_decay=0.0, warmup_steps=0,
                        schedule="constant", num_classes=num_classes)


def simclr_data(n: int = 8, labeled: bool = False) -> ViewsDataset:
    g = torch.Generator().manual_seed(1)
    views1, views2 = torch.randn(n, 3, 4, 4, generator=g), torch.randn(n, 3, 4, 4, generator=g)
    labels = torch.arange(n) % 3 if labeled else torch.full((n,), -1)
    return ViewsDataset(views1, views2, labels)


BERT_SIZES = dict(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                  max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                  nsp=True, optimizer="adamw", lr=1e-2, warmup_steps=0, schedule="constant")


def bert_module():
    from lightning_transfer import BertPretrainModule

    return BertPretrainModule(**BERT_SIZES)


def bert_rows(n: int = 24, length: int = 12) -> list[dict]:
    """Pretraining examples with padding and 1-3 selected tokens per row, so the processes select
    different numbers of tokens: the MLM loss must still be the mean over all selected tokens."""
    g = torch.Generator().manual_seed(2)
    rows = []
    for i in range(n):
        real = 6 + i % (length - 6)  # varying lengths: padded batches
        ids = torch.zeros(length, dtype=torch.long)
        ids[:real] = torch.randint(5, 40, (real,), generator=g)
        ids[0], ids[real - 1] = 2, 3  # CLS ... SEP
        labels = torch.full((length,), -100)
        for pos in range(1, 2 + (i * 7) % 3):  # 1, 2 or 3 selected tokens
            labels[pos] = ids[pos]
            ids[pos] = 4  # [MASK]
        rows.append({"input_ids": ids, "attention_mask": (torch.arange(length) < real).long(),
                     "token_type_ids": torch.zeros(length, dtype=torch.long), "labels": labels,
                     "next_sentence_label": torch.tensor(i % 2), "index": i})
    return rows


FINETUNE_ENCODER = {"backbone": "convnet", "in_channels": 1, "small_images": True, "width": 4}


def finetune_module():
    from lightning_transfer import FineTuneModule

    return FineTuneModule(encoder_config=FINETUNE_ENCODER, init="scratch", lr=1e-2, warmup_steps=0, schedule="constant")


FINETUNE_TEXT_ENCODER = dict(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=32, max_position_embeddings=16, hidden_dropout_prob=0.0,
                             attention_probs_dropout_prob=0.0)


def finetune_text_module():
    """Text fine-tuning without BatchNorm and without dropout: nothing per-process but the data."""
    from lightning_transfer import FineTuneModule

    return FineTuneModule(encoder_config=FINETUNE_TEXT_ENCODER, init="scratch", num_classes=3, strategy="full",
                          head_dropout=0.0, lr=1e-2, warmup_steps=0, schedule="constant")


def classification_rows(n: int = 24, length: int = 12) -> list[dict]:
    """Padded sentence-pair classification examples, 3 classes."""
    g = torch.Generator().manual_seed(3)
    rows = []
    for i in range(n):
        real = 5 + i % (length - 5)
        ids = torch.zeros(length, dtype=torch.long)
        ids[:real] = torch.randint(5, 40, (real,), generator=g)
        ids[0], ids[real - 1] = 2, 3  # CLS ... SEP
        types = torch.zeros(length, dtype=torch.long)
        types[real // 2:real] = 1
        rows.append({"input_ids": ids, "attention_mask": (torch.arange(length) < real).long(), "token_type_ids": types,
                     "labels": torch.tensor(i % 3), "index": i})
    return rows


def unpadded_classification_rows() -> list[dict]:
    """:func:`classification_rows` without their padding (lengths 5 to 11), for a collator to pad."""
    rows = []
    for row in classification_rows():
        real = int(row["attention_mask"].sum())
        rows.append({"input_ids": row["input_ids"][:real], "token_type_ids": row["token_type_ids"][:real],
                     "labels": row["labels"]})
    return rows


RESUME_STEPS, RESUME_CRASH_STEP = 7, 4  # 3 steps per epoch: the crash is mid-epoch 1, the run ends in epoch 2


def resume_module():
    """Image fine-tuning with dropout 0.5 before the head: training draws from the global RNG."""
    from lightning_transfer import FineTuneModule

    return FineTuneModule(encoder_config=FINETUNE_ENCODER, init="scratch", num_classes=10, head_dropout=0.5, lr=1e-2,
                          warmup_steps=0, schedule="constant")


def resume_data():
    # 30 training digits, 15 per process, batches of 4 (drop_last): 3 steps per epoch
    from lightning_transfer import ImageDataModule

    return ImageDataModule(source="mnist_demo", mode="supervised", labels_per_class=3, batch_size=4, val_size=20,
                           test_size=20, num_workers=0, knn_bank_size=0)


def finetune_data():
    from lightning_transfer import ImageDataModule

    return ImageDataModule(source="mnist_demo", mode="supervised", labels_per_class=2, batch_size=4, val_size=20,
                           test_size=20, num_workers=0, knn_bank_size=0)


# ----------------------------------------------------------------------------- the worker
def _save(out: Path, name: str, rank: int, result: dict) -> None:
    torch.save(result, out / f"{name}_rank{rank}.pt")


def _gather_object(obj):
    objects = [None] * dist.get_world_size()
    dist.all_gather_object(objects, obj)
    return objects


def _seeding(rank: int, inputs: dict) -> dict:
    """Lightning seeds every process with the same seed: the augmentation and the masking must still
    draw differently on each process (per-rank streams), while the data split is the same."""
    from lightning_transfer import ImageDataModule
    from lightning_transfer.data.text import PretrainingCollator

    pl.seed_everything(0, verbose=False)
    dm = ImageDataModule(source="mnist_demo", mode="simclr", image_size=16, num_workers=0)
    image = torch.arange(16 * 16, dtype=torch.uint8).reshape(1, 16, 16)
    batch = dm._transform("train")([(image, 0)] * 4)
    views = dm.on_after_batch_transfer(batch, 0)["views"][0]
    collator = PretrainingCollator(pad_id=0, mask_id=4, vocab_size=40, mlm_probability=0.5, seed=0)
    masked = collator([{"input_ids": list(range(5, 25)), "special_tokens_mask": [0] * 20, "token_type_ids": [0] * 20}])
    sync_bn_error, sync_bn_output = None, None
    sync_bn_input = torch.randn(8, 4, generator=torch.Generator().manual_seed(10 + rank))  # differs per process
    try:
        sync_bn_output = nn.SyncBatchNorm(4).train()(sync_bn_input).detach()
    except Exception as err:  # noqa: BLE001 - torch: ValueError("SyncBatchNorm expected input tensor to be on GPU ...")
        sync_bn_error = f"{type(err).__name__}: {err}"
    return {"views": _gather_object(views), "masks": _gather_object(masked["labels"]), "sync_bn_error": sync_bn_error,
            "sync_bn_input": sync_bn_input, "sync_bn_output": sync_bn_output}


def _simclr(rank: int, inputs: dict) -> dict:
    module = simclr_module()
    module.load_state_dict(inputs["simclr_state"])
    record = RecordLosses()
    trainer = tiny_trainer(devices=2, strategy="ddp", max_steps=1, callbacks=[record])
    trainer.fit(module, DataLoader(simclr_data(), batch_size=4))
    return {"state": {k: v.detach().clone() for k, v in module.state_dict().items()},
            "lr": trainer.optimizers[0].param_groups[0]["lr"], "losses": record.losses, "indices": record.indices}


def _bert(rank: int, inputs: dict) -> dict:
    module = bert_module()
    module.load_state_dict(inputs["bert_state"])
    record = RecordLosses()
    trainer = tiny_trainer(devices=2, strategy="ddp", max_steps=3, gradient_clip_val=1.0, callbacks=[record])
    trainer.fit(module, DataLoader(ListDataset(bert_rows()), batch_size=4))
    losses = torch.tensor(record.losses)
    dist.all_reduce(losses)  # what DDP optimizes: the mean over processes of each process's loss
    return {"losses": (losses / dist.get_world_size()).tolist(), "indices": record.indices,
            "state": {k: v.detach().clone() for k, v in module.state_dict().items()},
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()}}


def _finetune(rank: int, inputs: dict) -> dict:
    module = finetune_module()
    dm = finetune_data()
    module.load_state_dict(inputs["finetune_state"], strict=False)  # the head is built from the data in setup
    trainer = tiny_trainer(devices=2, strategy="ddp", limit_val_batches=None)
    trainer.validate(module, dm, verbose=False)
    validated = {k: float(v) for k, v in trainer.callback_metrics.items()}
    head = {k: v.clone() for k, v in module.state_dict().items() if k.startswith("classifier.")}
    fit = tiny_trainer(devices=2, strategy="ddp", max_steps=2, callbacks=[LogOnRankZeroOnly()])
    fit.fit(module, dm)
    sampler = fit.train_dataloader.sampler
    return {"val": validated, "head": head, "train_subset": list(dm.train_set.indices),
            "train_shard": list(iter(sampler)), "sampler": type(sampler).__name__, "fit_steps": fit.global_step}


def _finetune_text(rank: int, inputs: dict) -> dict:
    """Three steps of fine-tuning, then a test of the trained model in batches sorted by length, as
    TextClassificationDataModule scores its validation and test texts."""
    module = finetune_text_module()
    module.load_state_dict(inputs["finetune_text_state"])
    record = RecordLosses()
    trainer = tiny_trainer(devices=2, strategy="ddp", max_steps=3, callbacks=[record])
    trainer.fit(module, DataLoader(ListDataset(classification_rows()), batch_size=4))
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    rows = unpadded_classification_rows()
    sorted_by_length = LengthSortedSampler([len(row["input_ids"]) for row in rows])
    tester = tiny_trainer(devices=2, strategy="ddp")
    tester.test(module, DataLoader(ListDataset(rows), batch_size=4, sampler=sorted_by_length,
                                   collate_fn=ClassificationCollator(pad_id=0)), verbose=False)
    used = tester.test_dataloaders.sampler  # the sampler Lightning used: its own, had it replaced ours
    return {"losses": record.losses, "indices": record.indices, "state": state, "test_sampler": type(used).__name__,
            "test_indices": list(used), "test": {k: float(v) for k, v in tester.callback_metrics.items()}}


def _resume_rng(rank: int, inputs: dict, directory: Path) -> dict:
    """Uninterrupted fit vs. fit killed before step k (checkpoint of step k written by process 0 into
    a shared folder) then resumed from it by both processes; each process has its own random stream."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    def fit(callbacks, ckpt_path=None, seed=0, **settings):
        torch.manual_seed(seed)  # the same initial weights in the uninterrupted and the interrupted run
        module, record = resume_module(), RecordRngState()
        # max_epochs=None (iteration-based, as configs/bert/wikitext103_base.yaml): Lightning builds the
        # loader after restoring the checkpoint and loads its state before any on_train_start hook
        trainer = tiny_trainer(devices=2, strategy="ddp", max_steps=RESUME_STEPS, max_epochs=None,
                               callbacks=[SeedPerRank(), record, *callbacks], **settings)
        trainer.fit(module, resume_data(), ckpt_path=ckpt_path)
        return module, trainer, record.states

    full, full_trainer, full_rng = fit([])
    saver = ModelCheckpoint(dirpath=directory, every_n_train_steps=RESUME_CRASH_STEP, save_top_k=-1)
    try:
        fit([saver, CrashAtStep(RESUME_CRASH_STEP)], enable_checkpointing=True)
        raise AssertionError("the interrupted run did not crash")
    except Crash:
        pass
    (checkpoint,) = directory.glob("*.ckpt")
    # the resumed processes start from other random states (and SeedPerRank reseeds them as in the
    # first run): only the checkpoint can give each process the stream it had at step k
    resumed, resumed_trainer, resumed_rng = fit([], ckpt_path=str(checkpoint), seed=1234 + rank)
    return {"full": {k: v.detach().clone() for k, v in full.state_dict().items()},
            "resumed": {k: v.detach().clone() for k, v in resumed.state_dict().items()},
            "steps": (full_trainer.global_step, resumed_trainer.global_step), "checkpoint": str(checkpoint),
            "full_rng": full_rng, "resumed_rng": resumed_rng}


def _simclr_probe(rank: int, inputs: dict) -> dict:
    """SimCLR with its online probe where process 0's batch has no label: it must still log the probe
    metric (else process 1 waits for it forever in the epoch-end sync)."""
    module = simclr_module(num_classes=3)
    trainer = tiny_trainer(devices=2, strategy="ddp", max_epochs=1)
    trainer.fit(module, DataLoader(simclr_data(labeled=rank == 1), batch_size=4))  # process 0: no label at all
    return {"metrics": {k: float(v) for k, v in trainer.callback_metrics.items()}}


def worker(rank: int, world: int, port: int, out_dir: str, inputs: dict, scenarios: tuple[str, ...]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), NODE_RANK="0",
                      LOCAL_RANK=str(rank), PL_DISABLE_FORK="1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=45))
    out = Path(out_dir)
    functions = {"seeding": _seeding, "simclr": _simclr, "bert": _bert, "finetune": _finetune,
                 "finetune_text": _finetune_text,
                 "resume_rng": lambda r, i: _resume_rng(r, i, out / "resume_rng_checkpoints"),
                 "simclr_probe": _simclr_probe}
    for name in scenarios:
        torch.manual_seed(0)
        try:
            _save(out, name, rank, functions[name](rank, inputs))
        except Exception:  # noqa: BLE001 - reported to the test through the file
            (out / f"{name}_rank{rank}.err").write_text(traceback.format_exc())
            break  # the process group may be out of step now
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_processes(out_dir: Path, inputs: dict, scenarios=SCENARIOS, deadline: float = 240.0) -> None:
    """Run :func:`worker` on 2 processes; kill them when ``deadline`` seconds have passed."""
    context = mp.start_processes(worker, args=(2, free_port(), str(out_dir), inputs, tuple(scenarios)), nprocs=2,
                                 join=False, start_method="spawn")
    end = time.monotonic() + deadline
    try:
        while not context.join(timeout=1.0):
            if time.monotonic() > end:
                (Path(out_dir) / "deadline").write_text(f"killed after {deadline} s")
                break
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
