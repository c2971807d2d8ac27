"""Expensive module fixtures that run once per test session, not once per pytest-xdist worker."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from filelock import FileLock


def once_for_all_workers(tmp_path_factory, worker_id: str, name: str, make: Callable[[Path], None]) -> Path:
    """The folder ``name`` that ``make(folder)`` filled, shared by every worker of the session.

    pytest-xdist hands the tests of one file to several workers, and a ``scope="module"`` fixture then
    runs once on each of them: the two-process DDP runs of the suite did their work twice or three times
    over. Here the first worker to arrive runs ``make`` into a folder that all workers share (the parent
    of the workers' temporary folders), while the others wait on a file lock and then read it. When
    ``make`` fails, the folder is not marked finished and the next worker tries again (and fails with
    its own message)."""
    shared = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    out = shared / name
    with FileLock(str(out) + ".lock"):
        if not (out / "finished").exists():
            out.mkdir(exist_ok=True)
            make(out)
            (out / "finished").touch()
    return out
