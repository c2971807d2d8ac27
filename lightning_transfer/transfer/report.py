"""The label-efficiency report of ``lightning-transfer transfer``: tables, plot, labels saved, report.

Pure functions on the records of the fine-tuning runs (dicts with at least ``init``,
``labels_per_class``, ``seed``, ``test_accuracy`` and ``test_macro_f1``); no Lightning. The figures
are drawn by :mod:`lightning_transfer.plots`. Files are
written atomically (a temporary file in the same folder, then ``os.replace``), so an interrupted run
never leaves half a file. :func:`write_report` writes ``report.md`` and a self-contained
``report.html`` (inline CSS, images as ``data:`` URIs, every user string escaped).
"""

from __future__ import annotations

import base64
import contextlib
import csv
import html
import io
import json
import os
import re
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_transfer.errors import require
from lightning_transfer.plots import accuracy_spread, plot_confusion_matrix, plot_label_efficiency
from lightning_transfer.transfer.labels_saved import AT_MOST, MORE_THAN, format_labels, labels_saved, per_class_text

__all__ = [
    "BestModel",
    "DataDescription",
    "EncoderExport",
    "ReportContext",
    "answer_up_front",
    "labels_saved",
    "summarize",
    "write_report",
    "write_results",
]

#: The keys every record has; the first columns of ``results.csv``.
RESULT_COLUMNS = ("init", "labels_per_class", "seed", "test_accuracy", "test_macro_f1")
#: Inits in the order of tables and legends; any other init follows, alphabetically.
INIT_ORDER = ("pretrained", "init_from", "scratch")
PLOT_FILE, CONFUSION_FILE = "label_efficiency.png", "confusion_matrix.png"


def _init_key(init: str) -> tuple[int, str]:
    return (INIT_ORDER.index(init), "") if init in INIT_ORDER else (len(INIT_ORDER), init)


def _inits(summary: Sequence[dict]) -> list[str]:
    return sorted({row["init"] for row in summary}, key=_init_key)


def summarize(records: Sequence[dict]) -> list[dict]:
    """One row per ``(init, labels_per_class)`` of ``records`` (one record per seed), sorted by init
    (:data:`INIT_ORDER`, then others alphabetically), then by ``labels_per_class``.

    Row keys: ``init``, ``labels_per_class``, ``seeds`` (the number of records), ``mean_accuracy``,
    ``std_accuracy`` (the SAMPLE standard deviation across seeds, ``n - 1`` in the denominator; 0.0
    with one seed), ``min_accuracy``, ``max_accuracy`` (all of ``test_accuracy``, by
    :func:`~lightning_transfer.plots.accuracy_spread`, as the plot draws them), ``mean_macro_f1``.
    Raises :class:`~lightning_transfer.errors.UserInputError` when a record lacks a key of
    :data:`RESULT_COLUMNS`.
    """
    cells: dict[tuple[str, int], list[dict]] = {}
    for record in records:
        missing = [key for key in RESULT_COLUMNS if key not in record]
        require(not missing, f"a result record lacks {', '.join(missing)}: {record}")
        cells.setdefault((str(record["init"]), int(record["labels_per_class"])), []).append(record)
    rows = []
    for init, k in sorted(cells, key=lambda cell: (_init_key(cell[0]), cell[1])):
        rows.append(
            {
                "init": init,
                "labels_per_class": k,
                "seeds": len(cells[init, k]),
                **accuracy_spread([r["test_accuracy"] for r in cells[init, k]]),
                "mean_macro_f1": statistics.fmean(float(r["test_macro_f1"]) for r in cells[init, k]),
            }
        )
    return rows


