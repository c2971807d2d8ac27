"""Host-device synchronizations in the training steps, checked on a GPU (issue #15).

Each module trains a few steps in ``Trainer.fit`` on one CUDA device, as a user runs it (collated
batches, progress bar, a logger, ``StopOnNonFiniteLoss``), with ``torch.cuda.set_sync_debug_mode("error")``
on from the start of step ``--warmup`` (after cuDNN autotuning and lazy initialization) until the
epoch ends: any synchronizing CUDA call in that window (``.item()``, ``bool(tensor)``, ``nonzero``,
boolean indexing, a blocking copy between host and device, ``torch.cuda.synchronize``...) raises, and
the script prints where it came from. The logging interval is longer than the run, so the window
holds no logging step (there Lightning reads the logged values back, by design).

Modules: ``BertPretrainModule`` (also its DDP loss normaliser, with a stand-in all-reduce in one
process), ``SimCLRModule`` with its online probe (LARS), ``FineTuneModule`` on text and on images.
``tests/test_host_syncs.py`` is the CPU proxy of this check, run by the test suite.

    python scripts/gpu_sync_check.py                       # 32-true and bf16-mixed
    python scripts/gpu_sync_check.py --precision 16-mixed  # GradScaler: see below

One line per module and precision, ``OK`` or ``FAILED <call site>: <error>``; the exit status is 1 when
one failed, else 0. Without a CUDA device it prints that nothing was checked and exits with 0. Under
``16-mixed``, torch's GradScaler reads its found-inf flag back at every optimizer step unless the
optimizer is fused (the modules fuse AdamW/Adam/SGD when gradients are not clipped; LARS never is),
so a FAILED at ``torch/amp/grad_scaler.py`` there is torch's, expected.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import traceback
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, when run from a checkout

MARKER = "synchronizing CUDA operation"  # torch's message in set_sync_debug_mode("error")


def _workloads(batches: int) -> dict:
    """name -> (build the module, build the train DataLoader, patches to apply while fitting)."""
    import torch
    from torch.utils.data import DataLoader

    from lightning_transfer import BertPretrainModule, FineTuneModule, SimCLRModule
    from lightning_transfer.data.collators import ClassificationCollator, PretrainingCollator
    from lightning_transfer.modules import bert_pretrain
    from tests.helpers.token_examples import classification_examples, pretraining_examples

    bert = dict(
        vocab_size=1000,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        max_position_embeddings=128,
    )

    def bert_loader():
        collate = PretrainingCollator(pad_id=0, mask_id=4, vocab_size=1000, mlm_probability=0.15, seed=0)
        return DataLoader(
            pretraining_examples(8 * batches, length=64, vocab=1000, batch=8), batch_size=8, collate_fn=collate
        )

    def views_loader():
        g = torch.Generator().manual_seed(0)
        n = 32 * batches
        labels = torch.arange(n) % 10
        labels[::4] = -1  # unlabeled images: the probe skips them
        rows = [
            {"views": (torch.randn(3, 32, 32, generator=g), torch.randn(3, 32, 32, generator=g)), "labels": labels[i]}
            for i in range(n)
        ]
        return DataLoader(rows, batch_size=32)

    def text_loader():
        rows = classification_examples(8 * batches, shortest=16, vocab=1000)
        return DataLoader(rows, batch_size=8, collate_fn=ClassificationCollator(pad_id=0))

    def image_loader():
        g = torch.Generator().manual_seed(2)
        rows = [{"images": torch.randn(3, 32, 32, generator=g), "labels": i % 10} for i in range(32 * batches)]
        return DataLoader(rows, batch_size=32)

    def doubling_all_reduce(tensor, *args, **kwargs):
        tensor.mul_(2)  # a second process that selected as many tokens as this one

    ddp_patches = [
        mock.patch.object(bert_pretrain, "is_distributed", lambda: True),
        mock.patch.object(bert_pretrain, "world_size", lambda: 2),
        mock.patch("torch.distributed.all_reduce", doubling_all_reduce),
    ]
    image_encoder = {"backbone": "resnet18", "in_channels": 3, "small_images": True}
    return {
        "bert_pretrain": (lambda: BertPretrainModule(**bert, warmup_steps=0), bert_loader, []),
        "bert_pretrain_ddp_normaliser": (lambda: BertPretrainModule(**bert, warmup_steps=0), bert_loader, ddp_patches),
        "simclr_probe_lars": (
            lambda: SimCLRModule(
                backbone="resnet18",
                small_images=True,
                projection_hidden_dim=256,
                projection_dim=64,
                lr_scaling="none",
                lr=0.1,
                warmup_steps=0,
                num_classes=10,
            ),
            views_loader,
            [],
        ),
        "finetune_text": (
            lambda: FineTuneModule(encoder_config=bert, num_classes=3, lr=1e-4, warmup_steps=0, pooling="mean"),
            text_loader,
            [],
        ),
        "finetune_image": (
            lambda: FineTuneModule(encoder_config=image_encoder, num_classes=10, lr=1e-3, warmup_steps=0),
            image_loader,
            [],
        ),
    }


def _sync_window(warmup: int):
    import lightning.pytorch as pl
    import torch

    class SyncErrorsFromWarmup(pl.Callback):
        """``set_sync_debug_mode("error")`` from the start of step ``warmup`` to the end of the epoch."""

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step >= warmup:
                torch.cuda.set_sync_debug_mode("error")

        def on_train_epoch_end(self, trainer, pl_module):
            torch.cuda.set_sync_debug_mode("default")

        def on_exception(self, trainer, pl_module, exception):
            torch.cuda.set_sync_debug_mode("default")

    return SyncErrorsFromWarmup()


def _call_site(error: BaseException) -> str:
    """The innermost frame of the error's traceback outside torch, and the innermost in lightning_transfer."""
    frames = traceback.extract_tb(error.__traceback__)
    outside = [f for f in frames if "/torch/" not in f.filename]
    ours = [f for f in frames if "/lightning_transfer/" in f.filename]
    parts = [f"{f.filename.split('site-packages/')[-1]}:{f.lineno} ({f.name})" for f in (outside[-1:] + ours[-1:])]
    return " <- ".join(dict.fromkeys(parts)) or "?"


