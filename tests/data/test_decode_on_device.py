"""ImageDataModule(decode_on="device"): the loader reads bytes, the batch is decoded after the transfer.

On this CPU machine the "device" is the CPU, which is the point: the batches must equal those of
decoding in the loader (PNG decodes bit-exactly either way), unreadable files included."""
import warnings

import lightning.pytorch as pl
import pytest
import torch

from lightning_transfer import SimCLRModule
from lightning_transfer.data.images import ImageDataModule
from lightning_transfer.errors import UserInputError
from tests.helpers.images import write_image_folder


def _data(root, decode_on: str, num_workers: int = 0) -> ImageDataModule:
    dm = ImageDataModule(source="folder", root=str(root), image_size=16, batch_size=4, val_size=2, test_size=2,
                         decode_on=decode_on, augment_on="device", num_workers=num_workers)
    dm.setup("fit")
    return dm


def _batches(dm: ImageDataModule, loader) -> list[dict]:
    return [dm.on_after_batch_transfer(batch, 0) for batch in loader]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_decoding_on_the_device_gives_the_loaders_batches(tmp_path, num_workers):
    root = write_image_folder(tmp_path / "imgs", per_class=8)
    (root / "dog" / "0.png").write_bytes(b"not a png at all")  # unreadable: skipped, the batch keeps its size
    on_loader, on_device = _data(root, "loader", num_workers), _data(root, "device", num_workers)
    raw = next(iter(on_device.train_dataloader()))
    assert "encoded" in raw and isinstance(raw["encoded"][0], bytes)  # the workers only read the files
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in ("train_dataloader", "val_dataloader", "test_dataloader"):
            a = _batches(on_loader, getattr(on_loader, name)())
            b = _batches(on_device, getattr(on_device, name)())
            assert len(a) == len(b) > 0
            for x, y in zip(a, b):
                assert torch.equal(x["labels"], y["labels"])
                views = ("views",) if "views" in x else ("images",)
                for key in views:
                    torch.testing.assert_close(x[key], y[key], rtol=0, atol=0)


def test_simclr_trains_on_batches_decoded_after_the_transfer(tmp_path):
    root = write_image_folder(tmp_path / "imgs", per_class=8)
    dm = ImageDataModule(source="folder", root=str(root), image_size=16, batch_size=4, val_size=2, test_size=2,
                         decode_on="device")
    model = SimCLRModule(backbone="convnet", width=8, projection_hidden_dim=16, projection_dim=8, optimizer="adamw", lr=1e-3)
    trainer = pl.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0)
    before = [p.detach().clone() for p in model.parameters()]
    trainer.fit(model, dm)
    assert trainer.global_step == 3
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_decode_on_is_checked():
    with pytest.raises(UserInputError, match="decode_on must be"):
        ImageDataModule(source="folder", decode_on="gpu")
    with pytest.raises(UserInputError, match="decode_on=device needs source=folder"):
        ImageDataModule(source="mnist_demo", decode_on="device")
    with pytest.raises(UserInputError, match="decode_on=device needs"):
        ImageDataModule(source="folder", decode_on="device", augment_on="loader")
