"""The transfer demo: every stage runs and writes its table, records and plot.

The default suite runs ``--smoke`` (every stage, a few steps, under a minute); ``-m slow`` runs
``--quick`` (about 5 minutes and 6 CPU-minutes on 2 cores), where pretraining must already pay: SimCLR
beats scratch on MNIST and MiniLM beats scratch on the reviews.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_transfer.data.sources import load_reviews_demo

ROOT = Path(__file__).resolve().parents[1]


def run_quick_demo(out: Path, size: str = "--quick") -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "lightning_transfer.demo", size, "--no-progress", "--output-dir", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread: the suite runs other processes beside it
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def check_records(out: Path, expected: set[tuple[str, str]]) -> dict[tuple[str, str], float]:
    records = json.loads((out / "results.json").read_text())
    assert {(r["task"], r["init"]) for r in records} == expected
    for r in records:
        assert set(r) >= {"task", "init", "labels_per_class", "test_accuracy"} and 0.0 <= r["test_accuracy"] <= 1.0
        assert abs(sum(r["test_accuracy_runs"]) / len(r["test_accuracy_runs"]) - r["test_accuracy"]) < 1e-3  # mean of draws
    assert (out / "results.csv").read_text().startswith("task,init,labels_per_class,test_accuracy")
    assert (out / "label_efficiency.png").read_bytes()[:4] == b"\x89PNG"
    return {(r["task"], r["init"]): r["test_accuracy"] for r in records}


def test_smoke_demo_runs_every_stage_and_writes_its_records_without_a_test_review_in_the_corpus(tmp_path):
    """``--smoke``: every stage of both tasks for a few steps (under a minute): the records, the table,
    the plot, the extras, and an MLM corpus made of training reviews and plot summaries only."""
    out = tmp_path / "demo"
    result = run_quick_demo(out, "--smoke")
    check_records(out, {("mnist", "simclr"), ("mnist", "scratch"), ("reviews", "bert"), ("reviews", "minilm"),
                        ("reviews", "scratch")})
    extras = json.loads((out / "extras.json").read_text())
    assert extras["plan"]["simclr_steps"] == 10 and set(extras["mnist_linear_evaluation"]) == {"simclr", "scratch"}
    assert {"simclr", "scratch"} <= set(extras["mnist_finetune_with_augmentation"])
    corpus = (out / "reviews_bert" / "corpus.txt").read_text().splitlines()
    assert len(corpus) == 12_808 - 500 - 1_000 + len(load_reviews_demo().plots)  # no val/test review
    assert "test acc" in result.stdout and "[demo" in result.stdout


@pytest.mark.slow
def test_quick_demo_writes_results_and_pretrained_inits_beat_chance(tmp_path):
    """Both tasks, as `bash scripts/demo.sh --quick` runs them: the pretrained inits must pay."""
    out = tmp_path / "demo"
    run_quick_demo(out)
    accuracy = check_records(out, {("mnist", "simclr"), ("mnist", "scratch"), ("reviews", "bert"), ("reviews", "minilm"),
                                   ("reviews", "scratch")})
    assert accuracy[("mnist", "simclr")] > accuracy[("mnist", "scratch")]
    assert accuracy[("reviews", "minilm")] > accuracy[("reviews", "scratch")]  # real pretrained weights must pay
    assert accuracy[("reviews", "bert")] > 0.55  # MiniLM after a few MLM steps of ours: still a working encoder
    corpus = (out / "reviews_bert" / "corpus.txt").read_text().splitlines()
    plots = len(load_reviews_demo().plots)
    assert len(corpus) == 12_808 - 500 - 1_000 + plots  # training reviews + plot summaries, no val/test review
