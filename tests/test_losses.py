"""NT-Xent: against the paper's equation written as a naive loop, against lightly, and under DDP."""
import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from lightning_transfer.losses import nt_xent_loss


def naive_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> float:
    """Chen et al. 2020 eq. 1, one anchor at a time, in float64."""
    views = torch.cat([z1, z2]).double()
    n = z1.shape[0]
    total = 0.0
    for k in range(2 * n):
        positive = (k + n) % (2 * n)
        sim = lambda a, b: float(views[a] @ views[b] / (views[a].norm() * views[b].norm()))  # noqa: E731
        denominator = sum(math.exp(sim(k, j) / temperature) for j in range(2 * n) if j != k)
        total += -math.log(math.exp(sim(k, positive) / temperature) / denominator)
    return total / (2 * n)


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_nt_xent_equals_naive_per_anchor_loop(temperature):
    z1, z2 = torch.randn(7, 5) * 3, torch.randn(7, 5)
    assert nt_xent_loss(z1, z2, temperature).item() == pytest.approx(naive_nt_xent(z1, z2, temperature), rel=1e-5)


def test_nt_xent_matches_lightly_ntxentloss():
    from lightly.loss import NTXentLoss

    z1, z2 = torch.randn(16, 32), torch.randn(16, 32)
    ours = nt_xent_loss(z1, z2, temperature=0.3)
    theirs = NTXentLoss(temperature=0.3)(z1, z2)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)


def test_nt_xent_gradients_match_lightly():
    from lightly.loss import NTXentLoss

    z = torch.randn(2, 8, 16, requires_grad=True)
    nt_xent_loss(z[0], z[1], 0.5).backward()
    ours = z.grad.clone()
    z.grad = None
    NTXentLoss(temperature=0.5)(z[0], z[1]).backward()
    torch.testing.assert_close(ours, z.grad, rtol=1e-4, atol=1e-6)


def test_nt_xent_perfect_views_give_low_loss_and_random_views_near_log_2n_minus_1():
    z = F.normalize(torch.randn(64, 128), dim=1)
    assert nt_xent_loss(z, z, temperature=0.1) < 0.05
    random_loss = nt_xent_loss(torch.randn(64, 128), torch.randn(64, 128), temperature=1.0)
    assert random_loss.item() == pytest.approx(math.log(127), rel=0.02)


def test_nt_xent_is_fp32_under_bf16_autocast():
    z1, z2 = torch.randn(32, 64), torch.randn(32, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = nt_xent_loss(z1.bfloat16(), z2.bfloat16(), temperature=0.1)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(nt_xent_loss(z1.bfloat16().float(), z2.bfloat16().float(), 0.1).item(), rel=1e-5)


def test_nt_xent_keeps_float64_and_equals_the_naive_loop_to_float64_precision():
    """float64 inputs give a float64 loss equal to the float64 naive loop to ~1e-12 (a float32 pass
    would be off by ~1e-7); half-precision inputs are computed in, and returned as, float32."""
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(9, 6, generator=g, dtype=torch.float64) * 2, torch.randn(9, 6, generator=g, dtype=torch.float64)
    loss = nt_xent_loss(z1, z2, temperature=0.2)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(naive_nt_xent(z1, z2, 0.2), rel=1e-12, abs=1e-12)
    for half in (torch.bfloat16, torch.float16):
        h1, h2 = z1.to(half), z2.to(half)
        low = nt_xent_loss(h1, h2, temperature=0.2)
        assert low.dtype == torch.float32
        assert low.item() == pytest.approx(naive_nt_xent(h1, h2, 0.2), rel=1e-5)  # the rounded inputs, in float32


def test_nt_xent_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        nt_xent_loss(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="temperature"):
        nt_xent_loss(torch.randn(4, 3), torch.randn(4, 3), temperature=0.0)
    with pytest.raises(ValueError, match="at least 2"):
        nt_xent_loss(torch.randn(1, 3), torch.randn(1, 3))


# ----------------------------------------------------------------------------- DDP

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, inputs: torch.Tensor, weight: torch.Tensor, out_dir: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        model.weight.copy_(weight)
    n = inputs.shape[1] // world
    x1, x2 = inputs[0, rank * n:(rank + 1) * n], inputs[1, rank * n:(rank + 1) * n]  # different data per process
    loss = nt_xent_loss(model(x1), model(x2), temperature=0.2)
    loss.backward()
    grad = model.weight.grad.clone()
    dist.all_reduce(grad)
    grad /= world  # what DDP does to parameter gradients
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)
    mean_loss /= world
    torch.save({"loss": mean_loss, "grad": grad, "local_loss": loss.detach()}, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_two_process_gloo_nt_xent_equals_one_process_on_concatenated_batch(tmp_path):
    world, n, d_in, d_out = 2, 6, 10, 8
    inputs = torch.randn(2, world * n, d_in)
    weight = torch.randn(d_out, d_in)
    mp.spawn(_ddp_worker, args=(world, _free_port(), inputs, weight, str(tmp_path)), nprocs=world, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]

    model = torch.nn.Linear(d_in, d_out, bias=False)
    with torch.no_grad():
        model.weight.copy_(weight)
    reference = nt_xent_loss(model(inputs[0]), model(inputs[1]), temperature=0.2)
    reference.backward()

    assert results[0]["local_loss"].item() != pytest.approx(results[1]["local_loss"].item(), rel=1e-3)  # really different data
    for r in results:
        assert r["loss"].item() == pytest.approx(reference.item(), rel=1e-5)
        torch.testing.assert_close(r["grad"], model.weight.grad, rtol=1e-4, atol=1e-6)
