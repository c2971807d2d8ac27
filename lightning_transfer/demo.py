"""The transfer demo: pretraining pays when labels are scarce, measured on offline data.

    python -m lightning_transfer.demo [--quick] [--output-dir DIR] [--tasks mnist reviews]

- ``mnist``: SimCLR on the 3,500 training digits of MNIST-5k *without labels*, then fine-tuning with
  a few labels per class from the SimCLR encoder and from scratch (the same network, random init);
  plus the linear evaluation protocol (frozen features, logistic regression) for both.
- ``reviews``: BERT MLM pretraining on the Rotten Tomatoes snippets and plot summaries, then
  fine-tuning on fresh/rotten with a few labels per class from our encoder, from the real
  pretrained MiniLM-L6 and from scratch.

Every number is a test accuracy on held-out data that no stage saw (1,000 digits; 1,000 reviews).
Writes ``results.csv``, ``results.json`` (records with ``task``, ``init``, ``labels_per_class``,
``test_accuracy``, ...), ``label_efficiency.png`` and the runs' logs under the output directory.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger

from lightning_transfer.data.images import ImageDataModule
from lightning_transfer.evaluation import extract_features, linear_probe_accuracy
from lightning_transfer.modules.finetune import FineTuneModule
from lightning_transfer.modules.simclr import SimCLRModule
from lightning_transfer.plots import plot_label_efficiency

TASKS = ("mnist", "reviews")


@dataclass(frozen=True)
class Plan:
    """How much of each stage to run. ``QUICK`` is what the tests run."""

    simclr_steps: int
    mnist_labels: tuple[int, ...]
    mnist_finetune_steps: int
    bert_steps: int
    bert_layers: int
    reviews_labels: tuple[int, ...]
    reviews_finetune_epochs: int
    reviews_max_length: int


FULL = Plan(simclr_steps=500, mnist_labels=(1, 5, 10, 50), mnist_finetune_steps=100, bert_steps=300, bert_layers=4,
            reviews_labels=(10, 50, 200), reviews_finetune_epochs=6, reviews_max_length=64)
QUICK = Plan(simclr_steps=40, mnist_labels=(10,), mnist_finetune_steps=30, bert_steps=40, bert_layers=2,
             reviews_labels=(50,), reviews_finetune_epochs=3, reviews_max_length=48)


def status(message: str) -> None:
    """One line per stage, flushed at once (Lightning's progress bars show the steps)."""
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


def make_trainer(root: Path, quiet: bool, **settings: Any) -> pl.Trainer:
    defaults = dict(accelerator="cpu", devices=1, logger=CSVLogger(str(root), name=""), default_root_dir=str(root),
                    enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=not quiet,
                    log_every_n_steps=5, num_sanity_val_steps=0)
    defaults.update(settings)
    return pl.Trainer(**defaults)


def validation_metrics(trainer: pl.Trainer) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}


# ------------------------------------------------------------------------------------------- vision

# Digits: no flips (a flipped 2 is not a 2), no hue/saturation (grayscale), no blur at 28 px; crops
# keep at least half the digit.
MNIST_AUGMENT = {"crop_scale": (0.5, 1.0), "flip_prob": 0.0, "hue": 0.0, "saturation": 0.0, "blur_prob": 0.0}


def pretrain_simclr(plan: Plan, out: Path, quiet: bool) -> Path:
    status(f"mnist: SimCLR pretraining on 3,500 unlabeled digits for {plan.simclr_steps} steps (small CNN, NT-Xent)")
    module = SimCLRModule(backbone="convnet", width=16, in_channels=1, projection_hidden_dim=512, projection_dim=128,
                          temperature=0.2, optimizer="adamw", lr=2e-3, lr_scaling="none", weight_decay=1e-4,
                          warmup_fraction=0.05, probe_lr=0.01)
    data = ImageDataModule(source="mnist_demo", mode="simclr", batch_size=128, augment=MNIST_AUGMENT, knn_bank_size=2000)
    trainer = make_trainer(out / "mnist_simclr", quiet, max_steps=plan.simclr_steps, max_epochs=-1,
                           val_check_interval=None, check_val_every_n_epoch=4)
    trainer.fit(module, data)
    path = out / "mnist_simclr" / "simclr.ckpt"
    trainer.save_checkpoint(path)
    status(f"mnist: SimCLR done, monitors on 500 validation digits: {validation_metrics(trainer)}")
    return path


