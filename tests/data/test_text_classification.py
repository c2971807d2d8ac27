import pandas as pd
import pytest

from lightning_transfer.data.corpus import read_corpus
from lightning_transfer.data.sources import minilm_directory
from lightning_transfer.data.text_classification import TextClassificationDataModule
from lightning_transfer.errors import UserInputError


def _rows(dataset):
    return sorted((tuple(e["input_ids"].tolist()), int(e["labels"])) for e in dataset)


def test_few_labels_change_only_the_training_set_not_val_or_test():
    few = TextClassificationDataModule(tokenizer=str(minilm_directory()), labels_per_class=5)
    more = TextClassificationDataModule(tokenizer=str(minilm_directory()), labels_per_class=50)
    few.setup()
    more.setup()
    assert len(few.train_dataset) == 10 and sorted(few.train_dataset["labels"][:].tolist()) == [0] * 5 + [1] * 5
    assert len(few.val_dataset) == 500 and len(few.test_dataset) == 1000
    assert _rows(few.val_dataset) == _rows(more.val_dataset) and _rows(few.test_dataset) == _rows(more.test_dataset)
    assert set(_rows(few.train_dataset)) <= set(_rows(more.train_dataset))
    assert few.num_classes == 2 and few.label_names == ["rotten", "fresh"]
    batch = next(iter(few.train_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"} and batch["labels"].shape == (10,)


def _pair_table(tmp_path, labels):
    n = len(labels)
    frame = pd.DataFrame({"premise": [f"premise number {i}" for i in range(n)], "hypothesis": [f"hypothesis {i}" for i in range(n)], "gold": labels})
    path = tmp_path / "pairs.jsonl"
    frame.to_json(path, orient="records", lines=True)
    return path


def test_sentence_pairs_with_string_labels_become_sorted_class_ids(tmp_path):
    path = _pair_table(tmp_path, ["neutral", "entail", "contra"] * 20)
    dm = TextClassificationDataModule(
        tokenizer=str(minilm_directory()), source=str(path), text_column="premise", text_pair_column="hypothesis",
        label_column="gold", val_size=6, test_size=0.1, max_seq_length=16,
    )
    dm.setup()
    assert dm.label_names == ["contra", "entail", "neutral"] and dm.num_classes == 3
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (48, 6, 6)
    batch = next(iter(dm.val_dataloader()))
    assert (batch["token_type_ids"] == 1).any(dim=1).all()
    assert batch["input_ids"].shape[1] <= 16


def test_source_splits_from_a_directory_are_kept(tmp_path):
    for name, n in (("train", 30), ("validation", 7), ("test", 5)):
        pd.DataFrame({"text": [f"{name} {i}" for i in range(n)], "label": [i % 2 for i in range(n)]}).to_csv(tmp_path / f"{name}.csv", index=False)
    dm = TextClassificationDataModule(tokenizer=str(minilm_directory()), source=str(tmp_path), labels_per_class=3)
    dm.setup()
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (6, 7, 5)


def test_unlabeled_texts_are_the_whole_training_pool_without_validation_or_test_texts(tmp_path):
    texts = [f"review number {i}" for i in range(40)]
    pd.DataFrame({"text": texts, "label": [i % 2 for i in range(40)]}).to_csv(tmp_path / "reviews.csv", index=False)
    dm = TextClassificationDataModule(tokenizer=str(minilm_directory()), source=str(tmp_path / "reviews.csv"),
                                      val_size=6, test_size=8, labels_per_class=2, max_seq_length=16)
    corpus = dm.unlabeled_texts()
    dm.setup()
    tokenizer = dm.tokenizer
    held_out = {tokenizer.decode([int(t) for t in row if t > 0], skip_special_tokens=True)
                for split in (dm.val_dataset, dm.test_dataset) for row in split["input_ids"]}
    assert len(corpus) == 40 - 6 - 8 and len(dm.train_dataset) == 4  # the corpus ignores the label subset
    assert not held_out & set(corpus) and set(corpus) | held_out == set(texts)


@pytest.mark.parametrize(
    "labels, kwargs, message",
    [
        ([0, 1, 3] * 10, {"num_classes": 2}, r"label 3 .* out of range"),
        ([0, 1, 0.5] * 10, {}, "not an integer class id"),
        ([0, 1] * 15, {"labels_per_class": 40}, "class '0' .* has only"),
        ([0, 1] * 15, {"label_column": "nope"}, "no column 'nope'; available columns: premise, hypothesis, gold"),
    ],
)
def test_classification_datamodule_rejects_bad_labels(tmp_path, labels, kwargs, message):
    path = _pair_table(tmp_path, labels)
    kwargs = {"label_column": "gold", **kwargs}
    with pytest.raises(UserInputError, match=message):
        TextClassificationDataModule(tokenizer=str(minilm_directory()), source=str(path), text_column="premise", **kwargs).setup()


def test_hub_dataset_splits_and_class_names_are_used_and_an_unlabeled_test_split_is_replaced(monkeypatch):
    import datasets

    features = datasets.Features({"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])})

    def split(n, labels):
        return datasets.Dataset.from_dict({"sentence": [f"sentence {i}" for i in range(n)], "label": labels}, features=features)

    hub = datasets.DatasetDict(
        {"train": split(40, [i % 2 for i in range(40)]), "validation": split(6, [0, 1] * 3), "test": split(4, [-1] * 4)}
    )
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config=None, **kwargs: hub)
    dm = TextClassificationDataModule(tokenizer=str(minilm_directory()), source="glue_like", text_column="sentence", test_size=10)
    dm.setup()
    assert dm.label_names == ["neg", "pos"]
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (30, 6, 10)
    assert read_corpus("glue_like", text_column="sentence", hub_split="validation")[0] == "sentence 0"
