"""The files a finished ``transfer`` leaves: results, plot and report, from the run's records.

Records carry more than the report needs (each run's confusion matrix); ``results.csv`` and
``results.json`` keep every scalar column, and the confusion matrix of the best run goes to the report.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning_transfer.transfer.best_model import best_checkpoint, best_record
from lightning_transfer.transfer.report import (
    BestModel,
    DataDescription,
    EncoderExport,
    ReportContext,
    write_report,
    write_results,
)

if TYPE_CHECKING:
    from lightning_transfer.transfer.budget import Plan
    from lightning_transfer.transfer.pipeline import Transfer


def plan_summary(plan: Plan, pretraining: dict[str, Any] | None, lr_factors: tuple[float, ...]) -> dict[str, Any]:
    epochs: dict[int, dict[str, int]] = {}
    for run in plan.runs:
        epochs.setdefault(run.labels_per_class, {})[run.init] = run.epochs
    summary: dict[str, Any] = {
        "budget minutes": round(plan.budget_seconds / 60, 2),
        "pretraining steps": plan.pretrain_steps,
        "pretraining batch per process": plan.pretrain_batch_size,
        "fine-tuning steps per run (target)": plan.finetune_steps,
        "fine-tuning epochs per labels/class": "; ".join(
            f"{k}: " + ", ".join(f"{e} ({init})" for init, e in by_init.items())
            for k, by_init in sorted(epochs.items())
        ),
        "fine-tuning LRs per run (x the recipe's)": ", ".join(f"{f:g}" for f in lr_factors)
        + ("; validation picks one, the same grid for every init" if len(lr_factors) > 1 else ""),
        "timed pretraining step (s)": plan.timings.pretrain_step,
        "timed fine-tuning step (s)": plan.timings.finetune_step[1],
        "estimated minutes": round(plan.estimate["total"] / 60, 1),
    }
    if pretraining:
        summary["pretraining validation"] = ", ".join(f"{k} {v}" for k, v in pretraining.get("validation", {}).items())
    return summary


def write_outputs(transfer: Transfer, plan: Plan, records: list[dict[str, Any]]) -> tuple[Path, Path]:
    """``results.csv``/``results.json`` (scalar columns), ``label_efficiency.png``, ``report.md`` and
    ``report.html`` in the output directory. Returns the report paths."""
    out, data, settings = transfer.out, transfer.data, transfer.settings
    scalars = [{k: v for k, v in record.items() if k != "confusion_matrix"} for record in records]
    write_results(scalars, out)
    best = best_record(records)
    pretraining = transfer.store.get("pretrain", transfer.pretrain_key(plan))
    context = ReportContext(
        data=DataDescription(
            path=str(settings.data),
            kind=data.kind,
            class_names=data.class_names,
            train_pool=data.split_sizes["pool"],
            unlabeled=data.split_sizes["unlabeled"],
            validation=data.split_sizes["validation"],
            test=data.split_sizes["test"],
        ),
        records=scalars,
        plan=plan_summary(plan, pretraining, settings.lr_factors),
        best=BestModel(
            init=best["init"],
            labels_per_class=best["labels_per_class"],
            seed=best["seed"],
            val_accuracy=best["val_accuracy"],
            test_accuracy=best["test_accuracy"],
            class_names=data.class_names,
            confusion=best["confusion_matrix"],
            checkpoint=str(best_checkpoint(out).resolve()),
        ),
        export=EncoderExport(path=str((out / "pretrained_encoder").resolve()), kind=data.kind),
        init_from_model=settings.init_from,
        wall_seconds=round(time.time() - transfer.started, 1),
    )
    return write_report(out, context)
