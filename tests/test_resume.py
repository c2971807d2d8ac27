"""Interrupted runs lose nothing: a fit that crashes after a step checkpoint and resumes from it ends
with exactly the weights of the uninterrupted run (optimizer, LARS and scheduler state, data order,
augmentation, masking and dropout randomness restored), mid-epoch and at an epoch boundary; and a
checkpoint save that dies half-way leaves the previous checkpoint intact."""
import random
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.utils.data import DataLoader

from lightning_transfer import BertPretrainModule, ImageDataModule, SimCLRModule, TextPretrainDataModule
from lightning_transfer.data.resumable import ResumableDataLoader
from lightning_transfer.modules.finetune import FineTuneModule


class Crash(Exception):
    """Stands for a killed job."""


class CrashAtStep(Callback):
    """Raise when step ``step`` is about to start, i.e. after the checkpoint of step ``step``
    (ModelCheckpoint runs last in ``on_train_batch_end``) has been written."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise Crash(f"killed before step {self.step}")


def _trainer(root: Path, **overrides) -> pl.Trainer:
    settings = dict(accelerator="cpu", max_epochs=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                    num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=str(root), enable_checkpointing=False)
    settings.update(overrides)
    return pl.Trainer(**settings)


def assert_resume_is_exact(tmp_path: Path, make_module, make_data, crash_steps, **trainer_settings) -> None:
    """Uninterrupted fit vs. fit killed before step k then resumed from the step-k checkpoint."""
    pl.seed_everything(0)
    module = make_module()
    _trainer(tmp_path / "full", **trainer_settings).fit(module, make_data())
    expected = {name: value.clone() for name, value in module.state_dict().items()}
    for k in crash_steps:
        pl.seed_everything(0)
        directory = tmp_path / f"ckpt-{k}"
        saver = ModelCheckpoint(dirpath=directory, every_n_train_steps=k, save_top_k=-1)
        with pytest.raises(Crash):
            _trainer(tmp_path / "crashed", callbacks=[saver, CrashAtStep(k)], enable_checkpointing=True,
                     **trainer_settings).fit(make_module(), make_data())
        (checkpoint,) = directory.glob("*.ckpt")
        pl.seed_everything(1234)  # the resumed process starts from another random state
        resumed = make_module()
        _trainer(tmp_path / "resumed", **trainer_settings).fit(resumed, make_data(), ckpt_path=str(checkpoint))
        for name, value in resumed.state_dict().items():
            torch.testing.assert_close(value, expected[name], rtol=0, atol=0, msg=f"{name} after resuming from step {k}")


# ---------------------------------------------------------------------------------------------- modules
def _mnist(mode: str) -> ImageDataModule:
    # 30 training digits, batches of 8 (drop_last): 3 steps per epoch, 6 in all
    return ImageDataModule(source="mnist_demo", mode=mode, batch_size=8, val_size=10, test_size=4960, image_size=16)


def _simclr() -> SimCLRModule:
    return SimCLRModule(backbone="convnet", width=8, in_channels=1, projection_hidden_dim=16, projection_dim=8,
                        optimizer="lars", lr=0.5, lr_scaling="none", num_classes=0, warmup_steps=2)


def test_simclr_resumes_exactly_mid_epoch_and_at_an_epoch_boundary(tmp_path):
    assert_resume_is_exact(tmp_path, _simclr, lambda: _mnist("simclr"), crash_steps=(2, 3))


def test_resume_at_the_end_of_an_epoch_cut_short_by_limit_train_batches_starts_the_next_epoch(tmp_path):
    assert_resume_is_exact(tmp_path, _simclr, lambda: _mnist("simclr"), crash_steps=(2,), limit_train_batches=2)


def test_gradual_image_fine_tuning_with_dropout_resumes_exactly_mid_epoch(tmp_path):
    """Epoch 0 trains the head, epoch 1 also the top block: the crash is in epoch 1."""
    def module():
        return FineTuneModule(encoder_config={"backbone": "convnet", "in_channels": 1, "small_images": True, "width": 8},
                              num_classes=10, strategy="gradual", lr=1e-2, head_dropout=0.5, warmup_steps=1)

    assert_resume_is_exact(tmp_path, module, lambda: _mnist("supervised"), crash_steps=(4,))


def _toy_corpus(path: Path, documents: int = 24) -> Path:
    rng = random.Random(0)
    words = ["cat", "dog", "owl", "fox", "red", "big", "sees", "likes", "the", "river", "house", "field"]
    path.write_text("\n\n".join("\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(4, 9))) + " ."
                                          for _ in range(4)) for _ in range(documents)) + "\n")
    return path


def test_bert_pretraining_with_dropout_and_masking_resumes_exactly_mid_epoch(tmp_path):
    corpus = _toy_corpus(tmp_path / "corpus.txt")

    def data():
        return TextPretrainDataModule(source=str(corpus), tokenizer_vocab_size=64, min_frequency=1, max_seq_length=16,
                                      nsp=True, batch_size=8, val_fraction=0.0, cache_dir=str(tmp_path / "cache"))

    def module():
        return BertPretrainModule(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                  max_position_embeddings=16, lr=1e-3, warmup_steps=2)

    steps = len(data().train_dataloader())
    assert steps >= 3, steps
    assert_resume_is_exact(tmp_path, module, data, crash_steps=(steps - 1,))


# ---------------------------------------------------------------------------------------------- the loader
def test_resumable_loader_continues_the_interrupted_epoch_in_the_same_order():
    def collect(loader, epochs):
        return [torch.cat(list(loader)).tolist() for _ in range(epochs)]

    data = list(range(20))
    reference = collect(ResumableDataLoader(data, batch_size=4, shuffle=True, seed=3), 3)
    assert reference[0] != reference[1] and sorted(reference[0]) == data  # a new permutation every epoch

    first = ResumableDataLoader(data, batch_size=4, shuffle=True, seed=3)
    list(first)
    iterator = iter(first)
    seen = [next(iterator), next(iterator)]
    state = first.state_dict()
    assert (state["epoch"], state["consumed"]) == (1, 2)
    second = ResumableDataLoader(data, batch_size=4, shuffle=True, seed=3)
    second.load_state_dict(state)
    rest = torch.cat(list(second)).tolist()
    assert torch.cat(seen).tolist() + rest == reference[1]
    assert torch.cat(list(second)).tolist() == reference[2]


def test_resumable_loader_restores_this_process_s_random_state_when_its_first_new_batch_is_drawn(monkeypatch):
    """``rng_per_rank`` (a DDP checkpoint): each process gets its own state back, one the checkpoint
    has no state for falls back to ``rng``; restored at the first new batch, after anything drawn since."""
    from lightning_transfer.data import resumable

    data = list(range(8))
    first = ResumableDataLoader(data, batch_size=2, shuffle=True, seed=0)
    iterator = iter(first)
    next(iterator)
    position = first.state_dict()  # after the first batch
    second_batch = next(iterator)
    saved = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        saved.append(resumable._rng_state())
    state = {**position, "rng": saved[0], "rng_per_rank": saved}
    for rank, seed in ((0, 1), (1, 2), (2, 1)):  # rank 2: not in the checkpoint, gets process 0's state
        torch.manual_seed(seed)
        expected = torch.rand(3)
        monkeypatch.setattr(resumable.distributed, "rank", lambda rank=rank: rank)
        resumed = ResumableDataLoader(data, batch_size=2, shuffle=True, seed=0)
        resumed.load_state_dict(state)
        torch.manual_seed(99)  # a hook drawing between the load and the first batch changes nothing
        assert torch.equal(next(iter(resumed)), second_batch)
        assert torch.equal(torch.rand(3), expected), rank


# ---------------------------------------------------------------------------------------------- atomic saves
def test_a_checkpoint_save_that_dies_half_way_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    """Lightning 2.6 already saves atomically (``_atomic_save``: serialize to memory, then write through
    an fsspec transaction, i.e. a temporary file moved into place): no plugin of ours is needed."""
    import fsspec.implementations.local as local

    from lightning.pytorch.demos.boring_classes import BoringModel

    model = BoringModel()
    run = _trainer(tmp_path, max_steps=1)
    run.fit(model)
    path = tmp_path / "last.ckpt"
    run.save_checkpoint(path)
    good = path.read_bytes()

    real_write = local.LocalFileOpener.write

    def dying_write(self, data):  # half the bytes reach the disk, then the process "dies"
        real_write(self, data[: len(data) // 2])
        raise OSError("No space left on device")

    monkeypatch.setattr(local.LocalFileOpener, "write", dying_write)
    with pytest.raises(OSError, match="No space left"):
        run.save_checkpoint(path)
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".ckpt"] == ["last.ckpt"]
    torch.load(path, weights_only=False)  # still loads
