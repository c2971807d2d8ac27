"""``lightning-transfer transfer`` as a user runs it: the console script on a tiny image folder, the
module on a tiny CSV interrupted with Ctrl-C and run again, two DDP processes, and bad input."""

import csv
import json
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lightning_transfer.data.sources import minilm_directory
from tests.helpers.images import write_image_folder

SCRIPT = str(Path(sys.executable).parent / "lightning-transfer")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
RESULT_COLUMNS = ["init", "labels_per_class", "seed", "test_accuracy", "test_macro_f1"]


def read_results(out: Path) -> list[dict]:
    with open(out / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[:5] == RESULT_COLUMNS
    assert json.loads((out / "results.json").read_text()) == json.loads((out / "results.json").read_text())
    return rows


def image_folder(tmp_path: Path) -> Path:
    root = write_image_folder(tmp_path / "images", classes=("cat", "dog", "owl"), per_class=24, size=16)
    (root / "dog" / "broken.png").write_bytes(b"not an image")  # skipped and counted, as fit does
    return root


def test_an_image_folder_gives_results_a_report_and_exports_and_a_rerun_skips_every_stage(tmp_path):
    root, out = image_folder(tmp_path), tmp_path / "out"
    command = [SCRIPT, "transfer", str(root), "--output-dir", str(out), "--budget-minutes", "4"]
    command += ["--labels-per-class", "1,3,100", "--seeds", "1", "--no-progress", "--trainer.accelerator", "cpu"]
    command += ["--max-pretrain-steps", "30"]  # the same work on any machine, well within the budget
    start = time.time()
    first = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=240)
    wall = time.time() - start
    assert first.returncode == 0, first.stderr[-3000:]
    assert "skipping 100 labels per class: class 'cat' has only" in first.stderr  # 24 - test - validation
    assert "plan for a budget of 4.0 min" in first.stdout and "fine-tuning pretrained, 1 labels/class" in first.stdout
    # --max-pretrain-steps caps the plan; a machine too busy for 30 steps in the budget's share plans fewer
    planned = re.search(r"pretraining: (\d+) steps", first.stdout)
    assert planned and 1 <= int(planned.group(1)) <= 30, first.stdout
    assert wall < 4 * 60, f"{wall:.0f} s: over the 4-minute budget"
    rows = read_results(out)
    assert sorted((r["init"], int(r["labels_per_class"]), int(r["seed"])) for r in rows) == sorted(
        (init, k, 0) for init in ("pretrained", "scratch") for k in (1, 3)
    )
    assert all(0.0 <= float(r["test_accuracy"]) <= 1.0 for r in rows)
    assert "skipped unreadable image" in first.stderr and "broken.png" in first.stderr
    report = (out / "report.md").read_text()
    assert "## Labels saved" in report and "scratch needs" in report
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and 'src="http' not in html
    assert (out / "label_efficiency.png").stat().st_size > 1000
    assert (out / "pretrained_encoder" / "encoder.safetensors").is_file()

    from lightning_transfer import FineTuneModule

    best = FineTuneModule.load_from_checkpoint(out / "best_model" / "model.ckpt")  # the report's own command
    logits = best({"images": torch.zeros(2, 3, 16, 16)})
    assert logits.shape == (2, 3)
    chosen = json.loads((out / "best_model" / "model.json").read_text())["stage"]
    top = max(rows, key=lambda r: float(r["val_accuracy"]))
    assert chosen.startswith(f"finetune-{top['init']}-k{top['labels_per_class']}")

    again = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=240)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reusing the plan" in again.stdout and "pretraining: done in an earlier run" in again.stdout
    assert again.stdout.count("done in an earlier run") == 1 + 4
    assert "timing a few steps" not in again.stdout
    assert read_results(out) == rows  # nothing ran again


def write_reviews(path: Path, labeled: int = 60, unlabeled: int = 20) -> Path:
    good, bad = ["great", "lovely", "superb", "moving"], ["dull", "awful", "boring", "weak"]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["review", "verdict"])
        for i in range(labeled):
            words = (good if i % 2 else bad)[i % 4 :] + ["film", "plot", "cast"][: 1 + i % 3]
            writer.writerow([" ".join(words) + f" number {i}", "up" if i % 2 else "down"])
        writer.writerows([f"an unrated review {i} of the plot", ""] for i in range(unlabeled))
    return path