# ----------------------------------------------------------------------------- files
def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` through a temporary file in the same folder and
    ``os.replace``: readers see the old file or the whole new one. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes it private to the owner
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return path


def write_results(records: Sequence[dict], directory: str | Path) -> tuple[Path, Path]:
    """Write ``results.csv`` and ``results.json`` into ``directory`` (created), atomically.

    CSV: one row per record; the header is the union of the records' keys, :data:`RESULT_COLUMNS`
    first, then the other keys in the order they first appear; a missing key or ``None`` is an empty
    cell, a list or dict is written as JSON. JSON: the list of records, ``indent=2`` (numpy/torch
    scalars as numbers, other unknown objects such as paths as strings). Returns ``(csv, json)`` paths.
    """
    directory = Path(directory)
    columns = list(RESULT_COLUMNS)
    for record in records:
        columns += [key for key in record if key not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow(
            {k: "" if v is None else json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in record.items()}
        )
    plain = json.dumps(list(records), indent=2, default=lambda v: v.item() if hasattr(v, "item") else str(v))
    return write_atomic(directory / "results.csv", buffer.getvalue()), write_atomic(
        directory / "results.json", plain + "\n"
    )


# ----------------------------------------------------------------------------- rendering
class Code(str):
    """Inline text shown as code (a path, a name): monospace, kept verbatim."""


#: A piece of the report, rendered as markdown and as HTML: ``("h2", text)``, ``("p", parts)``,
#: ``("ul", [parts, ...])``, ``("table", header, rows)``, ``("img", file, alt)``, ``("code", python)``;
#: ``parts`` (also each table cell) is a string or a list of strings and :class:`Code`.
Block = tuple
_MD_SPECIAL = re.compile(r"[\\`*\[\]<>|&~]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")
_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.5}"
    "table{border-collapse:collapse;margin:1rem 0}th,td{border:1px solid #ccc;padding:.25rem .6rem;text-align:left}"
    "th{background:#f3f3f3}pre{background:#f6f6f6;padding:.8rem;overflow-x:auto}img{max-width:100%}"
)


def _fence(text: str, shortest: int) -> str:
    """A run of backticks longer than any in ``text`` (and at least ``shortest``) to quote it in markdown."""
    return "`" * max([shortest, *(len(run) + 1 for run in re.findall("`+", text))])


def _md(parts: str | list, in_table: bool = False) -> str:
    """Markdown of ``parts``: markdown's special characters in text backslash-escaped (a class name is
    never read as markup or HTML), :class:`Code` as a code span (``|`` escaped inside a table)."""
    out = []
    for part in [parts] if isinstance(parts, str) else parts:
        if isinstance(part, Code):
            pad = " " if part.startswith("`") or part.endswith("`") else ""
            span = f"{_fence(part, 1)}{pad}{part}{pad}{_fence(part, 1)}"
            out.append(span.replace("|", "\\|") if in_table else span)
        else:
            out.append(_MD_SPECIAL.sub(lambda m: "\\" + m.group(0), part))
    return "".join(out).replace("\n", " ")


def _html(parts: str | list) -> str:
    """HTML of ``parts``: every string escaped, :class:`Code` in ``<code>``."""
    pieces = [parts] if isinstance(parts, str) else parts
    return "".join(f"<code>{html.escape(p)}</code>" if isinstance(p, Code) else html.escape(p) for p in pieces)


def _markdown(title: str, blocks: Sequence[Block]) -> str:
    """The markdown document of ``blocks``; images are linked by their file name."""
    out = [f"# {_md(title)}"]
    for kind, *rest in blocks:
        if kind in ("h2", "p"):
            out.append(("## " if kind == "h2" else "") + _md(rest[0]))
        elif kind == "ul":
            out.append("\n".join(f"- {_md(item)}" for item in rest[0]))
        elif kind == "table":
            header, rows = rest
            lines = ["| " + " | ".join(_md(cell, True) for cell in row) + " |" for row in [header, *rows]]
            out.append("\n".join([lines[0], "|" + "---|" * len(header), *lines[1:]]))
        elif kind == "img":
            out.append(f"![{_md(rest[1])}]({rest[0]})")
        elif kind == "code":
            out.append(f"{_fence(rest[0], 3)}python\n{rest[0]}\n{_fence(rest[0], 3)}")
    return "\n\n".join(out) + "\n"


