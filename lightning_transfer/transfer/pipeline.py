"""The stages of ``lightning-transfer transfer``, in order.

1. Read and check ``DATA`` (:mod:`~lightning_transfer.transfer.inputs`).
2. Time a few steps of every kind of stage and size the stages to the budget
   (:mod:`~lightning_transfer.transfer.budget`); print the plan. A rerun reuses the saved plan.
3. Pretrain on the pool and the unlabeled data; export the encoder (``pretrained_encoder/``).
4. Fine-tune every ``init x labels_per_class x seed`` run at each of ``--lr-factors`` times its
   recipe's LR; the validation set picks the LR, and that model alone is tested on the held-out test
   set. Validation also picks the best model
   (:func:`~lightning_transfer.transfer.best_model.best_record`, ``best_model/model.ckpt``).
5. Write ``results.csv``/``results.json``, ``label_efficiency.png``, ``report.md``/``report.html``.

Every finished stage is recorded (:mod:`~lightning_transfer.transfer.stages`), so the same command
run again skips it. Ctrl-C stops the command with exit code 130 and one line saying what was kept; the
stage it interrupted is never recorded (:mod:`~lightning_transfer.transfer.interrupt`). Under DDP (``--trainer.strategy ddp``) Lightning starts the other processes by
running this command again; they walk the same stages, and only process 0 writes files.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only

from lightning_transfer.errors import UserInputError
from lightning_transfer.transfer import recipes
from lightning_transfer.transfer.best_model import best_checkpoint, best_record
from lightning_transfer.transfer.budget import FinetuneRun, Plan, RunShape, StepTimer, Timings, make_plan
from lightning_transfer.transfer.inputs import TransferData, feasible_label_counts, prepare_data
from lightning_transfer.transfer.interrupt import EXIT_CODE, CtrlC, Interrupted
from lightning_transfer.transfer.settings import TransferSettings, parse_settings
from lightning_transfer.transfer.stages import StageStore, stage_key, write_json_atomic

PLAN_FILE = "plan.json"
ENCODER_DIR = "pretrained_encoder"
CALIBRATION_STEPS = 8


def process_start_time(fresh_within: float = 120.0) -> float:
    """When this process started, if that was less than ``fresh_within`` seconds ago (the command's
    own process: the budget includes the seconds spent importing); otherwise now (a long-lived
    process, a notebook or a test, runs the command) or when the platform does not say."""
    now = time.time()
    try:
        import psutil

        started = float(psutil.Process().create_time())
    except (ImportError, OSError):
        return now
    return started if now - started < fresh_within else now


def process_rank() -> int:
    """This process's global rank as Lightning knows it (from the launcher's environment), 0 alone."""
    return int(getattr(rank_zero_only, "rank", 0))


def status(message: str) -> None:
    """One line per stage (process 0 only), flushed at once; Lightning's bars show the steps."""
    if process_rank() == 0:
        print(f"[transfer {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Transfer:
    """One run of the command: the settings, the data, where things go."""

    def __init__(self, settings: TransferSettings, started: float | None = None):
        self.settings = settings
        self.out = Path(settings.output_dir).expanduser()
        self.writer = process_rank() == 0
        self.store = StageStore(self.out / "stages", writer=self.writer)
        self.started = time.time() if started is None else started  # the budget counts from here
        self.data: TransferData
        self.world_size = 1
        self.planned_runs = 0
        self.ctrl_c = CtrlC()

    # ------------------------------------------------------------------------------ trainers
    def trainer(self, name: str, callbacks: list[pl.Callback] | None = None, **stage: Any) -> pl.Trainer:
        """A Trainer for one stage: the user's ``--trainer.*`` options, then the stage's own."""
        options: dict[str, Any] = {
            "accelerator": "auto",
            "devices": 1,
            "enable_model_summary": False,
            "num_sanity_val_steps": 0,
            "log_every_n_steps": 10,
        }
        options.update(self.settings.trainer)
        options.update(
            logger=CSVLogger(str(self.out / "logs"), name=name),
            default_root_dir=str(self.out / "logs"),
            enable_checkpointing=False,
            enable_progress_bar=self.settings.progress,
            callbacks=callbacks or [],
        )
        options.update(stage)
        return pl.Trainer(**options)

    def record(self, name: str, key: str, result: dict[str, Any]) -> dict[str, Any]:
        """Record that stage ``name`` finished, unless Ctrl-C was pressed while it ran (then raise
        ``KeyboardInterrupt``: an interrupted stage is never recorded as done)."""
        self.ctrl_c.check()
        return self.store.put(name, key, result)

    # ------------------------------------------------------------------------------ the run
    def run(self) -> list[dict[str, Any]]:
        """Every stage in order; returns the fine-tuning records. Ctrl-C raises :class:`Interrupted`
        (a ``KeyboardInterrupt``) with the line of :meth:`kept`, wherever it stopped the command."""
        try:
            with self.ctrl_c:
                return self.stages()
        except KeyboardInterrupt:
            raise Interrupted(self.kept()) from None

    def kept(self) -> str:
        """What an interrupted run leaves for the next one, and how to go on, as one line."""
        done = self.store.finished
        parts = [
            label for name, label in (("plan", "the plan"), ("pretrain", "the pretrained encoder")) if name in done
        ]
        if self.planned_runs:
            runs = sum(name.startswith("finetune-") for name in done)
            parts.append(f"{runs} of {self.planned_runs} fine-tuning runs")
        if not parts:
            return "interrupted (Ctrl-C) before any stage finished; run the same command again to start over"
        listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        return (
            f"interrupted (Ctrl-C): kept {listed} in {self.out} (the stage in progress is not kept); "
            "run the same command again to resume"
        )

    def stages(self) -> list[dict[str, Any]]:
        """Read the data, plan, pretrain, fine-tune every run, report; returns the fine-tuning records."""
        self.out.mkdir(parents=True, exist_ok=True)
        self.data = prepare_data(self.settings, self.out / "data", write=self.writer)
        status(f"data: {self.data.description}; classes: {', '.join(self.data.class_names)}")
        split = self.data.split_sizes
        status(
            f"splits (seed {self.settings.seed}): test {split['test']}, validation {split['validation']}, "
            f"training pool {split['pool']}, unlabeled {split['unlabeled']}"
        )
        self.labels = feasible_label_counts(self.data, self.settings.labels_per_class)
        self.world_size = self.trainer("probe", logger=False).world_size
        plan = self.plan()
        self.planned_runs = len(plan.runs)
        status(plan.describe())
        encoder = self.pretrain(plan)
        records = self.finetune_all(plan, encoder)
        self.report(plan, records)
        status(f"finished in {(time.time() - self.started) / 60:.1f} minutes; report: {self.out / 'report.md'}")
        return records

    # ------------------------------------------------------------------------------ planning
    def shapes(self) -> list[RunShape]:
        shapes = []
        for k in self.labels:
            batch = recipes.finetune_batch_size(self.data, k, self.world_size)
            per_process = max(1, k * self.data.num_classes // self.world_size)
            for init in recipes.inits_of(self.settings):
                strategy = recipes.finetune_strategy(init, k, self.settings, self.data.kind)
                for seed in range(self.settings.seeds):
                    shapes.append(RunShape(init, k, seed, strategy, batch, per_process))
        return shapes

    def plan(self) -> Plan:
        """The saved plan of the same data and settings, or a new one from timed steps."""
        key = stage_key(
            "plan",
            self.data.fingerprint,
            self.settings.result_settings(),
            self.settings.budget_minutes,
            self.world_size,
        )
        saved = self.store.get("plan", key)
        if saved is not None:
            status("plan: reusing the plan of the previous run with the same data and settings")
            return Plan.from_dict(saved)
        status(f"timing a few steps of each stage ({CALIBRATION_STEPS} steps each) to plan the budget")
        timings, last_trainer = self.calibrate()
        pretrain_batch = recipes.pretrain_batch_size(self.data, self.world_size)
        outcome: Plan | str
        try:
            outcome = make_plan(
                self.settings.budget_minutes * 60,
                time.time() - self.started,
                timings,
                self.shapes(),
                recipes.finetune_default_steps(self.data),
                pretrain_batch,
                self.settings.max_pretrain_steps,
                lr_trials=len(self.settings.lr_factors),
            )
        except UserInputError as err:  # every process stops with process 0's message
            outcome = str(err)
        outcome = last_trainer.strategy.broadcast(outcome, src=0)  # every process runs process 0's plan
        if isinstance(outcome, str):
            raise UserInputError(outcome)
        plan = outcome
        self.record("plan", key, plan.as_dict())
        return plan

    def calibrate(self) -> tuple[Timings, pl.Trainer]:
        """Time pretraining steps, fine-tuning steps at the smallest and largest batch (full), and at
        the smallest with a frozen encoder (linear), each with its set-up and evaluation passes."""
        begin = time.time()
        root = self.out / "calibration"
        batch = recipes.pretrain_batch_size(self.data, self.world_size)
        module, datamodule = recipes.pretrain_stage(self.data, self.settings, batch, self.out / "cache")
        timer = StepTimer(CALIBRATION_STEPS)  # into the second epoch when epochs are short
        trainer = self.trainer(
            "calibration", [timer], max_steps=1000, max_epochs=-1, limit_val_batches=0
        )  # stopped by the timer
        wall = time.time()
        self.ctrl_c.call(trainer.fit, module, datamodule)
        self.ctrl_c.call(trainer.validate, module, datamodule, verbose=False)  # the final validation of the real stage
        pretrain_fixed = (time.time() - wall) - sum(timer.steps)
        pretrain_step = timer.seconds_per_step()
        encoder = self.export(module, trainer, root / "encoder")
        small, large = min(self.labels), max(self.labels)
        batches = (
            recipes.finetune_batch_size(self.data, small, self.world_size),
            recipes.finetune_batch_size(self.data, large, self.world_size),
        )
        steps, fixed, test = [], 0.0, 0.0
        for k, strategy in ((small, "full"), (large, "full"), (small, "linear")):
            timer = StepTimer(CALIBRATION_STEPS, epoch_limit=0)  # epochs of a step or a few: boundaries are in
            init = "scratch" if strategy == "full" else "pretrained"
            batch = recipes.finetune_batch_size(self.data, k, self.world_size)
            run = FinetuneRun(init, k, 0, strategy, batch, epochs=1, steps=CALIBRATION_STEPS, seconds=0.0)
            wall = time.time()
            module, datamodule = recipes.finetune_stage(self.data, self.settings, run, encoder)
            trainer = self.trainer(
                "calibration",
                [timer],
                max_steps=CALIBRATION_STEPS,
                max_epochs=-1,
                check_val_every_n_epoch=None,
                val_check_interval=10**9,
            )
            self.ctrl_c.call(trainer.fit, module, datamodule)
            if not fixed:  # a trial's set-up and validation pass, and the test pass of a run (the same for every run)
                self.ctrl_c.call(trainer.validate, module, datamodule, verbose=False)
                tested = time.time()
                self.ctrl_c.call(trainer.test, module, datamodule, verbose=False)
                test = time.time() - tested
                fixed = (tested - wall) - sum(timer.steps)
            steps.append(timer.seconds_per_step())
        timings = Timings(
            pretrain_step=round(pretrain_step, 5),
            pretrain_fixed=round(pretrain_fixed, 3),
            finetune_batches=batches,
            finetune_step=(round(steps[0], 5), round(steps[1], 5)),
            linear_step=round(steps[2], 5),
            finetune_fixed=round(fixed, 3),
            finetune_test=round(test, 3),
            calibration=round(time.time() - begin, 1),
        )
        return timings, trainer

    # ------------------------------------------------------------------------------ pretraining
    def export(self, module: Any, trainer: pl.Trainer, directory: Path) -> Path:
        """Write the encoder (process 0) into ``directory``, replacing it whole; all processes wait."""
        if self.writer:
            staging = directory.with_name(directory.name + ".partial")
            shutil.rmtree(staging, ignore_errors=True)
            if self.data.kind == "image":
                module.export_encoder(staging)
            else:
                module.save_pretrained(staging)
            shutil.rmtree(directory, ignore_errors=True)
            staging.rename(directory)
        trainer.strategy.barrier("transfer_export")
        return directory

    def pretrain_key(self, plan: Plan) -> str:
        return stage_key(
            "pretrain",
            self.data.fingerprint,
            self.settings.result_settings(),
            plan.pretrain_steps,
            plan.pretrain_batch_size,
            self.world_size,
        )

    def pretrain(self, plan: Plan) -> Path:
        directory = self.out / ENCODER_DIR
        key = self.pretrain_key(plan)
        done = self.store.get("pretrain", key)
        if done is not None and directory.is_dir():
            status(f"pretraining: done in an earlier run ({done['seconds']:.0f} s), encoder in {directory}")
            return directory
        what = "SimCLR" if self.data.kind == "image" else "MLM"
        eta = time.strftime("%H:%M:%S", time.localtime(time.time() + plan.estimate["total"] - plan.timings.calibration))
        status(
            f"pretraining ({what}): {plan.pretrain_steps} steps, ~{plan.estimate['pretraining'] / 60:.1f} min; "
            f"everything done ~{eta}"
        )
        start = time.time()
        module, datamodule = recipes.pretrain_stage(
            self.data, self.settings, plan.pretrain_batch_size, self.out / "cache"
        )
        trainer = self.trainer(
            "pretrain",
            max_steps=plan.pretrain_steps,
            max_epochs=-1,
            check_val_every_n_epoch=None,
            val_check_interval=plan.pretrain_steps,
        )
        self.ctrl_c.call(trainer.fit, module, datamodule)
        metrics = {k: round(float(v), 4) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        self.export(module, trainer, directory)
        seconds = time.time() - start
        status(f"pretraining done in {seconds:.0f} s; validation {metrics}; encoder exported to {directory}")
        self.record("pretrain", key, {"seconds": round(seconds, 1), "validation": metrics, "encoder": str(directory)})
        return directory

    # ------------------------------------------------------------------------------ fine-tuning
    def encoder_for(self, init: str, pretrained: Path) -> Path:
        if init == "init_from":
            assert self.settings.init_from is not None  # the init_from runs exist only with --init-from
            return Path(self.settings.init_from)
        return pretrained

    def finetune_all(self, plan: Plan, pretrained: Path) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        remaining = sum(run.seconds for run in plan.runs)
        pretrain_key = self.pretrain_key(plan)
        for index, run in enumerate(plan.runs, 1):
            source = self.settings.init_from if run.init == "init_from" else pretrain_key
            key = stage_key(
                run.name,
                dataclasses.asdict(run) | {"seconds": None},
                source,
                self.data.fingerprint,
                self.settings.result_settings(),
            )
            record = self.store.get(run.name, key)
            eta = time.strftime("%H:%M:%S", time.localtime(time.time() + remaining))
            if record is None:
                status(
                    f"[{index}/{len(plan.runs)}] fine-tuning {run.init}, {run.labels_per_class} labels/class, "
                    f"seed {run.seed}: {run.strategy}, {run.epochs} epochs (~{run.seconds:.0f} s; all done ~{eta})"
                )
                record, trainer = self.finetune(run, self.encoder_for(run.init, pretrained))
                self.ctrl_c.check()  # an interrupted run is neither kept as the best model nor recorded
                if best_record([*records, record]) is record:
                    checkpoint = best_checkpoint(self.out)
                    trainer.save_checkpoint(checkpoint)  # every process calls it
                    if self.writer:
                        write_json_atomic(checkpoint.with_name("model.json"), {"stage": run.name, "key": key})
                self.record(run.name, key, record)
                status(
                    f"    test accuracy {record['test_accuracy']:.3f}, macro F1 {record['test_macro_f1']:.3f} "
                    f"({record['seconds']:.0f} s)"
                )
            else:
                status(f"[{index}/{len(plan.runs)}] {run.name}: done in an earlier run")
            remaining -= run.seconds
            records.append(record)
        return records

    def finetune(self, run: FinetuneRun, encoder: Path) -> tuple[dict[str, Any], pl.Trainer]:
        """Train ``run`` at each of ``--lr-factors`` times its recipe's LR, keep the one with the best
        validation accuracy (on a tie the smaller LR) and test only that one: the test set never picks."""
        start = time.time()
        factors = self.settings.lr_factors
        tried: list[str] = []
        best: tuple[float, float, Any, Any, pl.Trainer] | None = None
        for factor in factors:
            pl.seed_everything(run.seed, workers=True, verbose=False)
            trial = dataclasses.replace(run, lr_factor=factor)
            module, datamodule = recipes.finetune_stage(self.data, self.settings, trial, encoder)
            name = run.name if len(factors) == 1 else f"{run.name}-lr{factor:g}x"
            trainer = self.trainer(name, max_epochs=run.epochs, check_val_every_n_epoch=run.epochs + 1)
            self.ctrl_c.call(trainer.fit, module, datamodule)
            validation = self.ctrl_c.call(trainer.validate, module, datamodule, verbose=False)[0]
            accuracy = float(validation["val/acc"])  # synchronized: every process makes the same choice
            tried.append(f"{module.hparams.lr:.3g}: {accuracy:.4f}")
            if best is None or accuracy > best[0]:
                best = (accuracy, factor, module, datamodule, trainer)
        assert best is not None  # --lr-factors is never empty
        accuracy, factor, module, datamodule, trainer = best
        test = self.ctrl_c.call(trainer.test, module, datamodule, verbose=False)[0]
        record = {
            "init": run.init,
            "labels_per_class": run.labels_per_class,
            "seed": run.seed,
            "test_accuracy": round(float(test["test/acc"]), 4),
            "test_macro_f1": round(float(test["test/f1"]), 4),
            "val_accuracy": round(accuracy, 4),
            "strategy": run.strategy,
            "lr": float(f"{module.hparams.lr:.4g}"),
            "lr_factor": factor,
            "val_accuracy_by_lr": "; ".join(tried),
            "epochs": run.epochs,
            "steps": int(trainer.global_step),
            "train_examples": run.labels_per_class * self.data.num_classes,
            "seconds": round(time.time() - start, 1),
            "confusion_matrix": module.test_confusion_matrix.int().tolist(),
        }
        return record, trainer

    # ------------------------------------------------------------------------------ report
    def report(self, plan: Plan, records: list[dict[str, Any]]) -> None:
        if not self.writer:
            return
        from lightning_transfer.transfer.outputs import write_outputs

        write_outputs(self, plan, records)


def run_command(argv: list[str], started: float | None = None) -> list[dict[str, Any]]:
    """Run ``lightning-transfer transfer`` with ``argv`` in this process and return the records of the
    fine-tuning runs; the budget counts from ``started`` (default: now)."""
    settings = parse_settings(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    import datasets

    datasets.disable_progress_bars()  # table reading and tokenisation: one line per stage says enough
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*Found .* module.* in eval mode.*")
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")  # tiny label sets
        warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")  # Lightning vs torch 2.x
        return Transfer(settings, started).run()


def main(argv: list[str] | None = None) -> None:
    """``lightning-transfer transfer``: run, and print bad input as one line (exit code 2) and Ctrl-C
    as one line saying what was kept and how to resume (exit code 130)."""
    try:
        run_command(sys.argv[1:] if argv is None else argv, started=process_start_time())
    except KeyboardInterrupt as err:
        if process_rank() == 0:
            line = str(err) if isinstance(err, Interrupted) else "interrupted (Ctrl-C) before any stage ran"
            print(f"lightning-transfer transfer: {line}", file=sys.stderr, flush=True)
        sys.exit(EXIT_CODE)
    except UserInputError as err:
        if os.environ.get("LIGHTNING_TRANSFER_TRACEBACK"):
            raise
        message = " ".join(str(err).split())
        print(f"lightning-transfer transfer: error: {message}", file=sys.stderr)
        sys.exit(2)
