"""The detection stage's units: a detector's scores on clean images (:class:`ScoreUnit`, to
calibrate its threshold) and a detector's judgement of one batch's clean, benignly changed and
attacked images (:class:`DetectUnit`). Plain data like every unit (:mod:`medrobust.execution.units`).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from medrobust.execution.pixels import from_stored, stored_grid_of
from medrobust.execution.units import Unit, Workbench


@dataclass
class ScoreUnit(Unit):
    """A detector's scores on one batch of clean images (to calibrate its threshold).
    :meth:`run` returns ``scores``.

    Args:
        seed: the stage's seed.
        start: the batch's first image in its stream.
        detector: the :class:`~medrobust.detection.base.Detector` (scored with the model).
        images: the clean images as stored bytes.

    Shape:
        - images: (B, H, W) uint8.
        - scores: (B,) float64.
    """

    detector: Any = None
    images: np.ndarray = field(default_factory=lambda: np.zeros((0, 1, 1), np.uint8))

    def run(self, bench: Workbench) -> dict[str, np.ndarray]:
        x = from_stored(self.images).to(bench.device)
        return {"scores": np.asarray(self.detector.score(bench.models["model"], x), dtype=np.float64)}


DETECT_SETS_CLEAN = "clean"


def benign_names_of(stored: np.ndarray) -> tuple[str, ...]:
    """The benign changes of stored images (:func:`~medrobust.detection.benign.benign_change_names`):
    the grid read from their integer type (uint16: CT in HU, its recalibration, reconstruction
    noise, slice shift and resampling; uint8: the radiograph changes), volumes from their rank
    ((B, D, H, W)); so a unit and its stage agree without being told the run's grid.

    Args:
        stored: a stored batch (uint8 or uint16), images (B, H, W) or volumes (B, D, H, W).

    Returns:
        The names of the benign changes, in the order :func:`~medrobust.detection.benign.benign_changes` makes them.
    """
    from medrobust.detection.benign import benign_change_names

    return benign_change_names(stored_grid_of(stored), volumes=stored.ndim == 4)


@dataclass
class DetectUnit(Unit):
    """One detector over one batch: the clean images, their benign changes
    (:func:`~medrobust.detection.benign.benign_changes` for the stored images' grid, drawn with
    ``seed + start``: on CT the CT changes, never a radiograph's JPEG or re-windowing) and each
    attack's images.

    :meth:`run` returns, for the i-th image set of :meth:`sets` (``clean``, the benign changes,
    then the attacks in ``attacked``'s order), ``s{i}__flags``, ``s{i}__scores``,
    ``s{i}__reasons`` (the reasons that fired, joined by ``|``) and ``s{i}__lines``; and
    ``seconds`` of the clean set.

    Args:
        seed: the stage's seed.
        start: the batch's first image in its stream.
        detector: the :class:`~medrobust.detection.base.Detector`.
        needs_reference: the detector compares each image with its clean original. Default False.
        clean: the clean images as stored bytes.
        attacked: each attack's images of the same batch, as stored bytes. Default: none.
        ids: the images' ids (for the per-image lines). Default: none.
        thresholds: per image, the threshold to judge it with (cross-fitting). Default None:
            the detector's own.

    Shape:
        - clean and each of attacked: (B, H, W) uint8, or CT (B, H, W) / volumes (B, D, H, W)
          uint16; thresholds: (B,).
        - each set's flags, scores, reasons, lines: (B,); seconds: (1,).
    """

    detector: Any = None
    needs_reference: bool = False
    clean: np.ndarray = field(default_factory=lambda: np.zeros((0, 1, 1), np.uint8))
    attacked: list[np.ndarray] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    thresholds: np.ndarray | None = None

    @staticmethod
    def sets(attack_keys: list[str], benign: tuple[str, ...] | None = None) -> list[str]:
        """The image sets a unit judges, in order: ``clean``, the ``benign`` changes (default the
        radiographs'; :func:`benign_names_of` the stored images'), then ``attack_keys``."""
        from medrobust.detection.benign import BENIGN_CHANGES

        return [DETECT_SETS_CLEAN, *(BENIGN_CHANGES if benign is None else benign), *attack_keys]

    def run(self, bench: Workbench) -> dict[str, np.ndarray]:
        from medrobust.detection.benign import benign_changes

        model = bench.models["model"]
        x = from_stored(self.clean).to(bench.device)
        ref = x if self.needs_reference else None
        benign = benign_changes(x, torch.Generator(device=x.device).manual_seed(self.seed + self.start),
                                grid=stored_grid_of(self.clean))
        images = [x, *benign.values(), *(from_stored(a).to(bench.device) for a in self.attacked)]
        out: dict[str, np.ndarray] = {}
        for i, batch in enumerate(images):
            t0 = time.perf_counter()
            flags, scores, reasons, lines = _judge(self.detector, model, batch, ref, self.ids, self.thresholds)
            if i == 0:
                out["seconds"] = np.array([time.perf_counter() - t0])
            out[f"s{i}__flags"], out[f"s{i}__scores"] = flags, scores
            out[f"s{i}__reasons"] = np.array(["|".join(r) for r in reasons], dtype=str)
            out[f"s{i}__lines"] = np.array(lines, dtype=str)
        return out


def _judge(detector, model: nn.Module, x: torch.Tensor, ref: torch.Tensor | None, ids: list[str],
           thresholds: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, list[list[str]], list[str]]:
    """``detector.detect`` over ``x``; with per-image ``thresholds``, group by threshold."""
    groups = [np.arange(len(x))] if thresholds is None else [np.flatnonzero(thresholds == t)
                                                             for t in np.unique(thresholds)]
    n = len(x)
    flags, scores = np.zeros(n, dtype=bool), np.zeros(n)
    reasons: list[list[str]] = [[] for _ in range(n)]
    lines = [""] * n
    for group in groups:
        judge = detector
        if thresholds is not None:  # a copy: the driver's detector is not changed by a unit run in its process
            judge = copy.copy(detector)
            judge.threshold = float(thresholds[group[0]])
        index = torch.from_numpy(group).to(x.device)
        part = judge.detect(model, x.index_select(0, index),
                               reference=None if ref is None else ref.index_select(0, index),
                               names=[ids[i] for i in group])
        flags[group], scores[group] = part.flags, part.scores
        for j, i in enumerate(group):
            reasons[i] = list(part.reasons[j])
            lines[i] = part.details.get("line", [""] * len(group))[j]
    return flags, scores, reasons, lines