def _html_page(title: str, blocks: Sequence[Block], directory: Path) -> str:
    """A self-contained HTML page of ``blocks``: inline CSS, images read from ``directory`` and
    embedded as base64 ``data:`` URIs, every text escaped."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    for kind, *rest in blocks:
        if kind in ("h2", "p"):
            body.append(f"<{kind}>{_html(rest[0])}</{kind}>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{_html(item)}</li>" for item in rest[0]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{_html(cell)}</th>" for cell in rest[0])
            rows = "".join("<tr>" + "".join(f"<td>{_html(cell)}</td>" for cell in row) + "</tr>" for row in rest[1])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "img":
            encoded = base64.b64encode((directory / rest[0]).read_bytes()).decode("ascii")
            body.append(f'<img alt="{html.escape(rest[1])}" src="data:image/png;base64,{encoded}">')
        elif kind == "code":
            body.append(f"<pre><code>{html.escape(rest[0])}</code></pre>")
    head = f'<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n<style>{_CSS}</style>'
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n{head}\n</head>\n<body>\n'
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


# ----------------------------------------------------------------------------- report
@dataclass
class DataDescription:
    """The data: its ``path``, ``kind`` (``"image"`` or ``"text"``), class names (in class-id order)
    and the sizes of its splits (labeled training pool, unlabeled, validation, held-out test)."""

    path: str
    kind: str
    class_names: list[str]
    train_pool: int
    unlabeled: int
    validation: int
    test: int

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass
class BestModel:
    """The fine-tuned model with the best validation accuracy. ``confusion``: its test confusion
    matrix, counts, rows = true class, columns = predicted, in the order of ``class_names``."""

    init: str
    labels_per_class: int
    seed: int
    val_accuracy: float
    test_accuracy: float
    class_names: list[str]
    confusion: list[list[int]]
    checkpoint: str


@dataclass
class EncoderExport:
    """The exported pretrained encoder folder; for ``kind="text"`` a Hugging Face BERT folder with its tokenizer."""

    path: str
    kind: str


@dataclass
class ReportContext:
    """What :func:`write_report` shows. ``plan``: stage settings (pretraining steps, fine-tuning
    epochs, budget minutes, measured seconds, ...) shown as given; ``init_from_model``: the Hugging
    Face model behind ``init="init_from"``; ``wall_seconds``: the whole command."""

    data: DataDescription
    records: list[dict]
    plan: dict[str, Any] = field(default_factory=dict)
    best: BestModel | None = None
    export: EncoderExport | None = None
    init_from_model: str | None = None
    wall_seconds: float | None = None
    title: str = "Label efficiency on your data"


def _needs(row: dict) -> str:
    """A :func:`labels_saved` row as a clause: "scratch needs 23.4 labels per class to match it (4.7x as many)"."""
    if row["bound"] == MORE_THAN:
        return f"{row['baseline']} does not match it even at {per_class_text(row['baseline_max_labels_per_class'])}"
    needed = per_class_text(row["baseline_labels_per_class"])
    if row["bound"] == AT_MOST:
        return f"{row['baseline']} matches it with at most {needed}"
    return f"{row['baseline']} needs {needed} to match it ({row['ratio']:.1f}x as many)"


def answer_up_front(summary: Sequence[dict], init_from_model: str | None = None) -> str:
    """The report's first paragraph: does pretraining on the data pay against scratch? "pays" when
    pretrained's mean test accuracy is higher at every budget measured for both, "does not pay" when
    at none, "pays only at some budgets" otherwise; the numbers and the labels scratch needs are given
    at the smallest common budget, with a note when that gap is within the spread across seeds. Then
    init_from's accuracy, when measured. Says so when there is nothing to compare."""
    rows = {(r["init"], r["labels_per_class"]): r for r in summary}
    common = sorted(k for init, k in rows if init == "pretrained" and ("scratch", k) in rows)
    if not common:
        measured = ", ".join(_inits(summary)) or "nothing"
        text = (
            f"No label budget was measured both with pretraining and from scratch (measured: {measured}), "
            "so this report cannot say whether pretraining pays."
        )
    else:
        ahead = [k for k in common if rows["pretrained", k]["mean_accuracy"] > rows["scratch", k]["mean_accuracy"]]
        p, s = rows["pretrained", common[0]], rows["scratch", common[0]]
        gap = f"at {per_class_text(common[0])}, pretrained reaches {p['mean_accuracy']:.3f} "
        gap += f"against scratch's {s['mean_accuracy']:.3f}"
        if abs(p["mean_accuracy"] - s["mean_accuracy"]) <= max(p["std_accuracy"], s["std_accuracy"]):
            gap += " (a gap within the spread across seeds)"
        needs = _needs(next(r for r in labels_saved(summary) if r["labels_per_class"] == common[0]))
        if len(ahead) == len(common):
            text = f"Pretraining on your data pays: {gap}; {needs}."
        elif not ahead:
            budgets = ", ".join(map(str, common))
            text = (
                "Pretraining on your data does not pay here: scratch matches or beats pretrained at every "
                f"measured budget ({budgets} labels per class); {gap}."
            )
        else:
            behind = ", ".join(str(k) for k in common if k not in ahead)
            text = (
                f"Pretraining on your data pays only at some budgets: pretrained is ahead at {', '.join(map(str, ahead))} "
                f"and level or behind at {behind} labels per class; {gap}; {needs}."
            )
    shipped = sorted(k for init, k in rows if init == "init_from")
    if shipped:
        k = next((c for c in shipped if c in common), shipped[0])
        name = f" ({init_from_model})" if init_from_model else ""
        accuracy = rows["init_from", k]["mean_accuracy"]
        text += f" The Hugging Face model as shipped{name} reaches {accuracy:.3f} at {per_class_text(k)}."
    return text


