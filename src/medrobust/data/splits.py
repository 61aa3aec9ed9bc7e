"""Train / validation / test splits: stratified by class, optionally grouped by patient.

The study split 60/20/20 stratified by class with seed 42. Chest X-ray collections hold
many images per patient, and an image-level split puts the same person in training and
test, which inflates every score; :func:`patient_grouped_split` keeps each patient on one
side while holding the class proportions of every split close to the target.

Both functions are deterministic under ``seed`` (a numpy ``Generator``) and return one
split name per item: ``"train"``, ``"val"`` or ``"test"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from medrobust.data.dataset import ImageDataset

SPLIT_NAMES = ("train", "val", "test")

Fractions = tuple[float, float, float]


def check_fractions(fractions: Sequence[float]) -> np.ndarray:
    """Validate three non-negative split fractions that sum to 1; return them as an array."""
    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (3,) or not np.all(np.isfinite(f)) or np.any(f < 0) or abs(f.sum() - 1.0) > 1e-6:
        raise ValueError(
            "split fractions must be three non-negative numbers (train, val, test) summing to 1, "
            f"got {tuple(fractions)}"
        )
    return f / f.sum()


def split_counts(n: int, fractions: Sequence[float]) -> np.ndarray:
    """Split ``n`` items into three whole counts as close as possible to ``n * fractions``.

    Largest-remainder rounding: each count is the floor or the ceiling of its exact share
    (so it is within one item of it), and the counts sum to ``n``. Ties go to the earlier
    split.
    """
    f = check_fractions(fractions)
    exact = n * f
    counts = np.floor(exact).astype(np.int64)
    remainder = exact - counts
    order = np.argsort(-remainder, kind="stable")
    counts[order[: n - int(counts.sum())]] += 1
    return counts


def stratified_split(labels: Sequence | np.ndarray, fractions: Sequence[float] = (0.6, 0.2, 0.2),
                     seed: int = 42) -> np.ndarray:
    """Assign each item to train/val/test so that every class is split in ``fractions``.

    Each class is shuffled on its own with one seeded generator and cut by
    :func:`split_counts`, so per class the counts are within one item of the exact share.

    Args:
        labels: one class label per item (any hashable values numpy can sort).
        fractions: (train, val, test), non-negative, summing to 1. Default (0.6, 0.2, 0.2)
            (the study's).
        seed: the numpy generator's seed. Default 42 (the study's).

    Returns:
        (N,) array of ``"train"``, ``"val"``, ``"test"``, in the order of ``labels``.

    Raises:
        ValueError: fractions that are not three non-negative numbers summing to 1.

    Example:

    >>> stratified_split([0, 0, 0, 0, 0, 1, 1, 1, 1, 1], (0.6, 0.2, 0.2)).tolist().count("train")
    6
    """
    labels = np.asarray(labels)
    f = check_fractions(fractions)
    rng = np.random.default_rng(seed)
    out = np.empty(len(labels), dtype="<U5")
    if len(labels) == 0:
        return out
    classes, inverse = np.unique(labels, return_inverse=True)
    for k in range(len(classes)):
        members = rng.permutation(np.flatnonzero(inverse == k))
        bounds = np.cumsum(split_counts(len(members), f))
        for name, part in zip(SPLIT_NAMES, np.split(members, bounds[:2])):
            out[part] = name
    return out


def patient_grouped_split(labels: Sequence | np.ndarray, patients: Sequence | np.ndarray,
                          fractions: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 42) -> np.ndarray:
    """Assign whole patients to train/val/test, keeping class proportions near ``fractions``.

    No patient appears in two splits. Algorithm (greedy multi-label balancing): count each
    patient's images per class; shuffle patients with the seed, then order them by number
    of images, largest first (stable, so equal sizes keep the shuffled order). Each patient
    in turn goes to the split where adding them most reduces the squared shortfall against
    the target ``T[s, k] = fractions[s] * n_k``, measured per class in units of that
    class's size: ``sum_k ((A[s,k] + c_k - T[s,k])**2 - (A[s,k] - T[s,k])**2) / n_k**2``.
    Dividing by ``n_k`` makes a rare class count as much as a common one, and placing
    large patients first leaves the many small ones to even out the remainder, so on
    realistic data each split holds within a percentage point or two of its share of
    every class. Cost: O(patients x classes).

    Args:
        labels: one class label per image, 1-D.
        patients: one patient id per image, the same length.
        fractions: (train, val, test), non-negative, summing to 1; a split of fraction 0 gets
            no patient. Default (0.6, 0.2, 0.2).
        seed: the numpy generator's seed (the order of equal-sized patients). Default 42.

    Returns:
        (N,) array of ``"train"``, ``"val"``, ``"test"``, in the order of ``labels``; all the
        images of a patient share one.

    Raises:
        ValueError: ``labels`` and ``patients`` differ in shape or are not 1-D, or bad fractions.

    Example:

    >>> splits = patient_grouped_split([0, 0, 1, 1, 0, 1], ["a", "a", "b", "b", "c", "d"], (0.5, 0.0, 0.5))
    >>> splits[0] == splits[1], splits[2] == splits[3], "val" in splits
    (True, True, False)
    """
    labels = np.asarray(labels)
    patients = np.asarray(patients)
    if labels.shape != patients.shape or labels.ndim != 1:
        raise ValueError(f"labels and patients must be 1-D of the same length, got {labels.shape} and {patients.shape}")
    f = check_fractions(fractions)
    out = np.empty(len(labels), dtype="<U5")
    if len(labels) == 0:
        return out
    _, label_idx = np.unique(labels, return_inverse=True)
    patient_ids, patient_idx = np.unique(patients, return_inverse=True)
    n_classes, n_patients = int(label_idx.max()) + 1, len(patient_ids)

    per_patient = np.zeros((n_patients, n_classes), dtype=np.float64)
    np.add.at(per_patient, (patient_idx, label_idx), 1.0)
    class_sizes = per_patient.sum(axis=0)
    weights = 1.0 / class_sizes**2
    target = f[:, None] * class_sizes[None, :]
    assigned = np.zeros_like(target)
    allowed = f > 0

    rng = np.random.default_rng(seed)
    order = rng.permutation(n_patients)
    order = order[np.argsort(-per_patient[order].sum(axis=1), kind="stable")]

    choice = np.empty(n_patients, dtype=np.int64)
    for p in order:
        counts = per_patient[p]
        cost = ((2.0 * (assigned - target) + counts) * counts * weights).sum(axis=1)
        cost[~allowed] = np.inf
        s = int(np.argmin(cost))
        assigned[s] += counts
        choice[p] = s
    return np.asarray(SPLIT_NAMES)[choice[patient_idx]]


def split_summary(labels: Sequence | np.ndarray, splits: Sequence | np.ndarray, classes: Sequence[str]) -> str:
    """A small text table of images per class (rows) and split (columns), with totals.

    ``labels`` are class indices into ``classes``; ``splits`` the split name of each item
    (None or "" for items without one, shown as "none").
    """
    labels = np.asarray(labels, dtype=np.int64)
    names = np.array(["none" if not s else str(s) for s in splits], dtype=object)
    present = [s for s in SPLIT_NAMES if np.any(names == s)]
    present += sorted({str(s) for s in names} - set(present))
    header = ["class", *present, "total"]
    rows: list[list[str]] = []
    for k, name in enumerate(classes):
        in_class = labels == k
        rows.append([name, *(str(int(np.sum(in_class & (names == s)))) for s in present), str(int(in_class.sum()))])
    rows.append(["total", *(str(int(np.sum(names == s))) for s in present), str(len(labels))])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(header), *(line(r) for r in rows)])


def dataset_split_summary(dataset: ImageDataset) -> str:
    """:func:`split_summary` of a dataset's records (for the CLI's per-class counts per split)."""
    return split_summary(dataset.labels, [r.split for r in dataset.records], dataset.classes)
