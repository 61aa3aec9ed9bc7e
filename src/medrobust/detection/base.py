"""The detector contract and what a detection returns.

A detector answers, per image, "was this image tampered with?". It has three calls
(DESIGN.md, "Contracts"):

* ``fit(model, clean)`` — calibrate on clean images (a no-op for uncalibrated detectors);
* ``score(model, x, reference=None)`` — one suspicion score per image, higher = more
  suspicious, usable for a ROC curve;
* ``detect(model, x, reference=None)`` — a :class:`DetectionResult`: the flags, the scores,
  and per image the reasons (named conditions or squeezers) that fired.

Images are the package's one currency: float tensors in [0, 1] of shape (N, C, H, W).
Scores and flags come back as CPU numpy arrays.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn


@dataclass
class DetectionResult:
    """What a detector found in N images.

    Args:
        flags: flagged as attacked, one per image (anything ``np.asarray`` turns into N bools).
        scores: the suspicion score each flag was decided from (higher = more suspicious).
        reasons: per image, the names of the conditions that fired (empty for unflagged images).
        details: optional per-image columns, name -> list of N values (e.g. SSIM, labels, the
            study's log line). Default empty.
        names: optional per-image names (file names). Default None.
        detector: the detector's name. Default ``""``.
        threshold: the score threshold, when the detector has one. Default None.

    Shape:
        - flags: stored as (N,) bool numpy; scores: (N,) float64 numpy.
        - reasons, every details column and names: N entries.

    Raises:
        ValueError: the lengths disagree.

    Example:

    >>> result = DetectionResult(flags=[True, False], scores=[2.5, 0.1], reasons=[["ssim"], []])
    >>> result.flags.dtype, result.scores.shape, result.n_flagged
    (dtype('bool'), (2,), 1)
    >>> result.summary()
    {'detector': '', 'n_images': 2, 'n_flagged': 1, 'flagged_fraction': 0.5, 'threshold': None, 'by_reason': {'ssim': 1}}
    """

    flags: np.ndarray
    scores: np.ndarray
    reasons: list[list[str]]
    details: dict[str, list[Any]] = field(default_factory=dict)
    names: list[str] | None = None
    detector: str = ""
    threshold: float | None = None

    def __post_init__(self) -> None:
        self.flags = np.asarray(self.flags, dtype=bool).reshape(-1)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        n = len(self.flags)
        if len(self.scores) != n or len(self.reasons) != n:
            raise ValueError(
                f"a detection result needs one flag, score and reason list per image: "
                f"got {n} flags, {len(self.scores)} scores, {len(self.reasons)} reason lists"
            )
        for key, column in self.details.items():
            if len(column) != n:
                raise ValueError(f"detail column {key!r} has {len(column)} values for {n} images")
        if self.names is not None and len(self.names) != n:
            raise ValueError(f"{len(self.names)} names for {n} images")

    def __len__(self) -> int:
        return len(self.flags)

    @property
    def n_flagged(self) -> int:
        """How many images are flagged."""
        return int(self.flags.sum())

    def reason_counts(self) -> dict[str, int]:
        """How many images each reason fired on (an image can count under several).

        Returns:
            ``{reason: count}``, sorted by reason.
        """
        counts: Counter[str] = Counter(r for rs in self.reasons for r in rs)
        return dict(sorted(counts.items()))

    def image_record(self, index: int) -> dict[str, Any]:
        """One image's result as a JSON-ready dict.

        Args:
            index: the image's position, 0 to N - 1.

        Returns:
            ``{"index", "name" (when names are set), "flagged", "score", "reasons", detail: value,
            ...}``; a score that is not finite becomes None (strict JSON).
        """
        record: dict[str, Any] = {"index": index}
        if self.names is not None:
            record["name"] = self.names[index]
        record["flagged"] = bool(self.flags[index])
        record["score"] = _json_number(self.scores[index])
        record["reasons"] = list(self.reasons[index])
        for key, column in self.details.items():
            record[key] = _json_value(column[index])
        return record

    def summary(self) -> dict[str, Any]:
        """Counts only: images, flagged, the flagged fraction and the count per reason.

        Returns:
            ``{"detector", "n_images", "n_flagged", "flagged_fraction" (0.0 for no image),
            "threshold", "by_reason"}``.
        """
        n = len(self)
        return {
            "detector": self.detector,
            "n_images": n,
            "n_flagged": self.n_flagged,
            "flagged_fraction": self.n_flagged / n if n else 0.0,
            "threshold": _json_number(self.threshold) if self.threshold is not None else None,
            "by_reason": self.reason_counts(),
        }

    def to_json(self) -> dict[str, Any]:
        """The summary plus one record per image, all plain JSON types.

        Returns:
            :meth:`summary`'s dict with ``"images"``: :meth:`image_record` of every image.
        """
        return {**self.summary(), "images": [self.image_record(i) for i in range(len(self))]}


class Detector(ABC):
    """Base of every detector (see the module docstring for the contract).

    ``requires_reference`` says whether ``score``/``detect`` need the original image
    (the study's detector does; feature squeezing does not); ``requires_calibration`` whether
    :meth:`fit` needs clean images to set a threshold (feature squeezing does).

    The contract follows ART's evasion detectors (Nicolae et al., "Adversarial Robustness
    Toolbox v1.0.0", arXiv 2018): a report per image plus a mask of flags.

    Shape:
        - x, reference, clean: (N, C, H, W) float in [0, 1].
        - score: (N,) float64 numpy array, on the CPU.
        - detect: a :class:`DetectionResult` with (N,) ``flags`` and ``scores``.

    Example (a detector of one's own):

    >>> import torch
    >>> class Bright(Detector):
    ...     def fit(self, model, clean):
    ...         return self
    ...     def score(self, model, x, reference=None):
    ...         return x.mean(dim=(1, 2, 3)).double().numpy()
    ...     def detect(self, model, x, reference=None, names=None):
    ...         s = self.score(model, x)
    ...         return DetectionResult(s > 0.9, s, [["bright"] if v > 0.9 else [] for v in s], detector="bright")
    >>> x = torch.stack([torch.ones(1, 4, 4), torch.zeros(1, 4, 4)])
    >>> Bright().detect(None, x).summary()["by_reason"]
    {'bright': 1}
    """

    name: str = "detector"
    requires_reference: bool = False
    requires_calibration: bool = False  # fit() needs clean images (a threshold set on them)

    @abstractmethod
    def fit(self, model: nn.Module, clean: torch.Tensor) -> "Detector":
        """Calibrate on clean images (a no-op for uncalibrated detectors).

        Args:
            model: the classifier whose inputs are screened.
            clean: (N, C, H, W) float images in [0, 1], known to be unattacked.

        Returns:
            ``self``.
        """

    @abstractmethod
    def score(self, model: nn.Module, x: torch.Tensor, reference: torch.Tensor | None = None) -> np.ndarray:
        """One suspicion score per image, higher = more suspicious (usable for a ROC curve).

        Args:
            model: the classifier whose inputs are screened.
            x: (N, C, H, W) float images in [0, 1], the candidates.
            reference: (N, C, H, W) originals, for detectors that ``requires_reference``.

        Returns:
            (N,) float64 numpy array.
        """

    @abstractmethod
    def detect(self, model: nn.Module, x: torch.Tensor, reference: torch.Tensor | None = None,
               names: Sequence[str] | None = None) -> DetectionResult:
        """Flags, scores and the reasons that fired, per image.

        Args:
            model: the classifier whose inputs are screened.
            x: (N, C, H, W) float images in [0, 1], the candidates.
            reference: (N, C, H, W) originals, for detectors that ``requires_reference``.
            names: one name per image for the result and the log lines. Default None:
                ``image-0``, ``image-1``, ...

        Returns:
            A :class:`DetectionResult` of N images.
        """

    def describe(self) -> dict[str, Any]:
        """The detector's name and settings (for run records).

        Returns:
            ``{"name": ..., setting: value, ...}``.
        """
        return {"name": self.name}


def check_names(names: Sequence[str] | None, n: int) -> list[str]:
    """The given names, or ``image-0``, ``image-1``, ...; raises if the count is wrong."""
    if names is None:
        return [f"image-{i}" for i in range(n)]
    names = [str(s) for s in names]
    if len(names) != n:
        raise ValueError(f"{len(names)} names given for {n} images")
    return names


def _json_number(value: Any) -> float | None:
    v = float(value)
    return v if np.isfinite(v) else None


def _json_value(value: Any) -> Any:
    if isinstance(value, (np.floating, float)):
        return _json_number(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