def check(name: str, workload, precision: str, warmup: int, steps: int, cpu: bool = False) -> bool:
    """Fit ``workload`` for ``warmup + steps`` steps, raising at any synchronization after the warm-up
    (``cpu``: on the CPU, without the check, to try the workloads where there is no GPU)."""
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.loggers import CSVLogger

    from lightning_transfer.callbacks import StopOnNonFiniteLoss

    build_module, build_loader, patches = workload
    callbacks = [StopOnNonFiniteLoss()] if cpu else [_sync_window(warmup), StopOnNonFiniteLoss()]
    with tempfile.TemporaryDirectory() as folder:
        trainer = pl.Trainer(
            accelerator="cpu" if cpu else "gpu",
            devices=1,
            precision=precision,
            max_steps=warmup + steps,
            max_epochs=1,
            log_every_n_steps=10 * (warmup + steps),
            gradient_clip_val=1.0,
            logger=CSVLogger(folder),
            callbacks=callbacks,
            enable_progress_bar=True,
            enable_model_summary=False,
            enable_checkpointing=False,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            default_root_dir=folder,
        )
        try:
            with contextlib.ExitStack() as stack:
                for patch in patches:
                    stack.enter_context(patch)
                trainer.fit(build_module(), build_loader())
        except RuntimeError as error:
            if MARKER not in str(error):
                raise
            print(f"{name} [{precision}]: FAILED {_call_site(error)}: {str(error).splitlines()[0]}", flush=True)
            return False
        finally:
            if not cpu:
                torch.cuda.set_sync_debug_mode("default")
    done = "ran on the CPU, not checked" if cpu else "without a host-device synchronization"
    print(f"{name} [{precision}]: OK ({steps} steps {done})", flush=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precision", default="32-true,bf16-mixed", help="comma-separated Trainer precisions")
    parser.add_argument("--steps", type=int, default=5, help="checked steps per module (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=3, help="unchecked steps first")
    parser.add_argument("--only", default="", help="comma-separated module names (default: all)")
    parser.add_argument(
        "--cpu", action="store_true", help="run the workloads on the CPU, unchecked (tries this script)"
    )
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available() and not args.cpu:
        print(
            f"gpu_sync_check: no CUDA device here (torch {torch.__version__}); nothing was checked. "
            "Run it on a machine with an NVIDIA GPU; tests/test_host_syncs.py is the CPU proxy."
        )
        return 0
    import warnings

    warnings.filterwarnings("ignore", message=".*(does not have many workers|smaller than the logging interval).*")
    workloads = _workloads(args.warmup + args.steps)
    names = [n for n in args.only.split(",") if n] or list(workloads)
    unknown = sorted(set(names) - set(workloads))
    if unknown:
        parser.error(f"unknown module(s) {unknown}; choose from {sorted(workloads)}")
    device = "CPU (--cpu: nothing is checked)" if args.cpu else torch.cuda.get_device_name()
    print(f"gpu_sync_check: {device}, torch {torch.__version__}", flush=True)
    results = [
        check(name, workloads[name], precision, args.warmup, args.steps, args.cpu)
        for precision in args.precision.split(",")
        for name in names
    ]
    print(f"gpu_sync_check: {sum(results)} OK, {len(results) - sum(results)} FAILED", flush=True)
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
