"""Tokenized examples for training steps on made-up text (the host-sync guard test and
``scripts/gpu_sync_check.py`` share them)."""

import numpy as np


def pretraining_examples(n: int, length: int, vocab: int, batch: int) -> list[dict]:
    """``[CLS] A [SEP] B [SEP]`` pretraining examples (ids 2 and 3 as CLS and SEP, the others in
    ``[5, vocab)``). Alternate runs of ``batch`` rows are full (``length``: no padding, no
    attention_mask after collation) and shorter (padded batches)."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        real = length if (i // batch) % 2 == 0 else length // 2 + i % (length // 2)
        half = real // 2
        ids = rng.integers(5, vocab, real)
        ids[0], ids[half], ids[-1] = 2, 3, 3
        special = np.zeros(real, dtype=np.int64)
        special[[0, half, real - 1]] = 1
        rows.append(
            {
                "input_ids": ids,
                "token_type_ids": (np.arange(real) > half).astype(np.int64),
                "special_tokens_mask": special,
                "next_sentence_label": i % 2,
            }
        )
    return rows


def classification_examples(n: int, shortest: int, vocab: int, classes: int = 3) -> list[dict]:
    """Single-sentence examples of ``shortest`` to ``2 * shortest`` tokens, labels cycling over ``classes``."""
    rng = np.random.default_rng(1)
    return [
        {
            "input_ids": rng.integers(5, vocab, shortest + i % (shortest + 1)),
            "token_type_ids": np.zeros(shortest + i % (shortest + 1), dtype=np.int64),
            "labels": i % classes,
        }
        for i in range(n)
    ]
