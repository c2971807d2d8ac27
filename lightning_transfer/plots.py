"""Plots of a run, written as PNG files next to its logs.

Every function builds its own :class:`matplotlib.figure.Figure` (Agg canvas, no ``pyplot``), saves it
and lets it go, so nothing leaks into a notebook's or a script's global pyplot state.
"""
from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def plot_label_efficiency(results: list[dict], path: str | Path) -> Path:
    """Test accuracy against labels per class (log scale), one panel per task and one line per
    initialization. ``results`` holds records with ``task``, ``init``, ``labels_per_class`` and
    ``test_accuracy`` (as :mod:`lightning_transfer.demo` writes them)."""
    tasks = sorted({r["task"] for r in results})
    fig = Figure(figsize=(5 * len(tasks), 4))
    axes = fig.subplots(1, len(tasks), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for init in sorted({r["init"] for r in results if r["task"] == task}):
            rows = sorted((r for r in results if r["task"] == task and r["init"] == init), key=lambda r: r["labels_per_class"])
            ax.plot([r["labels_per_class"] for r in rows], [r["test_accuracy"] for r in rows], marker="o", label=init)
        ax.set_xscale("log")
        ax.set_xlabel("labels per class")
        ax.set_ylabel("test accuracy")
        ax.set_title(task)
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)
