import random

import numpy as np
import torch
from torch.utils.data import DataLoader

from lightning_transfer.data.collators import ClassificationCollator, PretrainingCollator

CLS, SEP, PAD, MASK = 2, 3, 0, 4


# ------------------------------------------------------------------------------------------------
# Collator
# ------------------------------------------------------------------------------------------------
def _examples():
    rng = random.Random(0)
    out = []
    for n in (12, 30, 7):
        ids = [CLS] + [rng.randint(10, 99) for _ in range(n)] + [SEP]
        out.append(
            {
                "input_ids": np.array(ids),
                "token_type_ids": np.array([0] * (n // 2 + 1) + [1] * (n - n // 2 + 1)),
                "special_tokens_mask": np.array([1] + [0] * n + [1]),
                "word_ids": np.array([-1] + [k // 3 for k in range(n)] + [-1]),
                "next_sentence_label": n % 2,
            }
        )
    return out


def test_collator_pads_to_the_longest_and_labels_only_non_special_real_tokens():
    examples = _examples()
    batch = PretrainingCollator(PAD, MASK, 100, mlm_probability=0.5, seed=0)(examples)
    assert batch["input_ids"].shape == (3, 32) and batch["input_ids"].dtype == torch.long
    original = torch.full((3, 32), PAD)
    special = torch.ones(3, 32, dtype=torch.bool)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        original[i, :n] = torch.as_tensor(e["input_ids"])
        special[i, :n] = torch.as_tensor(e["special_tokens_mask"]).bool()
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (32 - n)
        assert batch["token_type_ids"][i, :n].tolist() == e["token_type_ids"].tolist()
        assert (batch["input_ids"][i, n:] == PAD).all() and (batch["token_type_ids"][i, n:] == 0).all()
    selected = batch["labels"] != -100
    assert selected.any() and not (selected & special).any()
    assert torch.equal(batch["labels"][selected], original[selected])
    assert torch.equal(batch["input_ids"][~selected], original[~selected])
    assert batch["next_sentence_label"].tolist() == [0, 0, 1]


def test_collator_draws_a_new_mask_each_time_but_validation_masks_are_fixed():
    examples = _examples()
    train = PretrainingCollator(PAD, MASK, 100, seed=0)
    assert not torch.equal(train(examples)["labels"], train(examples)["labels"])
    val = PretrainingCollator(PAD, MASK, 100, seed=0, fixed=True)
    first = val(examples)["labels"]
    assert torch.equal(first, val(examples)["labels"])
    assert torch.equal(first, PretrainingCollator(PAD, MASK, 100, seed=0, fixed=True)(examples)["labels"])


def test_whole_word_collator_masks_every_piece_of_a_selected_word():
    examples = _examples()
    batch = PretrainingCollator(PAD, MASK, 100, mlm_probability=0.3, whole_word_masking=True, seed=1)(examples)
    for i, e in enumerate(examples):
        selected = (batch["labels"][i, : len(e["word_ids"])] != -100).tolist()
        for word in set(e["word_ids"].tolist()) - {-1}:
            flags = {s for s, w in zip(selected, e["word_ids"].tolist()) if w == word}
            assert len(flags) == 1


def test_masks_are_reproducible_across_runs_and_new_every_epoch_with_workers():
    examples = _examples() * 2

    def epochs(n):
        loader = DataLoader(
            examples, batch_size=6, num_workers=1, collate_fn=PretrainingCollator(PAD, MASK, 100, seed=0),
            generator=torch.Generator().manual_seed(0),
        )
        return [next(iter(loader))["labels"] for _ in range(n)]

    first, second = epochs(2), epochs(1)
    assert torch.equal(first[0], second[0])
    assert not torch.equal(first[0], first[1])


def test_collators_leave_out_the_attention_mask_only_when_no_row_is_padded():
    """Whether a batch is padded is known here, from the lengths: the model need not read it from the
    device (no mask means attend everywhere, and SDPA may take its fastest kernels)."""
    padded = _examples()
    same_length = [dict(e, input_ids=e["input_ids"][:7], token_type_ids=e["token_type_ids"][:7],
                        special_tokens_mask=e["special_tokens_mask"][:7], word_ids=e["word_ids"][:7]) for e in padded]
    collate = PretrainingCollator(PAD, MASK, 100, seed=0)
    assert "attention_mask" in collate(padded)
    assert "attention_mask" not in collate(same_length)
    classify = ClassificationCollator(PAD)
    rows = [{"input_ids": e["input_ids"], "token_type_ids": e["token_type_ids"], "labels": i} for i, e in enumerate(padded)]
    assert classify(rows)["attention_mask"].sum(1).tolist() == [14, 32, 9]
    assert "attention_mask" not in classify([dict(r, input_ids=r["input_ids"][:5], token_type_ids=r["token_type_ids"][:5])
                                             for r in rows])


def test_pretraining_batches_carry_the_flat_positions_of_their_labels():
    batch = PretrainingCollator(PAD, MASK, 100, mlm_probability=0.4, seed=2)(_examples())
    positions = batch["mlm_positions"]
    expected = [i for i, label in enumerate(batch["labels"].flatten().tolist()) if label != -100]
    assert positions.dtype == torch.long and positions.tolist() == expected and len(expected) > 3
    assert torch.equal(batch["labels"].flatten()[positions], batch["labels"][batch["labels"] != -100])
