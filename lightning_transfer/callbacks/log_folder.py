"""A run's log folder: where it is (:func:`run_log_dir`, where the plots go) and one ``version_N``
folder for all of a run's TensorBoard/CSV loggers (:func:`loggers_sharing_one_version`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl


def run_log_dir(trainer: pl.Trainer) -> Path | None:
    """The folder of this run's logs (``trainer.log_dir`` without its collective, so one process
    alone may call it): the first logger's ``log_dir`` (TensorBoard/CSV) or ``save_dir``; ``None``
    without a logger."""
    if not trainer.loggers:
        return None
    first = trainer.loggers[0]
    folder = getattr(first, "log_dir", None) or first.save_dir
    return Path(folder) if folder is not None else None


def loggers_sharing_one_version(loggers: list[Any], init_args: list[dict[str, Any]]) -> list[Any]:
    """``loggers`` with each TensorBoard/CSV logger that writes under the same folder as the first
    one (``save_dir/name``) and was given no version built again, from its ``init_args``, with the
    first one's version. So ``metrics.csv``, the event files, the checkpoints and the plots of a run
    all land in one ``version_N`` folder; each logger would otherwise pick the next free version on
    its own (TensorBoard ``version_0``, CSV ``version_1``). Lightning fixes a logger's version when
    it is constructed, hence the new instance.

    ``init_args[i]``: the keyword arguments ``loggers[i]`` was constructed with (the
    ``lightning-transfer`` CLI passes its config's, before it creates the Trainer). In your own
    code, pass the version yourself: ``CSVLogger(root, version=tensorboard.version)``."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    versioned = [i for i, logger in enumerate(loggers) if isinstance(logger, (CSVLogger, TensorBoardLogger))]
    if len(versioned) < 2:
        return loggers
    first = loggers[versioned[0]]
    shared = list(loggers)
    for i in versioned[1:]:
        logger = loggers[i]
        if init_args[i].get("version") is None and Path(logger.root_dir).resolve() == Path(first.root_dir).resolve():
            shared[i] = type(logger)(**{**init_args[i], "version": first.version})
    return shared
