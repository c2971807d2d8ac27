"""Measuring training speed: :class:`ThroughputReport` (samples/s, tokens/s, peak memory; its old
name :class:`ThroughputMonitor` is deprecated) and :class:`HostSyncCounter` (host-device
synchronizations per step, what holds a GPU step back)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TextIO

import lightning.pytorch as pl
import torch


class ThroughputReport(pl.Callback):
    """Measure training speed: samples/s (images for image batches, sequences for text) and tokens/s
    (non-padding tokens) over all processes, plus the peak CUDA memory of this process.

    The first ``warmup_steps`` steps are not timed (allocator growth, cuDNN autotuning, compilation);
    the device is synchronized at both ends of the timed window, and only there: in between, the
    token count is summed on the device (:meth:`batch_counts_on_device`), so the report adds no host-device
    synchronization to the steps it times. At the end of ``fit`` process 0
    prints one line ``throughput: steps=... samples/s=... tokens/s=... peak_mem_gib=...`` and the values
    stay in :attr:`summary`. Add it with ``--trainer.callbacks+=lightning_transfer.callbacks.ThroughputReport``.

    Lightning's own ``lightning.pytorch.callbacks.ThroughputMonitor`` is another tool: it logs a
    moving-window throughput (and FLOP utilization) to the loggers as training goes, from a
    ``batch_size_fn`` (and ``length_fn``, which counts padding unless you write it not to) given in
    Python; it reports no peak memory and prints no end-of-run summary.
    """

    def __init__(self, warmup_steps: int = 20, label: str = ""):
        self.warmup_steps, self.label = warmup_steps, label
        self.summary: dict[str, float] = {}
        self._start: float | None = None
        self._steps = self._samples = 0
        self._tokens: torch.Tensor | int = 0  # a device tensor once a batch has an attention_mask

    @staticmethod
    def _sync(pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    @staticmethod
    def batch_counts_on_device(batch: Any) -> tuple[int, torch.Tensor | int]:
        """(samples, tokens) of one of our batches, without reading the device: samples from the
        shapes, tokens (non-padding) as a tensor on the batch's device when it has an
        ``attention_mask``, else from the shape (``input_ids.numel()``; 0 for images)."""
        if isinstance(batch, dict):
            if "views" in batch:
                return len(batch["views"][0]), 0
            if "input_ids" in batch:
                mask = batch.get("attention_mask")
                tokens = mask.sum() if mask is not None else batch["input_ids"].numel()
                return batch["input_ids"].shape[0], tokens
            for key in ("images", "raw", "labels"):
                if key in batch:
                    return len(batch[key]), 0
        return (len(batch[0]) if isinstance(batch, (list, tuple)) else len(batch)), 0

    @staticmethod
    def batch_counts(batch: Any) -> tuple[int, int]:
        """(samples, tokens) of one of our batches as Python ints (reads the token count back from
        the device: use :meth:`batch_counts_on_device` inside a training loop); tokens is 0 for images."""
        samples, tokens = ThroughputReport.batch_counts_on_device(batch)
        return samples, int(tokens)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start, self._steps, self._samples, self._tokens = None, 0, 0, 0
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._start is None and trainer.global_step >= self.warmup_steps:
            self._sync(pl_module)
            self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._start is not None:
            samples, tokens = self.batch_counts_on_device(batch)
            self._steps, self._samples, self._tokens = self._steps + 1, self._samples + samples, self._tokens + tokens

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._start is None or not self._steps:
            return
        self._sync(pl_module)
        elapsed = time.perf_counter() - self._start
        world = trainer.world_size
        tokens = int(self._tokens)  # read once, after the timed window
        self.summary = {
            "steps": self._steps,
            "seconds": elapsed,
            "samples_per_s": self._samples * world / elapsed,
            "tokens_per_s": tokens * world / elapsed,
        }
        if pl_module.device.type == "cuda":
            self.summary["peak_mem_gib"] = torch.cuda.max_memory_allocated(pl_module.device) / 2**30
        if trainer.is_global_zero:
            values = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.summary.items())
            print(f"throughput{(' ' + self.label) if self.label else ''}: {values}", flush=True)


class ThroughputMonitor(ThroughputReport):
    """Deprecated name of :class:`ThroughputReport` (it read like Lightning's own
    ``lightning.pytorch.callbacks.ThroughputMonitor``, a different callback)."""

    def __init__(self, warmup_steps: int = 20, label: str = ""):
        import warnings

        warnings.warn(
            "lightning_transfer.callbacks.ThroughputMonitor is now ThroughputReport; the old name will be removed",
            FutureWarning,
            stacklevel=2,
        )
        super().__init__(warmup_steps, label)


class HostSyncCounter(pl.Callback):
    """Count host-device synchronizations per training step on a CUDA device.

    Turns on ``torch.cuda.set_sync_debug_mode("warn")`` for the training loop (off again at the end),
    so that torch warns at every synchronizing CUDA call (``.item()``, ``bool(tensor)``, a copy to the
    host, ...), and counts those warnings between the start and the end of each training step (after
    ``warmup_steps``; logging and checkpointing between steps are not counted). At the end of ``fit``
    process 0 prints ``host_syncs: steps=... per_step=... first=<the first synchronizing call site>``;
    the values stay in :attr:`summary`. Without CUDA nothing is counted (the CPU never synchronizes).
    """

    MARKER = "called a synchronizing CUDA operation"  # torch's sync debug warning

    def __init__(self, warmup_steps: int = 5, label: str = ""):
        self.warmup_steps, self.label = warmup_steps, label
        self.summary: dict[str, Any] = {}
        self._syncs = self._steps = 0
        self._first: str | None = None
        self._in_step = False
        self._previous: Callable[..., None] | None = None  # warnings.showwarning before ours

    def count(self, message: str, filename: str = "", lineno: int = 0) -> None:
        """Record one warning (the hook torch's warnings go through); only sync warnings inside a step count."""
        if self._in_step and self.MARKER in str(message):
            self._syncs += 1
            self._first = self._first or f"{filename}:{lineno}"

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import warnings

        self._syncs = self._steps = 0
        if pl_module.device.type != "cuda":
            return
        torch.cuda.set_sync_debug_mode("warn")
        self._previous = warnings.showwarning
        warnings.simplefilter("always", UserWarning)  # every occurrence, not once per call site

        def showwarning(
            message: Warning | str,
            category: type[Warning],
            filename: str,
            lineno: int,
            file: TextIO | None = None,
            line: str | None = None,
        ) -> None:
            self.count(str(message), filename, lineno)
            if self.MARKER not in str(message):
                previous = self._previous
                assert previous is not None  # set until on_train_end puts it back as warnings.showwarning
                previous(message, category, filename, lineno, file, line)

        warnings.showwarning = showwarning

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._in_step = trainer.global_step >= self.warmup_steps

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._in_step:
            self._steps += 1
        self._in_step = False

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import warnings

        if self._previous is not None:
            torch.cuda.set_sync_debug_mode("default")
            warnings.showwarning, self._previous = self._previous, None
        if not self._steps:
            return
        self.summary = {"steps": self._steps, "per_step": self._syncs / self._steps, "first": self._first}
        if trainer.is_global_zero:
            print(
                f"host_syncs{(' ' + self.label) if self.label else ''}: steps={self._steps} "
                f"per_step={self.summary['per_step']:.2f} first={self._first}",
                flush=True,
            )
