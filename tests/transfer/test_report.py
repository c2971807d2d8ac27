"""The label-efficiency report of ``lightning-transfer transfer``: summary statistics, the labels-saved
interpolation (checked against numbers computed by hand), the result files and the report itself."""

from __future__ import annotations

import base64
import csv
import json
import math
import random
import re
import statistics

import pytest

from lightning_transfer.errors import UserInputError
from lightning_transfer.transfer.labels_saved import AT_MOST, MORE_THAN, REACHED, labels_to_reach
from lightning_transfer.transfer.report import (
    BestModel,
    DataDescription,
    EncoderExport,
    ReportContext,
    answer_up_front,
    labels_saved,
    summarize,
    write_atomic,
    write_report,
    write_results,
)

SCRATCH = {1: 0.2, 10: 0.6, 100: 0.8}


def _summary(means: dict[str, dict[int, float]]) -> list[dict]:
    """Summary rows with the given mean accuracies (the only field labels_saved reads besides init/k)."""
    return [
        {"init": init, "labels_per_class": k, "mean_accuracy": mean}
        for init, curve in means.items()
        for k, mean in curve.items()
    ]


def _saved_at(target: float, scratch: dict[int, float] = SCRATCH, reference: str = "pretrained") -> dict:
    (row,) = labels_saved(_summary({reference: {5: target}, "scratch": scratch}), reference=reference)
    return row


# ----------------------------------------------------------------------------- labels saved
def test_the_baseline_curve_is_interpolated_linearly_in_log_labels():
    row = _saved_at(0.7)
    by_hand = 10 ** (1 + (0.7 - 0.6) / (0.8 - 0.6))  # log10 k' = 1 + half of the way from log10 10 to log10 100
    assert by_hand == pytest.approx(31.6227766)
    assert row["bound"] == REACHED
    assert row["baseline_labels_per_class"] == pytest.approx(by_hand, rel=1e-12)
    assert row["saved_per_class"] == pytest.approx(by_hand - 5, rel=1e-12)
    assert row["ratio"] == pytest.approx(by_hand / 5, rel=1e-12)
    assert row["reference_accuracy"] == 0.7 and row["labels_per_class"] == 5
    assert row["text"] == "scratch needs 31.6 labels per class to match pretrained at 5 (6.3x as many)"


def test_a_target_below_the_smallest_measured_budget_is_an_upper_bound_without_extrapolation():
    for target in (0.15, 0.2):  # below, and exactly at, scratch's accuracy at its smallest budget
        row = _saved_at(target)
        assert row["bound"] == AT_MOST and row["baseline_labels_per_class"] == 1
        assert row["saved_per_class"] == 1 - 5 and row["ratio"] == pytest.approx(1 / 5)
        assert row["text"].startswith("scratch needs at most 1 label per class to match pretrained at 5")


def test_a_target_never_reached_is_more_than_the_largest_measured_budget():
    row = _saved_at(0.9)
    assert row["bound"] == MORE_THAN
    assert row["baseline_labels_per_class"] is None and row["saved_per_class"] is None and row["ratio"] is None
    assert row["baseline_max_labels_per_class"] == 100
    assert row["text"].startswith("scratch needs more than 100 labels per class to match pretrained at 5")


def test_a_non_monotonic_baseline_counts_its_first_crossing():
    scratch = {1: 0.2, 5: 0.75, 10: 0.5, 50: 0.9}
    fraction = (0.7 - 0.2) / (0.75 - 0.2)
    by_hand = math.exp(fraction * math.log(5))  # between 1 and 5, not the later crossing between 10 and 50
    assert _saved_at(0.7, scratch)["baseline_labels_per_class"] == pytest.approx(by_hand, rel=1e-12)
    assert labels_to_reach(list(reversed(scratch.items())), 0.7) == (REACHED, pytest.approx(by_hand, rel=1e-12))


def test_an_exact_hit_on_a_measured_point_is_that_budget_exactly():
    assert _saved_at(0.6)["baseline_labels_per_class"] == 10.0
    assert _saved_at(0.8)["baseline_labels_per_class"] == 100.0
    assert _saved_at(0.6)["text"] == "scratch needs 10 labels per class to match pretrained at 5 (2.0x as many)"
    flat = {1: 0.2, 10: 0.6, 100: 0.6}  # reaches 0.6 at 10 and stays there: the first hit counts
    assert _saved_at(0.6, flat)["baseline_labels_per_class"] == 10.0


def test_labels_saved_works_for_init_from_and_every_reference_budget():
    summary = _summary({"init_from": {1: 0.6, 5: 0.7, 10: 0.95}, "scratch": SCRATCH, "pretrained": {1: 0.1}})
    rows = labels_saved(summary, reference="init_from")
    assert [r["labels_per_class"] for r in rows] == [1, 5, 10]
    assert [r["bound"] for r in rows] == [REACHED, REACHED, MORE_THAN]
    assert rows[0]["baseline_labels_per_class"] == 10.0
    assert rows[1]["text"].startswith("scratch needs 31.6 labels per class to match init_from at 5")
    with pytest.raises(UserInputError, match="no results for init 'pretrained'"):
        labels_saved(_summary({"scratch": SCRATCH}))


