"""Image sources: decoding a folder in the loader, or reading its bytes there and decoding the batch
after the transfer (collate_encoded, then decode_encoded), with the same images and the same skipping."""

import warnings

import pytest
import torch
from PIL import Image

from lightning_transfer.data.image_sources import (
    ImageFolderDataset,
    collate_encoded,
    collate_images,
    decode_encoded,
)
from lightning_transfer.errors import UserInputError
from tests.helpers.images import write_image_folder


def folder_with_jpegs(tmp_path):
    root = write_image_folder(tmp_path / "imgs", per_class=3, size=20)
    for i, png in enumerate(sorted(root.rglob("*.png"))[:3]):  # some JPEGs among the PNGs
        Image.open(png).save(png.with_name(f"j{i}.jpg"), quality=90)
    return root


def test_a_folder_read_as_bytes_decodes_after_collation_to_the_images_decoded_in_the_loader(tmp_path):
    root = folder_with_jpegs(tmp_path)
    decoded = ImageFolderDataset(root, 3, 16)
    encoded = ImageFolderDataset(root, 3, 16, decode=False)
    assert len(encoded) == len(decoded) == 9
    first_bytes, first_label = encoded[0]
    assert first_bytes == encoded.files[0][0].read_bytes() and first_label == decoded[0][1]
    indices = list(range(len(decoded)))
    expected_images, expected_labels = collate_images([decoded[i] for i in indices])
    datas, labels = collate_encoded([encoded[i] for i in indices])
    assert all(isinstance(d, bytes) for d in datas)
    images, labels = decode_encoded(datas, labels, 3, 16)
    assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)


@pytest.mark.parametrize("keep_size", [False, True])
def test_an_undecodable_image_is_skipped_with_a_warning_after_the_transfer_as_in_the_loader(tmp_path, keep_size):
    root = folder_with_jpegs(tmp_path)
    (root / "cat" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n but broken")
    decoded = ImageFolderDataset(root, 1, 8)
    encoded = ImageFolderDataset(root, 1, 8, decode=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        expected = collate_images([decoded[i] for i in range(len(decoded))], keep_size=keep_size)
        datas, labels = collate_encoded([encoded[i] for i in range(len(encoded))], keep_size=keep_size)
        images, labels = decode_encoded(datas, labels, 1, 8, keep_size=keep_size)
    assert len(datas) == 9  # the bytes were read; the decoder finds them broken
    assert images.shape == (9 if keep_size else 8, 1, 8, 8)
    assert torch.equal(images, expected[0]) and torch.equal(labels, expected[1])
    assert sum("unreadable image, 0 of its batch" in str(w.message) for w in caught) == 1
    # rows of labels and sample ids stay in step with the images
    ids = torch.stack([torch.arange(9) % 4, torch.arange(9)], dim=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, kept = decode_encoded(datas, ids, 1, 8, keep_size=keep_size)
    assert kept[:, 1].tolist() == ([1, 2, 3, 4, 5, 6, 7, 8, 1] if keep_size else [1, 2, 3, 4, 5, 6, 7, 8])


def test_a_file_that_cannot_be_read_is_none_and_a_batch_with_nothing_readable_is_an_error(tmp_path):
    root = folder_with_jpegs(tmp_path)
    encoded = ImageFolderDataset(root, 3, 8, decode=False)
    encoded.files[1][0].unlink()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert encoded[1] is None
    assert any(encoded.files[1][0].name in str(w.message) for w in caught)
    with pytest.raises(UserInputError, match="whole batch"):
        collate_encoded([None, None])
    with pytest.raises(UserInputError, match="whole batch"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        decode_encoded([b"junk", b"\xff\xd8\xffjunk"], torch.tensor([0, 1]), 3, 8)


def test_an_unreadable_file_is_warned_about_once_not_every_epoch(tmp_path):
    root = write_image_folder(tmp_path / "imgs", per_class=3)
    (root / "dog" / "broken.png").write_bytes(b"not a png at all")
    dataset = ImageFolderDataset(root, 3, 8)
    broken = [i for i, (path, _) in enumerate(dataset.files) if path.name == "broken.png"][0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert [dataset[broken] for _epoch in range(3)] == [None, None, None]
    assert len(caught) == 1 and "broken.png" in str(caught[0].message) and dataset.skipped == 1
