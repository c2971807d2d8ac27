"""Every fine-tuning run tries each ``--lr-factors`` LR, keeps the one the validation set picks and
tests only that one; the plan pays for every trial."""

import dataclasses

import lightning.pytorch as pl
import pytest

from lightning_transfer.transfer import recipes
from lightning_transfer.transfer.budget import RESERVE_SECONDS, FinetuneRun, make_plan
from lightning_transfer.transfer.inputs import prepare_data
from lightning_transfer.transfer.pipeline import Transfer
from lightning_transfer.transfer.settings import DEFAULT_LR_FACTORS, parse_settings
from tests.helpers.images import write_image_folder
from tests.transfer.test_budget import TIMINGS, shapes


def test_the_factors_parse_sorted_and_default_to_a_grid_around_the_recipe():
    argv = ["data", "--output-dir", "out"]
    assert parse_settings(argv).lr_factors == DEFAULT_LR_FACTORS
    assert 1.0 in DEFAULT_LR_FACTORS and len(DEFAULT_LR_FACTORS) > 1
    assert parse_settings([*argv, "--lr-factors", "10,0.001,1,1"]).lr_factors == (0.001, 1.0, 10.0)
    assert "lr_factors" in parse_settings(argv).result_settings()  # a changed grid reruns the runs


def test_each_run_keeps_the_lr_with_the_best_validation_accuracy_and_tests_it_alone(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "images", classes=("cat", "dog", "owl"), per_class=16, size=8)
    argv = [str(root), "--output-dir", str(tmp_path / "out"), "--test-size", "6", "--val-size", "9"]
    # 2e-6 leaves a random network where it was; 2e-3 and 2e-2 learn the classes' brightness
    settings = parse_settings([*argv, "--lr-factors", "0.001,1,10", "--no-progress", "--trainer.accelerator", "cpu"])
    transfer = Transfer(settings)
    transfer.data = prepare_data(settings, transfer.out / "data")
    module, _ = recipes.simclr_stage(transfer.data, settings, batch_size=4)
    encoder = module.export_encoder(tmp_path / "encoder")

    validated: list[tuple[float, float]] = []  # (lr, validation accuracy) of every trial, in order
    tested: list[float] = []
    validate, test = pl.Trainer.validate, pl.Trainer.test

    def spy_validate(trainer, model, *args, **kwargs):
        result = validate(trainer, model, *args, **kwargs)
        validated.append((model.hparams.lr, float(result[0]["val/acc"])))
        return result

    def spy_test(trainer, model, *args, **kwargs):
        tested.append(model.hparams.lr)
        return test(trainer, model, *args, **kwargs)

    monkeypatch.setattr(pl.Trainer, "validate", spy_validate)
    monkeypatch.setattr(pl.Trainer, "test", spy_test)
    run = FinetuneRun("scratch", 8, 0, "full", batch_size=8, epochs=6, steps=18, seconds=1.0)
    record, trainer = transfer.finetune(run, encoder)

    assert [lr for lr, _ in validated] == pytest.approx([2e-6, 2e-3, 2e-2])
    accuracies = [accuracy for _, accuracy in validated]
    assert max(accuracies) > min(accuracies)  # the grid matters here, so a wrong pick shows
    best = accuracies.index(max(accuracies))  # the first of equals: the smaller LR
    assert best != 0  # a random network does not beat the trained ones
    assert tested == pytest.approx([validated[best][0]])  # the test set sees the kept model only
    assert record["lr"] == pytest.approx(validated[best][0])
    assert record["lr_factor"] == (0.001, 1.0, 10.0)[best]
    assert record["val_accuracy"] == round(max(accuracies), 4)
    assert record["val_accuracy_by_lr"] == "; ".join(f"{lr:.3g}: {acc:.4f}" for lr, acc in validated)
    assert trainer.lightning_module.hparams.lr == pytest.approx(validated[best][0])  # the checkpoint saved
    logs = sorted(p.name for p in (transfer.out / "logs").iterdir())
    assert logs == sorted(f"{run.name}-lr{f}x" for f in ("0.001", "1", "10"))  # a log per trial


def test_the_plan_pays_for_every_trial_and_one_test_pass_and_pretraining_gets_what_is_left():
    timings = dataclasses.replace(TIMINGS, finetune_test=1.5)
    one = make_plan(900, 30, timings, shapes(), default_finetune_steps=100, pretrain_batch_size=128)
    three = make_plan(900, 30, timings, shapes(), default_finetune_steps=100, pretrain_batch_size=128, lr_trials=3)
    assert [r.steps for r in three.runs] == [r.steps for r in one.runs]  # the same runs
    # one run: 1.5 s of test pass; three trials: three times the rest, one test pass
    assert [r.seconds for r in three.runs] == pytest.approx([3 * (r.seconds - 1.5) + 1.5 for r in one.runs])
    finetuning = sum(r.seconds for r in three.runs)
    assert three.pretrain_steps == int((900 - 30 - RESERVE_SECONDS - finetuning - TIMINGS.pretrain_fixed) / 0.5)
    assert three.pretrain_steps < one.pretrain_steps
    assert "each at 3 LRs (validation picks)" in three.describe()
    assert "LRs" not in one.describe()
