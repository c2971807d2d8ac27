"""The README's commands, so none of them rots.

Every command line of a ```bash block is either run here or mapped in COVERED_ELSEWHERE to the test
or CI script that runs it (and those targets must exist). Blocks of ``lightning-transfer`` and
``python -m lightning_transfer.export`` commands run verbatim, in order, in a temporary folder holding
a small ``my_images/`` folder and ``my_texts.csv`` (and ``configs/`` linked from the repository): bash
expands each command's words, then the command runs in this process (a fresh interpreter per command
would cost the import of torch and Lightning every time) with speed overrides appended, which
LightningCLI applies after the README's own. Commands for a GPU (``--trainer.accelerator gpu``) are
parsed with ``--print_config`` only. The ```python blocks run with a Trainer kept to two steps.
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lightning_transfer import cli, export
from tests.helpers.images import write_image_folder

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()

# Command prefix (after leading VAR=value assignments) -> the test ("file::function") or CI script running it.
COVERED_ELSEWHERE = {
    "bash scripts/demo.sh": "tests/test_demo.py::test_the_quick_demo_shows_pretraining_pays",
    "bash scripts/test.sh": ".ci/run",
    "sbatch scripts/slurm/": "tests/test_slurm.py::test_srun_line_matches_the_sbatch_directives",
    "bash scripts/torchrun.sh": "tests/test_launch_matrix.py::test_every_recipe_fits_in_one_process_and_under_ddp_bf16",
    ".venv/bin/python benchmarks/": "tests/test_readme.py::test_benchmark_commands_run",
}
RUNNABLE = ("lightning-transfer ", "python -m lightning_transfer.export ")
SPEED = ["--trainer.max_steps", "2", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
         "--trainer.limit_test_batches", "1", "--trainer.limit_predict_batches", "1", "--trainer.num_sanity_val_steps", "0",
         "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", "--trainer.precision", "32-true",
         "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--data.init_args.batch_size", "8",
         "--data.init_args.num_workers", "0"]
IMAGES = ["--data.init_args.knn_bank_size", "64"]  # the kNN monitor embeds this many training images per validation
SMALL_IMAGES = IMAGES + ["--data.init_args.image_size", "32", "--data.init_args.decode_size", "32", "--data.init_args.pin_memory", "false"]
SMALL_TEXT = ["--data.init_args.max_seq_length", "32"]


def fenced_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.S | re.M)


def commands(block: str) -> list[str]:
    """The block's command lines: ``\\`` continuations joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    lines = (line.split(" #")[0].strip() for line in joined.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def without_assignments(command: str) -> str:
    return re.sub(r"^(\w+=\S*\s+)+", "", command)


def runnable(block: str) -> bool:
    return all(command.startswith(RUNNABLE) for command in commands(block))


BASH_BLOCKS = fenced_blocks("bash")
RUN_HERE = [block for block in BASH_BLOCKS if runnable(block)]


def test_every_readme_command_is_run_here_or_by_a_named_test():
    uncovered = [command for block in BASH_BLOCKS if not runnable(block) for command in commands(block)
                 if not without_assignments(command).startswith(tuple(COVERED_ELSEWHERE))]
    assert not uncovered, f"README commands that no test runs (run them here or map them in COVERED_ELSEWHERE): {uncovered}"
    assert RUN_HERE and len(fenced_blocks("python")) >= 1


@pytest.mark.parametrize("target", sorted(set(COVERED_ELSEWHERE.values())))
def test_every_mapped_target_exists(target):
    path, _, name = target.partition("::")
    assert (ROOT / path).is_file(), f"{path} does not exist"
    assert not name or re.search(rf"^def {name}\(", (ROOT / path).read_text(), flags=re.M), f"{path} defines no {name}"


def write_texts(path: Path, rows: int = 80) -> Path:
    """``text,label`` rows: two classes with different vocabularies, a comma inside some texts."""
    rng = np.random.default_rng(0)
    words = [["great", "lovely", "moving", "a joy", "brilliant"], ["dull", "boring", "a mess", "tedious", "flat"]]
    lines = ["text,label"]
    for i in range(rows):
        label = i % 2
        text = " ".join(rng.choice(words[label], size=6)) + f", the film number {i} is {words[label][i % 5]}."
        lines.append(f'"{text}",{["positive", "negative"][label]}')
    path.write_text("\n".join(lines) + "\n")
    return path


