"""ImageDataModule(source="litdata"): shards written by ``optimize`` from a small image folder the
tests write, read back with the folder source's splits, streamed once per epoch, resumed exactly
mid-epoch, and every bad input a one-line UserInputError."""
from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lightning_transfer import ImageDataModule, SimCLRModule
from lightning_transfer.data.streaming import ResumableStreamingDataLoader
from lightning_transfer.errors import UserInputError
from lightning_transfer.optimize import optimize
from tests.helpers.images import write_image_folder

SPLITS = dict(val_size=3, test_size=3)  # 3 classes x 8 images: 18 training images
SETTINGS = dict(image_size=8, decode_size=8, batch_size=4, num_workers=0, knn_bank_size=6, **SPLITS)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("images") / "images", classes=("ant", "bee", "cat"), per_class=8,
                              size=12)


@pytest.fixture(scope="module")
def shards(folder, tmp_path_factory) -> Path:
    return optimize(folder, tmp_path_factory.mktemp("shards") / "out", workers=2, start_method="fork", progress=False,
                    **SPLITS)


def litdata_dm(root: Path, **overrides) -> ImageDataModule:
    return ImageDataModule(source="litdata", root=str(root), **{**SETTINGS, **overrides})


def test_shards_give_the_folder_source_s_splits_labels_subsets_and_bank(folder, shards):
    manifest = json.loads((shards / "lightning_transfer.json").read_text())
    assert {s: manifest["splits"][s]["count"] for s in ("train", "val", "test")} == {"train": 18, "val": 3, "test": 3}
    written = manifest["splits"]["train"]["source_index"]
    assert sorted(written) != written, "training images are written shuffled (litdata mixes only within chunks)"
    for overrides in ({}, {"mode": "supervised", "labels_per_class": 2}):
        reference = ImageDataModule(source="folder", root=str(folder), **{**SETTINGS, **overrides})
        streamed = litdata_dm(shards, **overrides)
        reference.setup()
        streamed.setup()
        assert streamed.class_names == reference.class_names == ["ant", "bee", "cat"]
        assert streamed.num_classes == reference.num_classes == 3
        for name in ("train_set", "val_set", "test_set"):
            ours, theirs = getattr(streamed, name), getattr(reference, name)
            assert len(ours) == len(theirs), name
            for i in range(len(theirs)):
                assert torch.equal(ours[i][0], theirs[i][0]) and ours[i][1] == theirs[i][1], (name, i)
        bank = [torch.cat([b["labels"] for b in dm.bank_dataloader()]) for dm in (streamed, reference)]
        assert torch.equal(bank[0], bank[1]) and len(bank[0]) == 6
    assert len(streamed.train_set) == 6  # labels_per_class=2: read by index, not streamed
    assert not isinstance(streamed.train_dataloader(), ResumableStreamingDataLoader)
    # supervised on every label: streamed, each image with its label
    full = litdata_dm(shards, mode="supervised")
    full.setup()
    labels = manifest["splits"]["train"]["labels"]
    for batch in full.train_dataloader():
        batch = full.on_after_batch_transfer(batch, 0)
        assert batch["images"].shape == (4, 3, 8, 8)
        assert batch["labels"].tolist() == [labels[i] for i in batch["index"].tolist()]


def test_every_training_image_once_per_epoch_in_a_new_order_and_the_same_views_in_a_second_run(shards):
    def epochs(dm: ImageDataModule, n: int = 3):
        dm.setup()
        loader = dm.train_dataloader()
        assert isinstance(loader, ResumableStreamingDataLoader) and len(loader) == 4  # 18 // 4 whole batches
        out = []
        for _ in range(n):
            batches = [dm.on_after_batch_transfer(b, 0) for b in loader]
            out.append(batches)
        return out

    first, second = epochs(litdata_dm(shards)), epochs(litdata_dm(shards))
    orders = [torch.cat([b["index"] for b in epoch]).tolist() for epoch in first]
    for order in orders:
        assert len(order) == len(set(order)) == 16 and set(order) <= set(range(18))  # drop_last: 2 left out
    assert len({tuple(o) for o in orders}) == 3  # a new order every epoch
    assert set().union(*map(set, orders)) == set(range(18))  # litdata's epoch cut moves: nobody is always left out
    for a, b in zip(itertools.chain(*first), itertools.chain(*second)):
        assert torch.equal(a["index"], b["index"]) and torch.equal(a["labels"], b["labels"])
        torch.testing.assert_close(a["views"][0], b["views"][0], rtol=0, atol=0)
    assert not torch.equal(first[0][0]["views"][0], first[0][0]["views"][1])  # two different views


