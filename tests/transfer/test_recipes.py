"""A fine-tuning stage is built from its planned run: the strategy, epochs, batch size and label draw
the plan decided, whatever ``--strategy`` would decide again (calibration builds its runs the same way)."""

import dataclasses

import pytest

from lightning_transfer.data.sources import minilm_directory
from lightning_transfer.transfer import recipes
from lightning_transfer.transfer.budget import FinetuneRun
from lightning_transfer.transfer.inputs import prepare_data
from lightning_transfer.transfer.settings import parse_settings
from tests.helpers.images import write_image_folder
from tests.transfer.test_transfer_command import write_reviews


def test_an_image_stage_follows_its_run_and_lp_ft_probes_for_half_the_epochs(tmp_path):
    root = write_image_folder(tmp_path / "images", classes=("cat", "dog"), per_class=8, size=8)
    # --strategy full would say "full" for every run: the stage takes the run's decided strategy instead
    settings = parse_settings([str(root), "--output-dir", str(tmp_path / "out"), "--strategy", "full"])
    data = prepare_data(settings, tmp_path / "out" / "data")
    module, _ = recipes.simclr_stage(data, settings, batch_size=4)
    assert module.hparams.temperature == 0.5  # the default: the paper's CIFAR-10 value
    encoder = module.export_encoder(tmp_path / "encoder")
    warm = parse_settings([str(root), "--output-dir", str(tmp_path / "out"), "--temperature", "1.0"])
    assert recipes.simclr_stage(data, warm, batch_size=4)[0].hparams.temperature == 1.0

    run = FinetuneRun("pretrained", 3, 7, "lp_ft", batch_size=5, epochs=9, steps=18, seconds=1.0)
    module, datamodule = recipes.finetune_stage(data, settings, run, encoder)
    assert (module.hparams.strategy, module.hparams.init) == ("lp_ft", "pretrained")
    assert (module.hparams.lp_epochs, module.hparams.encoder_lr_factor) == (4, 0.5)
    assert (datamodule.hparams.labels_per_class, datamodule.hparams.subset_seed) == (3, 7)
    assert datamodule.hparams.batch_size == 5

    scratch = FinetuneRun("scratch", 1, 0, "linear", batch_size=2, epochs=1, steps=1, seconds=1.0)
    module, _ = recipes.finetune_stage(data, settings, scratch, encoder)
    assert (module.hparams.strategy, module.hparams.init, module.hparams.encoder_lr_factor) == (
        "linear",
        "scratch",
        1.0,
    )


@pytest.mark.parametrize("strategy, lr", [("linear", 1e-3), ("full", 1e-4)])
def test_a_text_stage_follows_its_run(tmp_path, strategy, lr):
    table = write_reviews(tmp_path / "reviews.csv")
    argv = [str(table), "--output-dir", str(tmp_path / "out"), "--text-column", "review", "--label-column", "verdict"]
    settings = parse_settings([*argv, "--max-seq-length", "16"])
    data = prepare_data(settings, tmp_path / "out" / "data")
    run = FinetuneRun("init_from", 4, 2, strategy, batch_size=3, epochs=2, steps=6, seconds=1.0)
    module, datamodule = recipes.finetune_stage(data, settings, run, minilm_directory())
    assert (module.hparams.strategy, module.hparams.lr, module.hparams.pooling) == (strategy, lr, "mean")
    tried = recipes.finetune_stage(data, settings, dataclasses.replace(run, lr_factor=3.0), minilm_directory())[0]
    assert tried.hparams.lr == pytest.approx(3 * lr)  # one of --lr-factors: a multiple of the recipe's LR
    assert (datamodule.hparams.labels_per_class, datamodule.hparams.subset_seed) == (4, 2)
    assert (datamodule.hparams.batch_size, datamodule.hparams.max_seq_length) == (3, 16)
