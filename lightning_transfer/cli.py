"""The ``lightning-transfer`` command: LightningCLI in subclass mode.

``lightning-transfer fit|validate|test|predict --config configs/<recipe>.yaml [--key value ...]``.
Any LightningModule / LightningDataModule can be named by ``class_path`` (ours by short name, e.g.
``SimCLRModule``). Bad input raises :class:`UserInputError`, printed here as one line; set
``LIGHTNING_TRANSFER_TRACEBACK=1`` to see the full traceback.
"""
from __future__ import annotations

import os
import sys

import lightning.pytorch as pl
from lightning.pytorch.cli import LightningCLI

import lightning_transfer  # noqa: F401  (registers our modules for short class_path names)
from lightning_transfer.errors import UserInputError

TRACEBACK_ENV = "LIGHTNING_TRANSFER_TRACEBACK"


class TransferCLI(LightningCLI):
    """LightningCLI with our defaults: seed 0 and a config file saved next to the logs (overwrite
    allowed, so a requeued cluster job can start again)."""


def build_cli(args: list[str] | None = None, run: bool = True) -> TransferCLI:
    return TransferCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
        auto_configure_optimizers=False,
    )


def main(args: list[str] | None = None) -> None:
    try:
        build_cli(args)
    except UserInputError as err:
        if os.environ.get(TRACEBACK_ENV):
            raise
        print(f"lightning-transfer: error: {err} (set {TRACEBACK_ENV}=1 for the traceback)", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