# ---------------------------------------------------------------------------------------------- resume
class Crash(Exception):
    """Stands for a killed job."""


class RecordIds(Callback):
    """The sample ids of every training step; raises before step ``crash_at`` starts (after the
    checkpoint of that step was written: ModelCheckpoint runs in on_train_batch_end)."""

    def __init__(self, crash_at: int | None = None):
        self.ids: dict[int, list[int]] = {}
        self.crash_at = crash_at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.crash_at:
            raise Crash(f"killed before step {self.crash_at}")
        self.ids[trainer.global_step] = batch["index"].tolist()


def simclr() -> SimCLRModule:
    return SimCLRModule(backbone="convnet", width=4, in_channels=3, projection_hidden_dim=8, projection_dim=4,
                        optimizer="lars", lr=0.5, lr_scaling="none", num_classes=0, warmup_steps=2)


def fit(root: Path, data, callbacks, ckpt_path=None, **settings) -> tuple[SimCLRModule, dict]:
    record = next(c for c in callbacks if isinstance(c, RecordIds))
    module = simclr()
    trainer = pl.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                         default_root_dir=str(root), enable_checkpointing=any(isinstance(c, ModelCheckpoint)
                                                                              for c in callbacks),
                         callbacks=callbacks, **settings)
    trainer.fit(module, data, ckpt_path=ckpt_path)
    return module, record.ids


@pytest.mark.parametrize("workers", [0, 2])
def test_a_fit_killed_mid_epoch_resumes_with_the_samples_and_weights_of_the_uninterrupted_run(tmp_path, shards,
                                                                                              workers):
    """2 epochs of 4 steps; killed before step 2 (mid-epoch 0) and step 6 (mid-epoch 1), resumed from
    the step checkpoint in a process whose random state differs. Without ResumeTrainLoaders handing
    the loader its state (Lightning #20550 / litdata #775) the resumed run starts the epoch over."""
    pl.seed_everything(0)
    full, full_ids = fit(tmp_path / "full", litdata_dm(shards, num_workers=workers), [RecordIds()])
    assert sorted(full_ids) == list(range(8))
    for k in (2, 6):
        pl.seed_everything(0)
        saver = ModelCheckpoint(dirpath=tmp_path / f"ckpt-{k}", every_n_train_steps=k, save_top_k=-1)
        with pytest.raises(Crash):
            fit(tmp_path / "crashed", litdata_dm(shards, num_workers=workers), [saver, RecordIds(crash_at=k)])
        (checkpoint,) = (tmp_path / f"ckpt-{k}").glob("*.ckpt")
        pl.seed_everything(1234)
        resumed, ids = fit(tmp_path / "resumed", litdata_dm(shards, num_workers=workers), [RecordIds()],
                           ckpt_path=str(checkpoint))
        assert ids == {step: full_ids[step] for step in range(k, 8)}, f"resumed from step {k}"
        for name, value in resumed.state_dict().items():
            torch.testing.assert_close(value, full.state_dict()[name], rtol=0, atol=0, msg=f"{name} from step {k}")


def test_resume_at_the_end_of_an_epoch_cut_short_by_limit_train_batches_starts_the_next_epoch(tmp_path, shards):
    settings = dict(limit_train_batches=2)
    pl.seed_everything(0)
    _, full_ids = fit(tmp_path / "full", litdata_dm(shards), [RecordIds()], **settings)
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_top_k=-1)
    with pytest.raises(Crash):
        fit(tmp_path / "crashed", litdata_dm(shards), [saver, RecordIds(crash_at=2)], **settings)
    (checkpoint,) = (tmp_path / "ckpt").glob("*.ckpt")
    _, ids = fit(tmp_path / "resumed", litdata_dm(shards), [RecordIds()], ckpt_path=str(checkpoint), **settings)
    assert ids == {2: full_ids[2], 3: full_ids[3]}


# ---------------------------------------------------------------------------------------------- bad input
def one_line_error(make, match: str) -> str:
    with pytest.raises(UserInputError, match=match) as caught:
        make()
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def copy_of(shards: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(shards, tmp_path / "copy"))


def test_missing_shards_manifest_or_index_are_one_line_errors(tmp_path, shards):
    one_line_error(lambda: litdata_dm(tmp_path / "nowhere").setup(), r"no such folder.*lightning-transfer optimize")
    broken = copy_of(shards, tmp_path)
    (broken / "train" / "index.json").unlink()
    one_line_error(lambda: litdata_dm(broken).setup(), r"train/index.json is missing.*--overwrite")
    (broken / "lightning_transfer.json").unlink()
    one_line_error(lambda: litdata_dm(broken).setup(), r"has no lightning_transfer.json")


