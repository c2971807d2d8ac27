"""Random access to a split of the shards refuses samples stored out of order: a position that holds
another sample would silently give it the wrong label."""
from __future__ import annotations

import pytest

from lightning_transfer.data.litdata_env import litdata
from lightning_transfer.data.shards import ShardDataset
from lightning_transfer.errors import UserInputError


def _reversed_sample(i: int) -> dict:
    return {"index": 3 - i, "label": 0}


def test_a_sample_stored_at_another_position_is_an_error(tmp_path):
    litdata.optimize(fn=_reversed_sample, inputs=list(range(4)), output_dir=str(tmp_path / "split"), chunk_size=2,
                     num_workers=1, start_method="fork", verbose=False)
    split = ShardDataset(str(tmp_path / "split"), 4)
    with pytest.raises(UserInputError, match=r"holds sample 3 at position 0: its shards are out of order"):
        split[0]
    with pytest.raises(IndexError):
        split[4]
