"""Ctrl-C during a fine-tuning stage, in this process: the command exits 130 with one line saying what
was kept, never records the interrupted stage, and a rerun resumes from there.

The stage's Trainer is stopped by a callback, in each way a Ctrl-C reaches the command: through the
installed Lightning (``KeyboardInterrupt`` caught, then ``sys.exit(1)``), through Lightning 2.3's
handling (``KeyboardInterrupt`` caught, then a normal return with ``trainer.interrupted``), and as a
SIGINT whose ``KeyboardInterrupt`` is lost (raised inside code that swallows it, as a ``__del__`` does).
The planning and pretraining stages are replaced by a fixed plan and a random exported encoder, so that
only the stage under test trains; the slow end-to-end test is in test_transfer_command.py.
"""

import json
import signal

import lightning.pytorch as pl
import pytest
from lightning.pytorch.trainer import call

from lightning_transfer.transfer import pipeline, recipes
from lightning_transfer.transfer.budget import FinetuneRun, Plan, Timings
from lightning_transfer.transfer.inputs import prepare_data
from lightning_transfer.transfer.interrupt import EXIT_CODE, CtrlC
from lightning_transfer.transfer.settings import parse_settings
from tests.helpers.images import write_image_folder

FIRST, SECOND = "finetune-pretrained-k2-seed0", "finetune-scratch-k2-seed0"


class CtrlCInTraining(pl.Callback):
    """Stops the fit after its first training batch, as Ctrl-C would."""

    def __init__(self, how: str) -> None:
        self.how = how

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.how != "lost":
            raise KeyboardInterrupt
        try:
            signal.raise_signal(signal.SIGINT)  # a real Ctrl-C, whose KeyboardInterrupt is raised here ...
            for _ in range(10**6):  # (at the latest within a few bytecodes)
                pass
        except KeyboardInterrupt:
            pass  # ... and lost


def handle_as_lightning_2_3(trainer, trainer_fn, *args, **kwargs):
    """Lightning 2.3's handling of Ctrl-C in fit/validate/test: ``on_exception``, then a normal return
    with ``trainer.interrupted`` set."""
    try:
        return trainer_fn(*args, **kwargs)
    except KeyboardInterrupt as exception:
        if not trainer.interrupted:
            call._interrupt(trainer, exception)
            trainer._teardown()


def exit_code(main, argv) -> int:
    """The exit code of ``main(argv)``; a KeyboardInterrupt escaping it fails the test (instead of
    stopping the whole session, as pytest does with one)."""
    try:
        main(argv)
    except SystemExit as stop:
        return stop.code
    except KeyboardInterrupt as escaped:
        pytest.fail(f"Ctrl-C escaped {main.__module__}.main as {escaped!r}: a traceback, not one line")
    pytest.fail(f"{main.__module__}.main returned: the command went on after Ctrl-C")


