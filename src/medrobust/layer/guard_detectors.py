"""A guard's detectors: checked before any model is loaded, then calibrated on clean images.

Only reference-free detectors can stand in front of a model in production (there is no
original image to compare with). A detector that sets its threshold on clean images
(``requires_calibration``) is scored on them as received, on the bare model, and calibrated to
the target false positive rate, as :func:`mr.detect <medrobust.layer.detect.detect>` and the
run's detection stage do (:func:`~medrobust.layer.detect.calibrate_detector`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from medrobust.layer.detect import calibrate_detector
from medrobust.layer.images import open_images


def guard_detectors(detectors: Sequence[Any] | str | None, calibration: Any) -> dict[str, Any]:
    """The guard's detectors by name, checked (nothing is loaded or read yet).

    Args:
        detectors: specs (``"squeeze"``, ``"squeeze:threshold=0.2"``) or Detectors; one spec
            alone; or None for none.
        calibration: the clean images the guard will be calibrated on, or None.

    Returns:
        name -> Detector (a second detector of the same name is keyed by its spec).

    Raises:
        ValueError: a bad spec, a detector that needs the original image, one that needs
            calibration images when none are given, or the same detector twice.
    """
    from medrobust.detection.registry import build_detector

    specs = [detectors] if isinstance(detectors, str) else list(detectors or [])
    built: dict[str, Any] = {}
    for spec in specs:
        det = build_detector(spec) if isinstance(spec, str) else spec
        shown = spec if isinstance(spec, str) else det.name
        if det.requires_reference:
            raise ValueError(f"detector {shown!r} compares each image with its original, and a guard in production "
                             "has no original image: use a reference-free detector such as 'squeeze'")
        if det.requires_calibration and calibration is None and getattr(det, "threshold", None) is None:
            raise ValueError(f"the {det.name} detector sets its threshold on clean images: pass calibration=IMAGES "
                             "(clean images like the ones the guard will see: a folder, files or tensors; fpr= sets "
                             "the false positive rate aimed at)")
        name = det.name if det.name not in built else str(shown)
        if name in built:
            raise ValueError(f"detector {name!r} is given twice; give each detector once")
        built[name] = det
    return built


def calibrate_guard_detectors(detectors: dict[str, Any], model: Any, calibration: Any, fpr: float,
                              batch_size: int) -> dict[str, dict[str, Any]]:
    """Calibrate each detector that needs it on ``calibration`` at ``fpr`` (module docstring).

    Args:
        detectors: name -> Detector (:func:`guard_detectors`).
        model: the bare Classifier.
        calibration: clean images (anything :func:`mr.open_images` takes; paths are read as
            plain images at the model's square input size), or None.
        fpr: the target false positive rate.
        batch_size: images per batch.

    Returns:
        name -> ``{"n_images", "source", "target_fpr", "skipped"}`` for each detector with a
        threshold; a threshold given in the spec says so in ``source``.

    Raises:
        ValueError: no readable calibration image.
    """
    notes: dict[str, dict[str, Any]] = {}
    wanted = [name for name, det in detectors.items() if det.requires_calibration and calibration is not None]
    if wanted:
        size = model.input_size
        fixed = size[0] if size and size[0] == size[1] else None
        is_path = isinstance(calibration, (str, list)) or hasattr(calibration, "__fspath__")
        clean = open_images(calibration, size=fixed, labelled=False) if is_path else open_images(calibration)
        for name in wanted:
            det = detectors[name]
            skipped = calibrate_detector(det, model, clean, fpr, batch_size)
            n = getattr(det, "calibration", {}).get("n_clean")
            notes[name] = {"n_images": int(n) if n is not None else None, "source": clean.source,
                           "target_fpr": fpr, "skipped": len(skipped)}
    for name, det in detectors.items():
        if det.requires_calibration and name not in notes:
            notes[name] = {"n_images": 0, "source": "the threshold given in the detector's spec", "target_fpr": None,
                           "skipped": 0}
    return notes
