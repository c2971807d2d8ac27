"""The fine-tuned model ``transfer`` keeps: which run (:func:`best_record`) and where it goes.

The choice reads validation accuracy only, never the test set, so the test accuracy reported for the
kept model is an honest estimate. The pipeline saves a run's checkpoint when :func:`best_record` of
the runs so far is that run, and the report names :func:`best_record` of all runs: the same function,
so they always agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

BEST_DIR = "best_model"


def best_record(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The record (a fine-tuning run, with ``val_accuracy``) with the highest validation accuracy.

    Tie-break: the first of the equals in ``records``. The pipeline keeps records in plan order (the
    smaller label count first, then ``pretrained``, ``init_from``, ``scratch``, then the lower seed),
    so on a tie the run with fewer labels wins, and a later run replaces the kept model only when it
    is strictly better. Returns that same dict object; raises ``ValueError`` when ``records`` is empty."""
    return max(records, key=lambda record: float(record["val_accuracy"]))  # max keeps the first of equals


def best_checkpoint(output_dir: Path) -> Path:
    """Where the best model's checkpoint goes in the command's output directory."""
    return Path(output_dir) / BEST_DIR / "model.ckpt"
