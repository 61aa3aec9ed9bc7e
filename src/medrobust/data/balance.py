"""Class balancing by down-sampling.

The study balanced its classes by adding augmented copies of the rare ones before
splitting, which puts near-duplicates of one image on both sides of the split. Here
balancing only ever removes images: every class is cut to the size of the smallest,
with a seeded random choice, and no image is copied.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def downsample_to_smallest(labels: Sequence[int] | np.ndarray, seed: int = 42) -> np.ndarray:
    """Indices (sorted, no repeats) of a class-balanced subset of ``labels``.

    Every class present keeps ``min_k n_k`` items chosen uniformly at random without
    replacement (numpy ``Generator`` seeded with ``seed``); the original order is kept.
    """
    labels = np.asarray(labels)
    if len(labels) == 0:
        return np.zeros(0, dtype=np.int64)
    classes, inverse = np.unique(labels, return_inverse=True)
    smallest = int(np.bincount(inverse).min())
    rng = np.random.default_rng(seed)
    keep = [rng.choice(np.flatnonzero(inverse == k), size=smallest, replace=False) for k in range(len(classes))]
    return np.sort(np.concatenate(keep)).astype(np.int64)
