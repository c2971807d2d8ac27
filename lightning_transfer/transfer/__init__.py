"""``lightning-transfer transfer DATA --output-dir DIR``: from a folder of images or a table of texts
to a label-efficiency report in one command.

It pretrains on the data without labels (SimCLR for images, masked language modelling for text),
fine-tunes from that encoder and from scratch (and from ``--init-from`` as shipped) with a few labels
per class over several seeded label draws, and writes ``results.csv``/``results.json``,
``label_efficiency.png`` and ``report.md``/``report.html`` with the labels that pretraining saves.

- :mod:`~lightning_transfer.transfer.settings`: the command line.
- :mod:`~lightning_transfer.transfer.inputs`: what ``DATA`` is, its classes, the held-out splits.
- :mod:`~lightning_transfer.transfer.recipes`: the modules and DataModules of each stage.
- :mod:`~lightning_transfer.transfer.budget`: timing a few steps, then sizing the stages to the budget.
- :mod:`~lightning_transfer.transfer.stages`: finished stages on disk, so that a rerun skips them.
- :mod:`~lightning_transfer.transfer.interrupt`: Ctrl-C stops the command and never records the stage it stopped.
- :mod:`~lightning_transfer.transfer.best_model`: which fine-tuned model is kept (the best by validation accuracy).
- :mod:`~lightning_transfer.transfer.pipeline`: the stages in order.
- :mod:`~lightning_transfer.transfer.report`: the tables, the plot (:mod:`lightning_transfer.plots`), labels saved,
  the report; :mod:`~lightning_transfer.transfer.outputs` writes them from the run's records.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> None:
    """Run the command (``argv`` without the program name and without ``transfer``)."""
    from lightning_transfer.transfer.pipeline import main as run_main

    run_main(argv)


__all__ = ["main"]
