"""The study's detector: compare a candidate image with its original.

With O the original and A the candidate (grey images; a 3-channel image is reduced to
the mean of its channels), C the top-class confidence and Y the predicted label, the study
(Appendix E) flags an attack when any of four conditions holds::

    SSIM(O, A) < 0.85                       reason "ssim"
    C_O - C_A > 0.15                        reason "confidence_drop"
    (1/N) sum_i |O_i - A_i| > 20            reason "mean_abs_diff"   (0..255 scale)
    Y_O != Y_A                              reason "label_change"

SSIM is scikit-image's (Wang et al. 2004; 7x7 window, data range 1), as in
:func:`medrobust.data.similarity.ssim`. On volumes (N, C, D, H, W) it is the mean of the
per-slice SSIMs (not a 3-D SSIM: thick CT slices, and the 0.85 threshold was set on 2-D images),
and the mean absolute difference is over every voxel. The study picked its thresholds by hand and
did not calibrate them, so :meth:`ReferenceDetector.fit` only records them.

The detector needs the original image. In deployment there is usually no original to
compare with: :class:`~medrobust.detection.squeeze.SqueezeDetector` is the reference-free
alternative.

**Score.** Each condition k is turned into a ratio ``t_k`` that exceeds 1 exactly when the
condition fires, and the suspicion score is the largest::

    t_ssim  = (1 - SSIM) / (1 - ssim_threshold)
    t_drop  = (C_O - C_A) / confidence_drop
    t_mad   = mean|O - A| / mean_abs_threshold
    t_label = 1 + max(p_A[Y_A] - p_A[Y_O], 1e-6)   if Y_O != Y_A, else 0
              (multilabel: 1 + the fraction of findings whose decision changed)
    score   = max(t_ssim, t_drop, t_mad, t_label)

so ``score > 1`` if and only if the image is flagged (up to floating-point ties at a
threshold), and among unflagged images the score says how close the nearest condition is —
which makes it usable for a ROC curve. ``t_ssim`` is never negative, so neither is the score;
identical images score 0.

**Log line.** :meth:`ReferenceDetector.detect` writes, per image, the study's line::

    {name}: Attack Detected | SSIM: {ssim:.2f} | Orig: {orig} -> Adv: {adv} | Confidence Drop: {drop:.2f}%
    {name}: No Attack | SSIM: {ssim:.2f} | Orig: {orig} -> Adv: {adv} | Confidence Drop: {drop:.2f}%

where ``drop`` is ``100 * (C_O - C_A)`` (negative when the candidate is more confident). The
study's printout prefixes "Attack Detected" with a triangle glyph; the line here is plain text.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from medrobust.data.image_batch import check_image_batch
from medrobust.data.similarity import mean_abs_difference, ssim
from medrobust.detection.base import DetectionResult, Detector, check_names
from medrobust.detection.model_outputs import labels_differ, model_outputs
from medrobust.detection.registry import register_detector
from medrobust.logs.per_image_log import per_image_log
from medrobust.models.output_kind import OutputKind

log = logging.getLogger(__name__)

REASONS = ("ssim", "confidence_drop", "mean_abs_diff", "label_change")
"""The reference detector's condition names, in the study's order."""

_MIN_LABEL_MARGIN = 1e-6


class ReferenceRequiredError(ValueError):
    """The reference detector was called without the original images."""


def study_log_line(name: str, flagged: bool, ssim_value: float, orig: str, adv: str, drop: float) -> str:
    """The study's per-image line; ``drop`` is C_O - C_A as a fraction (printed in percent)."""
    verdict = "Attack Detected" if flagged else "No Attack"
    return (f"{name}: {verdict} | SSIM: {ssim_value:.2f} | Orig: {orig} -> Adv: {adv} | "
            f"Confidence Drop: {drop * 100:.2f}%")


@dataclass(frozen=True)
class ReferenceMeasures:
    """The four quantities per image, as numpy arrays (N,), plus the label names."""

    ssim: np.ndarray
    confidence_original: np.ndarray
    confidence_candidate: np.ndarray
    mean_abs_diff: np.ndarray
    label_changed: np.ndarray
    label_margin: np.ndarray
    label_original: list[str]
    label_candidate: list[str]

    @property
    def confidence_drop(self) -> np.ndarray:
        return self.confidence_original - self.confidence_candidate


