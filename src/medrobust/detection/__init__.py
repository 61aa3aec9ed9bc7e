"""Can an attack be caught before the prediction reaches a clinician?

* :class:`~medrobust.detection.reference.ReferenceDetector` — the study's detector: compares
  each image with its original (SSIM, confidence drop, mean absolute difference, label change).
* :class:`~medrobust.detection.squeeze.SqueezeDetector` — reference-free feature squeezing
  (Xu et al. 2018), calibrated to a target false positive rate on clean images.
* :mod:`~medrobust.detection.benign` — the benign changes (JPEG, re-windowing, resizing,
  noise) on which false positive rates are measured honestly.
* :mod:`~medrobust.detection.metrics` — detection rate, FPR, ROC, calibration, latency.
"""

from medrobust.detection.base import DetectionResult, Detector
from medrobust.detection.reference import ReferenceDetector
from medrobust.detection.registry import build_detector, list_detectors
from medrobust.detection.squeeze import SqueezeDetector

__all__ = ["DetectionResult", "Detector", "ReferenceDetector", "SqueezeDetector", "build_detector", "list_detectors"]
