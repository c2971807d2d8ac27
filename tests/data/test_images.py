"""ImageDataModule: demo splits, batch formats, folders with bad files, offline errors."""
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_transfer.data.images import ImageDataModule, decode_image_file
from lightning_transfer.errors import UserInputError
from tests.helpers.images import write_image_folder


def test_mnist_demo_splits_are_fixed_stratified_and_disjoint():
    dm = ImageDataModule(source="mnist_demo", val_size=500, test_size=1000, seed=3, batch_size=32)
    dm.setup("fit")
    train, val, test = (set(s.indices) for s in (dm.train_set, dm.val_set, dm.test_set))
    assert (len(train), len(val), len(test)) == (3500, 500, 1000)
    assert not (train & val) and not (train & test) and not (val & test)
    labels = dm.train_set.dataset.labels
    assert labels[list(test)].bincount().tolist() == [100] * 10
    again = ImageDataModule(source="mnist_demo", val_size=500, test_size=1000, seed=3)
    again.setup("fit")
    assert set(again.test_set.indices) == test
    assert dm.num_classes == 10 and dm.num_channels == 1 and dm.image_size == 28


def test_labels_per_class_subsets_training_only():
    few = ImageDataModule(source="mnist_demo", mode="supervised", labels_per_class=5, batch_size=8)
    full = ImageDataModule(source="mnist_demo", mode="supervised", batch_size=8)
    few.setup("fit"), full.setup("fit")
    labels = few.train_set.dataset.labels
    assert labels[few.train_set.indices].bincount().tolist() == [5] * 10
    assert few.test_set.indices == full.test_set.indices and few.val_set.indices == full.val_set.indices


def test_subset_seed_draws_other_labels_with_the_same_val_and_test_sets():
    draws = [ImageDataModule(source="mnist_demo", mode="supervised", labels_per_class=3, subset_seed=s, batch_size=8)
             for s in (None, 0, 1)]
    for dm in draws:
        dm.setup("fit")
    default, zero, one = (set(dm.train_set.indices) for dm in draws)
    assert default == zero and one != zero  # subset_seed defaults to seed (0)
    assert draws[2].train_set.dataset.labels[draws[2].train_set.indices].bincount().tolist() == [3] * 10
    assert all(dm.test_set.indices == draws[0].test_set.indices and dm.val_set.indices == draws[0].val_set.indices
               for dm in draws)


@pytest.mark.parametrize("augment_on", ["loader", "device"])
def test_simclr_batches_hold_two_different_normalized_views(augment_on):
    dm = ImageDataModule(source="mnist_demo", batch_size=16, augment_on=augment_on)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    batch = dm.on_after_batch_transfer(batch, 0)
    v1, v2 = batch["views"]
    assert v1.shape == v2.shape == (16, 1, 28, 28) and v1.dtype == torch.float32
    assert not torch.allclose(v1, v2)
    assert batch["labels"].shape == (16,)
    val = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)
    expected = (dm.val_set.dataset.images[dm.val_set.indices[0]].float() / 255 - 0.1307) / 0.3081
    torch.testing.assert_close(val["images"][0], expected, atol=1e-5, rtol=1e-5)


def _train_views(dm: ImageDataModule, epochs: int = 2) -> list[torch.Tensor]:
    loader = dm.train_dataloader()
    return [torch.stack(dm.on_after_batch_transfer(batch, 0)["views"]) for _ in range(epochs) for batch in loader]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_views_do_not_depend_on_whether_the_loader_or_the_device_augments(num_workers):
    """One randomness path: each batch's seed comes from the collate function's stream, and the
    augmentation draws from that seed wherever it runs."""
    def data(augment_on):
        dm = ImageDataModule(source="mnist_demo", batch_size=8, val_size=10, test_size=4966, image_size=16,
                             augment_on=augment_on, num_workers=num_workers)
        dm.setup("fit")
        return dm

    on_loader, on_device = _train_views(data("loader")), _train_views(data("device"))
    assert len(on_loader) == len(on_device) == 6
    assert all(torch.equal(a, b) for a, b in zip(on_loader, on_device))
    assert not torch.equal(on_loader[0], on_loader[3])  # the second epoch draws anew


def test_each_process_draws_its_own_augmentation_from_the_same_seed(monkeypatch):
    """Lightning seeds every DDP process alike; the rank is part of the augmentation's seed."""
    from lightning_transfer import distributed

    dm = ImageDataModule(source="mnist_demo", batch_size=4, image_size=16)
    dm.setup("fit")
    samples = [dm.train_set[i] for i in range(4)]

    def views_on(rank: int) -> torch.Tensor:
        monkeypatch.setattr(distributed, "rank", lambda: rank)
        return torch.stack(dm.on_after_batch_transfer(dm._transform("train")(samples), 0)["views"])

    assert torch.equal(views_on(0), views_on(0)) and torch.equal(views_on(1), views_on(1))
    assert not torch.equal(views_on(0), views_on(1))


