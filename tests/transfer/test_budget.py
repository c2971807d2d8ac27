"""Sizing the stages to the budget: the plan's arithmetic against a hand computation."""

import math

import pytest

from lightning_transfer.errors import UserInputError
from lightning_transfer.transfer.budget import FINETUNE_SHARE, RESERVE_SECONDS, Plan, RunShape, Timings, make_plan

TIMINGS = Timings(
    pretrain_step=0.5,
    pretrain_fixed=4.0,
    finetune_batches=(10, 50),
    finetune_step=(0.1, 0.3),
    linear_step=0.04,
    finetune_fixed=2.0,
    calibration=12.0,
)


def shapes(labels=(1, 5), seeds=2):
    runs = []
    for k in labels:
        batch = min(64, 10 * k)
        for init, strategy in (("pretrained", "linear" if k < 5 else "lp_ft"), ("scratch", "full")):
            runs += [RunShape(init, k, seed, strategy, batch, 10 * k) for seed in range(seeds)]
    return runs


def test_the_step_cost_interpolates_between_the_timed_batches_and_freezing_costs_less():
    assert TIMINGS.step(10, "full") == pytest.approx(0.1)
    assert TIMINGS.step(30, "full") == pytest.approx(0.2)  # halfway between 0.1 at 10 and 0.3 at 50
    assert TIMINGS.step(10, "linear") == pytest.approx(0.04)
    assert TIMINGS.step(10, "lp_ft") == pytest.approx(0.07)


def test_a_roomy_budget_keeps_the_default_steps_and_gives_pretraining_the_rest():
    plan = make_plan(600, 30, TIMINGS, shapes(), default_finetune_steps=100, pretrain_batch_size=128)
    assert plan.finetune_steps == 100
    by_name = {run.name: run for run in plan.runs}
    one = by_name["finetune-pretrained-k1-seed0"]  # 10 examples, batch 10: 1 step per epoch
    assert (one.epochs, one.steps) == (100, 100)
    assert one.seconds == pytest.approx(2.0 + 100 * 0.04)
    five = by_name["finetune-scratch-k5-seed1"]  # 50 examples, batch 50: 1 step per epoch, full at 0.3 s
    assert five.seconds == pytest.approx(2.0 + 100 * 0.3)
    # per seed: pretrained k1 linear 2 + 100 * 0.04, scratch k1 2 + 100 * 0.1, pretrained k5 LP-FT
    # 2 + 100 * (0.2 + 0.3) / 2 (linear at batch 50: 0.04 * 5), scratch k5 2 + 100 * 0.3
    finetuning = sum(run.seconds for run in plan.runs)
    assert finetuning == pytest.approx(2 * (6.0 + 12.0 + 27.0 + 32.0))
    expected = math.floor((600 - 30 - RESERVE_SECONDS - 154.0 - 4.0) / 0.5)
    assert plan.pretrain_steps == expected == 794
    assert plan.estimate["total"] == pytest.approx(30 + 4.0 + expected * 0.5 + finetuning + RESERVE_SECONDS, abs=0.5)
    assert plan.estimate["total"] <= 600


def test_a_tight_budget_shrinks_fine_tuning_to_its_share_of_what_is_left():
    plan = make_plan(120, 20, TIMINGS, shapes(), default_finetune_steps=100, pretrain_batch_size=128)
    finetuning = sum(run.seconds for run in plan.runs)
    assert plan.finetune_steps < 100
    assert finetuning <= FINETUNE_SHARE * (120 - 20 - RESERVE_SECONDS)
    assert plan.pretrain_steps >= 1
    assert plan.estimate["total"] <= 120


def test_a_budget_that_cuts_fine_tuning_below_half_says_how_many_minutes_would_not():
    tight = make_plan(120, 20, TIMINGS, shapes(), default_finetune_steps=100, pretrain_batch_size=128)
    assert tight.finetune_steps < 50
    # the default 100 steps cost 2 * (6 + 12 + 27 + 32) = 154 s (test above); at 70% of what is left: 220 s,
    # plus the 20 s already spent and the 15 s reserve: 255 s, so 5 minutes
    assert f"cuts fine-tuning to ~{tight.finetune_steps} steps per run (the recipes' 100)" in tight.note
    assert "--budget-minutes 5 gives every run its 100" in tight.note
    assert f"note: {tight.note}" in tight.describe()
    roomy = make_plan(5 * 60, 20, TIMINGS, shapes(), default_finetune_steps=100, pretrain_batch_size=128)
    assert roomy.finetune_steps == 100 and roomy.note == "" and "note:" not in roomy.describe()


def test_lp_ft_runs_get_at_least_two_epochs():
    plan = make_plan(60, 10, TIMINGS, shapes(labels=(5,)), default_finetune_steps=1, pretrain_batch_size=8)
    assert all(run.epochs >= 2 for run in plan.runs if run.strategy == "lp_ft")


def test_a_budget_too_small_for_one_step_per_stage_says_how_many_minutes_it_needs():
    with pytest.raises(UserInputError, match=r"cannot run one step per stage.*--budget-minutes 2 or more") as err:
        make_plan(30, 25, TIMINGS, shapes(), default_finetune_steps=100, pretrain_batch_size=128)
    assert "\n" not in str(err.value)


def test_a_plan_survives_its_json_round_trip():
    import json

    plan = make_plan(600, 30, TIMINGS, shapes(), default_finetune_steps=100, pretrain_batch_size=128)
    again = Plan.from_dict(json.loads(json.dumps(plan.as_dict())))
    assert again == plan
    assert "pretraining" in again.describe() and "1 labels/class" in again.describe()


def test_the_step_timer_spreads_the_epoch_boundary_over_the_epoch():
    """Epochs of 4 steps of 0.1 s; the first step of each epoch costs 0.5 s more (a new loader): a
    stage pays 0.1 + 0.5 / 4 per step on average, not the 0.1 the steps within an epoch show."""
    from lightning_transfer.transfer.budget import StepTimer

    timer, now = StepTimer(), 0.0
    for step in range(12):
        index = step % 4
        now += 0.1 + (0.5 if index == 0 and step else 0.0)
        timer.ends.append((index, now))
    timer.batches_per_epoch = 4
    assert timer.seconds_per_step() == pytest.approx(0.1 + 0.5 / 4)
    timer.ends = [(i, 0.1 * i) for i in range(8)]  # one long epoch: no boundary seen
    assert timer.seconds_per_step() == pytest.approx(0.1)


def test_a_short_last_batch_is_costed_at_the_epochs_mean_batch():
    # 70 examples in batches of 50: 50 + 20, a mean of 35, 5/8 of the way from the timed 10 (0.1 s) to 50 (0.3 s)
    shape = RunShape("scratch", 7, 0, "full", 50, 70)
    plan = make_plan(600, 0, TIMINGS, [shape], default_finetune_steps=10, pretrain_batch_size=8)
    (run,) = plan.runs
    assert (run.epochs, run.steps) == (5, 10)
    assert run.seconds == pytest.approx(2.0 + 10 * 0.225)  # at the nominal 50: 2.0 + 10 * 0.3