@pytest.fixture(autouse=True)
def sigint_as_in_a_terminal():
    """Python's own SIGINT handler in this process while a test runs: a suite run in the background
    starts with SIGINT ignored (see test_transfer_command.sigint_as_in_a_terminal)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture
def command(tmp_path, monkeypatch):
    """The command's arguments on a tiny image folder, with a fixed plan of two fine-tuning runs on a
    random exported encoder (no calibration, no pretraining)."""
    root = write_image_folder(tmp_path / "images", classes=("cat", "dog"), per_class=8, size=8)
    out = tmp_path / "out"
    argv = [str(root), "--output-dir", str(out), "--labels-per-class", "2", "--seeds", "1", "--test-size", "4"]
    argv += ["--val-size", "4", "--no-progress", "--trainer.accelerator", "cpu"]
    settings = parse_settings(argv)
    module, _ = recipes.simclr_stage(prepare_data(settings, out / "data"), settings, batch_size=4)
    encoder = module.export_encoder(tmp_path / "encoder")
    runs = [
        FinetuneRun("pretrained", 2, 0, "linear", batch_size=4, epochs=2, steps=2, seconds=1.0),
        FinetuneRun("scratch", 2, 0, "full", batch_size=4, epochs=2, steps=2, seconds=1.0),
    ]
    timings = Timings(0.1, 1.0, (4, 4), (0.1, 0.1), 0.1, 1.0)
    plan = Plan(60.0, 1, 4, 2, runs, timings, {"pretraining": 1.0, "finetuning": 2.0, "total": 3.0})
    monkeypatch.setattr(pipeline.Transfer, "plan", lambda self: plan)
    monkeypatch.setattr(pipeline.Transfer, "pretrain", lambda self, plan: encoder)
    return argv, out


@pytest.mark.parametrize("how", ["lightning", "lightning 2.3", "lost"])
def test_ctrl_c_in_a_stage_exits_130_with_one_line_and_never_records_that_stage(command, how, monkeypatch, capsys):
    argv, out = command
    if how == "lightning 2.3":
        monkeypatch.setattr(call, "_call_and_handle_interrupt", handle_as_lightning_2_3)
    make_trainer = pipeline.Transfer.trainer

    def trainer(self, name, callbacks=None, **stage):
        interrupt = [CtrlCInTraining(how)] if name.startswith(SECOND) else []  # any of its LR trials
        return make_trainer(self, name, [*(callbacks or []), *interrupt], **stage)

    monkeypatch.setattr(pipeline.Transfer, "trainer", trainer)
    handler = signal.getsignal(signal.SIGINT)
    assert exit_code(pipeline.main, argv) == EXIT_CODE
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("lightning-transfer")] == [
        f"lightning-transfer transfer: interrupted (Ctrl-C): kept 1 of 2 fine-tuning runs in {out} "
        "(the stage in progress is not kept); run the same command again to resume"
    ]
    assert "Traceback" not in err
    assert sorted(p.name for p in (out / "stages").iterdir()) == [f"{FIRST}.json"]
    assert json.loads((out / "best_model" / "model.json").read_text())["stage"] == FIRST
    assert not (out / "results.csv").exists()
    assert signal.getsignal(signal.SIGINT) == handler  # Ctrl-C works again in this process

    monkeypatch.setattr(pipeline.Transfer, "trainer", make_trainer)
    records = pipeline.run_command(argv)  # the same command again: the interrupted stage runs, only it
    assert "done in an earlier run" in capsys.readouterr().out
    assert [(r["init"], r["steps"]) for r in records] == [("pretrained", 2), ("scratch", 2)]
    assert (out / "stages" / f"{SECOND}.json").is_file() and (out / "results.csv").is_file()


def test_ctrl_c_noted_while_its_keyboard_interrupt_was_lost_stops_at_the_next_check():
    with CtrlC() as ctrl_c:
        ctrl_c.check()  # nothing pressed: nothing raised
        try:
            signal.raise_signal(signal.SIGINT)
            for _ in range(10**6):
                pass
        except KeyboardInterrupt:
            pass  # lost
        with pytest.raises(KeyboardInterrupt):
            ctrl_c.check()


def test_an_ignored_sigint_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with CtrlC():
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_in_the_demo_exits_130_with_the_transfer_line(monkeypatch, capsys):
    from lightning_transfer import demo
    from lightning_transfer.transfer.interrupt import Interrupted

    def interrupted(arguments):
        raise Interrupted(
            "interrupted (Ctrl-C): kept the plan in runs/demo/mnist; run the same command again to resume"
        )

    monkeypatch.setattr(demo, "task_arguments", lambda task, plan, out, progress: [task])
    monkeypatch.setattr(demo, "run_command", interrupted)
    assert exit_code(demo.main, ["--smoke", "--tasks", "mnist"]) == EXIT_CODE
    assert capsys.readouterr().err.splitlines() == [
        "lightning_transfer.demo: interrupted (Ctrl-C): kept the plan in runs/demo/mnist; run the same command again "
        "to resume"
    ]
