"""Every bad input a user can meet gives one clear, single-line UserInputError, raised early (table
below), and the CLI prints it as one line; inputs that are odd but usable (CMYK, 16-bit and palette
images, images smaller than the crop, a few broken image files, over-long text) work."""
import json
import os
import warnings
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from lightning_transfer import BertPretrainModule, ImageDataModule, SimCLRModule
from lightning_transfer.callbacks import NonFiniteLossError, StopOnNonFiniteLoss
from lightning_transfer.cli import main
from lightning_transfer.data.corpus import read_corpus
from lightning_transfer.data.images import ImageFolderDataset, collate_images
from lightning_transfer.data.subsets import stratified_subset
from lightning_transfer.data.text import TextClassificationDataModule, TextPretrainDataModule, encode_labels
from lightning_transfer.data.tokenizer import save_tokenizer, train_wordpiece
from lightning_transfer.errors import UserInputError
from lightning_transfer.models.encoder_handoff import save_encoder
from lightning_transfer.models.loading import load_encoder
from lightning_transfer.models.vision import build_backbone
from lightning_transfer.modules.finetune import FineTuneModule

IMAGE_ENCODER = {"backbone": "convnet", "in_channels": 1, "small_images": True, "width": 8}
TINY_BERT = dict(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                 max_position_embeddings=16)
TEXT = "the cat sees the dog . the owl likes the river . a big fox finds the house .\n" * 4


# ------------------------------------------------------------------------------------------ writers
def _simclr_checkpoint(tmp: Path) -> Path:
    module = SimCLRModule(backbone="convnet", width=8, in_channels=1, projection_hidden_dim=8, projection_dim=4, num_classes=0)
    path = tmp / "simclr.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "pytorch-lightning_version": pl.__version__}, path)
    return path


def _tokenizer(tmp: Path, text: str = TEXT, name: str = "tok", vocab_size: int = 60) -> Path:
    directory = tmp / name
    save_tokenizer(train_wordpiece([text], vocab_size=vocab_size, min_frequency=1), directory)
    return directory


def _pixels(size: int = 12, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)


def _folder(tmp: Path, files: dict[str, bytes | Image.Image]) -> Path:
    root = tmp / "images"
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            content.save(path)
    return root


def _table(tmp: Path, suffix: str, frame: pd.DataFrame) -> Path:
    path = tmp / f"table{suffix}"
    {".csv": lambda: frame.to_csv(path, index=False), ".jsonl": lambda: frame.to_json(path, orient="records", lines=True),
     ".parquet": lambda: frame.to_parquet(path)}[suffix]()
    return path


def _labeled(tmp: Path, labels: list, **kwargs) -> TextClassificationDataModule:
    texts = [f"review number {i} says the film is {'good' if i % 2 else 'bad'}" for i in range(len(labels))]
    path = tmp / "labeled.csv"
    pd.DataFrame({"text": texts, "label": labels}).to_csv(path, index=False)
    data = TextClassificationDataModule(tokenizer=str(_tokenizer(tmp, " ".join(texts))), source=str(path), **kwargs)
    data.setup()
    return data


# ------------------------------------------------------------------------------------------ the cases
def missing_checkpoint(tmp):
    FineTuneModule(pretrained=str(tmp / "gone.ckpt"), num_classes=2)


def zero_byte_checkpoint(tmp):
    (tmp / "empty.ckpt").write_bytes(b"")
    FineTuneModule(pretrained=str(tmp / "empty.ckpt"), num_classes=2)


