"""The run's images: the dataset listed (no pixel read), its splits checked, and images read in
batches on the data's stored grid (8-bit grey levels, or integer HU for CT) with their labels
as the model's class indices. Every file that cannot be read is recorded once in
:class:`SkippedFiles` (``skipped.txt``, and the run is partial); the rest of the run goes on.

The test split is never read whole: the baseline streams it batch by batch. Only a model
trained in the run reads its train and validation splits whole (:func:`read_split`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from medrobust.evaluation.config import DEFAULT_SPLIT, ExperimentConfig
from medrobust.execution.pixels import to_stored

log = logging.getLogger(__name__)

SKIPPED_FILE = "skipped.txt"
TRAIN_DATA_SPLIT = (0.8, 0.2, 0.0)
"""How a model's own training folder (``train.data``) is split: train and validation only."""

Split = tuple[torch.Tensor, torch.Tensor, list[str]]
"""Images (the data's stored grid), labels as the model's class indices, ids."""


class SkippedFiles:
    """The run's unreadable files and images it could not test, each line once."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, line: str) -> None:
        if line not in self.lines:
            self.lines.append(line)

    def add_from(self, dataset) -> None:
        """What ``dataset`` could not read so far."""
        for s in getattr(dataset, "skipped", []):
            self.add(str(s))

    def mentions(self, name: str) -> bool:
        return any(name in line for line in self.lines)


def open_run_data(config: ExperimentConfig, skipped: SkippedFiles, given=None):
    """The dataset, listed but not read; ``split: test`` puts every image in the test split.
    What the listing could not use (a looping link, a file name that cannot be read) goes to
    ``skipped``. ``given``: an ImageDataset already in memory, used instead of ``data.source``."""
    from medrobust.data.sources import open_dataset

    d = config.data
    if given is not None:
        skipped.add_from(given)
        return given.all_in_split("test") if d.evaluate_only else given
    # with split: test every record is relabelled below; NIH still needs fractions to build its table
    fractions = d.split if isinstance(d.split, tuple) else (DEFAULT_SPLIT if d.source.startswith("nih:") else None)
    dataset = open_dataset(d.source, size=d.size, fractions=fractions, split_seed=d.split_seed,
                           per_class=d.per_class, seed=d.phantom_seed, classes=d.classes, modality=d.modality,
                           depth=d.depth)
    skipped.add_from(dataset)
    if d.evaluate_only:
        _warn_split_folders(d.source)
        return dataset.all_in_split("test")
    return dataset


def check_splits(config: ExperimentConfig, dataset) -> dict:
    """The dataset's splits, checked to hold what the run needs (nothing is read yet)."""
    parts = dataset.splits()
    needed = {"test"} | ({"train", "val"} if trains_here(config) else set())
    missing = needed - set(parts)
    if missing:
        raise ValueError(f"{config.data.source}: no {', '.join(sorted(missing))} split in the data "
                         f"(it has {', '.join(parts) or 'none'}); add images or change data.split")
    return parts


def trains_here(config: ExperimentConfig) -> bool:
    """Whether a model or surrogate is trained on the run's own train/val splits."""
    return any(m.train is not None and m.train.data is None for m in [config.model, *config.surrogates])


def read_images(part, indices, label_map: np.ndarray,
                skipped: SkippedFiles) -> tuple[np.ndarray, np.ndarray, list[str], list[int]]:
    """Items ``indices`` of a split, read now: images (B, H, W) (volumes (B, D, H, W)) stored on the
    data's grid (:func:`~medrobust.execution.pixels.to_stored`), labels as the model's class
    indices, ids and the indices that were readable (the rest are skipped, and logged)."""
    x, y, ids, kept = part.read_batch(indices)
    skipped.add_from(part)
    return to_stored(part.grid.round(x), part.grid), label_map[y.numpy()], ids, kept


def read_split(part, label_map: np.ndarray, batch_size: int, skipped: SkippedFiles) -> Split:
    """One training split's images (the data's grid) and labels as the model's class indices, read whole."""
    x, y, ids = part.load(batch_size)
    skipped.add_from(part)
    return part.grid.round(x), torch.from_numpy(label_map[y.numpy()]), ids


def first_readable(dataset, limit: int, batch_size: int, skipped: SkippedFiles, what: str) -> torch.Tensor:
    """Up to ``limit`` readable images of ``dataset`` (on its grid), read batch by batch."""
    out: list[torch.Tensor] = []
    got = 0
    for start in range(0, len(dataset), batch_size):
        if got >= limit:
            break
        x, _, _, _ = dataset.read_batch(range(start, min(len(dataset), start + batch_size)))
        out.append(x[: limit - got])
        got += len(out[-1])
    skipped.add_from(dataset)
    if not got:
        raise ValueError(f"no readable images to {what} ({len(dataset)} listed)")
    return dataset.grid.round(torch.cat(out))


def _warn_split_folders(source: str) -> None:
    """With ``split: test`` every image is tested: say so when a folder also has train/ or val/ folders."""
    root = Path(source)
    if not root.is_dir():
        return
    names = {p.name.lower() for p in root.iterdir() if p.is_dir()}
    if names & {"train", "val", "valid", "validation"}:
        log.warning("%s has train/val folders, and with data.split: test every image in them is tested too; "
                    "point data.source at %s to test only the test folder", root, root / "test")
