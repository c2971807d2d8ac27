"""Plots of a run, written as PNG files next to its logs.

Every function builds its own :class:`matplotlib.figure.Figure` (Agg canvas, no ``pyplot``), saves it
and lets it go, so nothing leaks into a notebook's or a script's global pyplot state.
"""

from __future__ import annotations

import csv
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from lightning_transfer.errors import UserInputError, require


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Save ``fig`` as ``path`` (PNG at 120 dpi, parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


# ----------------------------------------------------------------------------- label efficiency
LABEL_EFFICIENCY_TITLE = "Label efficiency (mean ± std over seeds, band: min–max)"


def accuracy_spread(accuracies: Sequence[float]) -> dict[str, float]:
    """The spread of the test accuracies of one setting over its seeds: ``mean_accuracy``,
    ``std_accuracy`` (the SAMPLE standard deviation, ``n - 1`` in the denominator; 0.0 for one value),
    ``min_accuracy`` and ``max_accuracy``. Raises :class:`UserInputError` when there are none."""
    values = [float(a) for a in accuracies]
    require(len(values) > 0, "no test accuracy to summarize")
    return {
        "mean_accuracy": statistics.fmean(values),
        "std_accuracy": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min_accuracy": min(values),
        "max_accuracy": max(values),
    }


def label_efficiency_figure(results: Sequence[dict], title: str | None = None) -> Figure:
    """The figure of :func:`plot_label_efficiency`."""
    panels: dict[Any, dict[str, dict[int, list[float]]]] = {}
    for r in results:
        by_k = panels.setdefault(r.get("task"), {}).setdefault(str(r["init"]), {})
        by_k.setdefault(int(r["labels_per_class"]), []).append(float(r["test_accuracy"]))
    fig = Figure(figsize=(1.2 + 5.2 * max(1, len(panels)), 4.4))
    axes = fig.subplots(1, max(1, len(panels)), squeeze=False)[0]
    for ax, (task, inits) in zip(axes, panels.items()):
        for i, (init, by_k) in enumerate(inits.items()):
            ks = sorted(by_k)
            spread = [accuracy_spread(by_k[k]) for k in ks]
            mean, std, low, high = (
                [row[key] for row in spread]
                for key in ("mean_accuracy", "std_accuracy", "min_accuracy", "max_accuracy")
            )
            ax.fill_between(ks, low, high, color=f"C{i % 10}", alpha=0.15, linewidth=0)
            ax.errorbar(ks, mean, yerr=std, color=f"C{i % 10}", marker="o", capsize=3, label=init)
        measured = sorted({k for by_k in inits.values() for k in by_k})
        ax.set_xscale("log")
        ax.set_xticks(measured, [str(k) for k in measured])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.legend()
        ax.set_xlabel("labels per class")
        ax.set_ylabel("test accuracy")
        ax.set_title(str(task) if task is not None else title or LABEL_EFFICIENCY_TITLE)
        ax.grid(alpha=0.3)
    if title and any(task is not None for task in panels):
        fig.suptitle(title)
    return fig


def plot_label_efficiency(results: Sequence[dict], path: str | Path, title: str | None = None) -> Path:
    """PNG of test accuracy against labels per class (log x axis, ticks at the measured counts).

    ``results``: records with ``init``, ``labels_per_class`` and ``test_accuracy`` (as the
    ``transfer`` command and the notebooks write them); records that repeat an ``(init,
    labels_per_class)`` are its seeds. One line per init, in the order the inits first appear, at the
    mean over seeds, with error bars of the sample standard deviation and a shaded band from the worst
    to the best seed (:func:`accuracy_spread`). Records with a ``task`` key get one panel per task
    (titled by it, in order of appearance; ``title`` then titles the figure), others share one panel
    titled ``title`` (default :data:`LABEL_EFFICIENCY_TITLE`). Returns the path."""
    return save_figure(label_efficiency_figure(results, title), path)


def class_names_of(datamodule, num_classes: int | None = None) -> list[str] | None:
    """The class names a DataModule knows (``class_names`` of image folders, ``label_names`` of
    text), or ``None`` when it has none (or, given ``num_classes``, not exactly that many)."""
    for attribute in ("class_names", "label_names"):
        names = getattr(datamodule, attribute, None)
        if names and (num_classes is None or len(names) == num_classes):
            return [str(name) for name in names]
    return None


# ----------------------------------------------------------------------------- training curves
CURVES_FILE = "training_curves.png"
#: Logged values that are bookkeeping rather than curves: left out of the default plot.
BOOKKEEPING = ("epoch", "step", "hp_metric")
_STAGES = ("train/", "val/", "test/", "train_", "val_", "test_")
_SUFFIXES = ("_step", "_epoch")


def _find_logs(log_dir: str | Path) -> tuple[str, Path]:
    """``("csv", metrics.csv)`` or ``("tensorboard", folder with event files)`` for ``log_dir``: the
    path itself, the folder itself, else the newest such file/folder below it (CSV first)."""
    root = Path(log_dir)
    if root.is_file() and root.suffix == ".csv":
        return "csv", root
    if root.is_dir():
        csvs = [root / "metrics.csv"] if (root / "metrics.csv").is_file() else list(root.rglob("metrics.csv"))
        if csvs:
            return "csv", max(csvs, key=lambda p: p.stat().st_mtime)
        events = list(root.glob("events.out.tfevents.*")) or list(root.rglob("events.out.tfevents.*"))
        if events:
            return "tensorboard", max(events, key=lambda p: p.stat().st_mtime).parent
    raise UserInputError(
        f"no training logs in {root}: expected a CSVLogger metrics.csv or TensorBoard event files "
        "(events.out.tfevents.*); pass the run's log folder, e.g. runs/<name>/lightning_logs/version_0"
    )


def _read_csv(path: Path) -> dict[str, list[tuple[int, float]]]:
    metrics: dict[str, list[tuple[int, float]]] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            step = int(float(row.get("step") or 0))
            for name, value in row.items():
                if name != "step" and value not in ("", None):
                    metrics.setdefault(name, []).append((step, float(value)))
    return metrics


def _read_tensorboard(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing import event_accumulator

    accumulator = event_accumulator.EventAccumulator(str(folder), size_guidance={event_accumulator.SCALARS: 0})
    accumulator.Reload()
    return {
        tag: [(int(e.step), float(e.value)) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]
    }


def read_metrics(log_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every logged scalar of a run: metric name -> ``[(step, value), ...]`` in logging order.

    ``log_dir`` is a CSVLogger ``metrics.csv``, a folder holding one (a run's ``version_N``), or a
    folder above (the newest ``metrics.csv`` below it is read). Without any CSV the TensorBoard event
    files are read instead (values as TensorBoard stores them: float32). The CSV's ``step`` column
    gives the steps; its ``epoch`` column is returned as the metric ``"epoch"``. Raises
    :class:`UserInputError` when there are neither.
    """
    return _load(log_dir)[0]


def _load(log_dir: str | Path) -> tuple[dict[str, list[tuple[int, float]]], Path]:
    """(:func:`read_metrics`, the folder of the logs read)."""
    kind, path = _find_logs(log_dir)
    return (_read_csv(path), path.parent) if kind == "csv" else (_read_tensorboard(path), path)


def _panel_key(name: str) -> str:
    """The panel of a metric: its name without the stage prefix (``train/``, ``val/``, ...) and
    without Lightning's ``_step``/``_epoch`` suffix, so train/loss and val/loss share a panel."""
    for prefix in _STAGES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def default_curves(metrics: dict[str, list]) -> list[str]:
    """The metrics :func:`plot_training_curves` draws by default: all but learning rates
    (``lr-*``, LearningRateMonitor) and :data:`BOOKKEEPING`."""
    return [name for name in metrics if name not in BOOKKEEPING and not name.startswith("lr-")]


def curves_figure(
    metrics: dict[str, list[tuple[int, float]]], names: list[str] | None = None, title: str = ""
) -> Figure:
    """The figure of :func:`plot_training_curves` from already-read ``metrics`` (one panel per
    :func:`_panel_key`; a note instead of panels when there is nothing to draw)."""
    names = default_curves(metrics) if names is None else names
    panels: dict[str, list[str]] = {}
    for name in names:
        panels.setdefault(_panel_key(name), []).append(name)
    columns = min(3, max(1, len(panels)))
    rows = max(1, -(-len(panels) // columns))
    fig = Figure(figsize=(4.5 * columns, 3.2 * rows))
    if title:
        fig.suptitle(title)
    if not panels:
        fig.text(0.5, 0.5, "no metrics logged yet (see trainer.log_every_n_steps)", ha="center", va="center")
        return fig
    axes = fig.subplots(rows, columns, squeeze=False).flatten()
    for ax, (key, members) in zip(axes, panels.items()):
        for name in sorted(members):
            steps, values = zip(*metrics[name])
            ax.plot(steps, values, label=name, marker="o" if len(steps) <= 20 else None, markersize=3)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    return fig


def plot_training_curves(log_dir: str | Path, path: str | Path | None = None, metrics: list[str] | None = None) -> Path:
    """Plot the curves of a run's logs (:func:`read_metrics`) against the step: one panel per
    metric, the ``train/`` and ``val/`` versions of one name on the same panel.

    ``metrics``: names to draw (default: every logged metric but learning rates and epoch/step
    bookkeeping); an unknown name raises :class:`UserInputError` listing the logged ones.
    ``path``: default ``training_curves.png`` next to the logs that were read. Returns the path.
    """
    logged, folder = _load(log_dir)
    unknown = [name for name in metrics or [] if name not in logged]
    if unknown:
        raise UserInputError(
            f"metric(s) {', '.join(unknown)} not in the logs of {log_dir}; logged: {', '.join(sorted(logged))}"
        )
    return save_figure(curves_figure(logged, metrics), path if path is not None else folder / CURVES_FILE)


# ----------------------------------------------------------------------------- embeddings
def project_2d(features: torch.Tensor) -> torch.Tensor:
    """PCA to two dimensions: the centred ``N x D`` features times their top-2 right singular
    vectors, ``N x 2`` float32 (column ``k`` has the ``k``-th largest variance; the sign of each
    column is arbitrary, as for any PCA). Fewer than 2 feature dimensions are zero-padded."""
    x = torch.as_tensor(features).detach().float().cpu().flatten(1)
    require(x.ndim == 2 and len(x) >= 1, f"project_2d needs N x D features with N >= 1, got shape {tuple(x.shape)}")
    x = x - x.mean(0, keepdim=True)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)  # exact, deterministic; D is an encoder width
    projected = x @ vh[:2].T
    return torch.nn.functional.pad(projected, (0, 2 - projected.shape[1]))


def plot_embedding_projection(
    features: torch.Tensor,
    labels: torch.Tensor,
    path: str | Path,
    title: str = "",
    class_names: list[str] | None = None,
) -> Path:
    """Scatter of :func:`project_2d` of ``features`` (``N x D``), coloured by ``labels`` (``N``
    ints; negative = unlabeled, drawn grey), with a legend naming the classes (``class_names[i]``,
    else the id). Returns the path."""
    points, labels = project_2d(features), torch.as_tensor(labels).flatten().cpu()
    require(len(labels) == len(points), f"{len(points)} feature rows but {len(labels)} labels")
    fig = Figure(figsize=(6, 5))
    ax = fig.subplots()
    classes = sorted(int(c) for c in labels.unique())
    colours = _colours(len([c for c in classes if c >= 0]))
    for i, c in enumerate(c for c in classes if c >= 0):
        mask = labels == c
        name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
        ax.scatter(points[mask, 0], points[mask, 1], s=8, alpha=0.7, color=colours[i], label=name)
    if classes and classes[0] < 0:
        mask = labels < 0
        ax.scatter(points[mask, 0], points[mask, 1], s=8, alpha=0.4, color="grey", label="unlabeled")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title or f"PCA of {points.shape[0]} features")
    if classes:
        ax.legend(fontsize="small", markerscale=2, loc="best", ncol=2 if len(classes) > 10 else 1)
    return save_figure(fig, path)


def _colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "viridis"]
    return [cmap(i if n <= 20 else i / max(1, n - 1)) for i in range(n)]


# ----------------------------------------------------------------------------- confusion matrix
def plot_confusion_matrix(
    confusion: torch.Tensor, path: str | Path, class_names: list[str] | None = None, normalize: bool = True
) -> Path:
    """Heat map of a ``C x C`` confusion matrix (rows = true class, columns = predicted class, as
    torchmetrics' ``MulticlassConfusionMatrix``). ``normalize``: each row divided by its count (the
    recall of each class on the diagonal; empty rows stay 0). Cells are annotated when ``C <= 20``.
    Returns the path."""
    counts = torch.as_tensor(confusion).detach().cpu().double()
    require(
        counts.ndim == 2 and counts.shape[0] == counts.shape[1],
        f"the confusion matrix must be C x C, got shape {tuple(counts.shape)}",
    )
    c = counts.shape[0]
    values = counts / counts.sum(1, keepdim=True).clamp(min=1) if normalize else counts
    names = list(class_names) if class_names is not None else [str(i) for i in range(c)]
    require(len(names) == c, f"{len(names)} class names for a {c} x {c} confusion matrix")
    size = min(12.0, 3.0 + 0.45 * c)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.subplots()
    image = ax.imshow(values.numpy(), cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if c <= 20:
        long_names = max(map(len, names)) > 2
        ax.set_xticks(range(c), names, rotation=45 if long_names else 0, ha="right" if long_names else "center")
        ax.set_yticks(range(c), names)
        threshold = (1.0 if normalize else float(values.max())) / 2  # white text on the dark half of the scale
        for i in range(c):
            for j in range(c):
                text = f"{values[i, j]:.2f}" if normalize else f"{int(counts[i, j])}"
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if values[i, j] > threshold else "black",
                )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix ({'row-normalized' if normalize else 'counts'}, {int(counts.sum())} examples)")
    return save_figure(fig, path)