def truncated_checkpoint(tmp):
    data = _simclr_checkpoint(tmp).read_bytes()
    (tmp / "cut.ckpt").write_bytes(data[: len(data) // 2])
    FineTuneModule(pretrained=str(tmp / "cut.ckpt"), num_classes=2)


def corrupt_checkpoint(tmp):
    (tmp / "noise.ckpt").write_bytes(os.urandom(4096))
    FineTuneModule(pretrained=str(tmp / "noise.ckpt"), num_classes=2)


def checkpoint_of_another_model(tmp):
    torch.save({"state_dict": {"net.weight": torch.zeros(2, 2)}, "hyper_parameters": {"hidden": 3}}, tmp / "other.ckpt")
    FineTuneModule(pretrained=str(tmp / "other.ckpt"), num_classes=2)


def checkpoint_without_weights(tmp):
    torch.save({"state_dict": {}, "hyper_parameters": {"backbone": "convnet"}}, tmp / "hollow.ckpt")
    FineTuneModule(pretrained=str(tmp / "hollow.ckpt"), num_classes=2)


def text_checkpoint_on_image_batches(tmp):
    module = FineTuneModule(encoder_config=TINY_BERT, num_classes=2)
    module.training_step({"images": torch.zeros(2, 1, 8, 8), "labels": torch.zeros(2, dtype=torch.long)}, 0)


def encoder_size_mismatch(tmp):
    encoder, _ = build_backbone("convnet", 1, True, None, None, 16)
    path = save_encoder(tmp / "encoder", encoder, {**IMAGE_ENCODER, "modality": "image", "width": 16})
    description = json.loads((path / "encoder.json").read_text())
    description["encoder"]["width"] = 8  # the description no longer matches the weights
    (path / "encoder.json").write_text(json.dumps(description))
    load_encoder(str(path))


def tokenizer_vocab_mismatch(tmp):
    module = BertPretrainModule(**TINY_BERT)
    from lightning_transfer.data.tokenizer import load_tokenizer

    module._check_data_tokenizer(load_tokenizer(_tokenizer(tmp, vocab_size=40)))


def num_classes_differs_from_the_labels(tmp):
    encode_labels({"train": ["fresh", "rotten", "fresh"]}, num_classes=3)


def label_out_of_range(tmp):
    encode_labels({"train": [0, 1, 7]}, num_classes=3)


def non_integer_label(tmp):
    encode_labels({"train": [0, 1.5, 1]})


def missing_label(tmp):
    encode_labels({"train": [0, None, 1]})


def negative_label_in_a_csv(tmp):
    _labeled(tmp, [0, 1, -3, 1] * 5, num_classes=2)


def missing_image_folder(tmp):
    ImageFolderDataset(tmp / "nowhere", 3, 16)


def empty_image_folder(tmp):
    (tmp / "images" / "cat").mkdir(parents=True)
    ImageFolderDataset(tmp / "images", 3, 16)


def folder_without_a_readable_image(tmp):
    root = _folder(tmp, {"cat/a.png": b"", "cat/b.png": b"not a png", "dog/c.jpg": b"\xff\xd8\xff"})
    ImageFolderDataset(root, 3, 16)


def whole_batch_unreadable(tmp):
    collate_images([None, None])


def empty_text_file(tmp):
    (tmp / "empty.txt").write_text("")
    read_corpus(tmp / "empty.txt")


def whitespace_only_text(tmp):
    (tmp / "blank.txt").write_text(" \n\n\t \n")
    read_corpus(tmp / "blank.txt")


def binary_text(tmp):
    (tmp / "blob.txt").write_bytes(b"\x89PNG\r\n\x00\x00\x00binary" * 10)
    read_corpus(tmp / "blob.txt")


def _missing_column(suffix):
    def case(tmp):
        read_corpus(_table(tmp, suffix, pd.DataFrame({"review": ["good film", "bad film"], "stars": [5, 1]})))
    case.__name__ = f"text_column_missing_in_{suffix[1:]}"
    return case


def labels_per_class_larger_than_a_class(tmp):
    stratified_subset([0] * 10 + [1] * 3, per_class=5, seed=0)


def hub_dataset_offline(tmp):
    read_corpus("someone/surely-not-cached-dataset")


def hub_image_dataset_offline(tmp):
    ImageDataModule(source="hf", hf_name="someone/surely-not-cached-images").setup()


def batch_larger_than_the_data_with_drop_last(tmp):
    root = _folder(tmp, {f"c{c}/{i}.png": Image.fromarray(_pixels(seed=i)) for c in range(2) for i in range(3)})
    ImageDataModule(source="folder", root=str(root), batch_size=64, val_size=1, test_size=1, image_size=8).setup()


def max_seq_length_too_small(tmp):
    TextPretrainDataModule(source=str(tmp), max_seq_length=4)


def unknown_image_source(tmp):
    ImageDataModule(source="imagenet22k")


def nan_loss(tmp, keep: list | None = None, check_every_n_steps: int | None = None):
    class Diverging(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            loss = self.layer(batch).mean()
            return loss * float("nan") if self.global_step == 2 else loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = pl.Trainer(accelerator="cpu", max_steps=5, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[StopOnNonFiniteLoss(check_every_n_steps)])
    module = Diverging()
    if keep is not None:
        keep.append(module)
    trainer.fit(module, torch.utils.data.DataLoader(torch.randn(16, 2), batch_size=2))


CASES = [
    (missing_checkpoint, "no such file"),
    (zero_byte_checkpoint, "empty file (0 bytes)"),
    (truncated_checkpoint, "not a readable PyTorch checkpoint"),
    (corrupt_checkpoint, "not a readable PyTorch checkpoint"),
    (checkpoint_of_another_model, "unsupported model"),
    (checkpoint_without_weights, "without weights"),
    (text_checkpoint_on_image_batches, "text encoder"),
    (encoder_size_mismatch, "do not fit"),
    (tokenizer_vocab_mismatch, "the data's tokenizer has"),
    (num_classes_differs_from_the_labels, "num_classes=3 but column 'label' has 2 classes"),
    (label_out_of_range, "label 7 in column 'label' is out of range"),
    (non_integer_label, "is not an integer class id"),
    (missing_label, "have no label"),
    (negative_label_in_a_csv, "out of range"),
    (missing_image_folder, "does not exist"),
    (empty_image_folder, "no images found"),
    (folder_without_a_readable_image, "cannot read any of the first 3 images"),
    (whole_batch_unreadable, "a whole batch of images was unreadable"),
    (empty_text_file, "has no text"),
    (whitespace_only_text, "has no text"),
    (binary_text, "looks binary"),
    (_missing_column(".csv"), "no column 'text'; available columns: review, stars"),
    (_missing_column(".jsonl"), "no column 'text'; available columns: review, stars"),
    (_missing_column(".parquet"), "no column 'text'; available columns: review, stars"),
    (labels_per_class_larger_than_a_class, "only 3"),
    (hub_dataset_offline, "network"),
    (hub_image_dataset_offline, "could not load Hugging Face dataset"),
    (batch_larger_than_the_data_with_drop_last, "batch_size 64 is larger than the"),
    (max_seq_length_too_small, "max_seq_length must be at least 8"),
    (unknown_image_source, "unknown image source 'imagenet22k'"),
    (nan_loss, "the training loss is nan at step 2"),
]


@pytest.mark.parametrize("case, message", CASES, ids=[case.__name__ for case, _ in CASES])
def test_bad_input_raises_one_line_user_input_error(case, message, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(UserInputError) as info:
            case(tmp_path)
    text = str(info.value)
    assert message in text, text
    assert "\n" not in text.strip(), text


def test_nan_loss_checked_every_step_stops_before_the_bad_step_reaches_the_weights(tmp_path):
    kept = []
    with pytest.raises(NonFiniteLossError, match="at step 2 .*before this step changed the weights"):
        nan_loss(tmp_path, kept, check_every_n_steps=1)
    assert all(torch.isfinite(p).all() for p in kept[0].parameters())


# ------------------------------------------------------------------------------------------ through the CLI
SIMCLR = ["fit", "--model", "SimCLRModule", "--data", "ImageDataModule", "--trainer.max_steps", "1",
          "--trainer.logger", "false", "--trainer.enable_checkpointing", "false"]
CLI_CASES = [
    ("unknown_backbone", [*SIMCLR, "--model.backbone", "resnet9000"], "resnet9000"),
    ("unknown_optimizer", [*SIMCLR, "--model.optimizer", "adagrad"], "unknown optimizer 'adagrad'; choose one of"),
    ("unknown_config_key", [*SIMCLR, "--model.init_args.no_such_setting", "3"], "no_such_setting"),
    ("unknown_strategy", ["fit", "--model", "FineTuneModule", "--model.encoder_config",
                          '{"backbone": "convnet", "in_channels": 1}', "--model.strategy", "freeze_all",
                          "--data", "ImageDataModule", "--trainer.max_steps", "1"], "unknown strategy 'freeze_all'"),
    ("missing_config_file", ["fit", "--config", "configs/nope.yaml"], "nope.yaml"),
]


@pytest.mark.parametrize("args, message", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_prints_bad_input_as_one_line_and_exits_2(args, message, capsys, monkeypatch):
    monkeypatch.delenv("LIGHTNING_TRANSFER_TRACEBACK", raising=False)
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("lightning-transfer: error:") and message in err[0], err


# ------------------------------------------------------------------------------------------ odd but usable
def test_cmyk_16_bit_palette_and_tiny_images_are_converted_and_resized(tmp_path):
    rgb = Image.fromarray(_pixels(6))  # smaller than the 16 px it is decoded to
    sixteen = Image.fromarray((np.arange(100, dtype=np.uint16).reshape(10, 10) * 600))
    assert sixteen.mode.startswith("I;16")
    root = _folder(tmp_path, {"a/cmyk.jpg": rgb.convert("CMYK"), "a/pal.png": rgb.convert("P"), "b/deep.png": sixteen,
                              "b/tiny.png": rgb, "b/alpha.png": rgb.convert("RGBA")})
    dataset = ImageFolderDataset(root, 3, 16)
    for index in range(len(dataset)):
        image, _ = dataset[index]
        assert image.shape == (3, 16, 16) and image.dtype == torch.uint8
    assert dataset.skipped == 0


def test_zero_byte_and_truncated_images_are_skipped_with_a_counted_warning(tmp_path):
    good = Image.fromarray(_pixels(12))
    good.save(tmp_path / "whole.png")
    root = _folder(tmp_path, {"a/0.png": good, "a/1.png": b"", "a/2.png": (tmp_path / "whole.png").read_bytes()[:60],
                              "b/3.png": good})
    dataset = ImageFolderDataset(root, 3, 8)
    with pytest.warns(UserWarning, match="skipped unreadable image") as record:
        samples = [dataset[i] for i in range(len(dataset))]
    assert [s is None for s in samples] == [False, True, True, False]
    assert "2 of 4 images skipped so far" in str(record[-1].message)
    images, labels = collate_images(samples)
    assert images.shape == (2, 3, 8, 8) and labels.tolist() == [0, 1]


def test_a_text_line_longer_than_max_length_is_truncated_not_an_error(tmp_path):
    words = " ".join(["cat", "dog", "owl"] * 50)
    data = _labeled(tmp_path, [0, 1] * 10, max_seq_length=12, val_size=2, test_size=2)
    long = TextClassificationDataModule(tokenizer=data.hparams.tokenizer, source=str(tmp_path / "long.csv"),
                                        max_seq_length=12, val_size=2, test_size=2)
    pd.DataFrame({"text": [words] * 20, "label": [0, 1] * 10}).to_csv(tmp_path / "long.csv", index=False)
    long.setup()
    assert max(len(row) for row in long.train_dataset.with_format(None)["input_ids"]) == 12
