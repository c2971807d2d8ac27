"""The demo is ``lightning-transfer transfer`` on MNIST-5k written out as an image folder and on the
reviews written out as a CSV, with MiniLM as ``--init-from``.

The default suite checks the demo's own code (the data it writes, the commands it runs; ``transfer``
itself has its end-to-end tests in ``tests/transfer``); ``-m slow`` runs ``--smoke`` (every stage of
both tasks on a few hundred examples) and ``--quick``, where pretraining must already pay: SimCLR
beats scratch on MNIST and MiniLM beats scratch on the reviews.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_transfer.data.sources import load_reviews_demo

ROOT = Path(__file__).resolve().parents[1]


def run_demo(out: Path, size: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "lightning_transfer.demo", size, "--no-progress", "--output-dir", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def results(out: Path) -> dict[tuple[str, int], float]:
    rows = json.loads((out / "results.json").read_text())
    for row in rows:
        assert 0.0 <= row["test_accuracy"] <= 1.0 and 0.0 <= row["test_macro_f1"] <= 1.0
    assert (out / "report.md").is_file() and (out / "label_efficiency.png").read_bytes()[:4] == b"\x89PNG"
    return {(r["init"], r["labels_per_class"]): r["test_accuracy"] for r in rows}


def test_the_demo_writes_its_digit_folder_and_review_table_and_the_transfer_arguments(tmp_path):
    """The demo's own code: the data it writes out and the command lines it runs (the runs themselves:
    ``--smoke`` and ``--quick`` below, and ``tests/transfer``)."""
    from lightning_transfer import demo

    smoke = demo.PLANS["smoke"]
    arguments = demo.task_arguments("mnist", smoke["mnist"], tmp_path, progress=False)
    folder = Path(arguments[0])
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == [str(d) for d in range(10)]
    assert len(list((folder / "7").glob("*.png"))) == 40
    assert arguments[arguments.index("--augment") + 1] == json.dumps(demo.MNIST_AUGMENT)
    assert arguments[arguments.index("--temperature") + 1] == "1.0"  # ten classes: a warm NT-Xent (README)
    assert arguments[arguments.index("--max-pretrain-steps") + 1] == "20" and "--no-progress" in arguments
    assert "--lr-factors" not in arguments  # the digits take the default LR search (README)
    arguments = demo.task_arguments("reviews", smoke["reviews"], tmp_path, progress=True)
    with open(arguments[0]) as handle:
        rows = list(csv.DictReader(handle))
    assert [sum(r["label"] == name for r in rows) for name in ("fresh", "rotten", "")] == [200, 200, 50]
    assert "--init-from" in arguments and "--no-progress" not in arguments
    assert arguments[arguments.index("--lr-factors") + 1] == "1"  # the reviews at the recipe's LR (README)
    full = demo.task_arguments("reviews", demo.PLANS["full"]["reviews"], tmp_path, progress=False)
    assert full[full.index("--labels-per-class") + 1] == "10,50,100" and "--max-pretrain-steps" not in full
    assert demo.gains(
        [
            {"init": "pretrained", "labels_per_class": 5, "test_accuracy": 0.9},
            {"init": "scratch", "labels_per_class": 5, "test_accuracy": 0.7},
        ]
    ) == ["    5 labels/class: pretrained 0.900 (+20.0), scratch 0.700"]


@pytest.mark.slow
def test_the_smoke_demo_runs_transfer_on_a_digit_folder_and_a_review_table(tmp_path):
    out = tmp_path / "demo"
    result = run_demo(out, "--smoke")
    assert set(results(out / "mnist")) == {("pretrained", 5), ("scratch", 5)}
    assert set(results(out / "reviews")) == {("pretrained", 5), ("init_from", 5), ("scratch", 5)}
    digits = sorted(p.name for p in (out / "data" / "mnist_400").iterdir() if p.is_dir())
    assert digits == [str(d) for d in range(10)] and len(list((out / "data" / "mnist_400" / "7").glob("*.png"))) == 40
    with open(out / "data" / "reviews_400.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [sum(r["label"] == name for r in rows) for name in ("fresh", "rotten", "")] == [200, 200, 50]
    assert "mnist (test accuracy, gain over scratch in points):" in result.stdout
    assert "lightning-transfer transfer" in result.stdout  # each task prints the command it runs


@pytest.mark.slow
def test_the_quick_demo_shows_pretraining_pays(tmp_path):
    """Both tasks, as `bash scripts/demo.sh --quick` runs them: the pretrained inits must pay."""
    out = tmp_path / "demo"
    run_demo(out, "--quick")
    mnist, reviews = results(out / "mnist"), results(out / "reviews")
    assert mnist[("pretrained", 10)] > mnist[("scratch", 10)]
    assert reviews[("init_from", 50)] > reviews[("scratch", 50)]  # real pretrained weights must pay
    corpus = (out / "reviews" / "data" / "corpus.txt").read_text().splitlines()
    plots = len(load_reviews_demo().plots)
    assert len(corpus) == 12_808 - 500 - 1_000 + plots  # training reviews + plot summaries, no val/test review
