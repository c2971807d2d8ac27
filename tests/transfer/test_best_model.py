"""The kept model: the best validation accuracy, never the test set; the first of equals in plan order."""

import pytest

from lightning_transfer.transfer.best_model import best_checkpoint, best_record


def run(init, k, val, test):
    return {"init": init, "labels_per_class": k, "seed": 0, "val_accuracy": val, "test_accuracy": test}


def test_the_best_run_is_chosen_by_validation_accuracy_not_test_accuracy():
    records = [run("pretrained", 1, 0.70, 0.95), run("scratch", 1, 0.80, 0.60), run("pretrained", 5, 0.75, 0.99)]
    assert best_record(records) is records[1]


def test_on_a_tie_the_first_run_in_plan_order_is_kept():
    records = [run("scratch", 1, 0.5, 0.5), run("pretrained", 5, 0.9, 0.7), run("scratch", 5, 0.9, 0.8)]
    assert best_record(records) is records[1]
    # the pipeline asks after every new run: a run that only equals the best so far does not replace it
    assert best_record(records[:2]) is records[1] and best_record(records) is not records[2]


def test_there_is_no_best_of_nothing_and_the_checkpoint_has_one_place(tmp_path):
    with pytest.raises(ValueError):
        best_record([])
    assert best_checkpoint(tmp_path) == tmp_path / "best_model" / "model.ckpt"