def _results_table(summary: Sequence[dict]) -> Block:
    header = ["init", "labels per class", "test accuracy (mean ± std)", "min–max", "macro F1 (mean)", "seeds"]
    return (
        "table",
        header,
        [
            [
                r["init"],
                str(r["labels_per_class"]),
                f"{r['mean_accuracy']:.3f} ± {r['std_accuracy']:.3f}",
                f"{r['min_accuracy']:.3f}–{r['max_accuracy']:.3f}",
                f"{r['mean_macro_f1']:.3f}",
                str(r["seeds"]),
            ]
            for r in summary
        ],
    )


def _saved_blocks(summary: Sequence[dict]) -> list[Block]:
    references = [init for init in ("pretrained", "init_from") if init in _inits(summary)]
    if "scratch" not in _inits(summary) or not references:
        return [("p", "Needs results from scratch and with pretraining (or init_from).")]
    body, sentences = [], []
    for row in (row for reference in references for row in labels_saved(summary, reference, "scratch")):
        if row["bound"] == MORE_THAN:
            largest = row["baseline_max_labels_per_class"]
            needs = [f"> {format_labels(largest)}", f"> {largest / row['labels_per_class']:.1f}"]
        else:
            prefix = "≤ " if row["bound"] == AT_MOST else ""
            needs = [prefix + format_labels(row["baseline_labels_per_class"]), f"{prefix}{row['ratio']:.1f}"]
        body.append([row["reference"], str(row["labels_per_class"]), f"{row['reference_accuracy']:.3f}", *needs])
        sentences.append(row["text"] + ".")
    intro = (
        "The labels per class scratch needs to match each mean test accuracy, read off scratch's mean curve, "
        "linear in log(labels per class) between measured budgets and not extrapolated outside them "
        "(≤: already reached at scratch's smallest budget; >: not reached at its largest)."
    )
    header = ["reference", "at labels per class", "its accuracy", "scratch needs (labels per class)", "times as many"]
    return [("p", intro), ("table", header, body), ("ul", sentences)]


def _confusion_blocks(best: BestModel) -> list[Block]:
    names, counts, rows = best.class_names, best.confusion, []
    for i, name in enumerate(names):
        total, others = sum(counts[i]), [(n, names[j]) for j, n in enumerate(counts[i]) if j != i and n > 0]
        recall = f"{counts[i][i] / total:.3f}" if total else "–"
        rows.append([name, str(total), str(counts[i][i]), recall, max(others)[1] if others else "–"])
    intro = (
        f"The best model by validation accuracy: {best.init} at {per_class_text(best.labels_per_class)}, seed {best.seed} "
        f"(validation accuracy {best.val_accuracy:.3f}, test accuracy {best.test_accuracy:.3f}). Rows: true class; "
        "columns: predicted; each row divided by its count."
    )
    header = ["class", "test examples", "correct", "recall", "most often predicted instead"]
    return [("p", intro), ("img", CONFUSION_FILE, "confusion matrix of the best model"), ("table", header, rows)]


