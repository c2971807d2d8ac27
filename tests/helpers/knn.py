"""The naive reference of the weighted kNN vote, shared by the evaluation and SimCLR monitor tests."""
import math

import torch
import torch.nn.functional as F


def naive_knn_scores(query: torch.Tensor, bank: torch.Tensor, labels: torch.Tensor, num_classes: int, k: int,
                     temperature: float) -> torch.Tensor:
    """Wu et al. 2018's weighted vote, one float32 query at a time, outside any autocast."""
    scores = torch.zeros(len(query), num_classes)
    for q in range(len(query)):
        sims = F.cosine_similarity(query[q : q + 1].float(), bank.float())
        for j in sims.topk(min(k, len(bank))).indices:
            scores[q, labels[j]] += math.exp(sims[j].item() / temperature)
    return scores
