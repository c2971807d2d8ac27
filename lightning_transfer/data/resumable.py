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
  does not checkpoint random states.)
- under DDP each process has its own random stream, but Lightning writes the checkpoint from process
  0 only: ``state_dict()`` gathers the states of all processes (``"rng_per_rank"``, in rank order,
  next to ``"rng"``, this process's own) and ``load_state_dict()`` gives each process its own back.
  A process with no saved state of its own (a checkpoint of one process, or a resume on more
  processes than were saved) falls back to ``"rng"``, process 0's. The gather is a collective: all
  processes must call ``state_dict()`` together, as Lightning does when it dumps a checkpoint
  (``Trainer.save_checkpoint`` runs on every process; only process 0 writes).

Lightning saves ``state_dict()`` in every checkpoint and hands it back to ``load_state_dict()``
when it builds the train loader after restoring the checkpoint. A ``configure_optimizers`` that
reads ``trainer.estimated_stepping_batches`` (all of ours: the LR schedule spans the run) makes it
build the loader before, and Lightning then never loads the state (Lightning issue #20550; litdata
issue #775 is the same trap seen from a ``StreamingDataLoader``): the :class:`ResumeTrainLoaders`
callback, which :class:`~lightning_transfer.modules.base.OptimizedModule` adds to every fit, hands
it over with public hooks only, to every loader that follows the :class:`MidEpochResumable`
protocol (this module's loader, and the litdata one of :mod:`lightning_transfer.data.streaming`).

Lightning does not prefetch from a loader with a length, so "handed out" is "consumed" when a
checkpoint is written. Exact for ``num_workers=0`` and for workers without ``persistent_workers``
(persistent workers keep their random state across epochs, which a checkpoint cannot capture).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any, Protocol, cast, runtime_checkable

import torch
from lightning.pytorch import Callback
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader

from lightning_transfer import distributed


def mix_seed(*parts: object) -> int:
    """A 63-bit seed from any printable parts (stable across processes and Python versions)."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


@runtime_checkable
class MidEpochResumable(Protocol):
    """A train loader that :class:`ResumeTrainLoaders` gives its checkpointed state to.

    ``load_state_dict`` must be idempotent (Lightning may have loaded the same state already) and
    take effect when the loader's next pass starts. ``batches_consumed(state)``: how many batches of
    its epoch the state says were consumed; ``state_at_epoch_end(state)``: the same state, marked so
    that the next pass starts the following epoch (a checkpoint written after the last batch that
    ``limit_train_batches`` lets an epoch have)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def batches_consumed(self, state: dict[str, Any]) -> int: ...

    def state_at_epoch_end(self, state: dict[str, Any]) -> dict[str, Any]: ...


class ResumableDataLoader(DataLoader):
    """``DataLoader(dataset, ..., seed=0)``: epoch-seeded shuffling plus a resumable position (see
    the module docstring). Any ``generator`` passed in is reseeded at the start of every epoch."""

    def __init__(self, dataset, *args: Any, seed: int = 0, generator: torch.Generator | None = None, **kwargs: Any):
        kwargs["generator"] = generator if generator is not None else torch.Generator()
        super().__init__(dataset, *args, **kwargs)
        self.seed = seed
        self._epoch = -1  # the epoch of the current (or last) pass
        self._consumed = 0  # batches handed out in that pass
        self._resume: tuple[int, int] | None = None
        self._resume_rng: dict[str, Any] | None = None  # global random state to restore in the resumed pass

    def state_dict(self) -> dict[str, Any]:
        """Position and random states. Under DDP a collective (all processes must call it together)."""
        return {"epoch": self._epoch, "consumed": self._consumed, "seed": self.seed, **capture_rng_states()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume = (int(state["epoch"]), int(state["consumed"]))
        self._resume_rng = rng_state_of_this_process(state)

    def batches_consumed(self, state: dict[str, Any]) -> int:
        return int(state["consumed"])

    def state_at_epoch_end(self, state: dict[str, Any]) -> dict[str, Any]:
        return {**state, "consumed": len(self)}

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]  # torch says _BaseDataLoaderIter; any iterator serves
        return self._pass()

    def _pass(self) -> Iterator[Any]:
        # A generator: nothing happens until the first batch is asked for, so a state loaded after
        # Lightning called iter() (by ResumeTrainLoaders, in on_train_start) still applies.
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
            restore_rng_state(rng)
        for batch in iterator:
            self._consumed += 1
            yield batch


class ResumeTrainLoaders(Callback):
    """Gives each :class:`MidEpochResumable` loader among the train loaders (:class:`ResumableDataLoader`,
    :class:`~lightning_transfer.data.streaming.ResumableStreamingDataLoader`) the state that Lightning
    saved for it in the checkpoint, in ``on_train_start`` (before the first batch is drawn).

    Lightning loads these states itself only when it builds the train loaders after restoring the
    checkpoint (see the module docstring); loading the same state twice is harmless, since these
    loaders apply it only when their next pass starts. Other stateful loaders are left to Lightning.
    The states are read from
    the checkpoint's fit-loop section (``loops/fit_loop/state_dict/combined_loader``, a layout that
    Lightning's checkpoint migrations maintain), one per stateful train loader in flattened order.

    A checkpoint saved after the last batch that ``limit_train_batches`` lets an epoch have, but
    before the loader ran dry, resumes in the next epoch, as Lightning does."""

    def __init__(self) -> None:
        self.states: list[dict[str, Any]] = []

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
        self.states = list(fit_loop.get("state_dict", {}).get("combined_loader", []))

    def on_train_start(self, trainer, pl_module) -> None:
        states, self.states = self.states, []
        if not states or trainer.train_dataloader is None:
            return
        loaders = CombinedLoader(trainer.train_dataloader).flattened
        stateful = [
            loader for loader in loaders if hasattr(loader, "state_dict") and hasattr(loader, "load_state_dict")
        ]
        if len(stateful) != len(states):
            raise RuntimeError(
                f"the checkpoint holds the states of {len(states)} stateful train loaders, this fit has "
                f"{len(stateful)}: resume with the train loaders that wrote it"
            )
        for loader, state in zip(stateful, states):
            if isinstance(loader, MidEpochResumable):
                if loader.batches_consumed(state) >= trainer.num_training_batches:  # the epoch is over for Lightning
                    state = loader.state_at_epoch_end(state)
                loader.load_state_dict(state)


def capture_rng_states() -> dict[str, Any]:
    """``{"rng": this process's global random states}``, plus under DDP ``"rng_per_rank"``: every
    process's, in rank order (a collective: all processes must call it together). What a loader's
    ``state_dict`` records so that :func:`rng_state_of_this_process` gives each process its own back."""
    rng = _rng_state()
    if not distributed.is_distributed():
        return {"rng": rng}
    per_rank: list[Any] = [None] * distributed.world_size()
    torch.distributed.all_gather_object(per_rank, rng)
    return {"rng": rng, "rng_per_rank": per_rank}


def rng_state_of_this_process(state: dict[str, Any]) -> dict[str, Any] | None:
    """This process's random states in a state of :func:`capture_rng_states`; a process the state has
    none for (a checkpoint of fewer processes) gets process 0's; ``None`` when the state has none."""
    per_rank, rank = state.get("rng_per_rank") or [], distributed.rank()
    return (per_rank[rank] if rank < len(per_rank) and per_rank[rank] else state.get("rng")) or None


def restore_rng_state(state: dict[str, Any]) -> None:
    """Set the global random states (torch, CUDA, NumPy, Python) to ``state`` (see :func:`capture_rng_states`)."""
    _set_rng_state(state)


def _rng_state() -> dict[str, Any]:
    """The global random states as tensors and plain Python values (``torch.load(weights_only=True)``
    refuses NumPy arrays)."""
    import random

    import numpy as np

    # legacy=True (the default) gives the tuple; numpy's stub returns the dict form too
    kind, keys, pos, has_gauss, gauss = cast("tuple[str, np.ndarray, int, int, float]", np.random.get_state())
    state = {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),
        "python_gauss": random.getstate()[2],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
    }
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