def _usage_blocks(context: ReportContext) -> list[Block]:
    export, best = context.export, context.best
    if export is None and best is None:
        return [("p", "No model was kept.")]
    blocks: list[Block] = []
    code = ["from lightning_transfer import FineTuneModule", ""]
    if export is not None:
        blocks.append(
            ("p", ["The encoder pretrained on your data: ", Code(export.path), " (fine-tune it on new labels)."])
        )
        if export.kind == "text":
            code.append(f"# your TextClassificationDataModule needs tokenizer={export.path!r}")
        code.append(f"model = FineTuneModule(pretrained={export.path!r}, num_classes={context.data.num_classes})")
    if best is not None:
        blocks.append(("p", ["The best fine-tuned model: ", Code(best.checkpoint), " (classes in the order above)."]))
        code += ["", f"classifier = FineTuneModule.load_from_checkpoint({best.checkpoint!r})", "classifier.eval()"]
    if export is not None and export.kind == "text":
        blocks.append(("p", "The encoder is a Hugging Face BERT folder with its tokenizer: transformers loads it too."))
        code += ["", "from transformers import AutoModel, AutoTokenizer", ""]
        code += [
            f"encoder = AutoModel.from_pretrained({export.path!r})",
            f"tokenizer = AutoTokenizer.from_pretrained({export.path!r})",
        ]
    return [*blocks, ("code", "\n".join(code))]


def _plan_value(value: Any) -> str:
    """3 decimals for a float (3 significant digits below 0.001, so a timed step is not shown as 0.000)."""
    if isinstance(value, float):
        return f"{value:.3f}" if value == 0 or abs(value) >= 0.001 else f"{value:.3g}"
    return json.dumps(value, default=str) if isinstance(value, (dict, list, tuple)) else str(value)


def _measured_blocks(context: ReportContext) -> list[Block]:
    data = context.data
    text = (
        f"Data: {data.train_pool} examples in the labeled training pool, {data.unlabeled} unlabeled, {data.validation} "
        f"for validation, {data.test} for test. Test accuracy is measured on the same fixed held-out test set for every "
        "run; no stage (pretraining, fine-tuning, model selection) saw a test example. Each seed is a different draw of "
        "the labeled examples per class from the training pool (and seeds that run's training); ± is the sample standard "
        "deviation across seeds (0 with one seed), min–max the worst and the best seed."
    )
    blocks: list[Block] = [("h2", "How it was measured"), ("p", text)]
    if context.plan:
        blocks.append(("table", ["setting", "value"], [[str(k), _plan_value(v)] for k, v in context.plan.items()]))
    if context.wall_seconds is not None:
        hours, rest = divmod(round(context.wall_seconds), 3600)
        blocks.append(("p", "Wall time: " + (f"{hours} h " if hours else "") + f"{rest // 60} min {rest % 60:02d} s."))
    return blocks


def write_report(directory: str | Path, context: ReportContext) -> tuple[Path, Path]:
    """Write ``report.md`` and a self-contained ``report.html`` into ``directory`` (atomically), with
    the figures ``label_efficiency.png`` and, given a best model, ``confusion_matrix.png`` next to them
    (linked from the markdown, embedded as base64 ``data:`` URIs in the HTML). Sections: the answer
    (:func:`answer_up_front`), the results (:func:`summarize`) and their plot, labels saved
    (:func:`labels_saved` of pretrained and init_from against scratch), the best model's confusion
    matrix, how to use the models, how it was measured and the wall time. Returns ``(md, html)`` paths."""
    import torch

    directory, data, summary = Path(directory), context.data, summarize(context.records)
    in_table_order = sorted(context.records, key=lambda record: _init_key(str(record["init"])))
    plot_label_efficiency(in_table_order, directory / PLOT_FILE)
    shown = ", ".join(data.class_names[:20]) + (", …" if data.num_classes > 20 else "")
    blocks: list[Block] = [
        ("p", ["Data: ", Code(data.path), f" ({data.kind}, {data.num_classes} classes: {shown})."]),
        ("p", answer_up_front(summary, context.init_from_model)),
        ("h2", "Results"),
        _results_table(summary),
        ("img", PLOT_FILE, "test accuracy against labels per class"),
        ("h2", "Labels saved"),
        *_saved_blocks(summary),
    ]
    if context.best is not None:
        plot_confusion_matrix(
            torch.tensor(context.best.confusion), directory / CONFUSION_FILE, context.best.class_names
        )
        blocks += [("h2", "Confusion matrix of the best model"), *_confusion_blocks(context.best)]
    blocks += [("h2", "Use the models"), *_usage_blocks(context), *_measured_blocks(context)]
    md = write_atomic(directory / "report.md", _markdown(context.title, blocks))
    return md, write_atomic(directory / "report.html", _html_page(context.title, blocks, directory))