# ----------------------------------------------------------------------------- summary and files
def _random_records(seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    records = []
    for init in ("zeta", "scratch", "pretrained", "alpha", "init_from"):
        for k in (50, 1, 10, 5):
            for s in range(1 if (init, k) == ("alpha", 5) else 3):
                records.append(
                    {
                        "init": init,
                        "labels_per_class": k,
                        "seed": s,
                        "test_accuracy": rng.random(),
                        "test_macro_f1": rng.random(),
                    }
                )
    rng.shuffle(records)
    return records


def test_summarize_agrees_with_a_naive_computation_and_sorts_by_init_then_labels():
    records = _random_records()
    rows = summarize(records)
    assert [r["init"] for r in rows[::4]] == ["pretrained", "init_from", "scratch", "alpha", "zeta"]
    assert [r["labels_per_class"] for r in rows[:4]] == [1, 5, 10, 50]
    for row in rows:
        cell = [r for r in records if r["init"] == row["init"] and r["labels_per_class"] == row["labels_per_class"]]
        accuracy = [r["test_accuracy"] for r in cell]
        mean = statistics.mean(accuracy)
        sample_std = (
            math.sqrt(sum((a - mean) ** 2 for a in accuracy) / (len(accuracy) - 1)) if len(accuracy) > 1 else 0.0
        )
        assert row["seeds"] == len(cell)
        assert row["mean_accuracy"] == pytest.approx(mean, rel=1e-12)
        assert row["std_accuracy"] == pytest.approx(sample_std, rel=1e-12, abs=1e-15)
        assert (row["min_accuracy"], row["max_accuracy"]) == (min(accuracy), max(accuracy))
        assert row["mean_macro_f1"] == pytest.approx(statistics.mean(r["test_macro_f1"] for r in cell), rel=1e-12)
    assert next(r for r in rows if (r["init"], r["labels_per_class"]) == ("alpha", 5))["std_accuracy"] == 0.0
    with pytest.raises(UserInputError, match="lacks test_macro_f1"):
        summarize([{"init": "scratch", "labels_per_class": 1, "seed": 0, "test_accuracy": 0.5}])


def test_write_results_round_trips_through_csv_and_json(tmp_path):
    records = _random_records()[:6]
    records[0] = {"train_examples": 30, **dict(reversed(records[0].items()))}  # keys in another order come after
    records[1]["strategy"] = "full"
    records[3]["seconds"] = 12.5
    records[4]["strategy"] = "linear"
    records[4]["val_accuracy"] = None
    csv_path, json_path = write_results(records, tmp_path / "out")
    assert json.loads(json_path.read_text()) == records
    with csv_path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames == [
        "init",
        "labels_per_class",
        "seed",
        "test_accuracy",
        "test_macro_f1",
        "train_examples",
        "strategy",
        "seconds",
        "val_accuracy",
    ]
    assert len(rows) == len(records)
    for row, record in zip(rows, records):
        assert row == {key: "" if record.get(key) is None else str(record[key]) for key in reader.fieldnames}
        assert float(row["test_accuracy"]) == record["test_accuracy"]  # repr of a float reads back exactly
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["results.csv", "results.json"]  # no temporary left


def test_an_interrupted_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = write_atomic(tmp_path / "results.json", "old")

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr("lightning_transfer.transfer.report.os.replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["results.json"]


# ----------------------------------------------------------------------------- the report
CLASSES = ["<b>cat&dog</b>", "bird", "fish"]


def _records(means: dict[str, dict[int, float]]) -> list[dict]:
    """Three seeds per cell at mean - 0.02, mean, mean + 0.02."""
    return [
        {
            "init": init,
            "labels_per_class": k,
            "seed": s,
            "test_accuracy": mean + 0.02 * (s - 1),
            "test_macro_f1": mean - 0.05,
            "seconds": 3.0,
        }
        for init, curve in means.items()
        for k, mean in curve.items()
        for s in range(3)
    ]


def _context(means: dict[str, dict[int, float]], kind: str = "image") -> ReportContext:
    export = "runs/x/hf" if kind == "text" else "runs/x/encoder"
    return ReportContext(
        data=DataDescription(
            path="data/my pets",
            kind=kind,
            class_names=CLASSES,
            train_pool=600,
            unlabeled=1000,
            validation=150,
            test=300,
        ),
        records=_records(means),
        plan={
            "pretraining steps": 2000,
            "fine-tuning epochs": 30,
            "budget minutes": 60,
            "pretraining seconds": 812.25,
            "timed step (s)": 0.000412,
        },
        best=BestModel(
            "pretrained", 50, 2, 0.91, 0.905, CLASSES, [[90, 8, 2], [5, 95, 0], [1, 12, 87]], "runs/x/best.ckpt"
        ),
        export=EncoderExport(export, kind),
        init_from_model="prajjwal1/bert-tiny" if kind == "text" else None,
        wall_seconds=3725.0,
    )


PAYS = {"pretrained": {1: 0.55, 5: 0.81, 10: 0.85, 50: 0.9}, "scratch": {1: 0.3, 5: 0.62, 10: 0.7, 50: 0.86}}


def test_the_report_is_self_contained_escapes_user_strings_and_shows_the_numbers(tmp_path):
    md_path, html_path = write_report(tmp_path, _context(PAYS))
    assert {p.name for p in tmp_path.iterdir()} >= {
        "report.md",
        "report.html",
        "label_efficiency.png",
        "confusion_matrix.png",
    }
    md, page = md_path.read_text(), html_path.read_text()

    assert 'src="http' not in page and 'href="http' not in page and "<link" not in page and "<script" not in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 2 and all(base64.b64decode(i).startswith(b"\x89PNG\r\n\x1a\n") for i in images)
    assert "&lt;b&gt;cat&amp;dog&lt;/b&gt;" in page and "<b>cat" not in page
    assert "<b>cat" not in md and r"\<b\>cat\&dog\</b\>" in md

    for text in (r["text"] for r in labels_saved(summarize(_records(PAYS)))):
        assert text in md
    by_hand = 10 * 5 ** ((0.81 - 0.70) / (0.86 - 0.70))  # scratch between 10 (0.70) and 50 (0.86), in log k
    assert f"scratch needs {by_hand:.1f} labels per class to match pretrained at 5 ({by_hand / 5:.1f}x as many)" in md
    assert "| pretrained | 5 | 0.810 ± 0.020 | 0.790–0.830 | 0.760 | 3 |" in md
    assert "![test accuracy against labels per class](label_efficiency.png)" in md
    assert (
        md.index("## Results")
        < md.index("## Labels saved")
        < md.index("## Confusion matrix")
        < md.index("## Use the models")
    )
    assert md.index("## Use the models") < md.index("## How it was measured")
    assert "FineTuneModule(pretrained='runs/x/encoder', num_classes=3)" in md
    assert "FineTuneModule.load_from_checkpoint('runs/x/best.ckpt')" in md and "AutoModel" not in md
    assert "| 812.250 |" in md and "| 0.000412 |" in md and "1 h 2 min 05 s" in md and "300 for test" in md


def test_the_answer_up_front_says_when_pretraining_pays_and_when_it_does_not(tmp_path):
    md = write_report(tmp_path / "pays", _context(PAYS))[0].read_text()
    answer = md.split("\n\n")[2]
    assert answer.startswith(
        "Pretraining on your data pays: at 1 label per class, pretrained reaches 0.550 against scratch's 0.300"
    )
    assert "scratch needs" in answer

    worse = {"pretrained": {1: 0.3, 5: 0.5, 10: 0.6}, "scratch": {1: 0.35, 5: 0.6, 10: 0.7}}
    md = write_report(tmp_path / "worse", _context(worse))[0].read_text()
    answer = md.split("\n\n")[2]
    assert answer.startswith("Pretraining on your data does not pay here: scratch matches or beats pretrained")
    assert "pretrained reaches 0.300 against scratch's 0.350" in answer and "pays:" not in answer

    mixed = {"pretrained": {1: 0.5, 10: 0.6}, "scratch": {1: 0.3, 10: 0.7}}
    answer = answer_up_front(summarize(_records(mixed)))
    assert answer.startswith(
        "Pretraining on your data pays only at some budgets: pretrained is ahead at 1 and level or behind at 10"
    )
    close = {"pretrained": {1: 0.51, 10: 0.8}, "scratch": {1: 0.5, 10: 0.7}}  # 0.01 apart, seeds spread by 0.02
    assert "(a gap within the spread across seeds)" in answer_up_front(summarize(_records(close)))
    assert "(a gap within" not in answer_up_front(summarize(_records(PAYS)))


def test_a_text_report_shows_how_to_load_the_hugging_face_export_and_compares_init_from(tmp_path):
    means = {**PAYS, "init_from": {1: 0.7, 5: 0.88, 10: 0.9, 50: 0.95}}
    md, page = (p.read_text() for p in write_report(tmp_path, _context(means, kind="text")))
    assert "AutoModel.from_pretrained('runs/x/hf')" in md and "AutoTokenizer.from_pretrained('runs/x/hf')" in md
    assert "AutoModel.from_pretrained(&#x27;runs/x/hf&#x27;)" in page
    assert "The Hugging Face model as shipped (prajjwal1/bert-tiny) reaches 0.700 at 1 label per class" in md
    for row in labels_saved(summarize(_records(means)), reference="init_from"):
        assert row["text"] in md
