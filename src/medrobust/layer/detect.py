"""``mr.detect``: is an image attacked? The study's detector compares each image with its
original; the squeeze detector needs none but a threshold calibrated on clean images.

Pairing (reference detectors): each image is paired with the original that has the same id
(path relative to its folder); failing that, with the one original whose id differs only in
its suffix (``a/b.png`` pairs with ``a/b.jpeg``). Images are compared at the model's input
size when it has one, else at ``size``, else at the first image's size. Unreadable and
unpaired files are listed in ``skipped`` and the rest goes on.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from medrobust.data.errors import ImageReadError
from medrobust.execution.progress import Progress, SilentProgress
from medrobust.layer.images import Images, open_images
from medrobust.layer.models import load_model
from medrobust.models.contract import ModelContract

log = logging.getLogger(__name__)


@dataclass
class Detection:
    """A detector's verdicts on images.

    Args:
        detector: the detector's settings, its calibrated threshold included (``describe()``).
        result: a :class:`~medrobust.detection.base.DetectionResult` over all images: flags,
            scores, reasons, per-image lines, ids.
        skipped: unreadable and unpaired files, one line each. Default: empty.
    """

    detector: dict[str, Any]
    result: Any
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The verdicts in brief.

        Returns:
            A JSON-ready dict: the detector's settings, ``n_images``, ``n_flagged``,
            ``flagged_fraction``, ``by_reason`` (images flagged per reason) and ``skipped``.
        """
        n = len(self.result)
        by_reason: Counter[str] = Counter(self.result.reason_counts())
        return {"detector": self.detector, "n_images": n, "n_flagged": self.result.n_flagged,
                "flagged_fraction": self.result.n_flagged / n if n else 0.0,
                "by_reason": dict(sorted(by_reason.items())), "skipped": self.skipped}


def detector_to_run(detector: Any, reference: Any = None, calibration: Any = None) -> Any:
    """The detector :func:`detect` runs, checked before any model is loaded (a load can take minutes).

    Args:
        detector: a spec (``"reference"``, ``"squeeze:target_fpr=0.01"``) or a Detector (used as
            it is).
        reference: the originals, which a reference detector needs. Default None.
        calibration: clean images, which a calibrated detector without a threshold needs.
            Default None.

    Returns:
        The Detector.

    Raises:
        ValueError: a bad spec, or what the detector needs is missing (naming the option that
            gives it).
    """
    from medrobust.detection.registry import build_detector

    det = build_detector(detector) if isinstance(detector, str) else detector
    if det.requires_reference and reference is None:
        raise ValueError(f"the {det.name} detector compares each image with its original: pass --reference DIR "
                         "(originals at the same relative paths), or use --detector squeeze, which needs none")
    if det.requires_calibration and calibration is None and getattr(det, "threshold", None) is None:
        raise ValueError(f"the {det.name} detector needs clean images to set its threshold: pass --calibrate DIR "
                         "(clean images like the ones checked; --fpr sets the target false positive rate)")
    return det


