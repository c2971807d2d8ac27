"""The litdata source under DDP: two CPU processes with gloo (``strategy="ddp"``, ``devices=2``), started
like torchrun's children (see tests/helpers/ddp.py) by running this file as a script, once for all
the tests below. Each process writes what it saw; the tests check:

- each epoch of an uninterrupted fit, the processes see disjoint samples and together every training sample once (16
  samples, batches of 4: litdata's forced drop_last leaves nothing out, so the check is exact);
- a fit resumed from a mid-epoch step checkpoint (``ckpt_path``) sees, on each process, the samples
  the uninterrupted run saw after that step, and ends with its weights;
- a training split with fewer samples than processes is one clear error on both processes (no hang).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest

from tests.helpers.once import once_for_all_workers

ROOT = Path(__file__).resolve().parents[2]
STEPS = 4  # 2 epochs of 2 steps per process
CRASH_STEP = 1  # mid-epoch 0


# ---------------------------------------------------------------------------------------------- the processes
def _child(rank: int, port: int, out: Path, shards: Path, tiny: Path) -> None:
    from datetime import timedelta

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", NODE_RANK="0",
                      LOCAL_RANK=str(rank), RANK=str(rank), PL_DISABLE_FORK="1")
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=timedelta(seconds=60))
    for name, scenario in (("resume", _resume), ("tiny", _tiny)):
        started = time.monotonic()
        try:
            result = scenario(rank, out, shards, tiny)
        except Exception:  # noqa: BLE001 - reported to the test through the file
            (out / f"{name}_rank{rank}.err").write_text(traceback.format_exc())
            break
        (out / f"{name}_rank{rank}.json").write_text(json.dumps({**result, "seconds": time.monotonic() - started}))
    dist.destroy_process_group()


def _data(root: Path, **overrides):
    from lightning_transfer import ImageDataModule

    settings = dict(image_size=8, decode_size=8, batch_size=4, num_workers=0, val_size=2, test_size=2, knn_bank_size=0)
    return ImageDataModule(source="litdata", root=str(root), **{**settings, **overrides})


def _fit(root: Path, shards: Path, callbacks, ckpt_path=None, seed: int = 0):
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import Callback

    from lightning_transfer import SimCLRModule

    class RecordIds(Callback):
        def __init__(self):
            self.ids: dict[int, list[int]] = {}
            self.epochs: dict[int, list[int]] = {}

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.ids[trainer.global_step] = batch["index"].tolist()
            self.epochs.setdefault(trainer.current_epoch, []).extend(batch["index"].tolist())

    pl.seed_everything(seed, verbose=False)
    record = RecordIds()
    module = SimCLRModule(backbone="convnet", width=4, in_channels=3, projection_hidden_dim=8, projection_dim=4,
                          optimizer="lars", lr=0.5, lr_scaling="none", num_classes=0, warmup_steps=1)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0, default_root_dir=str(root), callbacks=[record, *callbacks],
                         enable_checkpointing=bool(callbacks))
    return module, trainer, record


def _resume(rank: int, out: Path, shards: Path, tiny: Path) -> dict:
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint

    # The uninterrupted run writes the step checkpoint a killed run would have written (the same
    # state at the same step: the single-process tests kill a run for real); resuming from it must
    # continue this very run.
    saver = ModelCheckpoint(dirpath=out / "checkpoints", every_n_train_steps=1, save_top_k=-1)
    full, trainer, record = _fit(out / "full", shards, [saver])
    trainer.fit(full, _data(shards))
    steps = trainer.global_step
    (checkpoint,) = (out / "checkpoints").glob(f"*step={CRASH_STEP}.ckpt")
    resumed, trainer, resumed_record = _fit(out / "resumed", shards, [], seed=1234 + rank)
    trainer.fit(resumed, _data(shards), ckpt_path=str(checkpoint))
    differences = [float((a - b).abs().max()) for a, b in zip(full.state_dict().values(), resumed.state_dict().values())
                   if torch.is_floating_point(a)]
    return {"full": record.ids, "epochs": record.epochs, "steps": steps, "resumed": resumed_record.ids,
            "max_weight_difference": max(differences)}


def _tiny(rank: int, out: Path, shards: Path, tiny: Path) -> dict:
    from lightning_transfer.errors import UserInputError

    module, trainer, _ = _fit(out / "tiny", tiny, [])
    try:
        trainer.fit(module, _data(tiny, batch_size=1, val_size=0, test_size=0))
    except UserInputError as err:
        return {"error": str(err)}
    return {"error": None}


# ---------------------------------------------------------------------------------------------- the tests
def _run_two_processes(base: Path) -> None:
    """Image shards, a one-image shard set, and the two processes; their results go to ``base/results``,
    their output to ``base/rank{r}.log``."""
    from lightning_transfer.optimize import optimize
    from tests.helpers.ddp import free_port
    from tests.helpers.images import write_image_folder

    images = write_image_folder(base / "images", classes=("ant", "bee"), per_class=10, size=12)
    shards = optimize(images, base / "shards", start_method="fork", progress=False, val_size=2, test_size=2)
    single = base / "single"
    single.mkdir()
    (single / "only.png").write_bytes((images / "ant" / "0.png").read_bytes())
    tiny = optimize(single, base / "tiny", start_method="fork", progress=False, val_size=0, test_size=0)
    out = base / "results"
    out.mkdir()
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    children = [subprocess.Popen([sys.executable, __file__, str(rank), str(port), str(out), str(shards), str(tiny)],
                                 env=env, cwd=ROOT, stdout=(base / f"rank{rank}.log").open("w"), stderr=subprocess.STDOUT)
                for rank in range(2)]
    deadline = time.monotonic() + 300
    for child in children:
        try:
            child.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for c in children:
                c.kill()
            pytest.fail("the two DDP processes did not finish in 300 s (a hang in a collective?)")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory, worker_id):
    base = once_for_all_workers(tmp_path_factory, worker_id, "litdata_ddp", _run_two_processes)
    out = base / "results"

    def result(name: str) -> list[dict]:
        errors = sorted(out.glob(f"{name}_rank*.err"))
        if errors:
            pytest.fail(f"scenario {name} failed under DDP:\n" + "\n".join(e.read_text() for e in errors))
        files = [out / f"{name}_rank{r}.json" for r in range(2)]
        if not all(f.exists() for f in files):
            logs = [(base / f"rank{r}.log").read_text()[-3000:] for r in range(2)]
            pytest.fail(f"scenario {name} did not finish on both processes:\n" + "\n".join(logs))
        return [json.loads(f.read_text()) for f in files]

    return result


def test_each_epoch_the_two_processes_see_disjoint_samples_and_together_every_sample_once(ranks):
    first, second = ranks("resume")  # the uninterrupted run
    assert first["steps"] == second["steps"] == STEPS
    orders = []
    for epoch in ("0", "1"):
        mine, theirs = first["epochs"][epoch], second["epochs"][epoch]
        assert len(mine) == len(theirs) == 8
        assert not set(mine) & set(theirs), epoch
        assert sorted(mine + theirs) == list(range(16)), epoch
        orders.append(mine + theirs)
    assert orders[0] != orders[1]  # reshuffled per epoch


def test_a_ddp_fit_resumed_mid_epoch_continues_each_process_with_the_uninterrupted_samples_and_weights(ranks):
    for rank in ranks("resume"):
        full = {int(step): ids for step, ids in rank["full"].items()}
        resumed = {int(step): ids for step, ids in rank["resumed"].items()}
        assert sorted(full) == list(range(STEPS))
        assert resumed == {step: full[step] for step in range(CRASH_STEP, STEPS)}
        assert rank["max_weight_difference"] == 0.0


def test_fewer_training_samples_than_processes_is_one_clear_error_on_every_process(ranks):
    messages = [rank["error"] for rank in ranks("tiny")]
    assert messages[0] == messages[1] and messages[0] is not None
    assert "\n" not in messages[0]
    assert "has 1 samples, too few for 2 process(es) with batch_size 1" in messages[0]


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    rank_, port_, out_, shards_, tiny_ = sys.argv[1:]
    _child(int(rank_), int(port_), Path(out_), Path(shards_), Path(tiny_))
