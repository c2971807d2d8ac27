"""Evaluation batches of texts of about one length: :class:`LengthSortedSampler`.

A text batch is padded to its longest row (:class:`~lightning_transfer.data.collators.ClassificationCollator`),
so a batch that mixes a 10-token snippet with a 120-token review spends most of its compute on padding.
Scored in order of length, the rows of a batch are about as long as each other and almost nothing is
padding; and a batch whose rows all have one length needs no attention mask at all. Accuracy, macro F1
and the confusion matrix do not depend on the order in which the examples are scored, so validation and
test are sorted; training keeps its shuffled order, and ``predict`` the dataset's order (the list that
``trainer.predict`` returns lines up with the rows).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from torch.utils.data import DistributedSampler

from lightning_transfer import distributed


class LengthSortedSampler(DistributedSampler):
    """This process's share of the examples, longest first.

    The indices are sorted by ``lengths`` (longest first, so a batch too large for memory fails at the
    first step, not the last; ties in index order), and process ``rank`` of ``num_replicas`` takes every
    ``num_replicas``-th of them from position ``rank`` on. So every example is scored exactly once (no
    padding with repeats, unlike the ``DistributedSampler`` that Lightning would put in, which counts some
    test examples twice), and at each step the processes' batches hold rows of about the same length.
    It is a ``DistributedSampler`` so that Lightning keeps it under DDP instead of wrapping it in one.

    Args:
        lengths: the length (in tokens) of each example of the dataset.
        num_replicas, rank: the processes (default: the current process group, or one process).
    """

    def __init__(self, lengths: Sequence[int], num_replicas: int | None = None, rank: int | None = None):
        num_replicas = distributed.world_size() if num_replicas is None else num_replicas
        rank = distributed.rank() if rank is None else rank
        super().__init__(lengths, num_replicas=num_replicas, rank=rank, shuffle=False)  # type: ignore[arg-type]
        order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
        self.indices = order[self.rank :: self.num_replicas]
        self.num_samples = len(self.indices)
        self.total_size = len(lengths)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return self.num_samples


__all__ = ["LengthSortedSampler"]
