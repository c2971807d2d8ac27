"""The ``lightning-transfer`` command: LightningCLI in subclass mode.

``lightning-transfer fit|validate|test|predict --config configs/<recipe>.yaml [--key value ...]``,
``lightning-transfer transfer DATA --output-dir DIR`` (:mod:`lightning_transfer.transfer`) and
``lightning-transfer optimize SRC OUT`` (litdata shards, :mod:`lightning_transfer.optimize`).
Any LightningModule / LightningDataModule can be named by ``class_path`` (ours by short name, e.g.
``SimCLRModule``). Bad input raises :class:`UserInputError`, printed here as one line; set
``LIGHTNING_TRANSFER_TRACEBACK=1`` to see the full traceback.
"""

from __future__ import annotations

import inspect
import os
import re
import shutil
import sys
from argparse import ArgumentError
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.cli import LightningCLI

import lightning_transfer  # noqa: F401  (registers our modules for short class_path names)
from lightning_transfer.callbacks import LatestCheckpoint, loggers_sharing_one_version
from lightning_transfer.errors import UserInputError, require

TRACEBACK_ENV = "LIGHTNING_TRANSFER_TRACEBACK"


BEST_RECORD = "best_checkpoint.txt"
LINKED_VOCAB_SIZE = "vocab_size"  # the model argument linked to the DataModule (TransferCLI.add_arguments_to_parser)
FIT_CONFIG = "fit_config.yaml"


def best_checkpoint_of(root: str | Path) -> Path | None:
    """The checkpoint that ``<root>/best_checkpoint.txt`` names (``None`` without that record); a
    record naming a file that is gone is a :class:`UserInputError`."""
    record = Path(root).expanduser() / BEST_RECORD
    if not record.is_file():
        return None
    best = Path(record.read_text().strip())
    require(best.exists(), f"{record} names {best}, which no longer exists; pass a checkpoint explicitly (--ckpt_path)")
    return best


