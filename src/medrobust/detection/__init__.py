"""Can an attack be caught before the prediction reaches a clinician?

* :class:`~medrobust.detection.reference.ReferenceDetector` — the study's detector: compares
  each image with its original (SSIM, confidence drop, mean absolute difference, label change).
* :class:`~medrobust.detection.squeeze.SqueezeDetector` — reference-free feature squeezing
  (Xu et al. 2018), calibrated to a target false positive rate on clean images.
* :mod:`~medrobust.detection.benign` — the benign changes (JPEG, re-windowing, resizing,
  noise) on which false positive rates are measured honestly.
* :mod:`~medrobust.detection.metrics` — detection rate, FPR, ROC, calibration, latency.

``build_detector("squeeze:target_fpr=0.01")`` builds any detector by name. Importing this
package registers the built-in detectors (its imports run the ``@register_detector``
decorators of :mod:`~medrobust.detection.reference` and :mod:`~medrobust.detection.squeeze`).
"""

from medrobust.detection.base import DetectionResult, Detector
from medrobust.detection.reference import ReferenceDetector
from medrobust.detection.registry import build_detector, list_detectors, register_detector
from medrobust.detection.squeeze import SqueezeDetector

__all__ = [
    "DetectionResult",
    "Detector",
    "ReferenceDetector",
    "SqueezeDetector",
    "build_detector",
    "list_detectors",
    "register_detector",
]
