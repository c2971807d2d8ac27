"""Shared measurement helpers for the benchmarks (not part of the package).

- :func:`setup_threads`: one ``torch.set_num_threads`` for every side of a comparison.
- :class:`Clock`: CPU-seconds of this process on CPU (``time.process_time``: time the cores worked for
  us, so other processes on a shared machine do not inflate it), wall time after
  ``torch.cuda.synchronize`` on CUDA.
- :func:`alternate`: runs the contenders in turn, ``reps`` rounds after one warm-up round, and returns
  each one's median rate. :func:`alternate_timed`: the same for callables that time themselves and
  return several durations (CPU and wall seconds, say), a median rate for each.
- :class:`PeakMemory`: the growth of memory during a call. CUDA: ``torch.cuda.max_memory_allocated``
  above what was allocated before. CPU: the peak resident set size (``VmHWM`` of /proc/self/status,
  reset through /proc/self/clear_refs) above the resident size before; while measuring, large
  allocations are forced to ``mmap`` so freed tensors leave the resident set (memory is measured
  after the timing rounds, so the timing runs with glibc's usual allocator behaviour).
- :func:`matmul_rate`: the machine's measured matmul FLOP/s (a square matmul, same threads and dtype).
"""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch


def setup_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (``None``: leave torch's default) and return the number in use."""
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or "cpu"
    try:
        text = Path("/proc/cpuinfo").read_text()
        model = re.search(r"model name\s*:\s*(.*)", text).group(1).strip()
        flags = re.search(r"flags\s*:\s*(.*)", text).group(1).split()
        extras = [name for name, flag in (("AVX-512", "avx512f"), ("AMX", "amx_bf16")) if flag in flags]
        if extras:
            model += f" ({'/'.join(extras)})"
    except (OSError, AttributeError):
        pass
    return f"{model}, {os.cpu_count()} logical cores visible"


class Clock:
    """``elapsed(fn)``: seconds ``fn()`` took: CPU-seconds of this process on CPU, synchronized wall
    time on CUDA."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"
        self.unit = "wall-second" if self.cuda else "CPU-second of this process"

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            return time.perf_counter()
        return time.process_time()

    def elapsed(self, fn: Callable[[], object]) -> float:
        start = self.now()
        fn()
        return self.now() - start


def alternate(
    contenders: dict[str, tuple[Callable[[], object], float]], reps: int, clock: Clock, warmup: int = 1
) -> dict[str, float]:
    """``contenders``: name -> (callable, work units per call). Calls each in turn, ``warmup`` rounds
    excluded then ``reps`` rounds, and returns name -> median units per second."""
    for _ in range(warmup):
        for fn, _units in contenders.values():
            fn()
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(reps):
        for name, (fn, units) in contenders.items():
            rates[name].append(units / clock.elapsed(fn))
    return {name: statistics.median(values) for name, values in rates.items()}


def alternate_timed(
    contenders: dict[str, tuple[Callable[[], tuple[float, ...]], float]], reps: int, warmup: int = 1
) -> dict[str, tuple[float, ...]]:
    """``contenders``: name -> (callable returning the seconds it measured, one or more, work units per
    call). Calls each in turn, ``warmup`` rounds excluded then ``reps`` rounds (every other round in
    reverse order, so that no contender always runs right after the same other one), and returns name ->
    the median units per second of each measured duration."""
    for _ in range(warmup):
        for fn, _units in contenders.values():
            fn()
    seconds: dict[str, list[tuple[float, ...]]] = {name: [] for name in contenders}
    names = list(contenders)
    for rep in range(reps):
        for name in names if rep % 2 == 0 else reversed(names):
            seconds[name].append(contenders[name][0]())
    return {
        name: tuple(statistics.median(units / s for s in column) for column in zip(*seconds[name]))
        for name, (_fn, units) in contenders.items()
    }


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


_LIBC = _libc()
M_MMAP_THRESHOLD = -3


def _status_kib(field: str) -> int | None:
    try:
        match = re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text())
    except OSError:
        return None
    return int(match.group(1)) if match else None


class PeakMemory:
    """``measure(fn)`` -> MiB by which memory grew at its peak while ``fn()`` ran (see module doc)."""

    def __init__(self, device: torch.device):
        self.device = device
        if device.type == "cuda":
            self.what = "peak CUDA memory allocated during one measured call above what was allocated before (torch.cuda.max_memory_allocated)"
        else:
            self.what = "peak RSS growth during one measured call (VmHWM after a clear_refs reset, large allocations mmap-ed while measuring)"

    def measure(self, fn: Callable[[], object]) -> float | None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            before = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            fn()
            torch.cuda.synchronize(self.device)
            return (torch.cuda.max_memory_allocated(self.device) - before) / 2**20
        if _LIBC is not None:  # while measuring, tensors over 1 MiB are mmap-ed, so freeing them shows
            _LIBC.mallopt(M_MMAP_THRESHOLD, 1 << 20)
            _LIBC.malloc_trim(0)
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset the peak RSS to the current RSS (Linux >= 4.0)
            before = _status_kib("VmRSS")
            fn()
            peak = _status_kib("VmHWM")
        except OSError:
            return None
        finally:  # back to glibc's largest dynamic threshold, so timing is not slowed by page faults
            if _LIBC is not None:
                _LIBC.mallopt(M_MMAP_THRESHOLD, 32 << 20)
        return None if before is None or peak is None else (peak - before) / 1024


def matmul_rate(device: torch.device, dtype: torch.dtype, clock: Clock, size: int = 2048, reps: int = 5) -> float:
    """Measured FLOP/s of ``size x size @ size x size`` in ``dtype`` (median of ``reps``)."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    calls = 4 if device.type == "cpu" else 50

    def run():
        for _ in range(calls):
            torch.mm(a, b)

    run()
    times = [clock.elapsed(run) for _ in range(reps)]
    return 2 * size**3 * calls / statistics.median(times)


def fmt_mem(mib: float | None) -> str:
    return "n/a" if mib is None else f"{mib:,.0f}"