class TransferCLI(LightningCLI):
    """LightningCLI with our defaults: seed 0, a config file saved next to the logs (overwrite
    allowed, so a requeued cluster job can start again), and TensorBoard and CSV loggers with one
    save_dir sharing one ``version_N`` folder. A model's ``vocab_size`` left null is linked to the
    DataModule's ``vocab_size`` (``link_arguments``, see :meth:`_model_vocab_size`).

    After ``fit``, the path of the best checkpoint (the first ModelCheckpoint's, e.g. best
    ``val/acc``) is recorded in ``<default_root_dir>/best_checkpoint.txt``; ``validate``, ``test``
    and ``predict`` with the same config and no ``--ckpt_path`` evaluate that checkpoint. The fit's
    resolved config is copied to ``<default_root_dir>/fit_config.yaml``, so
    ``lightning-transfer test --config <default_root_dir>/fit_config.yaml`` repeats no argument."""

    def add_arguments_to_parser(self, parser) -> None:
        # The model's vocabulary is the data's: a LightningCLI link, applied when the DataModule has been
        # built and before the model is, so the model is built at once with its final size.
        parser.link_arguments(
            "data", f"model.init_args.{LINKED_VOCAB_SIZE}", compute_fn=self._model_vocab_size, apply_on="instantiate"
        )

    def _model_vocab_size(self, data) -> int | None:
        """The value linked into ``model.init_args.vocab_size``: the DataModule's ``vocab_size`` (the
        actual size of its tokenizer, which ``TextPretrainDataModule`` loads, or trains once and caches,
        on first use) when the model has nothing else to size it from; otherwise the model's own value.

        A model with ``vocab_size``, ``tokenizer`` or ``pretrained`` set keeps its own size, and
        :meth:`~lightning_transfer.modules.bert_pretrain.BertPretrainModule.setup` checks it against the
        data's tokenizer (one clear error when they differ), as it does for Python users. A model
        without a ``vocab_size`` argument (SimCLR, fine-tuning) is left alone: jsonargparse ignores a
        link whose target the chosen class does not have, and the data's tokenizer is not loaded."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        model = config.model.get("init_args")
        if model is None or LINKED_VOCAB_SIZE not in model:
            # Lightning (2.6) copies this value into the model's logged hyperparameters even though the link
            # is ignored: the DataModule's own ``vocab_size`` hyperparameter, if any, so the two never clash
            # when Lightning merges them (instantiate_classes drops it from what checkpoints store)
            return dict(getattr(data, "hparams", None) or {}).get(LINKED_VOCAB_SIZE)
        if any(model.get(name) is not None for name in (LINKED_VOCAB_SIZE, "tokenizer", "pretrained")):
            return model.get(LINKED_VOCAB_SIZE)
        return getattr(data, LINKED_VOCAB_SIZE, None)

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        if LINKED_VOCAB_SIZE not in inspect.signature(type(self.model)).parameters:
            # not an argument of this model: Lightning's instantiator put the ignored link's value into its
            # hparams, which checkpoints store and load_from_checkpoint / --ckpt_path would pass back to __init__
            self.model.hparams.pop(LINKED_VOCAB_SIZE, None)

    def before_instantiate_classes(self) -> None:
        self._loggers_follow_root_dir(self.config[self.subcommand] if self.subcommand else self.config)

    @staticmethod
    def _loggers_follow_root_dir(config) -> None:
        """A logger whose ``save_dir`` is the config file's ``default_root_dir`` (a config that repeats
        the path, e.g. a saved ``fit_config.yaml``; our recipes interpolate it, configs/base/loggers.yaml)
        follows ``--trainer.default_root_dir`` given on the command line, so checkpoints, logs and plots
        move together."""
        import yaml

        roots = set()
        for path in config.get("config") or []:
            trainer = (yaml.safe_load(path.get_content()) or {}).get("trainer") or {}
            roots.add(trainer.get("default_root_dir"))
        root = config.trainer.default_root_dir
        loggers = config.trainer.logger if isinstance(config.trainer.logger, list) else [config.trainer.logger]
        for logger in loggers:
            init_args = getattr(logger, "init_args", None)
            if init_args is not None and init_args.get("save_dir") in roots - {None, root}:
                init_args.save_dir = root

    def instantiate_trainer(self, **kwargs) -> pl.Trainer:
        # TensorBoard and CSV loggers of a config write into one version_N folder
        config = self.config[self.subcommand] if self.subcommand else self.config
        loggers = (self.config_init[self.subcommand] if self.subcommand else self.config_init).trainer.logger
        if isinstance(loggers, list) and "logger" not in kwargs:
            init_args = [
                {**entry.init_args.as_dict(), **(entry.get("dict_kwargs") or {})} for entry in config.trainer.logger
            ]
            kwargs["logger"] = loggers_sharing_one_version(loggers, init_args)
        return super().instantiate_trainer(**kwargs)

    def after_fit(self) -> None:
        """Record the best checkpoint and the fit's config (process 0 writes them, after a barrier)."""
        trainer = self.trainer
        callback = trainer.checkpoint_callback
        latest = [c.best_model_path for c in trainer.checkpoint_callbacks if isinstance(c, LatestCheckpoint)]
        # the best checkpoint; without one (no validation ran) the newest state, last.ckpt
        best = (
            getattr(callback, "best_model_path", "")
            or getattr(callback, "last_model_path", "")
            or next(iter(latest), "")
        )
        log_dir = trainer.log_dir  # a collective under DDP (a broadcast from process 0): every process calls it
        root = Path(trainer.default_root_dir)
        if trainer.is_global_zero:
            root.mkdir(parents=True, exist_ok=True)
            if best:
                (root / BEST_RECORD).write_text(str(Path(best).resolve()) + "\n")
            saved = Path(log_dir or root) / "config.yaml"  # written by LightningCLI's SaveConfigCallback
            if saved.is_file():
                shutil.copyfile(saved, root / FIT_CONFIG)
        trainer.strategy.barrier("lightning_transfer_after_fit")  # no process leaves before the records exist

    def _use_best_checkpoint(self) -> None:
        config = self.config_init[self.subcommand]
        best = best_checkpoint_of(self.trainer.default_root_dir) if config.get("ckpt_path") is None else None
        if best is not None:
            config["ckpt_path"] = str(best)
            print(
                f"lightning-transfer: {self.subcommand} uses the best checkpoint of the last fit: {best}",
                file=sys.stderr,
            )

    before_validate = before_test = before_predict = _use_best_checkpoint


def build_cli(args: list[str] | None = None, run: bool = True) -> TransferCLI:
    return TransferCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        # errors reach main(), which prints them as one line; "omegaconf+" resolves ${...} interpolations
        # once every config and argument is read (configs/base/loggers.yaml: save_dir = default_root_dir)
        parser_kwargs={"exit_on_error": False, "parser_mode": "omegaconf+"},
        args=args,
        run=run,
        auto_configure_optimizers=False,
    )


def _user_error(err: BaseException) -> BaseException | None:
    """The UserInputError (or argument error) behind ``err``: jsonargparse wraps errors raised
    while it instantiates classes, so walk the cause/context chain."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, UserInputError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return err if isinstance(err, ArgumentError) else None


def main(args: list[str] | None = None) -> None:
    argv = sys.argv[1:] if args is None else args
    if argv[:1] == ["transfer"]:  # lightning-transfer transfer DATA --output-dir DIR: lightning_transfer.transfer
        from lightning_transfer.transfer import main as transfer_main

        return transfer_main(argv[1:])
    if argv[:1] == ["optimize"]:  # lightning-transfer optimize SRC OUT: lightning_transfer.optimize
        from lightning_transfer.optimize import main as optimize_main

        return optimize_main(argv[1:])
    try:
        build_cli(args)
    except (
        Exception
    ) as err:  # converts a UserInputError (or argument error) in its chain to one line; re-raises the rest
        found = _user_error(err)
        if found is None or os.environ.get(TRACEBACK_ENV):
            raise
        message = " ".join(str(found).split())  # one line, whatever the source
        problem = re.search(r"Problem with given class_path (.*?)(?: - Expected a|$)", message)
        if problem:  # jsonargparse's Union report: keep the part that names the bad key
            message = problem.group(1).strip()
        print(f"lightning-transfer: error: {message} (set {TRACEBACK_ENV}=1 for the traceback)", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
