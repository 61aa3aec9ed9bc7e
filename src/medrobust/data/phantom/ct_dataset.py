"""The head-CT phantoms as a dataset generated on demand (``data: {source: phantom, modality: ct}``),
as :class:`~medrobust.data.phantom.dataset.PhantomDataset` is for the chest radiographs: no file is
written, item ``i`` is rendered from ``(seed, i)`` in any order and any process, and the images are
on the CT grid (:data:`~medrobust.data.stored_grid.CT_HU`, integer HU), as a DICOM series of the
same head would read (``medrobust data phantom --modality ct`` writes those)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from medrobust.data.dataset import ImageDataset, ImageRecord
from medrobust.data.phantom.ct_head import CT_CLASSES, CTHeadParams, ct_head_params, measured_noise, render_ct_head
from medrobust.data.splits import stratified_split
from medrobust.data.stored_grid import CT_HU

NOISE_HEADS = 32
"""Heads whose white-matter noise is measured for the data's noise figure (:meth:`CTPhantomDataset.known_noise_std`)."""
GENERATOR_METHOD = (f"the phantoms' generator: median of each head's standard deviation in its white matter "
                    f"(the first {NOISE_HEADS} heads)")
"""How metrics.json says the noise of phantoms generated in the run was measured."""


class CTPhantomDataset(ImageDataset):
    """``per_class`` head CTs of each of normal, haemorrhage and infarct, balanced, in HU.

    Item ``i`` has label ``i % 3`` and the parameters :func:`~medrobust.data.phantom.ct_head.ct_head_params`
    ``(seed, i)`` gives, the same as the i-th head ``medrobust data phantom --modality ct`` writes
    with that seed. Each head is its own patient, so the stratified split is patient-grouped.

    Args:
        per_class: heads per class, at least 1.
        size: the in-plane matrix in pixels (the 220 mm field of view), 16 to 512. Default 64.
        depth: slices per volume (the head-foot extent of 80 mm); 1 gives axial slices through
            the finding. Default 16.
        seed: the generator seed. Default 0.
        fractions: (train, val, test) fractions of a stratified split. Default (0.6, 0.2, 0.2);
            None: no split.
        split_seed: the split's seed. Default 42.

    Shape:
        - ``dataset[i]``: ``(image, label, id)``, image (1, depth, size, size) float32 in [0, 1] on
          the CT grid (``HU = -1024 + 4095 x``; depth 1: (1, size, size)), id ``ct-{i:06d}``.

    Raises:
        ValueError: ``per_class`` below 1, or a size or depth out of range.

    Example:

    >>> dataset = CTPhantomDataset(per_class=1, size=16, depth=4)
    >>> image, label, name = dataset[1]
    >>> image.shape, dataset.classes[label], name, dataset.grid.unit
    (torch.Size([1, 4, 16, 16]), 'haemorrhage', 'ct-000001', 'HU')
    """

    def __init__(self, per_class: int, size: int = 64, depth: int = 16, seed: int = 0,
                 fractions: Sequence[float] | None = (0.6, 0.2, 0.2), split_seed: int = 42) -> None:
        if per_class < 1:
            raise ValueError(f"per_class must be at least 1, got {per_class}")
        if not 16 <= size <= 512 or not 1 <= depth <= 256:
            raise ValueError(f"a CT phantom is 16 to 512 px square and 1 to 256 slices, got {size} px x {depth} slices")
        labels = np.arange(per_class * len(CT_CLASSES)) % len(CT_CLASSES)
        splits = stratified_split(labels, fractions, seed=split_seed) if fractions is not None else [None] * len(labels)
        records = [ImageRecord(label=int(lab), id=f"ct-{i:06d}", split=split, patient=f"ct-{i:06d}")
                   for i, (lab, split) in enumerate(zip(labels, splits))]
        super().__init__(records, CT_CLASSES, size)
        self.grid = CT_HU
        self.seed, self.per_class, self.depth = seed, per_class, depth

    def params(self, index: int) -> CTHeadParams:
        """The generator parameters of item ``index``."""
        return ct_head_params(self.seed, index, self.records[index].label)

    def read(self, index: int) -> np.ndarray:
        assert isinstance(self.size, int)
        hu = render_ct_head(self.params(index), self.size, self.depth)
        image = CT_HU.from_units(hu).astype(np.float32)
        return image[0] if self.depth == 1 else image

    def known_noise_std(self) -> float | None:
        """The heads' image noise in HU as a physicist measures it: the median over the first
        :data:`NOISE_HEADS` heads of each one's standard deviation in its white matter (the
        noiseless head tells where that is), as the written phantoms' manifest states it."""
        assert isinstance(self.size, int)
        values = []
        for i in range(min(NOISE_HEADS, len(self))):
            p = self.params(i)
            noisy = render_ct_head(p, self.size, self.depth)
            values.append(measured_noise(noisy, render_ct_head(p, self.size, self.depth, noise=False), p.white_hu))
        values = [v for v in values if math.isfinite(v)]
        return float(np.median(values)) if values else None
