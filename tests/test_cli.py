"""The lightning-transfer CLI's own behaviour: --print_config, one-line errors, and recipes that compose
configs/base/loggers.yaml and configs/base/callbacks.yaml and still run alone. Every config fitting,
testing, predicting and resuming through the real process: tests/test_launch_matrix.py."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_print_config_resolves_every_argument(capsys):
    config = _resolved_config(["--config", str(ROOT / "configs/simclr/mnist.yaml")], capsys)
    assert config["model"]["class_path"] == "lightning_transfer.SimCLRModule"
    assert config["model"]["init_args"]["temperature"] == 0.2 and config["data"]["init_args"]["source"] == "mnist_demo"


def test_bad_input_is_one_line_from_the_cli(tmp_path):
    result = subprocess.run([sys.executable, "-m", "lightning_transfer.cli", "fit", "--config", "configs/simclr/mnist.yaml",
                             "--model.init_args.backbone", "resnet19", "--trainer.default_root_dir", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("lightning-transfer: error:")]
    assert len(error_lines) == 1 and "unknown backbone 'resnet19'" in error_lines[0]
    assert "Traceback" not in result.stderr


RECIPES = sorted(p for p in (ROOT / "configs").glob("*/*.yaml") if p.parent.name != "base")
SHARED_LOGGERS = "logger: ../base/loggers.yaml"  # how a recipe composes configs/base/loggers.yaml
LOGGER_CLASSES = ["lightning.pytorch.loggers.TensorBoardLogger", "lightning.pytorch.loggers.CSVLogger"]
SHARED_CALLBACKS = "callbacks: ../base/callbacks.yaml"  # and configs/base/callbacks.yaml
CALLBACK_CLASSES = ["lightning_transfer.callbacks.StopOnNonFiniteLoss", "lightning_transfer.callbacks.BestCheckpoint",
                    "lightning_transfer.callbacks.LatestCheckpoint", "lightning.pytorch.callbacks.ModelCheckpoint", "lightning.pytorch.callbacks.LearningRateMonitor",
                    "lightning_transfer.callbacks.TrainingCurvesPlot", "lightning_transfer.callbacks.EmbeddingProjectionPlot"]


def _resolved_config(args: list[str], capsys) -> dict:
    """``lightning-transfer fit ARGS --print_config``, in this process, as a dict."""
    from lightning_transfer.cli import main

    with pytest.raises(SystemExit) as done:
        main(["fit", *args, "--print_config"])
    assert done.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: f"{path.parent.name}/{path.stem}")
def test_every_recipe_composes_the_shared_loggers_and_callbacks(recipe, capsys, monkeypatch, tmp_path):
    text = recipe.read_text()
    assert SHARED_LOGGERS in text and "class_path: lightning.pytorch.loggers" not in text  # composed, not copied
    assert SHARED_CALLBACKS in text and yaml.safe_load(text)["trainer"]["callbacks"] == "../base/callbacks.yaml"
    monkeypatch.chdir(tmp_path)  # the base file is found relative to the recipe, from any working directory
    trainer = _resolved_config(["--config", str(recipe)], capsys)["trainer"]
    root = trainer["default_root_dir"]
    assert root == yaml.safe_load(text)["trainer"]["default_root_dir"]  # the recipe's own, as written
    assert [(entry["class_path"], entry["init_args"]["save_dir"]) for entry in trainer["logger"]] == [
        (LOGGER_CLASSES[0], root), (LOGGER_CLASSES[1], root)]
    callbacks = {entry["class_path"]: entry.get("init_args") for entry in trainer["callbacks"]}
    assert list(callbacks) == CALLBACK_CLASSES  # the best checkpoint is the first: its path goes to best_checkpoint.txt
    best = callbacks["lightning_transfer.callbacks.BestCheckpoint"]
    assert best["monitor"] is None and best["mode"] is None and not best["save_last"]  # the module's metric and mode
    assert callbacks["lightning_transfer.callbacks.LatestCheckpoint"]["filename"] == "last"  # last.ckpt: the newest state
    resume = callbacks["lightning.pytorch.callbacks.ModelCheckpoint"]
    assert (resume["filename"], resume["every_n_train_steps"], resume["save_top_k"], resume["monitor"]) == (
        "resume-{step}", 1000, 1, None)  # one resume point for every recipe


def test_the_shared_loggers_follow_default_root_dir_from_the_command_line(capsys, tmp_path):
    mine = str(tmp_path / "mine")
    trainer = _resolved_config(["--config", str(ROOT / "configs/simclr/mnist.yaml"), "--trainer.default_root_dir", mine],
                               capsys)["trainer"]
    assert trainer["default_root_dir"] == mine
    assert [entry["init_args"]["save_dir"] for entry in trainer["logger"]] == [mine, mine]


def test_a_bert_model_without_a_size_is_linked_to_the_data_tokenizer_and_built_at_once(tmp_path):
    from lightning_transfer.cli import build_cli

    common = ["--config", str(ROOT / "configs/bert/reviews_tiny.yaml"), "--trainer.default_root_dir", str(tmp_path),
              "--data.init_args.cache_dir", str(tmp_path / "cache"), "--data.init_args.tokenizer_vocab_size", "300"]
    cli = build_cli(common, run=False)
    size = cli.datamodule.tokenizer.get_vocab_size(with_added_tokens=True)
    assert 16 < size <= 300 and cli.model.hparams.vocab_size == size  # LightningCLI link_arguments, no setup yet
    assert cli.model.encoder.embeddings.word_embeddings.num_embeddings == size  # built with the data's size
    # a size the user gives is kept (setup then checks it against the data: tests/test_bad_input.py)
    given = build_cli([*common, "--model.init_args.vocab_size", "123"], run=False)
    assert given.model.hparams.vocab_size == 123


def test_models_without_a_vocabulary_ignore_the_link_and_their_checkpoints_load(tmp_path):
    from lightning_transfer import SimCLRModule
    from lightning_transfer.cli import build_cli

    cli = build_cli(["--config", str(ROOT / "configs/simclr/mnist.yaml"), "--trainer.default_root_dir", str(tmp_path),
                     "--trainer.fast_dev_run", "1", "--data.init_args.batch_size", "8"], run=False)
    assert type(cli.model).__name__ == "SimCLRModule" and "vocab_size" not in cli.model.hparams
    cli.trainer.fit(cli.model, cli.datamodule)
    cli.trainer.save_checkpoint(tmp_path / "simclr.ckpt")
    # Lightning's CLI instantiator stores the ignored link's value too; a stored vocab_size would reach __init__
    loaded = SimCLRModule.load_from_checkpoint(tmp_path / "simclr.ckpt")
    assert loaded.hparams.temperature == cli.model.hparams.temperature


def test_a_user_datamodule_with_its_own_vocab_size_and_a_model_without_one_fit_and_log_together(tmp_path):
    # Lightning merges the model's and the DataModule's logged hyperparameters and stops on a key with two
    # values; its CLI instantiator also gives the model the (ignored) link's value, which must not clash
    from tests.helpers.cli_classes import ModelWithoutVocabulary
    from lightning_transfer.cli import build_cli

    cli = build_cli(["--model", "tests.helpers.cli_classes.ModelWithoutVocabulary", "--data",
                     "tests.helpers.cli_classes.DataWithVocabulary", "--trainer.default_root_dir", str(tmp_path),
                     "--trainer.max_steps", "2", "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"],
                    run=False)
    cli.trainer.fit(cli.model, cli.datamodule)  # logs the merged hyperparameters
    logged = (Path(cli.trainer.log_dir) / "hparams.yaml").read_text()
    assert "vocab_size: 7" in logged and "width: 3" in logged
    cli.trainer.save_checkpoint(tmp_path / "model.ckpt")
    assert ModelWithoutVocabulary.load_from_checkpoint(tmp_path / "model.ckpt").hparams.width == 3