@pytest.mark.parametrize("corruption", ["garbage", "truncated", "no chunks", "chunk file gone", "other run"])
def test_a_corrupt_index_is_a_one_line_error_naming_it(tmp_path, shards, corruption):
    broken = copy_of(shards, tmp_path)
    index = broken / "test" / "index.json"
    content = json.loads(index.read_text())
    if corruption == "garbage":
        index.write_bytes(b"\x00\xff not json")
    elif corruption == "truncated":
        index.write_text(index.read_text()[:40])
    elif corruption == "no chunks":
        index.write_text(json.dumps({"config": content["config"]}))
    elif corruption == "chunk file gone":
        (broken / "test" / content["chunks"][0]["filename"]).unlink()
    else:
        content["chunks"][0]["chunk_size"] += 1
        index.write_text(json.dumps(content))
    expected = {"chunk file gone": "lacks 1 chunk file", "other run": "lists 4 samples but"}.get(
        corruption, "is not a valid litdata index")
    message = one_line_error(lambda: litdata_dm(broken).setup(), expected)
    assert "test/index.json" in message or "test" in message


def test_split_settings_that_differ_from_the_shards_are_refused(shards):
    one_line_error(lambda: litdata_dm(shards, test_size=4).setup(), r"written with test_size=3 .* test_size=4")
    one_line_error(lambda: litdata_dm(shards, seed=1).setup(), r"written with seed=0")


def test_more_batch_than_training_images_is_an_error(shards):
    one_line_error(lambda: litdata_dm(shards, batch_size=20).setup(), r"batch_size 20 is larger than the 18")
    dm = litdata_dm(shards, batch_size=10, drop_last=False)
    dm.setup()
    assert [len(b["index"]) for b in dm.train_dataloader()] == [10, 8]  # one process, no drop_last: all 18


def test_an_unreadable_image_is_skipped_with_a_warning_and_training_batches_keep_their_size(tmp_path):
    images = write_image_folder(tmp_path / "images", classes=("ant", "bee"), per_class=6, size=12)
    splits = dict(val_size=2, test_size=2)
    reference = ImageDataModule(source="folder", root=str(images), **{**SETTINGS, **splits})
    reference.setup()
    bad = reference.train_set.indices[-1]  # a training image (of 8)
    path = reference.train_set.dataset.files[bad][0]
    path.write_bytes(b"not an image at all")
    out = optimize(images, tmp_path / "out", start_method="fork", progress=False, **splits)
    dm = litdata_dm(out, batch_size=8, knn_bank_size=0, **splits)
    dm.setup()
    with pytest.warns(UserWarning, match=rf"skipped unreadable image {path.parent.name}/{path.name}"):
        (batch,) = list(dm.train_dataloader())
    assert len(batch["index"]) == len(batch["labels"]) == len(batch["raw"]) == 8
    position = json.loads((out / "lightning_transfer.json").read_text())["splits"]["train"]["source_index"].index(bad)
    assert position not in batch["index"].tolist()  # "index" names the images the batch holds
    assert len(set(batch["index"].tolist())) == 7  # a readable one fills the place


def _ids(rows) -> list[int]:
    return [int(item["index"]) for item, _ in rows]


def test_resuming_another_stream_is_a_one_line_error(tmp_path, shards):
    from lightning_transfer.data.streaming import EpochTaggedStream

    def loader(root: Path, seed: int = 0) -> ResumableStreamingDataLoader:
        return ResumableStreamingDataLoader(EpochTaggedStream(str(root / "train"), shuffle=True, seed=seed),
                                            batch_size=4, collate_fn=_ids)

    first = loader(shards)
    iterator = iter(first)
    seen = [next(iterator), next(iterator)]
    state = first.state_dict()
    same = loader(shards)
    same.load_state_dict(state)
    assert len(seen) + len(list(same)) == 5  # 18 samples in batches of 4, the last partial: resumed after two
    for other, match in ((loader(copy_of(shards, tmp_path)), r"resume with data\.root"),
                         (loader(shards, seed=1), r"resume with data\.seed: 0")):
        other.load_state_dict(state)
        with pytest.raises(UserInputError, match=match) as caught:
            next(iter(other))
        assert "\n" not in str(caught.value)
