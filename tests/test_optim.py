"""LARS against its equations, the parameter split and the warmup schedules."""
import math

import pytest
import torch

from lightning_transfer.optim import LARS, build_optimizer, split_decay_groups, warmup_factor


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


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_warmup_factor_formula(schedule):
    warmup, total = 10, 110
    assert warmup_factor(0, warmup, total, schedule) == pytest.approx(0.1)
    assert warmup_factor(9, warmup, total, schedule) == pytest.approx(1.0)
    p = 40 / 100
    expected = {"cosine": 0.5 * (1 + math.cos(math.pi * p)), "linear": 1 - p, "constant": 1.0}[schedule]
    assert warmup_factor(50, warmup, total, schedule) == pytest.approx(expected)
    assert warmup_factor(total, warmup, total, schedule) == pytest.approx(0.0 if schedule != "constant" else 1.0, abs=1e-12)


def test_build_optimizer_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown optimizer 'adagrad'"):
        build_optimizer("adagrad", [{"params": [torch.nn.Parameter(torch.zeros(1))]}], lr=0.1)


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