def test_image_folder_source_reads_classes_and_skips_unreadable_files(tmp_path):
    root = write_image_folder(tmp_path / "imgs", per_class=6)
    (root / "dog" / "broken.png").write_bytes(b"not a png at all")
    dm = ImageDataModule(source="folder", root=str(root), image_size=16, batch_size=4, val_size=2, test_size=2,
                         augment_on="loader", drop_last=False)
    dm.setup("fit")
    assert dm.num_classes == 2 and dm.class_names == ["cat", "dog"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = [dm.on_after_batch_transfer(b, 0) for b in dm.train_dataloader()]
        batches += [dm.on_after_batch_transfer(b, 0) for b in dm.val_dataloader()]
        batches += [dm.on_after_batch_transfer(b, 0) for b in dm.test_dataloader()]
    seen = sum(len(b["labels"]) for b in batches)
    in_training = "broken.png" in {dm.train_set.dataset.files[i][0].name for i in dm.train_set.indices}
    # 13 files, the broken one skipped; a training batch fills its place with another image of the batch
    assert seen == (13 if in_training else 12)
    assert any("broken.png" in str(w.message) for w in caught)


def test_decode_handles_palette_cmyk_16bit_and_grayscale(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (12, 10, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).save(tmp_path / "sixteen.png")
    for name in ("palette.png", "cmyk.jpg", "sixteen.png"):
        assert decode_image_file(tmp_path / name, 3, 8).shape == (3, 8, 8)
        assert decode_image_file(tmp_path / name, 1, 8).dtype == torch.uint8


def test_empty_and_unreadable_folders_are_one_clear_error(tmp_path):
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(UserInputError, match="no images found"):
        ImageDataModule(source="folder", root=str(tmp_path / "empty")).setup("fit")
    (tmp_path / "junk" / "cls").mkdir(parents=True)
    for i in range(3):
        (tmp_path / "junk" / "cls" / f"{i}.jpg").write_bytes(b"\x00" * 10)
    with pytest.raises(UserInputError, match="cannot read any"):
        ImageDataModule(source="folder", root=str(tmp_path / "junk")).setup("fit")
    with pytest.raises(UserInputError, match="does not exist"):
        ImageDataModule(source="folder", root=str(tmp_path / "nowhere")).setup("fit")


def test_network_datasets_offline_fail_with_one_line(tmp_path):
    with pytest.raises(UserInputError, match="cifar10 is not in .* could not be downloaded"):
        ImageDataModule(source="cifar10", root=str(tmp_path), download=False).setup("fit")
    with pytest.raises(UserInputError, match="could not load Hugging Face dataset"):
        ImageDataModule(source="hf", hf_name="nobody/no-such-dataset").setup("fit")


def test_bad_settings_are_rejected_early():
    with pytest.raises(UserInputError, match="unknown image source"):
        ImageDataModule(source="imagenet21k")
    with pytest.raises(UserInputError, match="batch_size 4096 is larger"):
        ImageDataModule(source="mnist_demo", batch_size=4096).setup("fit")


class FakeSTL10:
    """Stands in for the torchvision.datasets.STL10 download (same constructor): 12 labeled images
    per class (10 classes) in 'train', 50 more with label -1 in 'train+unlabeled', 5 per class in 'test'.
    Pixel (0, 0, 0) of every pool image holds its row number, so rows can be traced through the splits."""

    def __init__(self, root, split="train", download=False):
        labels = {"train": np.repeat(np.arange(10), 12), "test": np.repeat(np.arange(10), 5)}.get(split)
        if split == "train+unlabeled":
            labels = np.concatenate([np.repeat(np.arange(10), 12), np.full(50, -1)])
        self.labels = labels.astype(np.int64)
        self.data = np.zeros((len(labels), 3, 8, 8), dtype=np.uint8)
        self.data[:, 0, 0, 0] = np.arange(len(labels))


def test_stl10_train_plus_unlabeled_draws_val_from_labeled_images_and_trains_on_every_unlabeled_one(monkeypatch):
    """mode="simclr" reads STL-10's train+unlabeled pool (labels -1 for the unlabeled part): the
    validation set holds labeled images only, stratified and of the requested size; every unlabeled
    image and every other labeled one is in the training set; the test set is STL-10's test split."""
    import torchvision

    monkeypatch.setattr(torchvision.datasets, "STL10", FakeSTL10)
    dm = ImageDataModule(source="stl10", mode="simclr", image_size=8, val_size=30, batch_size=16, knn_bank_size=1000)
    dm.setup("fit")
    pool_labels = torch.as_tensor(FakeSTL10(None, "train+unlabeled").labels)
    val, train = list(dm.val_set.indices), list(dm.train_set.indices)
    assert len(val) == 30 and len(train) == 170 - 30 and not set(val) & set(train)
    assert (pool_labels[val] >= 0).all()
    assert pool_labels[val].bincount().tolist() == [3] * 10  # stratified over the 10 classes
    unlabeled = set(torch.nonzero(pool_labels < 0).flatten().tolist())
    assert unlabeled <= set(train) and len(unlabeled) == 50
    assert sorted(val + train) == list(range(170))
    assert [int(dm.val_set[i][0][0, 0, 0]) for i in range(30)] == val  # the rows of the pool, as read
    assert len(dm.test_set) == 50 and dm.num_classes == 10
    bank = torch.cat([b["labels"] for b in (dm.on_after_batch_transfer(b, 0) for b in dm.bank_dataloader())])
    assert len(bank) == 120 - 30 and (bank >= 0).all()  # the kNN bank: the labeled training images


def test_a_training_batch_keeps_its_size_when_an_image_is_unreadable_and_an_evaluation_batch_does_not():
    """Under DDP every process must bring batches of one size to SimCLR's all-gather; a test batch must
    not count an image twice."""
    from lightning_transfer.data.images import collate_images

    samples = [(torch.full((1, 2, 2), i, dtype=torch.uint8), i) for i in range(4)]
    samples[1] = None
    images, labels = collate_images(samples, keep_size=True)
    assert labels.tolist() == [0, 2, 3, 0]  # the gap filled with the batch's first readable image
    assert images[3].eq(0).all()
    images, labels = collate_images(samples)
    assert labels.tolist() == [0, 2, 3]