def run_command(command: str, cwd: Path, cache: Path) -> None:
    """Expand ``command`` as bash would in ``cwd``, then run it here with the speed overrides."""
    words = subprocess.run(["bash", "-c", f"printf '%s\\0' {command}"], cwd=cwd, capture_output=True, text=True, check=True)
    argv = words.stdout.split("\0")[:-1]
    if argv[:3] == ["python", "-m", "lightning_transfer.export"]:
        export.main(argv[3:])
        return
    assert argv[0] == "lightning-transfer", command
    if argv[1] in ("transfer", "optimize"):  # transfer: its own budget; optimize: no Trainer; verbatim
        cli.main(argv[1:])
        return
    if "--trainer.accelerator" in argv and argv[argv.index("--trainer.accelerator") + 1] == "gpu":
        with pytest.raises(SystemExit) as done:  # no GPU here: the arguments must parse
            cli.main(argv[1:] + ["--print_config"])
        assert done.value.code in (0, None), command
        return
    pretraining_text = "configs/bert/" in command  # TextPretrainDataModule: keep its tokenized cache in the tmp dir
    if "fit_config.yaml" in command:
        extra = []  # a fit's resolved config: it already holds that fit's small sizes
    elif pretraining_text and "litdata" in argv:
        extra = []  # text shards: the sequence length was fixed when they were written
    elif pretraining_text or any(name in command for name in ("reviews_from", "sst2")):
        extra = SMALL_TEXT + (["--data.init_args.cache_dir", str(cache)] if pretraining_text else [])
    else:
        extra = SMALL_IMAGES if "folder" in argv else IMAGES
    try:
        cli.main(argv[1:] + SPEED + extra)
    except SystemExit as done:  # --print_config exits after printing
        assert done.code in (0, None) and "--print_config" in argv, command


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A folder like the one a new user runs the README in: configs/, my_images/, my_texts.csv."""
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    write_image_folder(tmp_path / "my_images", classes=("ant", "bee", "cat"), per_class=32, size=36)
    write_texts(tmp_path / "my_texts.csv")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


# The transfer block runs under -m slow: about 4 minutes under the default suite's load, which CI's 15 minutes
# cannot hold; the same path runs in tests/transfer/test_transfer_command.py on every default run.
READMES_BLOCKS = [
    pytest.param(b, marks=pytest.mark.slow) if "lightning-transfer transfer" in b else b for b in RUN_HERE
]


@pytest.mark.parametrize("block", READMES_BLOCKS, ids=[commands(b)[0][:60] for b in RUN_HERE])
def test_readme_bash_block_runs(block, workdir, capsys):
    for command in commands(block):
        run_command(command, workdir, workdir / "cache")
    err = capsys.readouterr().err
    if "lightning-transfer transfer" in block:  # the label-efficiency report of each
        for report in ("runs/my_images_report", "runs/my_texts_report"):
            assert "## Labels saved" in (workdir / report / "report.md").read_text()
            assert (workdir / report / "results.csv").read_text().startswith("init,labels_per_class,seed,test_accuracy")
        return
    if "lightning-transfer optimize" in block:  # shards written, then a fit streamed each
        for shards in ("shards/my_images", "shards/my_texts"):
            assert (workdir / shards / "lightning_transfer.json").is_file()
        for run in ("runs/my_simclr_shards", "runs/my_bert_shards"):
            assert list((workdir / run).glob("lightning_logs/version_*/checkpoints/last.ckpt")), f"no checkpoint in {run}"
        return
    if "my_images" in block:
        assert (workdir / "runs/my_simclr/encoder/encoder.safetensors").is_file()
        assert (workdir / "runs/my_classifier/encoder/encoder.json").is_file()
        assert "uses the best checkpoint of the last fit" in err
        assert (workdir / "runs/my_classifier/predictions/predictions.csv").read_text().startswith("index,prediction,label,prob_0")
        logs = workdir / "runs/my_classifier/lightning_logs"  # what "Bringing your own data" says lands there
        for name in ("checkpoints/last.ckpt", "config.yaml", "metrics.csv", "training_curves.png", "embedding_projection.png",
                     "confusion_matrix.png"):
            assert list(logs.glob(f"version_*/{name}")), f"no {name} under {logs}"
        assert Path((workdir / "runs/my_classifier/best_checkpoint.txt").read_text().strip()).is_file()
    if "my_texts.csv" in block:
        transformers = pytest.importorskip("transformers")
        for hf in ("runs/my_bert/hf", "runs/my_text_classifier/hf"):  # "load in transformers", as the README says
            tokens = transformers.AutoTokenizer.from_pretrained(workdir / hf)("a lovely film", return_tensors="pt")
            assert transformers.BertModel.from_pretrained(workdir / hf)(**tokens).last_hidden_state.shape[1] == tokens["input_ids"].shape[1]
        assert (workdir / "runs/my_text_classifier/predictions/predictions.csv").is_file()


@pytest.mark.parametrize("block", fenced_blocks("python"), ids=lambda b: b.splitlines()[-1][:40])
def test_readme_python_block_runs(block, workdir, monkeypatch):
    import lightning.pytorch as pl

    class TinyTrainer(pl.Trainer):
        def __init__(self, *args, **kwargs):
            kwargs.update(max_steps=2, limit_train_batches=2, limit_val_batches=1, limit_test_batches=1, num_sanity_val_steps=0,
                          enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(pl, "Trainer", TinyTrainer)
    exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    written = re.findall(r"[\"']([\w/.-]+\.(?:ckpt|pt))[\"']", block)
    assert written and all((workdir / name).is_file() for name in written), f"the README block claims to write {written}"


@pytest.mark.slow
@pytest.mark.parametrize("command", [c for b in BASH_BLOCKS for c in commands(b) if c.startswith(".venv/bin/python benchmarks/")])
def test_benchmark_commands_run(command):
    argv = shlex.split(command)
    done = subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
