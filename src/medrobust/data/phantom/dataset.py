"""The embedded default dataset: synthetic chest radiographs generated on demand."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medrobust.data.dataset import ImageDataset, ImageRecord
from medrobust.data.phantom.params import PHANTOM_CLASSES, PhantomParams, sample_params
from medrobust.data.phantom.render import render_phantom
from medrobust.data.splits import stratified_split


def phantom_params(seed: int, index: int, label: int) -> PhantomParams:
    """Parameters of phantom number ``index`` of the dataset seeded ``seed``.

    Each image has its own generator, seeded by ``(seed, index)``, so any image can be made
    alone, in any order, in any process, and always comes out byte-identical.
    """
    return sample_params(np.random.default_rng([seed, index]), label)


def generate_phantom(
    label: int, size: int = 128, seed: int | np.random.Generator = 0
) -> tuple[np.ndarray, PhantomParams]:
    """One synthetic radiograph of class ``label``.

    Args:
        label: 0 Normal, 1 Pneumonia, 2 Pneumothorax.
        size: the side in pixels (32 to 512). Default 128.
        seed: a seed or a numpy ``Generator`` for the patient's parameters. Default 0.

    Returns:
        ``(image, params)``: the (size, size) float32 image in [0, 1] and the
        :class:`~medrobust.data.phantom.params.PhantomParams` that produced it.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    params = sample_params(rng, label)
    return render_phantom(params, size), params


class PhantomDataset(ImageDataset):
    """``per_class`` images of each of Normal, Pneumonia and Pneumothorax, balanced.

    Item ``i`` has label ``i % 3`` and is rendered on demand from ``(seed, i)``, so any item is
    the same in any order and any process. Each phantom is its own patient, so the stratified
    split is also a patient-grouped one.

    Args:
        per_class: images per class, at least 1.
        size: the side in pixels, rendered natively (no resampling), 32 to 512. Default 128.
        seed: the generator seed of the images. Default 0.
        fractions: (train, val, test) fractions of a stratified split. Default (0.6, 0.2, 0.2)
            (the study's); None: no split.
        split_seed: the split's seed. Default 42.

    Shape:
        - ``dataset[i]``: ``(image, label, id)``, image (1, size, size) float32 in [0, 1], id
          ``phantom-{i:06d}``.

    Raises:
        ValueError: ``per_class`` below 1.

    Example:

    >>> dataset = PhantomDataset(per_class=2, size=32)
    >>> image, label, name = dataset[4]
    >>> len(dataset), image.shape, label, name
    (6, torch.Size([1, 32, 32]), 1, 'phantom-000004')
    """

    def __init__(
        self,
        per_class: int,
        size: int = 128,
        seed: int = 0,
        fractions: Sequence[float] | None = (0.6, 0.2, 0.2),
        split_seed: int = 42,
    ) -> None:
        if per_class < 1:
            raise ValueError(f"per_class must be at least 1, got {per_class}")
        n_classes = len(PHANTOM_CLASSES)
        labels = np.arange(per_class * n_classes) % n_classes
        splits = stratified_split(labels, fractions, seed=split_seed) if fractions is not None else [None] * len(labels)
        records = [
            ImageRecord(label=int(lab), id=f"phantom-{i:06d}", split=split, patient=f"phantom-{i:06d}")
            for i, (lab, split) in enumerate(zip(labels, splits))
        ]
        super().__init__(records, PHANTOM_CLASSES, size)
        self.seed = seed
        self.per_class = per_class

    def params(self, index: int) -> PhantomParams:
        """The generator parameters of item ``index``."""
        return phantom_params(self.seed, index, self.records[index].label)

    def read(self, index: int) -> np.ndarray:
        assert isinstance(self.size, int)
        return render_phantom(self.params(index), self.size)