@register_detector("reference")
class ReferenceDetector(Detector):
    """The study's detector (see the module docstring for conditions, score and log line).

    Source: the study ("Assessing CNN Robustness in Medical Imaging Systems: Adversarial
    Threats and Defensive Measures", 2025, Appendix E); SSIM: Wang, Bovik, Sheikh & Simoncelli,
    "Image Quality Assessment: From Error Visibility to Structural Similarity", IEEE Trans.
    Image Processing 2004. With O the original, A the candidate, C the top-class confidence and
    Y the predicted label, an image is flagged when::

        SSIM(O, A) < 0.85  or  C_O - C_A > 0.15  or  mean|O - A| > 20 (of 255)  or  Y_O != Y_A

    and its score is the largest of the four ratios that exceed 1 exactly when a condition
    fires (module docstring), so ``score > 1`` if and only if flagged.

    Args:
        ssim_threshold: flag when SSIM(O, A) is below it, in [-1, 1). Default 0.85 (the study's).
        confidence_drop: flag when the top-class confidence drops by more than this fraction of
            probability, in (0, 1]. Default 0.15 (the study's 15%).
        mean_abs_threshold: flag when the mean absolute difference exceeds this many grey levels
            of 255, in (0, 255]. Default 20.0 (the study's).
        batch_size: images per forward pass, at least 1. Default 64 (medrobust's).

    Shape:
        - x, reference: (N, C, H, W) float in [0, 1], the same shape (the reference is required).
        - score: (N,) float64 numpy, >= 0, above 1 exactly for flagged images.
        - detect: a :class:`DetectionResult` with (N,) flags and scores, the reasons that fired
          and the study's log line per image (``details["line"]``).

    Raises:
        ValueError: a threshold or ``batch_size`` out of range.

    Example:

    >>> import torch
    >>> from medrobust.attacks import BlockShuffle
    >>> from medrobust.models import build_classifier
    >>> model = build_classifier("small-cnn", ["Normal", "Pneumonia", "Pneumothorax"], 32).eval()
    >>> x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> detector = ReferenceDetector()
    >>> detector.score(model, x, reference=x).tolist()  # identical images
    [0.0, 0.0]
    >>> scrambled = BlockShuffle(blocks=4)(model, x, torch.tensor([0, 2]))
    >>> result = detector.detect(model, scrambled, reference=x)
    >>> result.flags.tolist(), [r[:1] for r in result.reasons]
    ([True, True], [['ssim'], ['ssim']])
    """

    name = "reference"
    requires_reference = True

    def __init__(self, ssim_threshold: float = 0.85, confidence_drop: float = 0.15,
                 mean_abs_threshold: float = 20.0, batch_size: int = 64) -> None:
        if not -1.0 <= ssim_threshold < 1.0:
            raise ValueError(f"ssim_threshold must be in [-1, 1), got {ssim_threshold}")
        if not 0.0 < confidence_drop <= 1.0:
            raise ValueError(f"confidence_drop must be a fraction in (0, 1], got {confidence_drop} (15% is 0.15)")
        if not 0.0 < mean_abs_threshold <= 255.0:
            raise ValueError(f"mean_abs_threshold must be in (0, 255] grey levels, got {mean_abs_threshold}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.ssim_threshold = float(ssim_threshold)
        self.confidence_drop = float(confidence_drop)
        self.mean_abs_threshold = float(mean_abs_threshold)
        self.batch_size = int(batch_size)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "ssim_threshold": self.ssim_threshold, "confidence_drop": self.confidence_drop,
                "mean_abs_threshold": self.mean_abs_threshold}

    def fit(self, model: nn.Module, clean: torch.Tensor | None = None) -> "ReferenceDetector":
        """Nothing to calibrate: the study's thresholds are fixed. Logs them.

        Args:
            model: the classifier (unused).
            clean: clean images (unused; may be None).

        Returns:
            ``self``.
        """
        log.info("reference detector: fixed thresholds SSIM < %.2f, confidence drop > %.0f%%, mean |O - A| > %.1f, "
                 "label change (not calibrated)", self.ssim_threshold, 100 * self.confidence_drop,
                 self.mean_abs_threshold)
        return self

    # --- the measures
    def measure(self, model: nn.Module, x: torch.Tensor, reference: torch.Tensor | None) -> ReferenceMeasures:
        """SSIM, confidences, mean absolute difference and labels of candidates ``x`` vs originals.

        Args:
            model: the classifier; its predictions give the confidences and labels.
            x: (N, C, H, W) candidate images in [0, 1].
            reference: (N, C, H, W) originals in [0, 1], the same shape.

        Returns:
            The :class:`ReferenceMeasures`, (N,) numpy arrays and N label names each.

        Raises:
            ReferenceRequiredError: ``reference`` is None.
            ValueError: the images are not in [0, 1] or the shapes differ.
        """
        if reference is None:
            raise ReferenceRequiredError(
                "the reference detector compares each image with its original and needs reference=ORIGINALS "
                "(--reference DIR on the command line); without originals use the reference-free squeeze "
                "detector (SqueezeDetector, --detector squeeze)"
            )
        check_image_batch(x, "the reference detector's candidate images", unit_range=True)
        check_image_batch(reference, "the reference detector's reference images", unit_range=True)
        if x.shape != reference.shape:
            raise ValueError(f"candidate and reference images differ in shape: {tuple(x.shape)} vs "
                             f"{tuple(reference.shape)}; pair each image with its own original")
        a = x.detach().cpu().numpy()
        o = reference.detach().cpu().numpy()
        out_o = model_outputs(model, reference.detach(), self.batch_size)
        out_a = model_outputs(model, x.detach(), self.batch_size)
        changed = labels_differ(out_o.labels, out_a.labels)
        kind = getattr(model, "output_kind", OutputKind.SOFTMAX)
        if kind is OutputKind.MULTILABEL:
            diff = (out_o.labels != out_a.labels).float()
            margin = diff.reshape(len(diff), -1).mean(dim=1)
        else:
            p = out_a.probabilities
            rows = torch.arange(len(p))
            margin = p[rows, out_a.labels.long()] - p[rows, out_o.labels.long()]
        return ReferenceMeasures(
            ssim=ssim(o, a),
            confidence_original=out_o.confidence.double().numpy(),
            confidence_candidate=out_a.confidence.double().numpy(),
            mean_abs_diff=mean_abs_difference(o, a, scale=255.0),
            label_changed=changed.numpy(),
            label_margin=margin.double().numpy(),
            label_original=out_o.label_names,
            label_candidate=out_a.label_names,
        )

    def conditions(self, m: ReferenceMeasures) -> dict[str, np.ndarray]:
        """Which of the four conditions hold, per image: reason -> (N,) bool."""
        return {
            "ssim": m.ssim < self.ssim_threshold,
            "confidence_drop": m.confidence_drop > self.confidence_drop,
            "mean_abs_diff": m.mean_abs_diff > self.mean_abs_threshold,
            "label_change": m.label_changed.astype(bool),
        }

    def ratios(self, m: ReferenceMeasures) -> dict[str, np.ndarray]:
        """Each condition as a ratio that exceeds 1 exactly when it fires (module docstring)."""
        label = np.where(m.label_changed, 1.0 + np.maximum(m.label_margin, _MIN_LABEL_MARGIN), 0.0)
        return {
            "ssim": (1.0 - m.ssim) / (1.0 - self.ssim_threshold),
            "confidence_drop": m.confidence_drop / self.confidence_drop,
            "mean_abs_diff": m.mean_abs_diff / self.mean_abs_threshold,
            "label_change": label,
        }

    # --- the contract
    def score(self, model: nn.Module, x: torch.Tensor, reference: torch.Tensor | None = None) -> np.ndarray:
        """The suspicion score ``max_k t_k`` per image (module docstring).

        Args:
            model: the classifier.
            x: (N, C, H, W) candidate images in [0, 1].
            reference: (N, C, H, W) originals, required.

        Returns:
            (N,) float64 numpy: above 1 exactly for flagged images; 0 for identical images;
            +inf where a model output is not finite.
        """
        return self._score(self.ratios(self.measure(model, x, reference)))

    def detect(self, model: nn.Module, x: torch.Tensor, reference: torch.Tensor | None = None,
               names: Sequence[str] | None = None) -> DetectionResult:
        """Flags, scores, the conditions that fired and the study's log line per image.

        Each line also goes to the per-image log.

        Args:
            model: the classifier.
            x: (N, C, H, W) candidate images in [0, 1].
            reference: (N, C, H, W) originals, required.
            names: one name per image for the log lines. Default None: ``image-0``, ...

        Returns:
            A :class:`DetectionResult` with threshold 1.0, reasons from :data:`REASONS`, and the
            measures and the log line (``"line"``) as ``details`` columns.
        """
        m = self.measure(model, x, reference)
        names = check_names(names, len(x))
        fired = self.conditions(m)
        flags = np.zeros(len(x), dtype=bool)
        for values in fired.values():
            flags |= values
        reasons = [[r for r in REASONS if fired[r][i]] for i in range(len(x))]
        drop = m.confidence_drop
        lines = [study_log_line(names[i], bool(flags[i]), float(m.ssim[i]), m.label_original[i],
                                m.label_candidate[i], float(drop[i])) for i in range(len(x))]
        for line in lines:
            per_image_log.info("%s", line)
        details: dict[str, list[Any]] = {
            "ssim": m.ssim.tolist(),
            "confidence_original": m.confidence_original.tolist(),
            "confidence_candidate": m.confidence_candidate.tolist(),
            "confidence_drop": drop.tolist(),
            "mean_abs_diff": m.mean_abs_diff.tolist(),
            "label_original": list(m.label_original),
            "label_candidate": list(m.label_candidate),
            "line": lines,
        }
        return DetectionResult(flags=flags, scores=self._score(self.ratios(m)), reasons=reasons, details=details,
                               names=names, detector=self.name, threshold=1.0)

    @staticmethod
    def _score(ratios: dict[str, np.ndarray]) -> np.ndarray:
        """The largest ratio; +inf where one is NaN (a model output that is not finite is as
        suspicious as it gets: the image is flagged, never passed)."""
        return np.nan_to_num(np.max(np.stack(list(ratios.values())), axis=0), nan=np.inf)
