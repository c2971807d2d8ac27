"""How many labels per class one initialization needs to match another: the "labels saved" table.

Label-efficiency curves (accuracy against labels per class) are roughly linear in ``log(labels)``,
so between two measured budgets the baseline's mean accuracy is interpolated piecewise-linearly in
``log(k)``. Nothing is extrapolated outside the measured budgets: below the smallest one the answer
is an upper bound ("at most"), above the largest one a lower bound ("more than").

Pure functions on the rows of :func:`lightning_transfer.transfer.report.summarize` (keys ``init``,
``labels_per_class`` and ``mean_accuracy``); no Lightning, no torch.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from lightning_transfer.errors import require

#: ``bound`` of a :func:`labels_saved` row: the baseline reaches the target inside its measured budgets.
REACHED = "reached"
#: ``bound``: the baseline already reaches the target at its smallest measured budget (an upper bound).
AT_MOST = "at_most"
#: ``bound``: the baseline never reaches the target up to its largest measured budget (a lower bound).
MORE_THAN = "more_than"


def labels_to_reach(curve: Sequence[tuple[float, float]], target: float) -> tuple[str, float | None]:
    """The fewest labels per class at which ``curve`` first reaches ``target``.

    ``curve``: ``(labels_per_class, mean accuracy)`` points with distinct positive budgets (any order).
    The curve between two neighbouring points is linear in ``log(k)``; the FIRST crossing counts (the
    smallest ``k`` where the interpolated curve is ``>= target``), also for a non-monotonic curve.

    Returns ``(bound, k)``:

    * ``(REACHED, k')`` when a later measured point reaches the target; ``k'`` is the interpolated
      budget (exactly the measured ``k`` when that point equals the target);
    * ``(AT_MOST, k_min)`` when the smallest measured budget already reaches it: the curve needs no
      more than ``k_min`` (it is not extrapolated below the measured range);
    * ``(MORE_THAN, None)`` when no measured point reaches it (the curve needs more than its largest
      measured budget).
    """
    points = sorted((float(k), float(accuracy)) for k, accuracy in curve)
    require(len(points) > 0, "labels_to_reach needs at least one measured point")
    require(all(k > 0 for k, _ in points), f"labels per class must be positive, got {[k for k, _ in points]}")
    require(len({k for k, _ in points}) == len(points), f"duplicate labels per class in {[k for k, _ in points]}")
    if points[0][1] >= target:
        return AT_MOST, points[0][0]
    for (k0, a0), (k1, a1) in itertools.pairwise(points):
        if a1 < target:
            continue
        # a0 < target <= a1: this segment holds the first crossing
        fraction = (target - a0) / (a1 - a0)
        if fraction >= 1.0:
            return REACHED, k1  # an exact hit, without the round trip through log/exp
        return REACHED, math.exp(math.log(k0) + fraction * (math.log(k1) - math.log(k0)))
    return MORE_THAN, None


def format_labels(k: float) -> str:
    """A budget of labels per class for text: whole numbers without decimals, others to 1 decimal."""
    return str(int(round(k))) if abs(k - round(k)) < 1e-9 else f"{k:.1f}"


def per_class_text(k: float) -> str:
    """``"1 label per class"``, ``"23.4 labels per class"``."""
    return f"{format_labels(k)} label{'' if format_labels(k) == '1' else 's'} per class"


def labels_saved(summary: Sequence[dict], reference: str = "pretrained", baseline: str = "scratch") -> list[dict]:
    """For each budget ``k`` measured for ``reference``, the labels per class ``baseline`` needs to
    match the reference's MEAN test accuracy at ``k`` (:func:`labels_to_reach` on the baseline's
    measured mean curve: piecewise-linear in ``log(k)``, first crossing, no extrapolation).

    ``summary``: rows with ``init``, ``labels_per_class`` and ``mean_accuracy`` (as
    :func:`~lightning_transfer.transfer.report.summarize` returns). Raises
    :class:`~lightning_transfer.errors.UserInputError` when either init has no row.

    Returns one dict per reference budget, in increasing ``k``:

    * ``reference``, ``baseline``: the two inits; ``labels_per_class``: ``k``;
      ``reference_accuracy``: the reference's mean test accuracy at ``k`` (the target);
    * ``bound``: :data:`REACHED`, :data:`AT_MOST` or :data:`MORE_THAN` (see :func:`labels_to_reach`);
    * ``baseline_labels_per_class``: ``k'`` (float) for REACHED, the smallest measured baseline
      budget for AT_MOST, ``None`` for MORE_THAN;
    * ``saved_per_class`` = ``k' - k`` and ``ratio`` = ``k' / k``: for AT_MOST upper bounds computed
      from that smallest budget, ``None`` for MORE_THAN;
    * ``baseline_max_labels_per_class``: the largest budget measured for the baseline;
    * ``text``: one sentence, e.g. ``"scratch needs 23.4 labels per class to match pretrained at 5
      (4.7x as many)"``.
    """
    inits = sorted({row["init"] for row in summary})
    ref_rows = sorted((r for r in summary if r["init"] == reference), key=lambda r: r["labels_per_class"])
    curve = [(r["labels_per_class"], r["mean_accuracy"]) for r in summary if r["init"] == baseline]
    require(len(ref_rows) > 0, f"no results for init {reference!r}; measured: {', '.join(inits)}")
    require(len(curve) > 0, f"no results for init {baseline!r}; measured: {', '.join(inits)}")
    largest = max(k for k, _ in curve)
    rows = []
    for row in ref_rows:
        k, target = row["labels_per_class"], row["mean_accuracy"]
        bound, needed = labels_to_reach(curve, target)
        match = f"to match {reference} at {format_labels(k)}"
        if bound == MORE_THAN:
            saved = ratio = None
            text = f"{baseline} needs more than {per_class_text(largest)} {match} (the largest measured; it never reaches {target:.3f})"
        else:
            assert needed is not None
            saved, ratio = needed - k, needed / k
            if bound == AT_MOST:
                text = f"{baseline} needs at most {per_class_text(needed)} {match} (its smallest measured budget already reaches {target:.3f})"
            else:
                text = f"{baseline} needs {per_class_text(needed)} {match} ({ratio:.1f}x as many)"
        rows.append(
            {
                "reference": reference,
                "baseline": baseline,
                "labels_per_class": k,
                "reference_accuracy": target,
                "bound": bound,
                "baseline_labels_per_class": needed,
                "saved_per_class": saved,
                "ratio": ratio,
                "baseline_max_labels_per_class": largest,
                "text": text,
            }
        )
    return rows
