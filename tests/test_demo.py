"""The transfer demo in quick mode: every stage runs and writes its table, records and plot."""
import json
import subprocess
import sys
from pathlib import Path

from lightning_transfer.data.sources import load_reviews_demo

ROOT = Path(__file__).resolve().parents[1]


def test_quick_demo_writes_results_and_pretrained_inits_beat_chance(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "lightning_transfer.demo", "--quick", "--no-progress", "--output-dir", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    records = json.loads((out / "results.json").read_text())
    keys = {(r["task"], r["init"]) for r in records}
    assert keys == {("mnist", "simclr"), ("mnist", "scratch"), ("reviews", "bert"), ("reviews", "minilm"), ("reviews", "scratch")}
    for r in records:
        assert set(r) >= {"task", "init", "labels_per_class", "test_accuracy"} and 0.0 <= r["test_accuracy"] <= 1.0
    accuracy = {(r["task"], r["init"]): r["test_accuracy"] for r in records}
    assert accuracy[("mnist", "scratch")] > 0.5  # 10 classes: chance is 0.1
    assert accuracy[("mnist", "simclr")] > accuracy[("mnist", "scratch")]  # 300 SimCLR steps already pay (0.90 vs 0.85)
    assert accuracy[("reviews", "minilm")] > accuracy[("reviews", "scratch")]  # real pretrained weights must pay
    assert accuracy[("reviews", "bert")] > 0.55  # MiniLM after a few MLM steps of ours: still a working encoder
    for r in records:  # the mean of its draws
        assert abs(sum(r["test_accuracy_runs"]) / len(r["test_accuracy_runs"]) - r["test_accuracy"]) < 1e-3
    extras = json.loads((out / "extras.json").read_text())
    assert set(extras["mnist_linear_evaluation"]) == {"simclr", "scratch"}
    assert {"simclr", "scratch"} <= set(extras["mnist_finetune_with_augmentation"])
    corpus = (out / "reviews_bert" / "corpus.txt").read_text().splitlines()
    plots = len(load_reviews_demo().plots)
    assert len(corpus) == 12_808 - 500 - 1_000 + plots  # training reviews + plot summaries, no val/test review
    assert (out / "results.csv").read_text().startswith("task,init,labels_per_class,test_accuracy")
    assert (out / "label_efficiency.png").read_bytes()[:4] == b"\x89PNG"
    assert "test acc" in result.stdout and "[demo" in result.stdout
