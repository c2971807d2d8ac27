"""What DATA is, its classes and splits: the same held-out sets as the DataModules, and no test
example anywhere in pretraining."""

import csv
from pathlib import Path

import pytest

from lightning_transfer.data.images import ImageDataModule
from lightning_transfer.data.sources import minilm_directory
from lightning_transfer.data.text import TextClassificationDataModule
from lightning_transfer.errors import UserInputError
from lightning_transfer.transfer.inputs import feasible_label_counts, prepare_data
from lightning_transfer.transfer.settings import parse_settings
from tests.helpers.images import write_image_folder


def settings_for(data, out, *extra):
    return parse_settings([str(data), "--output-dir", str(out), *extra])


def write_table(path: Path, rows, header=("text", "label")) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def review_rows(n=60, unlabeled=10):
    rows = [(f"review number {i} is {'good' if i % 3 else 'bad'} indeed", "pos" if i % 3 else "neg") for i in range(n)]
    return rows + [(f"an unlabeled review {i}", "") for i in range(unlabeled)]


def test_an_image_folder_holds_out_the_test_images_of_the_datamodule_and_pretrains_on_the_rest(tmp_path):
    root = write_image_folder(tmp_path / "images", classes=("a", "b", "c"), per_class=10, size=12)
    extra = tmp_path / "unlabeled" / "deep"
    write_image_folder(extra, classes=("x",), per_class=7, size=12)
    settings = settings_for(root, tmp_path / "out", "--unlabeled", str(tmp_path / "unlabeled"), "--test-size", "6")
    data = prepare_data(settings, tmp_path / "out" / "data")
    assert (data.kind, data.class_names, data.channels) == ("image", ["a", "b", "c"], 3)
    assert data.split_sizes == {"test": 6, "validation": 3, "pool": 21, "unlabeled": 7}  # val: round(0.1 * 30)
    assert data.pool_counts == [7, 7, 7]

    def files(dataset):
        return {dataset.dataset.files[i][0] for i in dataset.indices}

    supervised = ImageDataModule(
        source="folder", root=str(root), mode="supervised", batch_size=2, **data.split_arguments(settings)
    )
    supervised.setup("fit")
    pretraining = ImageDataModule(
        source="folder",
        root=str(root),
        mode="simclr",
        unlabeled_root=str(tmp_path / "unlabeled"),
        batch_size=2,
        **data.split_arguments(settings),
    )
    pretraining.setup("fit")
    test = files(supervised.test_set)
    assert len(test) == 6 and files(pretraining.test_set) == test  # the same held-out images
    assert not test & files(pretraining.train_set)  # never pretrained on
    assert len(pretraining.train_set) == 21 + 7  # the pool and every unlabeled image
    assert files(supervised.train_set) == files(pretraining.train_set) - {
        p for p in files(pretraining.train_set) if "unlabeled" in str(p)
    }


def test_a_table_splits_off_unlabeled_rows_and_its_corpus_has_no_test_or_validation_text(tmp_path):
    table = write_table(tmp_path / "reviews.csv", review_rows(), header=("review", "stars"))
    settings = settings_for(table, tmp_path / "out", "--text-column", "review", "--label-column", "stars")
    data = prepare_data(settings, tmp_path / "out" / "data")
    assert (data.kind, data.class_names) == ("text", ["neg", "pos"])
    assert data.split_sizes == {"test": 12, "validation": 6, "pool": 42, "unlabeled": 10}
    module = TextClassificationDataModule(
        tokenizer=str(minilm_directory()), source=str(data.table), **data.split_arguments(settings)
    )
    pool = module.unlabeled_texts()  # the DataModule's own training pool, labels dropped
    corpus = data.corpus.read_text().splitlines()
    assert sorted(corpus) == sorted(pool + [f"an unlabeled review {i}" for i in range(10)])
    module.setup()
    assert len(module.test_dataset) == 12 and len(module.val_dataset) == 6


@pytest.mark.parametrize(
    "rows, options, message",
    [
        ([("a", "x"), ("b", "x"), ("c", "")], (), r"1 class in column 'label'; transfer needs at least 2"),
        (
            [("a", "x")],
            ("--label-column", "sentiment"),
            r"no column 'sentiment' \(--label-column\); its columns: text, label",
        ),
    ],
)
def test_a_table_without_two_classes_or_its_label_column_gets_one_line(tmp_path, rows, options, message):
    table = write_table(tmp_path / "t.csv", rows)
    with pytest.raises(UserInputError, match=message) as err:
        prepare_data(settings_for(table, tmp_path / "out", *options), tmp_path / "out" / "data")
    assert "\n" not in str(err.value)


def test_a_folder_with_one_class_gets_one_line(tmp_path):
    root = write_image_folder(tmp_path / "images", classes=("only",), per_class=4, size=8)
    with pytest.raises(UserInputError, match="has 1 class folder: only; transfer needs at least 2"):
        prepare_data(settings_for(root, tmp_path / "out"), tmp_path / "out" / "data")


def test_a_label_count_some_class_cannot_supply_is_skipped_naming_the_class(tmp_path):
    rows = [(f"t{i}", "big") for i in range(40)] + [(f"s{i}", "small") for i in range(8)]
    table = write_table(tmp_path / "t.csv", rows)
    data = prepare_data(settings_for(table, tmp_path / "out", "--test-size", "0.25"), tmp_path / "out" / "data")
    # test: 12 rows, 10 big + 2 small (the proportions of 40:8); validation: round(0.1 * 48) = 5 rows of the
    # 30 big + 6 small left, 4 big + 1 small; the pool keeps 26 big and 5 small
    assert data.pool_counts == [26, 5]
    with pytest.warns(UserWarning, match=r"skipping 10 labels per class: class 'small' has only 5"):
        assert feasible_label_counts(data, (1, 5, 10)) == (1, 5)
    with pytest.raises(UserInputError, match="smallest class has 5 training examples"):
        feasible_label_counts(data, (10, 50))


def test_a_hub_dataset_is_written_out_once_with_its_class_names_and_withheld_labels_as_unlabeled(tmp_path, monkeypatch):
    """The Hub itself is out of reach offline: ``load_dataset`` hands over an in-memory dataset with a
    ClassLabel column and a test split whose labels are withheld (-1), as GLUE's are."""
    import datasets

    features = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    train = datasets.Dataset.from_dict(
        {"sentence": [f"text {i}" for i in range(40)], "label": [i % 2 for i in range(40)]}, features=features
    )
    test = datasets.Dataset.from_dict({"sentence": ["hidden a", "hidden b"], "label": [-1, -1]}, features=features)
    calls, real_load_dataset = [], datasets.load_dataset

    def load_dataset(name, *args, **kwargs):
        if name != "someone/reviews":  # the local parquet/csv builders stay real
            return real_load_dataset(name, *args, **kwargs)
        calls.append(name)
        return datasets.DatasetDict({"train": train, "test": test})

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    settings = settings_for("someone/reviews", tmp_path / "out", "--text-column", "sentence")
    data = prepare_data(settings, tmp_path / "out" / "data")
    assert calls == ["someone/reviews"]
    assert (data.kind, data.class_names) == ("text", ["neg", "pos"])
    assert data.split_sizes["unlabeled"] == 2 and data.split_sizes["test"] == 8  # 20% of the 40 labeled rows
    assert "hidden a" in data.corpus.read_text()
    again = prepare_data(settings, tmp_path / "out" / "data")  # written out once: no second download
    assert calls == ["someone/reviews"] and again.fingerprint == data.fingerprint
