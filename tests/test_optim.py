"""LARS against its equations, the parameter split, the warmup schedules and the settings check."""
import math

import pytest
import torch

from lightning_transfer.errors import UserInputError
from lightning_transfer.optim import LARS, build_optimizer, check_optimization_settings, split_decay_groups, warmup_factor


def test_lars_step_matches_equations_and_excluded_groups_are_plain_sgd_momentum():
    torch.manual_seed(0)
    w, b = torch.randn(4, 3, requires_grad=True), torch.randn(4, requires_grad=True)
    opt = LARS([{"params": [w], "weight_decay": 0.1}, {"params": [b], "weight_decay": 0.0, "lars_exclude": True}],
               lr=0.5, momentum=0.9, trust_coefficient=0.01)
    w0, b0 = w.detach().clone(), b.detach().clone()
    gw, gb = torch.randn(4, 3), torch.randn(4)
    velocity_w, velocity_b = torch.zeros_like(w0), torch.zeros_like(b0)
    for step in range(3):
        w.grad, b.grad = gw.clone(), gb.clone()
        g = gw + 0.1 * w0
        trust = 0.01 * w0.norm() / (g.norm() + 1e-8)
        velocity_w = (0.9 * velocity_w + trust * g) if step else trust * g
        velocity_b = (0.9 * velocity_b + gb) if step else gb.clone()
        w0, b0 = w0 - 0.5 * velocity_w, b0 - 0.5 * velocity_b
        opt.step()
        torch.testing.assert_close(w.detach(), w0)
        torch.testing.assert_close(b.detach(), b0)


def test_split_decay_groups_excludes_bias_and_norm_and_frozen():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    net[2].weight.requires_grad_(False)
    decay, no_decay = split_decay_groups(net.named_parameters(), weight_decay=0.05)
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 3])]
    assert len(no_decay["params"]) == 4 and no_decay["weight_decay"] == 0.0 and no_decay["lars_exclude"]


def test_split_decay_groups_for_fine_tuning_keeps_frozen_parameters_and_names_the_groups():
    """Gradual unfreezing puts parameters that are frozen now into the optimizer from the start, in
    groups named for LearningRateMonitor, each with its own lr."""
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    net.requires_grad_(False)
    decay, no_decay = split_decay_groups(net.named_parameters(), 0.05, name="encoder.1", keep_frozen=True, lr=0.5)
    assert decay == {"params": [net[0].weight, net[2].weight], "weight_decay": 0.05, "name": "encoder.1", "lr": 0.5}
    assert list(no_decay) == ["params", "weight_decay", "lars_exclude", "name", "lr"]
    assert no_decay["params"] == [net[0].bias, net[1].weight, net[1].bias, net[2].bias]
    assert (no_decay["weight_decay"], no_decay["lars_exclude"], no_decay["name"], no_decay["lr"]) == (0.0, True, "encoder.1.no_decay", 0.5)
    assert split_decay_groups(net.named_parameters(), 0.05, name="encoder.1") == []  # frozen ones left out by default


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_warmup_factor_formula(schedule):
    warmup, total = 10, 110
    assert warmup_factor(0, warmup, total, schedule) == pytest.approx(0.1)
    assert warmup_factor(9, warmup, total, schedule) == pytest.approx(1.0)
    p = 40 / 100
    expected = {"cosine": 0.5 * (1 + math.cos(math.pi * p)), "linear": 1 - p, "constant": 1.0}[schedule]
    assert warmup_factor(50, warmup, total, schedule) == pytest.approx(expected)
    assert warmup_factor(total, warmup, total, schedule) == pytest.approx(0.0 if schedule != "constant" else 1.0, abs=1e-12)


def test_build_optimizer_and_warmup_factor_reject_unknown_names():
    with pytest.raises(UserInputError, match="unknown optimizer 'adagrad'; choose one of lars, adamw, sgd, adam"):
        build_optimizer("adagrad", [{"params": [torch.nn.Parameter(torch.zeros(1))]}], lr=0.1)
    with pytest.raises(UserInputError, match="unknown schedule 'step'; choose one of cosine, linear, constant"):
        warmup_factor(0, 1, 10, "step")


GOOD = {"optimizer": "lars", "lr": 0.3, "weight_decay": 1e-6, "momentum": 0.9, "betas": (0.9, 0.999),
        "warmup_steps": None, "warmup_fraction": 0.1, "schedule": "cosine", "min_lr_factor": 0.0}


def test_check_optimization_settings_accepts_usable_settings():
    check_optimization_settings(**GOOD)
    check_optimization_settings(**{**GOOD, "optimizer": "AdamW", "betas": [0.0, 0.5], "warmup_steps": 10, "momentum": 0.0,
                                   "weight_decay": 0, "min_lr_factor": 1})


@pytest.mark.parametrize("setting, value", [("optimizer", "adagrad"), ("lr", 0), ("lr", float("inf")), ("lr", True),
                                            ("weight_decay", -1e-4), ("momentum", 1), ("betas", (0.9, 0.99, 0.999)),
                                            ("betas", ("0.9", 0.999)), ("warmup_steps", -5), ("warmup_fraction", 1),
                                            ("schedule", "Cosine"), ("min_lr_factor", 2)])
def test_check_optimization_settings_names_the_bad_setting_and_its_value(setting, value):
    with pytest.raises(UserInputError) as info:
        check_optimization_settings(**{**GOOD, setting: value})
    assert setting in str(info.value) and repr(value) in str(info.value)


@pytest.mark.parametrize("name", ["adamw", "adam"])
def test_build_optimizer_uses_fused_adam_on_cpu_with_the_same_update_as_foreach(name):
    torch.manual_seed(0)
    start = [torch.randn(5, 3), torch.randn(3)]
    params = {impl: [torch.nn.Parameter(t.clone()) for t in start] for impl in ("fused", "foreach")}
    fused = build_optimizer(name, [{"params": params["fused"]}], lr=0.01, weight_decay=0.1)
    reference = getattr(torch.optim, "AdamW" if name == "adamw" else "Adam")(
        params["foreach"], lr=0.01, weight_decay=0.1, foreach=True)
    assert fused.defaults["fused"] is True
    for step in range(3):
        grads = [torch.randn_like(t) for t in start]
        for impl, optimizer in (("fused", fused), ("foreach", reference)):
            for p, g in zip(params[impl], grads):
                p.grad = g.clone()
            optimizer.step()
    for a, b in zip(params["fused"], params["foreach"]):
        torch.testing.assert_close(a, b)
