"""The launch matrix: every recipe in ``configs/`` through the ``lightning-transfer`` process itself,
as a user launches it.

Each config runs ``fit`` (one epoch of two batches, a validation pass, checkpoints) twice:
(a) one process at ``32-true``; (b) two DDP processes (gloo) at ``bf16-mixed`` (a fine-tuning recipe that
follows its pretraining recipe, and the pretraining recipes whose classes launch in one process elsewhere run
(b) only: :func:`legs_of`). After the DDP fit, the fine-tuning recipes also run ``test`` and ``predict`` (with
``PredictionWriter``; for one recipe on two processes; the two whose test and predict the README's walkthroughs
run skip them here) from the fit's ``fit_config.yaml``, and the export entry point (``python -m lightning_transfer.export``'s
``main``, called here) writes its encoder. The
DDP fit of ``configs/bert/reviews_tiny.yaml`` is killed (SIGKILL, mid-epoch) and resumed with
``--ckpt_path``; the DDP fit of ``configs/simclr/stl10.yaml`` starts through ``scripts/torchrun.sh``
(torchrun's processes, which Lightning joins, as on a cluster without SLURM) instead of Lightning's own
launcher; the one-process fit of ``configs/simclr/mnist.yaml`` writes into the recipe's own
``default_root_dir``, and its DDP bf16 fit runs at the recipe's own model and batch size.
Every process must exit 0 and leave the promised files: ``best_checkpoint.txt`` (naming the checkpoint of
the module's best ``val/knn_acc``, ``val/mlm_loss`` or ``val/acc``), ``fit_config.yaml``, ``metrics.csv``
with finite values and a validation metric, the PNGs, ``predictions.csv``, checkpoints that load with
``torch.load(weights_only=True)``.

Overrides only shrink the run (steps, batches, sequence length) or swap what needs the network or an
earlier run for an offline stand-in (an image folder for CIFAR-10 / STL-10 / ImageNet, the review
corpus for wikitext and SST-2, BERT-base at small sizes). A pretraining recipe and the fine-tuning recipe
that reads its checkpoint run in one test, the fine-tuning from the DDP bf16 checkpoint: the whole
pretrain -> fine-tune path.
"""
from __future__ import annotations

import csv
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lightning_transfer.precision import KEEP_ENV, cpu_emulates_bf16
from tests.helpers.images import write_image_folder

ROOT = Path(__file__).resolve().parents[1]
ENTRY = str(Path(sys.executable).with_name("lightning-transfer"))  # the console script pip installed
CONFIGS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "configs").glob("*/*.yaml")
                 if p.parent.name != "base")  # configs/base/: parts the recipes compose, not recipes
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
       "TRANSFORMERS_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}

SHORT = ["--trainer.max_epochs", "1", "--trainer.max_steps", "-1", "--trainer.limit_train_batches", "2",
         "--trainer.limit_val_batches", "2", "--trainer.limit_test_batches", "2", "--trainer.limit_predict_batches", "2",
         "--trainer.val_check_interval", "1.0", "--trainer.check_val_every_n_epoch", "1",
         "--trainer.num_sanity_val_steps", "0", "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false",
         "--trainer.accelerator", "cpu", "--trainer.num_nodes", "1", "--trainer.sync_batchnorm", "false"]
LEGS = {  # (a) one process, full precision; (b) two DDP processes with gloo, bf16 autocast
    "single_32": ["--trainer.devices", "1", "--trainer.strategy", "auto", "--trainer.precision", "32-true"],
    "ddp_bf16": ["--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.precision", "bf16-mixed"],
}
# 16 px: the convolutions of the bf16 legs run in emulated bf16 on CPUs without native kernels (see
# lightning_transfer.precision; the tests opt in), 15-70x slower than fp32, so the images stay small
FOLDER = ["--data.init_args.source", "folder", "--data.init_args.root", "{images}", "--data.init_args.image_size", "16",
          "--data.init_args.decode_size", "16", "--data.init_args.batch_size", "4", "--data.init_args.val_size", "4",
          "--data.init_args.test_size", "4", "--data.init_args.num_workers", "0", "--data.init_args.pin_memory", "false",
          "--data.init_args.persistent_workers", "false"]
