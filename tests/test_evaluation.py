"""Frozen-feature evaluation: the weighted kNN vote against a naive reference, also under autocast; WeightedMean."""
import math

import pytest
import torch
import torch.nn.functional as F

from lightning_transfer.evaluation import WeightedMean, knn_predict
from tests.helpers.knn import naive_knn_scores


def test_knn_predict_matches_a_naive_weighted_vote():
    torch.manual_seed(0)
    bank, labels, query = torch.randn(50, 8), torch.randint(0, 3, (50,)), torch.randn(4, 8)
    scores = knn_predict(query, bank, labels, 3, k=5, temperature=0.5)
    for q in range(4):
        sims = F.cosine_similarity(query[q : q + 1], bank)
        expected = torch.zeros(3)
        for j in sims.topk(5).indices:
            expected[labels[j]] += math.exp(sims[j] / 0.5)
        torch.testing.assert_close(scores[q], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_knn_predict_under_half_precision_autocast_is_float32_and_equals_the_float32_naive_vote(dtype):
    """The kNN monitor runs inside the validation step, under autocast with precision="bf16-mixed"
    (or 16-mixed): it must stay float32 (not crash on a half-precision similarity scattered into
    float32 votes, and not round the similarities to 3 digits)."""
    g = torch.Generator().manual_seed(0)
    bank, query = torch.randn(60, 16, generator=g), torch.randn(6, 16, generator=g)
    labels = torch.randint(0, 4, (60,), generator=g)
    with torch.autocast("cpu", dtype=dtype):
        scores = knn_predict(query, bank, labels, 4, k=7, temperature=0.1)
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores, naive_knn_scores(query, bank, labels, 4, 7, 0.1), rtol=1e-5, atol=1e-6)


def test_knn_predict_caps_k_at_the_bank_size():
    g = torch.Generator().manual_seed(1)
    bank, query, labels = torch.randn(5, 4, generator=g), torch.randn(3, 4, generator=g), torch.tensor([0, 1, 1, 2, 0])
    scores = knn_predict(query, bank, labels, 3, k=200, temperature=0.2)
    torch.testing.assert_close(scores, naive_knn_scores(query, bank, labels, 3, 5, 0.2), rtol=1e-5, atol=1e-6)


def test_weighted_mean_is_the_mean_over_every_item_of_unequal_batches():
    """Batches of 1, 5 and 14 items: the mean over all 20 items (not of the three batch means), with
    tensor and Python weights alike; reset starts over; a NaN is kept, not dropped."""
    torch.manual_seed(0)
    values = [torch.rand(n) for n in (1, 5, 14)]
    metric = WeightedMean()
    for i, v in enumerate(values):
        metric.update(v.sum(), torch.tensor(len(v)) if i % 2 else len(v))
    everything = torch.cat(values)
    assert metric.compute().item() == pytest.approx(everything.mean().item(), rel=1e-6)
    assert abs(everything.mean() - torch.stack([v.mean() for v in values]).mean()) > 0.01  # the two means differ
    metric.reset()
    metric.update(torch.tensor(3.0), 2)
    assert metric.compute().item() == 1.5
    metric.update(torch.tensor(float("nan")), 1)
    assert math.isnan(metric.compute().item())
