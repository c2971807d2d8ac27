"""A training DataLoader that resumes exactly, mid-epoch included.

Lightning 2.x restores a train loader's position only when the loader is *stateful* (has
``state_dict`` / ``load_state_dict``); otherwise a run resumed mid-epoch starts its loader again
from the first batch, with a new shuffle. :class:`ResumableDataLoader` is stateful:

- the shuffle order of epoch ``e`` comes from a generator seeded with ``(seed, e)`` (so do the
  DataLoader worker seeds), not from the global RNG;
- a collate function with ``set_epoch(epoch)`` is told the epoch before each pass, so it can seed
  its own randomness (augmentation, masking) from ``(seed, epoch)`` as well;
- ``state_dict()`` records the epoch and how many batches it has handed out; after
  ``load_state_dict`` the next pass draws and discards the batches already consumed, so the order,
  the worker streams and the collate function's generator are where the interrupted run left them;
- it also records the process's global random state (torch, CUDA, NumPy, Python) and restores it
  when the resumed pass is about to fetch its first new batch (after the discarded ones), which is
  where the interrupted run was when it wrote the checkpoint: dropout then draws what the
  uninterrupted run drew, whatever hooks drew from the global RNG since the load. (Lightning itself
  does not checkpoint random states. It loads the loader's state before the ``on_train_start`` hooks
  when it builds the loader after restoring the checkpoint, e.g. ``max_epochs=-1``; otherwise
  :func:`restore_loader_states` loads it in ``on_train_start``.)
- under DDP each process has its own random stream, but Lightning writes the checkpoint from process
  0 only: ``state_dict()`` gathers the states of all processes (``"rng_per_rank"``, in rank order,
  next to ``"rng"``, this process's own) and ``load_state_dict()`` gives each process its own back.
  A process with no saved state of its own (a checkpoint of one process, or a resume on more
  processes than were saved) falls back to ``"rng"``, process 0's. The gather is a collective: all
  processes must call ``state_dict()`` together, as Lightning does when it dumps a checkpoint
  (``Trainer.save_checkpoint`` runs on every process; only process 0 writes).

Lightning does not prefetch from a loader with a length, so "handed out" is "consumed" when a
checkpoint is written. Exact for ``num_workers=0`` and for workers without ``persistent_workers``
(persistent workers keep their random state across epochs, which a checkpoint cannot capture).
"""
from __future__ import annotations

import hashlib
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader

from lightning_transfer import distributed


def mix_seed(*parts: object) -> int:
    """A 63-bit seed from any printable parts (stable across processes and Python versions)."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class ResumableDataLoader(DataLoader):
    """``DataLoader(dataset, ..., seed=0)``: epoch-seeded shuffling plus a resumable position (see
    the module docstring). Any ``generator`` passed in is reseeded at the start of every epoch."""

    def __init__(self, dataset, *args: Any, seed: int = 0, generator: torch.Generator | None = None, **kwargs: Any):
        super().__init__(dataset, *args, generator=generator if generator is not None else torch.Generator(), **kwargs)
        self.seed = seed
        self._epoch = -1  # the epoch of the current (or last) pass
        self._consumed = 0  # batches handed out in that pass
        self._resume: tuple[int, int] | None = None
        self._resume_rng: dict[str, Any] | None = None  # global random state to restore in the resumed pass

    def state_dict(self) -> dict[str, Any]:
        """Position and random states. Under DDP a collective (all processes must call it together)."""
        rng = _rng_state()
        state = {"epoch": self._epoch, "consumed": self._consumed, "seed": self.seed, "rng": rng}
        if distributed.is_distributed():
            per_rank: list[Any] = [None] * distributed.world_size()
            torch.distributed.all_gather_object(per_rank, rng)
            state["rng_per_rank"] = per_rank
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume = (int(state["epoch"]), int(state["consumed"]))
        per_rank, rank = state.get("rng_per_rank") or [], distributed.rank()
        self._resume_rng = (per_rank[rank] if rank < len(per_rank) and per_rank[rank] else state.get("rng")) or None

    def __iter__(self) -> Iterator[Any]:
        return self._pass()

    def _pass(self) -> Iterator[Any]:
        # A generator: nothing happens until the first batch is asked for, so a state loaded after
        # Lightning called iter() (see restore_loader_states) still applies.
        rng, self._resume_rng = self._resume_rng, None
        if self._resume is not None:
            epoch, skip = self._resume
            self._resume = None
            if epoch < 0 or skip >= len(self):  # saved at the end of an epoch: start the next one
                epoch, skip = epoch + 1, 0
        else:
            epoch, skip = self._epoch + 1, 0
        self._epoch, self._consumed = epoch, 0
        self.generator.manual_seed(mix_seed("loader", self.seed, epoch))
        set_epoch = getattr(self.collate_fn, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
        iterator = super().__iter__()
        for _ in range(skip):  # drawn, not skipped by index: every RNG stream advances as it did
            next(iterator)
            self._consumed += 1
        if rng is not None:  # whatever the discarded batches drew: the next one starts where the run stopped
            _set_rng_state(rng)
        for batch in iterator:
            self._consumed += 1
            yield batch


def restore_loader_states(trainer) -> None:
    """Hand the checkpointed train-loader states to the loaders, if Lightning has not.

    Lightning loads them only when it builds the train loader after restoring the checkpoint; a
    module whose ``configure_optimizers`` reads ``trainer.estimated_stepping_batches`` (all of ours:
    the LR schedule spans the run) makes it build the loader earlier, and the states are then never
    loaded. Called from ``on_train_start``, before the first batch is drawn."""
    fit_loop = trainer.fit_loop
    if getattr(fit_loop, "_combined_loader_states_to_load", None) and fit_loop._combined_loader is not None:
        fit_loop._combined_loader._load_state_dicts(fit_loop._combined_loader_states_to_load)
        fit_loop._combined_loader_states_to_load = []
        # Saved after the epoch's last batch but before the loader ran dry (limit_train_batches):
        # Lightning goes on with the next epoch, so must the loaders.
        for loader in fit_loop._combined_loader.flattened:
            if isinstance(loader, ResumableDataLoader) and loader._resume is not None:
                epoch, consumed = loader._resume
                if consumed >= trainer.num_training_batches:
                    loader._resume = (epoch, len(loader))


def _rng_state() -> dict[str, Any]:
    """The global random states as tensors and plain Python values (``torch.load(weights_only=True)``
    refuses NumPy arrays)."""
    import random

    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]), "python_gauss": random.getstate()[2],
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), state["python_gauss"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