MINILM_TEXT = ["--data.init_args.batch_size", "4", "--data.init_args.max_seq_length", "16"]  # 22M parameters in emulated bf16: short rows
# BERT-base's sizes, shrunk (the same code; 110M parameters would spend the test writing 1.3 GB checkpoints)
SMALL_BERT = ["--model.init_args.hidden_size", "64", "--model.init_args.num_hidden_layers", "2",
              "--model.init_args.num_attention_heads", "2", "--model.init_args.intermediate_size", "128"]
REVIEWS_INSTEAD_OF_HUB = ["--data.init_args.source", "reviews_demo", "--data.init_args.cache_dir", "{cache}",
                          "--data.init_args.num_workers", "0"]
OVERRIDES = {
    "configs/simclr/mnist.yaml": ["--data.init_args.batch_size", "32", "--data.init_args.knn_bank_size", "256"],
    "configs/simclr/cifar10.yaml": FOLDER,
    "configs/simclr/stl10.yaml": FOLDER,
    "configs/simclr/imagenet_resnet50.yaml": FOLDER,
    "configs/bert/reviews_tiny.yaml": ["--data.init_args.cache_dir", "{cache}", "--data.init_args.batch_size", "8",
                                      "--data.init_args.max_seq_length", "64"],
    "configs/bert/minilm_continue.yaml": ["--data.init_args.cache_dir", "{cache}", *MINILM_TEXT],
    "configs/bert/wikitext103_base.yaml": [*REVIEWS_INSTEAD_OF_HUB, "--data.init_args.batch_size", "2",
                                           "--data.init_args.max_seq_length", "32", "--data.init_args.tokenizer_vocab_size", "2000",
                                           *SMALL_BERT],
    "configs/finetune/mnist_from_simclr.yaml": ["--model.init_args.pretrained", "{pretrained}", "--data.init_args.batch_size", "8"],
    "configs/finetune/cifar10_from_simclr.yaml": [*FOLDER, "--model.init_args.pretrained", "{pretrained}",
                                                  "--data.init_args.label_fraction", "null",
                                                  "--data.init_args.labels_per_class", "4"],
    "configs/finetune/reviews_from_bert.yaml": ["--model.init_args.pretrained", "{pretrained}",
                                                "--data.init_args.tokenizer", "{tokenizer}", *MINILM_TEXT],
    "configs/finetune/reviews_from_minilm.yaml": MINILM_TEXT,
    "configs/finetune/sst2_from_bert.yaml": [*MINILM_TEXT, "--data.init_args.source", "reviews_demo",
                                             "--data.init_args.text_column", "text", "--data.init_args.label_column", "label"],
}
# Each test: a pretraining recipe and the fine-tuning recipe that reads its checkpoint, or a recipe alone.
CHAINS = {
    "simclr_mnist": ("configs/simclr/mnist.yaml", "configs/finetune/mnist_from_simclr.yaml"),
    "simclr_cifar10": ("configs/simclr/cifar10.yaml", "configs/finetune/cifar10_from_simclr.yaml"),
    "bert_reviews": ("configs/bert/reviews_tiny.yaml", "configs/finetune/reviews_from_bert.yaml"),
    "minilm": ("configs/bert/minilm_continue.yaml", "configs/finetune/reviews_from_minilm.yaml"),
    "sst2": ("configs/finetune/sst2_from_bert.yaml",),
    "stl10": ("configs/simclr/stl10.yaml",),
    "imagenet": ("configs/simclr/imagenet_resnet50.yaml",),
    "wikitext": ("configs/bert/wikitext103_base.yaml",),
}