def sigint_as_in_a_terminal() -> None:
    """Run in the child before it starts: SIGINT back to its default, so that Python turns it into
    KeyboardInterrupt as in a terminal. A suite run in the background (``cmd &`` in a script, ``nohup``)
    has SIGINT ignored, every child inherits that, and Python keeps an inherited SIG_IGN: the command
    then never sees the Ctrl-C, finishes the stage and exits 0."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow  # about 200 s under the default suite's load; the rerun-skips-every-stage test above is the fast one
def test_a_table_interrupted_by_ctrl_c_loses_only_the_stage_in_progress(tmp_path):
    """The in-process Ctrl-C tests (every way Lightning reports one) are in test_interrupt.py."""
    table, out = write_reviews(tmp_path / "reviews.csv"), tmp_path / "out"
    command = [sys.executable, "-m", "lightning_transfer.transfer", str(table), "--output-dir", str(out)]
    command += ["--text-column", "review", "--label-column", "verdict", "--labels-per-class", "2,4", "--seeds", "1"]
    command += ["--budget-minutes", "4", "--max-pretrain-steps", "10", "--max-seq-length", "16", "--no-progress"]
    command += ["--trainer.accelerator", "cpu", "--init-from", str(minilm_directory())]  # a real BERT, continued
    command += ["--lr-factors", "1"]  # the demo's reviews do the same; the LR search has its own tests (test_lr_search)
    with open(tmp_path / "stderr.txt", "w") as stderr:  # a file: a pipe nobody reads could fill and block it
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=ENV, preexec_fn=sigint_as_in_a_terminal
        )
        seen = []
        for line in process.stdout:
            seen.append(line)
            if line.startswith("[transfer") and "[2/6] fine-tuning" in line:
                process.send_signal(signal.SIGINT)  # Ctrl-C during the second fine-tuning run
                break
        process.communicate(timeout=120)
    assert process.returncode == 130, "".join(seen)
    said = [line for line in (tmp_path / "stderr.txt").read_text().splitlines() if line.startswith("lightning-")]
    assert said == [
        "lightning-transfer transfer: interrupted (Ctrl-C): kept the plan, the pretrained encoder and 1 of 6 "
        f"fine-tuning runs in {out} (the stage in progress is not kept); run the same command again to resume"
    ]
    stages = sorted(p.name for p in (out / "stages").iterdir())
    assert stages == ["finetune-pretrained-k2-seed0.json", "plan.json", "pretrain.json"]
    assert not (out / "results.csv").exists()

    again = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=240)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "pretraining: done in an earlier run" in again.stdout
    assert "[1/6] finetune-pretrained-k2-seed0: done in an earlier run" in again.stdout
    assert "[2/6] fine-tuning init_from, 2 labels/class" in again.stdout
    rows = read_results(out)
    assert [(r["init"], r["labels_per_class"]) for r in rows] == [
        (init, k) for k in ("2", "4") for init in ("pretrained", "init_from", "scratch")
    ]
    corpus = (out / "data" / "corpus.txt").read_text()
    assert "an unrated review 3 of the plot" in corpus  # the unlabeled rows are pretraining data
    assert (out / "pretrained_encoder" / "tokenizer.json").is_file()  # MiniLM's vocabulary, exported with the model
    report = (out / "report.md").read_text()
    assert "AutoModel.from_pretrained" in report


@pytest.mark.slow  # about 100 s under the suite's load (CI has 15 minutes); DDP fits run in tests/test_launch_matrix.py
def test_two_ddp_processes_run_every_stage_once(tmp_path):
    root, out = image_folder(tmp_path), tmp_path / "out"
    command = [SCRIPT, "transfer", str(root), "--output-dir", str(out), "--budget-minutes", "4"]
    command += ["--labels-per-class", "2", "--seeds", "1", "--max-pretrain-steps", "20", "--no-progress"]
    command += ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]
    result = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in result.stderr
    assert result.stdout.count("plan for a budget") == 1  # process 0 prints; both run its plan
    rows = read_results(out)
    assert [(r["init"], r["labels_per_class"]) for r in rows] == [("pretrained", "2"), ("scratch", "2")]
    plan = json.loads((out / "stages" / "plan.json").read_text())["result"]
    assert plan["runs"][0]["batch_size"] == 3  # 2 labels x 3 classes, shared by 2 processes
    for name in ("finetune-pretrained-k2-seed0", "finetune-scratch-k2-seed0"):
        record = json.loads((out / "stages" / f"{name}.json").read_text())["result"]
        assert len(record["val_accuracy_by_lr"].split("; ")) == 3  # the default LR search, under DDP too
        scored = sum(map(sum, record["confusion_matrix"]))
        # every test image scored once: 15 held out, the unreadable one among them or not (Lightning's
        # default evaluation sampler would pad 15 to 16 with a repeat)
        assert scored in (14, 15)
        correct = sum(record["confusion_matrix"][i][i] for i in range(3))
        assert record["test_accuracy"] == round(correct / scored, 4)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--labels-per-class", "0"], "--labels-per-class needs positive integers"),
        (["--trainer.max_epochs", "3"], "--trainer.max_epochs is set by the command per stage"),
        (["--trainer.bogus", "1"], "--trainer.bogus is not a pl.Trainer argument"),
        (["--temperature", "0"], "--temperature must be positive, got 0.0"),
        (["--lr-factors", "1,0"], "--lr-factors needs positive numbers, got '1,0'"),
    ],
)
def test_bad_arguments_get_one_line(tmp_path, arguments, message, capsys):
    from lightning_transfer.cli import main

    root = write_image_folder(tmp_path / "images", classes=("a", "b"), per_class=3, size=8)
    with pytest.raises(SystemExit) as done:
        main(["transfer", str(root), "--output-dir", str(tmp_path / "out"), *arguments])
    assert done.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_data_gets_one_line_from_the_console_script(tmp_path):
    root = write_image_folder(tmp_path / "images", classes=("only",), per_class=3, size=8)
    result = subprocess.run(
        [SCRIPT, "transfer", str(root), "--output-dir", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert lines == [
        f"lightning-transfer transfer: error: {root} has 1 class folder: only; transfer needs at least 2, "
        "laid out as <root>/<class>/<image>"
    ]
