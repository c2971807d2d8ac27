"""Frozen-feature evaluation: the linear evaluation protocol and the kNN classifier of SSL papers.

- :func:`extract_features` once with a frozen encoder, then :func:`linear_probe_accuracy` fits a
  multinomial logistic regression on them (full-batch L-BFGS, L2 penalty). Much faster than an epoch
  loop, and the standard way SimCLR and its successors report representation quality.
- :func:`knn_predict`: the weighted kNN vote (Wu et al. 2018) that ``SimCLRModule`` uses as its
  validation monitor.
- :class:`WeightedMean`: a running mean over the tokens or samples of an epoch, updated without
  reading anything on the host (training metrics that cost no host-device synchronization).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torchmetrics import Metric


@torch.no_grad()
def extract_features(
    encoder: torch.nn.Module,
    batches: Iterable[dict],
    transform: Callable[[dict], dict] = lambda b: b,
    device: str | torch.device = "cpu",
    max_samples: int | None = None,
    embed: Callable[[dict], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``encoder`` in eval mode over ``{"images", "labels"}`` batches (after ``transform``);
    returns ``(features float32 N x F, labels int64 N)`` on the CPU.

    ``max_samples``: stop after that many examples (the first ones). ``embed``: how to get the
    features of a transformed batch when it is not ``encoder(batch["images"])`` (e.g. a
    FineTuneModule's ``features``, which also pools text); ``encoder`` is then only switched to eval.
    """
    was_training = encoder.training
    encoder.eval()
    embed = embed or (lambda batch: encoder(batch["images"].to(device)))
    features, labels, seen = [], [], 0
    for batch in batches:
        if max_samples is not None and seen >= max_samples:
            break
        batch = transform(batch)
        features.append(embed(batch).float().cpu())
        labels.append(batch["labels"].cpu())
        seen += len(labels[-1])
    encoder.train(was_training)
    features_, labels_ = torch.cat(features), torch.cat(labels)
    return (features_, labels_) if max_samples is None else (features_[:max_samples], labels_[:max_samples])


def linear_probe_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    l2: float = 1e-4,
    max_iter: int = 200,
) -> float:
    """Fit ``softmax(W x + b)`` on standardized training features by minimizing
    ``CE + l2 * |W|^2`` with L-BFGS; return accuracy on the test features (a fraction)."""
    mean, std = train_features.mean(0), train_features.std(0) + 1e-6
    x_train, x_test = (train_features - mean) / std, (test_features - mean) / std
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    linear = torch.nn.Linear(x_train.shape[1], num_classes)
    optimizer = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(linear(x_train), train_labels) + l2 * linear.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        return (linear(x_test).argmax(1) == test_labels).float().mean().item()


def knn_predict(
    query: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
) -> torch.Tensor:
    """Weighted kNN class scores (Wu et al. 2018): each of the ``k`` most cosine-similar bank
    features votes for its label with weight ``exp(sim / temperature)``.

    ``query`` is ``Q x D``, ``bank`` ``N x D`` (any float dtype, not necessarily normalized),
    ``bank_labels`` int64 ``N`` in ``[0, num_classes)``; ``k`` is capped at ``N``. Returns float32
    ``Q x num_classes`` scores, computed in float32 also under autocast."""
    with torch.autocast(device_type=query.device.type, enabled=False):  # float32 even under bf16/fp16 autocast
        query, bank = F.normalize(query.float(), dim=1), F.normalize(bank.float(), dim=1)
        sims, idx = (query @ bank.T).topk(min(k, bank.shape[0]), dim=1)
        votes = torch.zeros(query.shape[0], num_classes, device=query.device, dtype=sims.dtype)
        return votes.scatter_add_(1, bank_labels[idx], (sims / temperature).exp())


class WeightedMean(Metric):
    """Running ``sum(values) / sum(weights)`` over an epoch, summed over processes under DDP: the mean
    over every token (or sample) seen, however the batches were sized.

    ``update(value_sum, weight)``: a batch's summed value (a tensor, e.g. the loss summed over its N
    tokens, or its number of correct predictions) and how many it covers (a tensor or a Python
    number, e.g. N). Neither is read on the host, so an update never waits for the device;
    torchmetrics' ``MeanMetric`` checks every update for NaN with a host-side branch, one
    host-device synchronization per update (and ignores the weights with ``nan_strategy="disable"``).
    A NaN or infinite value makes the result NaN or infinite instead of being dropped. Before any
    weight, :meth:`compute` gives NaN (0 / 0).
    """

    full_state_update = False
    total: torch.Tensor
    weight: torch.Tensor

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("weight", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, value_sum: torch.Tensor, weight: torch.Tensor | float) -> None:
        self.total += value_sum.detach().sum().to(self.total.dtype)
        self.weight += weight.detach().sum().to(self.weight.dtype) if isinstance(weight, torch.Tensor) else weight

    def compute(self) -> torch.Tensor:
        return self.total / self.weight