def test_the_matrix_covers_every_config():
    assert sorted(c for chain in CHAINS.values() for c in chain) == CONFIGS
    assert set(OVERRIDES) <= set(CONFIGS)
    readme_blocks = re.findall(r"^```bash\n(.*?)^```", (ROOT / "README.md").read_text(), flags=re.S | re.M)
    for config in TESTED_IN_PROCESS_ELSEWHERE - {"configs/finetune/sst2_from_bert.yaml"}:  # the README walkthrough
        (block,) = [b for b in readme_blocks if f"lightning-transfer fit --config {config}" in b]
        assert "lightning-transfer test --config" in block and "lightning-transfer predict --config" in block


# ----------------------------------------------------------------------------- running the process
def launch(args: list[str], cwd: Path, timeout: float = 420, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``lightning-transfer ARGS``; fail the test, with the end of its output, unless it exits 0."""
    command = [ENTRY, *args]
    result = subprocess.run(command, cwd=cwd, env=env or ENV, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(f"`{' '.join(command[:4])} ...` exited {result.returncode}:\n{result.stdout[-2000:]}\n{result.stderr[-5000:]}")
    return result


def fit_args(config: str, leg: str, root: Path | None, values: dict, overrides: list[str] | None = None) -> list[str]:
    """``fit`` of ``config`` on ``leg`` into ``root`` (None: the recipe's own ``default_root_dir``, relative
    to the working directory)."""
    extra = [arg.format(**values) for arg in (OVERRIDES.get(config, []) if overrides is None else overrides)]
    where = [] if root is None else ["--trainer.default_root_dir", str(root)]
    return ["fit", "--config", str(ROOT / config), *SHORT, *LEGS[leg], *extra, *where]


def recipe_root(config: str, cwd: Path) -> Path:
    import yaml

    return cwd / yaml.safe_load((ROOT / config).read_text())["trainer"]["default_root_dir"]


# ----------------------------------------------------------------------------- what a run must leave
def assert_png(path: Path) -> None:
    from PIL import Image

    assert path.is_file() and path.stat().st_size > 0, f"{path} was not written"
    with Image.open(path) as image:
        assert image.format == "PNG"


def read_metrics_csv(version: Path) -> list[dict[str, str]]:
    with (version / "metrics.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def assert_finite_metrics(version: Path, stage: str = "val/") -> dict[str, float]:
    """Every value in ``metrics.csv`` is finite, and some metric of ``stage`` was logged; returns the
    last value of each metric."""
    rows = read_metrics_csv(version)
    last: dict[str, float] = {}
    for row in rows:
        for key, value in row.items():
            if value not in ("", None):
                number = float(value)
                assert math.isfinite(number), f"{version}/metrics.csv: {key} = {value}"
                last[key] = number
    assert any(key.startswith(stage) for key in last), f"no {stage} metric in {version}/metrics.csv: {sorted(last)}"
    return last


def assert_checkpoints_load_without_unpickling(root: Path) -> list[Path]:
    checkpoints = sorted(root.rglob("*.ckpt"))
    assert checkpoints, f"no checkpoint under {root}"
    for path in checkpoints:
        torch.load(path, map_location="cpu", weights_only=True)  # plain types only: no code runs on load
    return checkpoints


def check_fit(root: Path, config: str, resumed: bool = False) -> Path:
    """The files a fit promises (of the last run, when ``resumed``); returns the best checkpoint."""
    from lightning_transfer.cli import best_checkpoint_of

    best = best_checkpoint_of(root)
    assert best is not None and best.is_file(), f"{root}/best_checkpoint.txt missing or stale"
    assert (root / "fit_config.yaml").is_file(), "fit_config.yaml was not written"
    versions = sorted((root / "lightning_logs").iterdir())
    assert len(versions) == (2 if resumed else 1)  # TensorBoard and CSV share one version folder per run
    version = versions[-1]
    assert best.is_relative_to(version), f"the best checkpoint {best} is not from the last run"
    assert list(version.glob("events.out.tfevents.*")), "no TensorBoard events"
    assert_finite_metrics(version)
    assert_png(version / "training_curves.png")
    text = (ROOT / config).read_text()
    module = next(name for name in BEST_METRIC if f"lightning_transfer.{name}\n" in text)
    assert re.fullmatch(rf"epoch=\d+-step=\d+-{BEST_METRIC[module]}=\d+\.\d{{4}}\.ckpt", best.name), best.name
    if module == "BertPretrainModule":  # configs/base/callbacks.yaml: no class features, no plot
        assert not (version / "embedding_projection.png").exists()
    else:
        assert_png(version / "embedding_projection.png")
    assert_checkpoints_load_without_unpickling(root)
    return best


# the best checkpoint of each module kind (lightning_transfer.callbacks.BestCheckpoint): the name in its file
BEST_METRIC = {"SimCLRModule": "knn_acc", "BertPretrainModule": "mlm_loss", "FineTuneModule": "acc"}


def check_export(root: Path, tmp: Path) -> None:
    """After a fine-tuning fit: the export entry point writes its encoder, which loads."""
    exported = tmp / "exported"
    from lightning_transfer.export import main as export_main  # its entry point, in this process (one import fewer)
    from lightning_transfer.models.loading import load_encoder

    export_main([str(root), str(exported)])

    loaded = load_encoder(str(exported))
    if loaded.modality == "text":
        assert (exported / "config.json").is_file() and (exported / "model.safetensors").is_file()
        assert (exported / "tokenizer.json").is_file()


def check_test_and_predict(root: Path, tmp: Path, ddp_predict: bool) -> None:
    """After a fine-tuning fit: ``test`` and ``predict`` from its fit_config.yaml (the best checkpoint).
    ``test`` runs on one process, as Lightning advises (a DistributedSampler pads the processes' shares
    with repeated examples, which would count twice in the test metrics); ``predict`` on one, or with
    ``ddp_predict`` on the fit's two processes, whose parts PredictionWriter merges (once in the matrix:
    each process of a launch costs seconds of imports)."""
    fit_config = str(root / "fit_config.yaml")
    tested = launch(["test", "--config", fit_config, *LEGS["single_32"]], cwd=tmp)
    assert "uses the best checkpoint of the last fit" in tested.stderr
    version = root / "lightning_logs" / "version_1"
    assert_png(version / "confusion_matrix.png")
    accuracy = assert_finite_metrics(version, stage="test/")["test/acc"]
    assert 0.0 <= accuracy <= 1.0

    predictions = tmp / "predictions"
    processes = [] if ddp_predict else LEGS["single_32"]  # DDP once: PredictionWriter's merge of the parts
    launch(["predict", "--config", fit_config, "--trainer.callbacks+=lightning_transfer.callbacks.PredictionWriter",
            "--trainer.callbacks.output_dir", str(predictions), *processes], cwd=tmp)
    with (predictions / "predictions.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and not list(predictions.glob("*.rank*")), "predictions.csv missing or per-process parts left over"
    indices = [int(row["index"]) for row in rows]
    assert indices == sorted(set(indices))  # merged in order, no duplicates
    for row in rows:
        probabilities = [float(v) for k, v in row.items() if k.startswith("prob_")]
        assert abs(sum(probabilities) - 1.0) < 1e-3 and int(row["prediction"]) == max(
            range(len(probabilities)), key=probabilities.__getitem__)


# ----------------------------------------------------------------------------- the matrix
@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """The stand-in for CIFAR-10 / STL-10 / ImageNet folders: 3-channel PNGs, two classes."""
    return write_image_folder(tmp_path_factory.mktemp("images"), per_class=12, size=36)


@pytest.mark.parametrize("chain", CHAINS)
def test_every_recipe_fits_in_one_process_and_under_ddp_bf16(chain, tmp_path, images):
    values = {"images": str(images), "cache": str(tmp_path / "cache")}
    for config in CHAINS[chain]:
        for leg in legs_of(config, chain):
            own_root = (config, leg) == OWN_ROOT
            root = recipe_root(config, tmp_path) if own_root else tmp_path / Path(config).stem / leg
            at_size = (config, leg) == AT_RECIPE_SIZE
            args = fit_args(config, leg, None if own_root else root, values, RECIPE_SIZE_OVERRIDES if at_size else None)
            killed = (config, leg) == KILLED_AND_RESUMED
            if killed:
                kill_mid_epoch_and_resume(args, root, tmp_path)
            elif (config, leg) == TORCHRUN:
                launch_with_torchrun(config, args, tmp_path)
            elif at_size:
                launch_at_recipe_size(args, tmp_path)
            else:
                launch(args, cwd=tmp_path)
            best = check_fit(root, config, resumed=killed)
        if "configs/finetune/" not in config:  # a pretraining recipe: its DDP bf16 checkpoint feeds the next one
            values["pretrained"] = str(best)
            if "configs/bert/" in config:  # the tokenizer it trained, from the exported Hugging Face directory
                from lightning_transfer.export import export_encoder

                values["tokenizer"] = str(export_encoder(root, tmp_path / "bert_hf"))
        else:
            if config not in TESTED_IN_PROCESS_ELSEWHERE:
                check_test_and_predict(root, tmp_path / Path(config).stem, ddp_predict=config == DDP_PREDICT)
            check_export(root, tmp_path / Path(config).stem)


def legs_of(config: str, chain: str) -> list[str]:
    """Both legs, except for a fine-tuning recipe that follows its pretraining recipe in a chain: its DDP bf16
    fit only, which its ``test`` and ``predict`` then read. Each launch costs about 9 CPU-s of imports on a
    suite that must stay within CI's 15 minutes; one-process fine-tuning through the process itself is
    covered by that ``test`` and ``predict``, by ``sst2`` here (both legs) and by the ``transfer`` command's
    tests (tests/transfer/), whose stages fine-tune in one process."""
    follows_pretraining = "configs/finetune/" in config and CHAINS[chain][0] != config
    return ["ddp_bf16"] if follows_pretraining or config in ONE_PROCESS_ELSEWHERE else list(LEGS)


# Pretraining recipes whose module and DataModule classes launch in one process at 32-true in another chain
# (SimCLR + ImageDataModule: mnist; BERT + TextPretrainDataModule: reviews_tiny), and which the README's
# commands or the suite fit in one process too: their own DDP bf16 leg tests their settings. Each launch
# costs about 10 CPU-s of imports on a suite that must stay within CI's 15 minutes on 2 cores.
ONE_PROCESS_ELSEWHERE = {"configs/simclr/imagenet_resnet50.yaml", "configs/bert/wikitext103_base.yaml",
                         "configs/simclr/cifar10.yaml", "configs/simclr/stl10.yaml", "configs/bert/minilm_continue.yaml"}
# Fine-tuning recipes whose ``test`` and ``predict`` run in one process elsewhere: the README's walkthroughs
# (tests/test_readme.py: the same commands and code without the process around them) for cifar10_from_simclr
# and reviews_from_bert, and tests/modules/test_finetune.py's sentence pairs through fit, test and predict for
# sst2_from_bert; here their fits and the export. The process itself runs ``test`` and ``predict`` of one image
# recipe (mnist_from_simclr, its predict under DDP) and one text recipe (reviews_from_minilm).
TESTED_IN_PROCESS_ELSEWHERE = {"configs/finetune/cifar10_from_simclr.yaml", "configs/finetune/reviews_from_bert.yaml",
                               "configs/finetune/sst2_from_bert.yaml"}


OWN_ROOT = ("configs/simclr/mnist.yaml", "single_32")  # no --trainer.default_root_dir: the recipe's own, as it ships
DDP_PREDICT = "configs/finetune/mnist_from_simclr.yaml"  # its predict runs on the fit's two processes
TORCHRUN = ("configs/simclr/stl10.yaml", "ddp_bf16")  # this DDP fit starts as on a cluster without SLURM


AT_RECIPE_SIZE = ("configs/simclr/mnist.yaml", "ddp_bf16")  # this DDP fit runs at the recipe's own model and batch
RECIPE_SIZE_OVERRIDES = ["--data.init_args.knn_bank_size", "512", "--trainer.limit_val_batches", "1"]  # monitors only


def launch_at_recipe_size(args: list[str], cwd: Path) -> None:
    """The recipe's own model and batch (512 views per process), two steps, as its user launches it on
    this machine: no opt-in to emulated bf16. On a CPU without native bf16 kernels the modules train in
    32-true and say so (lightning_transfer.precision); emulated, a bf16 step of this CNN took 46 s against
    2.7 s in fp32, and a user's job was killed by its launcher's timeout."""
    env = {key: value for key, value in ENV.items() if key not in (KEEP_ENV, "PYTHONWARNINGS")}
    result = launch(args, cwd=cwd, env=env)
    assert ("training in 32-true" in result.stderr) == cpu_emulates_bf16(), result.stderr[-3000:]


def launch_with_torchrun(config: str, args: list[str], cwd: Path) -> None:
    """``ACCELERATOR=cpu GPUS=2 bash scripts/torchrun.sh CONFIG ARGS``: torchrun starts both processes
    and Lightning joins them (TorchElasticEnvironment) instead of launching its own."""
    from tests.helpers.ddp import free_port

    env = {**ENV, "ACCELERATOR": "cpu", "GPUS": "2", "MASTER_PORT": str(free_port()), "PYTHON": sys.executable}
    rest = args[args.index("--config") + 2:]  # the script gives `fit --config CONFIG` itself
    result = subprocess.run(["bash", str(ROOT / "scripts" / "torchrun.sh"), str(ROOT / config), *rest], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=420)
    assert result.returncode == 0, f"torchrun.sh exited {result.returncode}:\n{result.stderr[-5000:]}"


KILLED_AND_RESUMED = ("configs/bert/reviews_tiny.yaml", "ddp_bf16")  # this fit of the matrix is killed, then resumed
EVERY_TWO_STEPS = ["--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint", "--trainer.callbacks.filename",
                   "kill-{step}", "--trainer.callbacks.every_n_train_steps", "2", "--trainer.callbacks.save_top_k", "-1",
                   "--trainer.callbacks.monitor", "null", "--trainer.limit_train_batches", "8"]


def kill_mid_epoch_and_resume(args: list[str], root: Path, cwd: Path) -> None:
    """Run a fit of one 8-step epoch that checkpoints every 2 steps; SIGKILL every process of it when
    the step-4 checkpoint appears (mid-epoch), then resume from the step-2 one (complete by then) with
    ``--ckpt_path``. The resumed run must end at step 8, having logged steps 2..7 only."""
    args = [*args, *EVERY_TWO_STEPS]
    process = subprocess.Popen([ENTRY, *args], cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)  # its own process group: both ranks are killed together
    deadline = time.monotonic() + 300
    try:
        while not list(root.rglob("kill-step=4.ckpt")):
            assert process.poll() is None, f"the run ended before it could be killed:\n{process.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "no step-4 checkpoint after 300 s"
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (root / "best_checkpoint.txt").exists()  # killed before the end of fit
    (resume_from,) = root.rglob("kill-step=2.ckpt")

    launch([*args, "--ckpt_path", str(resume_from)], cwd=cwd)
    resumed = sorted((root / "lightning_logs").iterdir())[-1]  # the resumed run logs into a new version
    steps = [int(row["step"]) for row in read_metrics_csv(resumed) if row.get("train/loss")]
    assert steps and min(steps) >= 2 and max(steps) == 7, steps  # steps 2..7 (0-based): from the checkpoint on
    assert torch.load(resumed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 8
