"""The litdata training stream: sharded per process and worker, shuffled per epoch, resumable mid-epoch.

- :class:`EpochTaggedStream`: a ``litdata.StreamingDataset`` whose iteration yields ``(sample,
  epoch)``. litdata shards the samples over processes and DataLoader workers and shuffles them from
  ``(seed, epoch)``; the epoch travels with every sample so that a collate function running in a
  worker can seed its randomness (augmentation, masking) from ``(seed, epoch, the batch's sample
  ids)`` alone. Such a batch is augmented / masked the same whether it is drawn in an uninterrupted
  run or after a resume, with any number of workers (a sample appears once per epoch, so its id
  and the epoch name the batch).
- :class:`ResumableStreamingDataLoader`: a ``litdata.StreamingDataLoader`` that follows
  :class:`~lightning_transfer.data.resumable.MidEpochResumable`: its state (litdata's position:
  epoch, samples yielded per process, worker) also records every process's global random state,
  restored when the resumed pass yields its first batch (dropout then draws what the uninterrupted
  run drew); a loaded state takes effect when the next pass starts, so loading it twice (Lightning,
  then :class:`~lightning_transfer.data.resumable.ResumeTrainLoaders`) is harmless. That callback is
  what makes ``fit(ckpt_path=...)`` restore the position at all when ``configure_optimizers`` reads
  ``trainer.estimated_stepping_batches`` (Lightning #20550, litdata #775).

Build the dataset where the process group already exists (a DataModule's ``train_dataloader`` or
``setup``, never ``__init__``): litdata reads the world size and rank when the dataset is created.
Under DDP litdata forces ``drop_last``: every process gets ``(n // batch_size) // processes`` whole
batches and the rest of the epoch is dropped, so a tiny dataset can leave none;
:func:`check_stream_not_empty` turns that into a clear error. litdata shuffles chunk by chunk (the
chunks' order, then the samples inside each), which is why ``lightning-transfer optimize`` writes the
training samples in a random order and into several chunks. ``persistent_workers`` does not apply:
litdata's workers learn the epoch when they start. A resume must stream the same folder with the
same seed (a one-line error otherwise); another number of workers or processes is litdata's
"elastic" resume (no sample twice, but not the uninterrupted run's order).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from lightning_transfer import distributed
from lightning_transfer.data.litdata_env import litdata
from lightning_transfer.data.resumable import capture_rng_states, restore_rng_state, rng_state_of_this_process
from lightning_transfer.errors import UserInputError


class EpochTaggedStream(litdata.StreamingDataset):
    """``litdata.StreamingDataset(path, shuffle=True, seed=..., drop_last=...)`` whose iteration yields
    ``(sample, epoch)`` (litdata's epoch counter, 1 for the first pass). Indexing is unchanged."""

    def __next__(self) -> tuple[Any, int]:
        epoch = self.current_epoch  # read first: the end of the pass increments it
        return super().__next__(), epoch


class ResumableStreamingDataLoader(litdata.StreamingDataLoader):
    """``litdata.StreamingDataLoader`` with exact mid-epoch resume (see the module docstring).

    ``state_dict()`` under DDP is a collective (it gathers every process's random state), as
    :class:`~lightning_transfer.data.resumable.ResumableDataLoader`'s; Lightning calls it on every
    process when it writes a checkpoint."""

    def __init__(self, dataset: litdata.StreamingDataset, *args: Any, **kwargs: Any):
        super().__init__(dataset, *args, **kwargs)
        self._pending: dict[str, Any] | None = None  # a loaded state, applied when the next pass starts

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), **capture_rng_states()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending = state

    def batches_consumed(self, state: dict[str, Any]) -> int:
        return int(state["num_samples_yielded"]) // int(self.batch_size or 1)

    def state_at_epoch_end(self, state: dict[str, Any]) -> dict[str, Any]:
        # litdata resumes a pass only when part of it was yielded: with none, the next pass is the next epoch
        return {**state, "num_samples_yielded": 0}

    def __iter__(self) -> Iterator[Any]:
        return self._pass()

    def _pass(self) -> Iterator[Any]:
        # A generator: nothing happens until the first batch is asked for, so a state loaded after
        # Lightning called iter() (ResumeTrainLoaders, in on_train_start) still applies.
        state, self._pending = self._pending, None
        rng = None
        if state is not None:
            self._check_same_stream(state)
            super().load_state_dict(state)
            rng = rng_state_of_this_process(state)
        try:
            for batch in super().__iter__():
                if rng is not None:  # where the interrupted run was when it wrote the checkpoint
                    restore_rng_state(rng)
                    rng = None
                yield batch
        finally:
            # Lightning ends an epoch after len(self) batches without exhausting the iterator, and
            # litdata clears its "resuming" flag only on exhaustion: the next pass would replay the
            # loaded position instead of starting the next epoch (litdata #770).
            self.restore = False

    def _check_same_stream(self, state: dict[str, Any]) -> None:
        """litdata replays a position only over the very stream that wrote it (same folder, same
        seed); say so in one line instead of its error from inside a worker."""
        saved = state.get("dataset") or {}
        here = {"path": self.dataset.input_dir.path, "seed": self.dataset.seed}
        there = {"path": saved.get("input_dir_path"), "seed": saved.get("seed")}
        if there["path"] is not None and there["path"] != here["path"]:
            raise UserInputError(
                f"the checkpoint streamed the shards at {there['path']}, this run streams {here['path']}: resume "
                f"with data.root where the shards were (litdata resumes only the same stream)"
            )
        if there["seed"] is not None and there["seed"] != here["seed"]:
            raise UserInputError(
                f"the checkpoint's stream was shuffled with seed {there['seed']}, this run's with {here['seed']}; "
                f"resume with data.seed: {there['seed']}"
            )


def check_stream_not_empty(loader: ResumableStreamingDataLoader, path: str, count: int) -> None:
    """Raise :class:`UserInputError` when ``loader`` would give this process no batch at all."""
    if len(loader) > 0:
        return
    processes, batch_size = distributed.world_size(), loader.batch_size
    raise UserInputError(
        f"the litdata training set {path} has {count} samples, too few for {processes} process(es) with "
        f"batch_size {batch_size}: litdata gives every process the same number of whole batches "
        f"(drop_last, forced under DDP) and here that is none; lower data.batch_size, use fewer processes "
        f"or add samples"
    )


__all__ = ["EpochTaggedStream", "ResumableStreamingDataLoader", "check_stream_not_empty"]
