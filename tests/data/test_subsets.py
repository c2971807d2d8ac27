from collections import Counter

import pytest

from lightning_transfer.data.subsets import stratified_split, stratified_subset
from lightning_transfer.errors import UserInputError

LABELS = [0] * 50 + [1] * 30 + [2] * 20  # deliberately in blocks, so a non-shuffling sampler is caught


def _counts(indices, labels=LABELS):
    return Counter(labels[i] for i in indices)


def test_stratified_subset_takes_exactly_per_class_rows_of_every_class():
    subset = stratified_subset(LABELS, per_class=7, seed=0)
    assert _counts(subset) == {0: 7, 1: 7, 2: 7}
    assert len(set(subset)) == 21 and subset == sorted(subset)


def test_stratified_subset_is_reproducible_and_changes_with_the_seed():
    assert stratified_subset(LABELS, per_class=5, seed=3) == stratified_subset(LABELS, per_class=5, seed=3)
    assert stratified_subset(LABELS, per_class=5, seed=3) != stratified_subset(LABELS, per_class=5, seed=4)


def test_stratified_subset_draws_rows_at_random_within_a_class():
    subset = stratified_subset(LABELS, per_class=5, seed=0)
    assert [i for i in subset if LABELS[i] == 0] != list(range(5))


def test_smaller_per_class_subset_is_nested_in_a_larger_one():
    assert set(stratified_subset(LABELS, per_class=3, seed=1)) <= set(stratified_subset(LABELS, per_class=15, seed=1))


def test_stratified_subset_fraction_keeps_class_proportions_and_the_exact_total():
    subset = stratified_subset(LABELS, fraction=0.2, seed=0)
    assert _counts(subset) == {0: 10, 1: 6, 2: 4}


def test_tiny_fraction_still_gives_every_class_a_row():
    subset = stratified_subset(LABELS, fraction=0.03, seed=0)
    assert len(subset) == 3 and set(_counts(subset)) == {0, 1, 2}


def test_per_class_larger_than_the_smallest_class_names_that_class_and_its_count():
    with pytest.raises(UserInputError, match=r"class 'cat' \(id 2\) has only 20"):
        stratified_subset(LABELS, per_class=21, class_names=["dog", "bird", "cat"])


def test_stratified_subset_needs_exactly_one_of_per_class_and_fraction():
    with pytest.raises(UserInputError, match="exactly one"):
        stratified_subset(LABELS)
    with pytest.raises(UserInputError, match="exactly one"):
        stratified_subset(LABELS, per_class=2, fraction=0.1)


def test_non_integer_labels_are_rejected():
    with pytest.raises(UserInputError, match="integer class ids"):
        stratified_subset([0.5, 1.0, 0.0], per_class=1)


def test_stratified_split_gives_exact_disjoint_stratified_parts_and_the_rest():
    test, val, rest = stratified_split(LABELS, [20, 0.1], seed=0)
    assert _counts(test) == {0: 10, 1: 6, 2: 4}
    assert len(val) == 10 and _counts(val) == {0: 5, 1: 3, 2: 2}
    assert sorted(test + val + rest) == list(range(len(LABELS)))


def test_stratified_split_first_part_does_not_depend_on_later_sizes():
    assert stratified_split(LABELS, [20, 5], seed=2)[0] == stratified_split(LABELS, [20, 30], seed=2)[0]


def test_stratified_split_is_reproducible_by_seed():
    assert stratified_split(LABELS, [10], seed=5) == stratified_split(LABELS, [10], seed=5)
    assert stratified_split(LABELS, [10], seed=5)[0] != stratified_split(LABELS, [10], seed=6)[0]


def test_stratified_split_larger_than_the_data_is_an_error():
    with pytest.raises(UserInputError, match="only 100"):
        stratified_split(LABELS, [60, 50])
    with pytest.raises(UserInputError, match="fraction"):
        stratified_split(LABELS, [1.5])