def detect(model: Any, images: Any, reference: Any = None, detector: Any = "reference", *, calibration: Any = None,
           fpr: float = 0.05, size: int | None = None, batch_size: int = 32, progress: Progress | None = None,
           on_batch=None, contract: ModelContract | None = None) -> Detection:
    """Run ``detector`` on ``images`` with ``model``: which images look attacked?

    Images are paired with their originals and sized as the module docstring says.

    Args:
        model: a path or module (see :func:`mr.load_model`).
        images: the images to judge: a folder, files, a dataset or tensors (see
            :func:`mr.open_images`).
        reference: the originals, for reference detectors (paired by id, or by position for
            tensors); ignored, with a warning, by a detector that needs none. Default None.
        detector: a spec such as ``"reference"`` (the default) or ``"squeeze:target_fpr=0.01"``,
            or a Detector.
        calibration: clean images to set a calibrated detector's threshold on. Default None.
        fpr: the false-positive rate that threshold aims at on the clean images. Default 0.05.
        size: the side images are compared at when the model has no input size. Default None:
            the first image's size.
        batch_size: images per batch. Default 32.
        progress: reports the stages ``calibrating`` (with ``calibration``) and ``NAME
            detector``. Default None: silent.
        on_batch: called with each batch's :class:`~medrobust.detection.base.DetectionResult`
            as it comes. Default None.
        contract: the :class:`~medrobust.models.contract.ModelContract` of a model file that is
            not a medrobust checkpoint. Default None.

    Returns:
        The :class:`Detection`: the verdicts on every readable (and paired) image.

    Shape:
        - Tensors in: images and originals (N, C, H, W) float in [0, 1].
        - ``result.flags``, ``result.scores``: (N,).

    Raises:
        ValueError: a bad spec, a missing reference or calibration, or no readable images.

    >>> import torch, medrobust as mr
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32, 3))
    >>> model = mr.load_model(net, classes=["Normal", "Pneumonia", "Pneumothorax"], network_channels=1)
    >>> x = torch.rand(3, 1, 32, 32)
    >>> mr.detect(model, x, reference=x).result.n_flagged  # an image identical to its original
    0
    """
    det = detector_to_run(detector, reference, calibration)  # before the model is loaded
    if not det.requires_reference and reference is not None:
        log.warning("the %s detector does not use the originals; ignoring them", det.name)
        reference = None
    model = load_model(model, contract)
    fixed = model.input_size
    skipped: list[str] = []
    inputs = _open(images, None)
    shape = fixed or ((size, size) if size else _first_shape(inputs))
    if inputs.dataset is not None:
        inputs.dataset.size = shape
    originals = _open(reference, shape) if reference is not None else None
    bar_progress = progress or SilentProgress()
    if det.requires_calibration and calibration is not None:
        skipped += calibrate_detector(det, model, _open(calibration, shape), fpr, batch_size, bar_progress)
    else:
        det.fit(model, None)  # type: ignore[arg-type]  (a detector without calibration sets nothing)

    results = []
    with bar_progress.stage(f"{det.name} detector", len(inputs)) as bar:
        for names, x, ref in _paired_batches(inputs, originals, batch_size, skipped):
            result = det.detect(model, with_model_channels(x, model),
                                None if ref is None else with_model_channels(ref, model), names=names)
            results.append(result)
            if on_batch is not None:
                on_batch(result)
            bar.advance(len(names))
    if not results:
        raise ValueError(f"{inputs.source}: no readable images" + (" with readable originals" if originals else "")
                         + (f" ({len(skipped)} skipped: {skipped[0]})" if skipped else ""))
    return Detection(detector=det.describe(), result=_merge(results), skipped=list(dict.fromkeys(skipped)))


def calibrate_detector(detector: Any, model: Any, clean: Images, fpr: float, batch_size: int = 32,
                       progress: Progress | None = None) -> list[str]:
    """Set a calibrated detector's threshold at ``fpr`` on clean images, scored batch by batch
    (memory stays flat in the number of images) as received, on ``model``.

    Args:
        detector: a Detector with ``calibrate(scores, target_fpr)`` (the squeeze detector).
        model: the classifier whose inputs the detector screens.
        clean: the clean images (:class:`Images`).
        fpr: the false positive rate the threshold aims at on them.
        batch_size: images per batch. Default 32.
        progress: reports the stage ``calibrating``. Default None: silent.

    Returns:
        The clean files that could not be read, one line each.

    Raises:
        ValueError: no readable clean image.
    """
    scores = []
    with (progress or SilentProgress()).stage("calibrating", len(clean)) as bar:
        for x, _, ids in clean.batches(batch_size):
            scores.append(detector.score(model, with_model_channels(x, model)))
            bar.advance(len(ids))
    if not scores:
        raise ValueError(f"{clean.source}: no readable clean images to calibrate the {detector.name} detector on"
                         + (f" ({len(clean.skipped)} skipped: {clean.skipped[0]})" if clean.skipped else ""))
    detector.calibrate(np.concatenate(scores), fpr)
    return clean.skipped