def linear_evaluation(checkpoint: Path) -> dict[str, float]:
    """The SSL papers' linear evaluation: logistic regression on frozen features of all 3,500
    training digits, accuracy on the 1,000 test digits; SimCLR encoder vs the same random one."""
    data = ImageDataModule(source="mnist_demo", mode="supervised", batch_size=500)
    data.setup("fit")
    transform = lambda batch: data.on_after_batch_transfer(batch, 0)  # noqa: E731
    accuracies = {}
    pretrained = SimCLRModule.load_from_checkpoint(checkpoint)
    torch.manual_seed(0)
    random = SimCLRModule(**pretrained.hparams)  # the same network, random weights
    for name, encoder in (("simclr", pretrained.backbone), ("scratch", random.backbone)):
        train = extract_features(encoder, data.eval_train_dataloader(), transform)
        test = extract_features(encoder, data.test_dataloader(), transform)
        accuracies[name] = linear_probe_accuracy(*train, *test)
    return accuracies


def finetune_mnist(checkpoint: Path, init: str, labels_per_class: int, steps: int, out: Path, quiet: bool) -> dict:
    batch = min(64, 10 * labels_per_class)
    data = ImageDataModule(source="mnist_demo", mode="supervised", labels_per_class=labels_per_class, batch_size=batch,
                           augment={"crop_scale": (0.6, 1.0), "flip_prob": 0.0})
    module = FineTuneModule(pretrained=str(checkpoint), init="pretrained" if init == "simclr" else "scratch",
                            strategy="full", lr=2e-3, encoder_lr_factor=0.5 if init == "simclr" else 1.0,
                            weight_decay=1e-4, warmup_fraction=0.05, schedule="cosine")
    trainer = make_trainer(out / f"mnist_{init}_{labels_per_class}", quiet, max_steps=steps, max_epochs=-1,
                           limit_val_batches=0)
    trainer.fit(module, data)
    return trainer.test(module, data, verbose=False)[0]


# --------------------------------------------------------------------------------------------- text

def pretrain_bert(plan: Plan, out: Path, quiet: bool) -> Path:
    from lightning_transfer.data.text import TextPretrainDataModule
    from lightning_transfer.modules.bert_pretrain import BertPretrainModule

    status(f"reviews: BERT MLM pretraining ({plan.bert_layers} layers, hidden 256) on the review corpus for {plan.bert_steps} steps")
    data = TextPretrainDataModule(source="reviews_demo", vocab_size=8192, max_seq_length=plan.reviews_max_length * 2,
                                  nsp=False, batch_size=32, cache_dir=str(out / "cache"))
    module = BertPretrainModule(hidden_size=256, num_hidden_layers=plan.bert_layers, num_attention_heads=4,
                                intermediate_size=1024, max_position_embeddings=512, nsp=False, lr=1e-3,
                                warmup_fraction=0.05, weight_decay=0.01)
    trainer = make_trainer(out / "reviews_bert", quiet, max_steps=plan.bert_steps, max_epochs=-1, gradient_clip_val=1.0,
                           val_check_interval=min(200, plan.bert_steps), check_val_every_n_epoch=None,
                           limit_val_batches=20)
    trainer.fit(module, data)
    export = out / "reviews_bert" / "hf"
    module.save_pretrained(export)
    status(f"reviews: BERT pretraining done, validation {validation_metrics(trainer)}; exported to {export}")
    return export


