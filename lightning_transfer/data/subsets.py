"""Seeded, stratified index samplers shared by the image and text DataModules.

Both functions take class ids only (any modality) and return sorted lists of row indices.

How rows are drawn: the rows of every class are shuffled once with ``numpy.random.default_rng(seed)``
(classes in ascending order) and splits / subsets take consecutive runs of those per-class
permutations. Two consequences worth relying on:

- ``stratified_subset(labels, per_class=5, seed=s)`` is contained in the subset with ``per_class=50``
  and the same seed, so few-label curves are nested;
- per-class counts of a split of ``n`` rows are the largest-remainder rounding of
  ``n * class_count / total``, so every split has exactly the requested size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from lightning_transfer.errors import UserInputError


def _as_class_ids(labels: Sequence[int]) -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 1:
        raise UserInputError(f"labels must be a 1-D sequence of class ids, got shape {tuple(array.shape)}")
    if array.size and array.dtype.kind not in "iub":
        if array.dtype.kind == "f" and np.all(np.isfinite(array)) and np.all(array == np.round(array)):
            return array.astype(np.int64)
        raise UserInputError(f"labels must be integer class ids, got dtype {array.dtype} (first value {array[0]!r})")
    return array.astype(np.int64)


def _class_permutations(labels: np.ndarray, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    return classes, [rng.permutation(np.flatnonzero(labels == c)) for c in classes]


def _allocate(total: int, counts: np.ndarray) -> np.ndarray:
    """Largest-remainder split of ``total`` over classes proportionally to ``counts`` (exact integers;
    ties go to the lower class id). Each share is at most its class count when total <= counts.sum()."""
    counts = np.asarray(counts, dtype=np.int64)
    pool = int(counts.sum())
    if pool == 0 or total == 0:
        return np.zeros_like(counts)
    base = total * counts // pool
    remainders = total * counts % pool
    order = np.argsort(-remainders, kind="stable")
    base[order[: total - int(base.sum())]] += 1
    return base


def _size_to_count(size: int | float, n: int, what: str) -> int:
    if isinstance(size, bool):
        raise UserInputError(f"{what} must be a count (int) or a fraction in (0, 1), got {size!r}")
    if isinstance(size, (int, np.integer)):
        if size < 0:
            raise UserInputError(f"{what} must be >= 0, got {size}")
        return int(size)
    if isinstance(size, (float, np.floating)):
        if not 0.0 <= size < 1.0:
            raise UserInputError(f"{what} as a fraction must be in [0, 1), got {size}; pass an int for a count")
        return int(round(size * n))
    raise UserInputError(f"{what} must be a count (int) or a fraction in (0, 1), got {size!r}")


def stratified_split(labels: Sequence[int], sizes: Sequence[int | float], seed: int = 0) -> list[list[int]]:
    """Split rows into ``len(sizes)`` stratified parts plus the rest.

    Args:
        labels: class id of every row.
        sizes: one entry per part: an ``int`` count of rows, or a ``float`` in ``[0, 1)`` read as a
            fraction of ``len(labels)`` (rounded to the nearest row).
        seed: the same labels and seed always give the same parts.

    Returns:
        ``len(sizes) + 1`` sorted index lists: the parts in the order of ``sizes``, then every row not
        drawn. Part ``j`` has exactly its requested size and class proportions as close as integers
        allow to those of the rows still undrawn. Earlier parts do not depend on later sizes, so put the
        part that must stay fixed (a test set) first.

    Raises:
        UserInputError: the sizes add up to more rows than there are, a size is negative or a fraction
            outside ``[0, 1)``, or labels are not integer class ids.
    """
    array = _as_class_ids(labels)
    n = len(array)
    counts = [_size_to_count(size, n, f"split size #{i}") for i, size in enumerate(sizes)]
    if sum(counts) > n:
        raise UserInputError(f"the requested split sizes {list(sizes)} need {sum(counts)} rows but there are only {n}")
    _, permutations = _class_permutations(array, seed)
    taken = np.zeros(len(permutations), dtype=np.int64)
    parts: list[list[int]] = []
    for count in counts:
        remaining = np.array([len(p) for p in permutations]) - taken
        share = _allocate(count, remaining)
        part = [p[t : t + s] for p, t, s in zip(permutations, taken, share)]
        taken += share
        parts.append(sorted(int(i) for i in np.concatenate(part)) if part else [])
    rest = [p[t:] for p, t in zip(permutations, taken)]
    parts.append(sorted(int(i) for i in np.concatenate(rest)) if rest else [])
    return parts


def stratified_subset(
    labels: Sequence[int],
    per_class: int | None = None,
    fraction: float | None = None,
    seed: int = 0,
    *,
    class_names: Mapping[int, str] | Sequence[str] | None = None,
) -> list[int]:
    """A seeded, stratified subset of rows: the few-label training set.

    Give exactly one of:
        per_class: take exactly this many rows of every class present in ``labels``.
        fraction: take ``round(fraction * len(labels))`` rows (at least 1), shared over classes by
            largest remainder; when that is at least the number of classes, every class gets at least
            one row (taken from the largest share).

    Returns sorted row indices. The same labels and seed always give the same rows, and for one seed a
    smaller ``per_class`` picks a subset of a larger one.

    Raises:
        UserInputError: neither or both of ``per_class`` / ``fraction``; ``per_class`` < 1 or larger
            than the smallest class (the message names that class, using ``class_names`` when given,
            and its count); ``fraction`` outside ``(0, 1]``; labels not integer class ids.
    """
    if (per_class is None) == (fraction is None):
        raise UserInputError("give exactly one of per_class (e.g. 10) or fraction (e.g. 0.01) for a labeled subset")
    array = _as_class_ids(labels)
    classes, permutations = _class_permutations(array, seed)
    counts = np.array([len(p) for p in permutations], dtype=np.int64)
    if per_class is not None:
        if isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer)) or per_class < 1:
            raise UserInputError(f"labels per class must be a positive int, got {per_class!r}")
        for c, count in zip(classes, counts):
            if count < per_class:
                name = _class_name(int(c), class_names)
                raise UserInputError(
                    f"labels_per_class={per_class} but class {name} has only {count} training examples; "
                    f"use labels_per_class <= {int(counts.min())}"
                )
        share = np.full(len(classes), int(per_class), dtype=np.int64)
    else:
        if isinstance(fraction, bool) or not isinstance(fraction, (float, int, np.floating)) or not 0 < fraction <= 1:
            raise UserInputError(f"label fraction must be in (0, 1], got {fraction!r}")
        total = max(1, int(round(float(fraction) * len(array))))
        share = _allocate(total, counts)
        if total >= len(classes):
            for k in np.flatnonzero(share == 0):
                share[int(np.argmax(share))] -= 1
                share[k] = 1
    return sorted(int(i) for p, s in zip(permutations, share) for i in p[:s])


def _class_name(class_id: int, class_names: Mapping[int, str] | Sequence[str] | None) -> str:
    if class_names is None:
        return str(class_id)
    try:
        return f"{class_names[class_id]!r} (id {class_id})"
    except (KeyError, IndexError):
        return str(class_id)