def _open(source: Any, shape: tuple[int, int] | None) -> Images:
    if isinstance(source, (torch.Tensor, Images)) or (isinstance(source, tuple) and source
                                                       and isinstance(source[0], torch.Tensor)):
        return open_images(source)
    images = open_images(source, labelled=False if not hasattr(source, "records") else None)
    if images.dataset is not None and shape:
        images.dataset.size = shape
    return images


def _first_shape(images: Images) -> tuple[int, int] | None:
    for x, _, _ in images.batches(1):
        shape = (int(x.shape[-2]), int(x.shape[-1]))
        log.info("images are compared at %dx%d (the first image's size; --size to choose)", *shape)
        return shape
    return None


def with_model_channels(x: torch.Tensor, model: Any) -> torch.Tensor:
    """Grey images repeated to the model's stored channels when it stores three (else ``x``).

    Args:
        x: (B, C, H, W) images.
        model: the classifier (its ``input_channels``).

    Returns:
        (B, C_model, H, W) images.
    """
    channels = int(getattr(model, "input_channels", 1))
    return x.expand(-1, channels, -1, -1).contiguous() if x.shape[1] == 1 and channels != 1 else x


def _paired_batches(inputs: Images, originals: Images | None, batch_size: int,
                    skipped: list[str]) -> Iterator[tuple[list[str], torch.Tensor, torch.Tensor | None]]:
    """``(ids, images, originals or None)`` over the readable pairs."""
    if originals is None:
        for x, _, ids in inputs.batches(batch_size):
            yield ids, x, None
        skipped += inputs.skipped
        return
    if inputs.dataset is None or originals.dataset is None:  # tensors: paired by position
        for (x, _, ids), (r, _, _) in zip(inputs.batches(batch_size), originals.batches(batch_size)):
            yield ids, x, r
        return
    ref_index = {r.id: i for i, r in enumerate(originals.dataset.records)}
    by_stem: dict[str, list[int]] = {}
    for rid, i in ref_index.items():
        by_stem.setdefault(rid.rsplit(".", 1)[0], []).append(i)
    names: list[str] = []
    xs: list[torch.Tensor] = []
    refs: list[torch.Tensor] = []
    for i, record in enumerate(inputs.dataset.records):
        j = ref_index.get(record.id)
        if j is None:
            candidates = by_stem.get(record.id.rsplit(".", 1)[0], [])
            if len(candidates) != 1:
                why = "several originals differ only in suffix" if candidates else "no original at the same relative path"
                skipped.append(f"{record.path}: unpaired ({why} under {originals.source})")
                continue
            j = candidates[0]
        try:
            x, _, _ = inputs.dataset[i]
            r, _, _ = originals.dataset[j]
        except ImageReadError as err:
            skipped.append(str(err))
            continue
        names.append(record.id)
        xs.append(x)
        refs.append(r)
        if len(xs) == batch_size:
            yield names, _grid(torch.stack(xs), inputs), _grid(torch.stack(refs), originals)
            names, xs, refs = [], [], []
    if xs:
        yield names, _grid(torch.stack(xs), inputs), _grid(torch.stack(refs), originals)
    skipped += [*inputs.skipped, *originals.skipped]


def _grid(x: torch.Tensor, images: Images) -> torch.Tensor:
    return images.grid.round(x) if images.quantise else x


def _merge(results: list) -> Any:
    """One DetectionResult from the batches' results."""
    from medrobust.detection.base import DetectionResult

    first = results[0]
    names = [n for r in results for n in (r.names or [])] if all(r.names is not None for r in results) else None
    details = {k: [v for r in results for v in r.details.get(k, [])] for k in first.details
               if all(k in r.details for r in results)}
    return DetectionResult(flags=np.concatenate([r.flags for r in results]),
                           scores=np.concatenate([r.scores for r in results]),
                           reasons=[rs for r in results for rs in r.reasons], details=details, names=names,
                           detector=first.detector, threshold=first.threshold)