def finetune_reviews(pretrained: str, tokenizer: str, init: str, labels_per_class: int, plan: Plan, out: Path,
                     quiet: bool) -> dict:
    from lightning_transfer.data.text import TextClassificationDataModule

    data = TextClassificationDataModule(tokenizer=tokenizer, source="reviews_demo", max_seq_length=plan.reviews_max_length,
                                        labels_per_class=labels_per_class, val_size=500, test_size=1000,
                                        batch_size=min(16, 2 * labels_per_class))
    # Mean pooling for all three: MiniLM was trained as a mean-pooled sentence encoder, and MLM without
    # NSP never trains the [CLS] state (its CLS pooling fine-tuned to a constant prediction in our runs).
    # The small BERTs take a larger LR (few steps).
    lr = {"minilm": 1e-4, "bert": 3e-4, "scratch": 3e-4}[init]
    module = FineTuneModule(pretrained=pretrained, init="scratch" if init == "scratch" else "pretrained",
                            strategy="full", warmup_fraction=0.1, lr=lr, pooling="mean")
    trainer = make_trainer(out / f"reviews_{init}_{labels_per_class}", quiet, max_epochs=plan.reviews_finetune_epochs,
                           limit_val_batches=0)
    trainer.fit(module, data)
    return trainer.test(module, data, verbose=False)[0]


# ------------------------------------------------------------------------------------------ results

def record(results: list[dict], task: str, init: str, labels_per_class: int, metrics: dict, seconds: float) -> None:
    row = {"task": task, "init": init, "labels_per_class": labels_per_class,
           "test_accuracy": round(float(metrics["test/acc"]), 4), "test_f1": round(float(metrics["test/f1"]), 4),
           "seconds": round(seconds, 1)}
    results.append(row)
    status(f"{task}: init={init:8s} labels/class={labels_per_class:4d} test accuracy={row['test_accuracy']:.3f}")


def write_results(results: list[dict], out: Path) -> None:
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(results[0]))
        writer.writeheader()
        writer.writerows(results)
    (out / "results.json").write_text(json.dumps(results, indent=2))


def print_table(results: list[dict]) -> None:
    print(f"\n{'task':8s} {'init':8s} {'labels/class':>12s} {'test acc':>9s} {'macro F1':>9s}")
    for r in results:
        print(f"{r['task']:8s} {r['init']:8s} {r['labels_per_class']:12d} {r['test_accuracy']:9.3f} {r['test_f1']:9.3f}")


def run(plan: Plan, out: Path, tasks: tuple[str, ...], quiet: bool = False) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(0, workers=True)
    results: list[dict] = []
    extras: dict[str, Any] = {}
    if "mnist" in tasks:
        checkpoint = pretrain_simclr(plan, out, quiet)
        extras["mnist_linear_evaluation"] = linear_evaluation(checkpoint)
        status(f"mnist: linear evaluation (all 3,500 train labels, frozen features): {extras['mnist_linear_evaluation']}")
        for labels in plan.mnist_labels:
            for init in ("simclr", "scratch"):
                pl.seed_everything(labels, workers=True)
                start = time.time()
                metrics = finetune_mnist(checkpoint, init, labels, plan.mnist_finetune_steps, out, quiet)
                record(results, "mnist", init, labels, metrics, time.time() - start)
    if "reviews" in tasks:
        from lightning_transfer.data.sources import minilm_directory

        ours = pretrain_bert(plan, out, quiet)
        sources = {"bert": (str(ours), str(ours)), "minilm": ("minilm_demo", str(minilm_directory())),
                   "scratch": (str(ours), str(ours))}
        for labels in plan.reviews_labels:
            for init, (pretrained, tokenizer) in sources.items():
                pl.seed_everything(labels, workers=True)
                start = time.time()
                metrics = finetune_reviews(pretrained, tokenizer, init, labels, plan, out, quiet)
                record(results, "reviews", init, labels, metrics, time.time() - start)
    write_results(results, out)
    (out / "extras.json").write_text(json.dumps(extras, indent=2))
    plot_label_efficiency(results, out / "label_efficiency.png")
    print_table(results)
    status(f"wrote {out / 'results.csv'}, {out / 'results.json'} and {out / 'label_efficiency.png'}")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short version (under 5 minutes on 2 CPU cores)")
    parser.add_argument("--output-dir", default="runs/demo", type=Path, help="where results, plots and logs go")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--no-progress", action="store_true", help="hide the per-step progress bars")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    start = time.time()
    run(QUICK if args.quick else FULL, args.output_dir, tuple(args.tasks), quiet=args.no_progress)
    status(f"finished in {(time.time() - start) / 60:.1f} minutes")


if __name__ == "__main__":
    main()
