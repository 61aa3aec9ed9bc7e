"""Feature squeezing: a detector that needs no original image.

Xu, Evans & Qi, "Feature Squeezing: Detecting Adversarial Examples in Deep Neural
Networks", NDSS 2018. A squeezer removes detail an honest image does not need (fewer bits,
a small median filter, JPEG, total variation). A clean image's prediction barely moves when
squeezed; an adversarial perturbation, tuned to the exact pixels, is partly undone, so the
prediction moves. With ``p(x)`` the model's probability vector and squeezers ``s_1..s_m``::

    score(x) = max_j || p(x) - p(s_j(x)) ||_1

and an image is flagged when ``score(x) > threshold``. The threshold is calibrated on clean
images to a target false positive rate (the paper: 5% on legitimate validation images), by
the order-statistic rule of :func:`medrobust.detection.metrics.calibrated_threshold`.

The squeezers are the defenses room's modules, named by spec strings
(:func:`medrobust.defenses.registry.build_defense`). Defaults: 5-bit depth and a 2x2 median
(the paper's pair for natural images), and the study's JPEG and total variation. Squeezers
must be deterministic (a randomised defense makes the score random).

Limitation: an attacker who knows the squeezers can craft images whose prediction survives
them (He et al., "Adversarial Example Defenses: Ensembles of Weak Defenses are not Strong",
WOOT 2017); the detection rate reported here is against attacks that ignore the detector.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from medrobust.data.image_batch import check_image_batch
from medrobust.defenses.total_variation import HU_TV
from medrobust.detection.base import DetectionResult, Detector, check_names
from medrobust.detection.metrics import calibrated_threshold
from medrobust.detection.model_outputs import probabilities_on_device
from medrobust.detection.registry import register_detector
from medrobust.logs.per_image_log import per_image_log
from medrobust.models.batched_prediction import model_device

log = logging.getLogger(__name__)

DEFAULT_SQUEEZERS: tuple[str, ...] = ("bits:bits=5", "median:size=2", "jpeg:quality=75", "tv:weight=0.1")
"""The default squeezers, as defense spec strings."""

VOLUME_SQUEEZERS: tuple[str, ...] = ("median:size=2", HU_TV)
"""The default squeezers of CT data (volumes and slices in HU): a 2 x 2 (x 2) median and total
variation at its weight for HU (:data:`~medrobust.defenses.total_variation.HU_TV`: about 4 HU, with
a tolerance in HU). No JPEG: it refuses volumes, and no CT pipeline stores HU as JPEG. No bit-depth
reduction: 5 bits of the 12-bit HU range are steps of 132 HU, which erase the contrast of brain
tissue and of every finding in it (a bleed is 20-50 HU above brain)."""


def squeeze_log_line(name: str, flagged: bool, score: float, threshold: float, squeezers: Sequence[str]) -> str:
    """One line per image in the study's shape::

        {name}: Attack Detected | Score: {score:.4f} > {threshold:.4f} | Squeezers: {squeezers}
        {name}: No Attack | Score: {score:.4f} <= {threshold:.4f}
    """
    if flagged:
        return f"{name}: Attack Detected | Score: {score:.4f} > {threshold:.4f} | Squeezers: {', '.join(squeezers)}"
    return f"{name}: No Attack | Score: {score:.4f} <= {threshold:.4f}"


class NotCalibratedError(RuntimeError):
    """``detect`` was called before ``fit`` gave the squeeze detector a threshold."""


@register_detector("squeeze")
class SqueezeDetector(Detector):
    """Reference-free feature-squeezing detector (module docstring).

    Paper: Xu, Evans & Qi, "Feature Squeezing: Detecting Adversarial Examples in Deep Neural
    Networks", NDSS 2018. With ``p`` the model's probabilities and squeezers ``s_1..s_m``::

        score(x) = max_j || p(x) - p(s_j(x)) ||_1,     flagged when score(x) > threshold

    Args:
        squeezers: defense spec strings (``"bits:bits=5"``), or ``(name, module)`` pairs; at
            least one, distinct, deterministic. Default :data:`DEFAULT_SQUEEZERS`: 5-bit depth
            and a 2x2 median (the paper's pair for natural images) plus the study's JPEG
            (quality 75) and TV (lambda 0.1).
        threshold: a known threshold on the score. Default None: set by :meth:`fit`.
        target_fpr: the default false positive rate :meth:`fit` calibrates to, in [0, 1).
            Default 0.05 (the paper's 5% on legitimate images).
        batch_size: images per forward pass, at least 1. Default 64.

    Shape:
        - x: (N, C, H, W) float in [0, 1] (no reference needed).
        - score: (N,) float64 numpy, in [0, 2] for softmax and binary models (+inf for a
          non-finite output).
        - distances: (N, m) float64 numpy, m = the number of squeezers.
        - detect: a :class:`DetectionResult` whose reasons name the squeezers whose distance
          exceeds the threshold.

    Raises:
        ValueError: no squeezer, duplicated or randomized squeezers, a bad spec, or
            ``target_fpr`` / ``batch_size`` out of range.

    Example:

    >>> import torch
    >>> from medrobust.models import build_classifier
    >>> model = build_classifier("small-cnn", ["Normal", "Pneumonia", "Pneumothorax"], 32).eval()
    >>> clean = torch.rand(20, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    >>> detector = SqueezeDetector().fit(model, clean)
    >>> detector.calibration["n_clean"], detector.calibration["realised_fpr"] <= 0.05
    (20, True)
    >>> x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> result = detector.detect(model, x)
    >>> result.flags.shape, detector.distances(model, x).shape, result.threshold == detector.threshold
    ((2,), (2, 4), True)
    """

    name = "squeeze"
    requires_reference = False
    requires_calibration = True

    def __init__(self, squeezers: Sequence[str | tuple[str, nn.Module]] = DEFAULT_SQUEEZERS,
                 threshold: float | None = None, target_fpr: float = 0.05, batch_size: int = 64) -> None:
        if not squeezers:
            raise ValueError("the squeeze detector needs at least one squeezer, e.g. 'bits:bits=5'")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 0.0 <= target_fpr < 1.0:
            raise ValueError(f"target_fpr must be in [0, 1), got {target_fpr} (5% is 0.05)")
        self.squeezer_names: list[str] = []
        self.squeezers: list[nn.Module] = []
        for item in squeezers:
            spec, module = item if isinstance(item, tuple) else (str(item).strip(), _build_squeezer(str(item)))
            if getattr(module, "randomized", False):
                raise ValueError(f"squeezer {spec!r} is randomized; feature squeezing needs deterministic squeezers "
                                 "(a random squeeze makes the score random)")
            self.squeezer_names.append(spec)
            self.squeezers.append(module.eval())
        if len(set(self.squeezer_names)) != len(self.squeezer_names):
            raise ValueError(f"squeezers must be distinct, got {self.squeezer_names}")
        self.threshold = None if threshold is None else float(threshold)
        self.target_fpr = float(target_fpr)
        self.batch_size = int(batch_size)
        self.calibration: dict[str, Any] = {}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "squeezers": list(self.squeezer_names), "threshold": self.threshold,
                "target_fpr": self.target_fpr, **({"calibration": self.calibration} if self.calibration else {})}

    # --- the measure
    @torch.no_grad()
    def distances(self, model: nn.Module, x: torch.Tensor, plain: torch.Tensor | None = None) -> np.ndarray:
        """L1 distances ``||p(x) - p(s_j(x))||_1``, one column per squeezer.

        Each batch moves once to the model's device (where ``x`` is, for a model without
        tensors); the squeezers, forward passes and distances run there, and the (B, m) distances
        come back to the host when the batch is done.

        Args:
            model: the classifier.
            x: (N, C, H, W) float images in [0, 1].
            plain: ``p(x)``, (N, K) probabilities the caller already has (the guard computes them
                for its undefended label), to save that forward pass. Default None: computed here.

        Returns:
            (N, m) float64 numpy, in the order of :attr:`squeezer_names`; +inf where a model
            output is not finite.
        """
        check_image_batch(x, "the squeeze detector", unit_range=True)
        device = model_device(model) or x.device
        out = []
        for start in range(0, len(x), self.batch_size):
            batch = x[start : start + self.batch_size].detach().to(device)
            p = (probabilities_on_device(model, batch) if plain is None
                 else plain[start : start + self.batch_size].to(device=device, dtype=torch.float32))
            out.append(self.distances_from(p, [probabilities_on_device(model, s) for s in self.squeezed(batch)]))
        if not out:
            return np.zeros((0, len(self.squeezers)))
        return np.concatenate(out)

    def squeezed(self, x: torch.Tensor, skip: frozenset[int] = frozenset()) -> list[torch.Tensor | None]:
        """Each squeezer's copy of the batch: ``[s_1(x), ..., s_m(x)]``, where ``x`` is.

        Args:
            x: (B, C, H, W) float images in [0, 1] (their range checked by the caller: no second
                read from the device per squeezer).
            skip: indices of squeezers whose copy the caller has already (the guard's defended
                copy, when a squeezer is the defense itself): None in their place. Default none.

        Returns:
            m tensors of ``x``'s shape (None where skipped), in the order of :attr:`squeezer_names`.

        Raises:
            ValueError: a squeezer changed the image shape.
        """
        from medrobust.defenses.base import Defense

        copies: list[torch.Tensor | None] = []
        for j, squeeze in enumerate(self.squeezers):
            if j in skip:
                copies.append(None)
                continue
            squeezed = squeeze(x, check_range=False) if isinstance(squeeze, Defense) else squeeze(x)
            if squeezed.shape != x.shape:
                raise ValueError(f"squeezer {squeeze} changed the image shape {tuple(x.shape)} -> "
                                 f"{tuple(squeezed.shape)}")
            copies.append(squeezed)
        return copies

    def distances_from(self, plain: torch.Tensor, squeezed: Sequence[torch.Tensor]) -> np.ndarray:
        """``||p(x) - p(s_j(x))||_1`` from probabilities already computed (a caller that runs the
        image and its squeezed copies through the model in one forward pass, as the guard does).

        Args:
            plain: (B, K) ``p(x)``.
            squeezed: m tensors (B, K), ``p(s_j(x))`` in the order of :attr:`squeezer_names`.

        Returns:
            (B, m) float64 numpy; +inf where a model output is not finite (a squeezed or plain
            image whose output is not finite is as far from its squeeze as can be).
        """
        plain = plain.float()
        cols = [(plain - p.to(device=plain.device, dtype=torch.float32)).abs().sum(dim=1) for p in squeezed]
        return np.nan_to_num(torch.stack(cols, dim=1).double().cpu().numpy(), nan=np.inf)

    def differentiable_score(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The score ``max_j ||p(x) - p(s_j(x))||_1`` as a differentiable function of ``x``, for
        an attacker who knows the detector (Carlini & Wagner 2017, "Adversarial examples are not
        easily detected"): its forward value is :meth:`score`'s, and its gradient goes through
        each squeezer by the ``unrolled`` route of :func:`~medrobust.defenses.defended.apply_defense`:
        exactly through the median and TV (its solver unrolled), and with the identity in the
        backward pass (BPDA) through bit-depth reduction and JPEG, which have no gradient.

        Args:
            model: the classifier (in eval mode; its parameters get no gradient).
            x: (B, C, H, W) float images in [0, 1] on the model's device, requiring grad.

        Returns:
            (B,) scores, attached to ``x``'s graph.
        """
        from medrobust.defenses.base import Defense
        from medrobust.defenses.defended import apply_defense
        from medrobust.models.output_kind import OutputKind

        kind = getattr(model, "output_kind", OutputKind.SOFTMAX)
        p = kind.probabilities(model(x).float())
        cols = []
        for squeeze in self.squeezers:
            squeezed = (apply_defense(squeeze, x, "unrolled", check_range=False) if isinstance(squeeze, Defense)
                        else squeeze(x))
            cols.append((p - kind.probabilities(model(squeezed).float())).abs().sum(dim=1))
        return torch.stack(cols, dim=1).amax(dim=1)

    # --- the contract
    def fit(self, model: nn.Module, clean: torch.Tensor, target_fpr: float | None = None,
            held_out_guarantee: bool = False) -> "SqueezeDetector":
        """Set the threshold so that at most ``target_fpr`` of the clean images are flagged.

        The threshold is the ``(n - k)``-th smallest clean score with ``k = floor(target_fpr n)``
        (:func:`~medrobust.detection.metrics.calibrated_threshold`), so the realised FPR on
        ``clean`` is at most the target; on new clean images it is expected to be
        ``(k + 1) / (n + 1)``. Records the calibration in :attr:`calibration`.

        Args:
            model: the classifier.
            clean: (n, C, H, W) float images in [0, 1], known to be unattacked; at least one.
            target_fpr: the false positive rate to calibrate to, in [0, 1). Default None: the
                detector's ``target_fpr``.
            held_out_guarantee: use the split-conformal rule, so the expected FPR on new clean
                images is at most the target (needs ``n >= 1 / target_fpr - 1``). Default False.

        Returns:
            ``self``, with :attr:`threshold` and :attr:`calibration` set.

        Raises:
            ValueError: no clean images, or too few for ``held_out_guarantee``.
        """
        if len(clean) == 0:
            raise ValueError("the squeeze detector needs clean images to calibrate its threshold")
        return self.calibrate(self.score(model, clean), target_fpr, held_out_guarantee)

    def calibrate(self, scores: np.ndarray, target_fpr: float | None = None,
                  held_out_guarantee: bool = False, quiet: bool = False) -> "SqueezeDetector":
        """:meth:`fit` from clean scores already computed (e.g. batch by batch over a folder).

        Args:
            scores: the clean images' scores (:meth:`score`), any shape, at least one.
            target_fpr: as :meth:`fit`. Default None: the detector's ``target_fpr``.
            held_out_guarantee: as :meth:`fit`. Default False.
            quiet: log the calibration at debug level (cross-fitting calibrates once per fold).
                Default False.

        Returns:
            ``self``, with :attr:`threshold`, :attr:`target_fpr` and :attr:`calibration` set.
        """
        target = self.target_fpr if target_fpr is None else float(target_fpr)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if scores.size == 0:
            raise ValueError("the squeeze detector needs clean images to calibrate its threshold")
        self.threshold = calibrated_threshold(scores, target, held_out_guarantee=held_out_guarantee)
        self.target_fpr = target
        realised = float((scores > self.threshold).mean())
        self.calibration = {"n_clean": int(len(scores)), "target_fpr": target, "realised_fpr": realised,
                            "threshold": self.threshold, "held_out_guarantee": held_out_guarantee}
        if len(scores) < 1.0 / max(target, 1e-12):
            log.log(logging.DEBUG if quiet else logging.WARNING, "squeeze detector: %d clean images are few for a "
                    "%.1f%% target; the threshold is the largest clean score", len(scores), 100 * target)
        log.log(logging.DEBUG if quiet else logging.INFO,
                "squeeze detector calibrated on %d clean images: threshold %.4g, FPR %.2f%% (target %.2f%%)",
                 len(scores), self.threshold, 100 * realised, 100 * target)
        return self

    def score(self, model: nn.Module, x: torch.Tensor, reference: torch.Tensor | None = None) -> np.ndarray:
        """The suspicion score ``max_j ||p(x) - p(s_j(x))||_1`` per image.

        Args:
            model: the classifier.
            x: (N, C, H, W) float images in [0, 1].
            reference: ignored (not needed).

        Returns:
            (N,) float64 numpy.
        """
        d = self.distances(model, x)
        return d.max(axis=1) if d.size else np.zeros(0)

    def detect(self, model: nn.Module, x: torch.Tensor, reference: torch.Tensor | None = None,
               names: Sequence[str] | None = None, plain: torch.Tensor | None = None) -> DetectionResult:
        """Flag ``score > threshold``; the reasons are the squeezers whose distance exceeds it.

        Each image's log line also goes to the per-image log.

        Args:
            model: the classifier.
            x: (N, C, H, W) float images in [0, 1].
            reference: ignored.
            names: one name per image for the log lines. Default None: ``image-0``, ...
            plain: ``p(x)`` when the caller has it (:meth:`distances`). Default None.

        Returns:
            A :class:`DetectionResult` with the threshold, one ``distance[spec]`` column per
            squeezer and the log line (``"line"``) as ``details``.

        Raises:
            NotCalibratedError: no threshold yet (call :meth:`fit` first or pass ``threshold``).
        """
        self._check_calibrated()
        return self._result(self.distances(model, x, plain), check_names(names, len(x)))

    def detect_from(self, plain: torch.Tensor, squeezed: Sequence[torch.Tensor],
                    names: Sequence[str] | None = None) -> DetectionResult:
        """:meth:`detect` from probabilities already computed (:meth:`distances_from`): the guard
        runs the image, its squeezed copies (:meth:`squeezed`) and its defended copy through the
        model in one forward pass.

        Args:
            plain: (B, K) ``p(x)``.
            squeezed: m tensors (B, K), ``p(s_j(x))`` in the order of :attr:`squeezer_names`.
            names: one name per image for the log lines. Default None: ``image-0``, ...

        Returns:
            The :class:`DetectionResult` :meth:`detect` gives.

        Raises:
            NotCalibratedError: no threshold yet.
        """
        self._check_calibrated()
        return self._result(self.distances_from(plain, squeezed), check_names(names, len(plain)))

    def _check_calibrated(self) -> None:
        if self.threshold is None:
            raise NotCalibratedError(
                "the squeeze detector has no threshold yet: call fit(model, clean_images) first "
                "(--calibrate DIR of clean images on the command line) or pass threshold=..."
            )

    def _result(self, d: np.ndarray, names: list[str]) -> DetectionResult:
        scores = d.max(axis=1) if d.size else np.zeros(len(d))
        flags = scores > self.threshold
        reasons = [[self.squeezer_names[j] for j in range(d.shape[1]) if d[i, j] > self.threshold]
                   for i in range(len(d))]
        details: dict[str, list[Any]] = {f"distance[{s}]": d[:, j].tolist() for j, s in enumerate(self.squeezer_names)}
        details["line"] = [squeeze_log_line(names[i], bool(flags[i]), float(scores[i]), self.threshold, reasons[i])
                           for i in range(len(d))]
        for line in details["line"]:
            per_image_log.info("%s", line)
        return DetectionResult(flags=flags, scores=scores, reasons=reasons, details=details, names=names,
                               detector=self.name, threshold=self.threshold)


def _build_squeezer(spec: str) -> nn.Module:
    from medrobust.defenses.registry import build_defense

    return build_defense(spec.strip())
