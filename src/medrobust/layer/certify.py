"""``mr.certify``: randomized smoothing's certified L2 radius per image (Cohen, Rosenfeld & Kolter,
ICML 2019; :mod:`medrobust.defenses.randomized_smoothing`) — the same computation, image by image,
as the run's ``certify`` stage, so the same images, model, settings and seed give the same
certificates in both (on the same kind of device)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import ValidationError

from medrobust.data.image_size import read_side
from medrobust.execution.progress import Progress, SilentProgress
from medrobust.layer.images import open_images
from medrobust.layer.models import load_model
from medrobust.models.contract import ModelContract


@dataclass(frozen=True)
class CertifiedImage:
    """One image's certificate.

    Args:
        id: the image's id (its file for images read from files).
        label: its true class, when the images have labels, else None.
        prediction: the smoothed classifier's certified class (CERTIFY), None when it abstains.
        radius: the certified L2 radius in [0, 1] image units, None when it abstains.
        p_a_lower: the lower confidence bound of the certified class's probability under noise.
        counts: the estimation draws' decisions per class name.
        smoothed_prediction: the smoothed classifier's answer (PREDICT), None when it abstains.
        base_prediction: the base model's own answer on the clean image (None: not finite).
    """

    id: str
    label: str | None
    prediction: str | None
    radius: float | None
    p_a_lower: float
    counts: dict[str, int]
    smoothed_prediction: str | None
    base_prediction: str | None


@dataclass
class Certification:
    """The certificates of ``mr.certify``, one per image in order, with the settings that made them.

    Args:
        classes: the model's class names.
        sigma: the noise's standard deviation, in [0, 1] image units.
        n0: selection draws per image.
        n: estimation draws per image.
        alpha: the error level.
        seed: the seed of the draws.
        images: one :class:`CertifiedImage` per image.
        pixels: C x H x W of the images (to say a radius in grey levels per pixel).
        seconds: the certification's time.
        skipped: unreadable files, one line each. Default: empty.
    """

    classes: list[str]
    sigma: float
    n0: int
    n: int
    alpha: float
    seed: int
    images: list[CertifiedImage]
    pixels: int
    seconds: float
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def labelled(self) -> bool:
        """Whether every image has a true class (certified accuracy needs one)."""
        return bool(self.images) and all(i.label is not None for i in self.images)

    @property
    def abstention_rate(self) -> float:
        """The share of images on which CERTIFY abstained (0.0 for no image)."""
        return sum(i.prediction is None for i in self.images) / len(self.images) if self.images else 0.0

    def certified_accuracy(self, radius: float) -> float:
        """The share of images certified right with a radius of at least ``radius`` ([0, 1] units).

        Raises:
            ValueError: images without true classes.
        """
        from medrobust.evaluation.certified_accuracy import certified_accuracy

        if not self.labelled:
            raise ValueError("certified accuracy needs each image's true class: lay the images out as "
                             "<Class>/<image>.png, or pass labels")
        index = {c: k for k, c in enumerate(self.classes)}
        labels = np.array([index[i.label] for i in self.images if i.label is not None])
        pred = np.array([index[i.prediction] if i.prediction is not None else -1 for i in self.images])
        radii = np.array([np.nan if i.radius is None else i.radius for i in self.images])
        return certified_accuracy(labels, pred, radii, radius)

    def to_dicts(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per image (every :class:`CertifiedImage` field, and the radius in grey
        levels per pixel)."""
        from medrobust.evaluation.certified_accuracy import grey_levels_per_pixel

        return [{"id": i.id, "label": i.label, "prediction": i.prediction, "radius": i.radius,
                 "radius_grey_levels_per_pixel": None if i.radius is None else
                 round(grey_levels_per_pixel(i.radius, self.pixels), 4),
                 "p_a_lower": i.p_a_lower, "counts": dict(i.counts), "smoothed_prediction": i.smoothed_prediction,
                 "base_prediction": i.base_prediction} for i in self.images]


def certify(model: Any, images: Any, *, sigma: float = 0.25, n0: int = 100, n: int = 1000, alpha: float = 0.001,
            seed: int = 0, batch_size: int = 400, device: str | None = None, contract: ModelContract | None = None,
            size: int | None = None, class_map: dict[str, str] | None = None,
            progress: Progress | None = None) -> Certification:
    """Certify ``model``'s smoothed classifier on ``images`` (Cohen et al. 2019, CERTIFY and PREDICT).

    The smoothed classifier answers the class the model most often gives under Gaussian noise
    N(0, sigma^2 I) added in [0, 1] image units (not clipped); where the lower confidence bound of
    that class's probability is above 1/2, its answer cannot change within the L2 radius
    ``sigma * Phi^-1(p_A_lower)`` (with probability at least ``1 - alpha`` over the draws). The
    guarantee is the smoothed classifier's, not the model's answering once. Train the model under
    the same noise (``mr.train(..., noise_sigma=sigma)``) for useful radii.

    Args:
        model: a path or module (see :func:`mr.load_model`); multi-label models are refused.
        images: anything :func:`mr.open_images` takes; labelled images (class folders, tensors
            with labels) give certified accuracy, their classes matched to the model's by name.
        sigma: the noise's standard deviation in [0, 1] image units. Default 0.25.
        n0: draws that select the top class. Default 100.
        n: draws that bound its probability. Default 1000 (Cohen et al.: 100,000).
        alpha: the error level of the bound and of PREDICT's test. Default 0.001.
        seed: the draws' seed; image ``i`` draws from its own generator (seed and ``i``). Default 0.
        batch_size: noisy copies per forward pass (memory only). Default 400.
        device: where the model runs (``auto``, ``cpu``, ``cuda``). Default None: where it is.
        contract: the :class:`~medrobust.models.contract.ModelContract` of a model file that is
            not a medrobust checkpoint. Default None.
        size: the side images are resized to. Default None: the model's input size when it is
            square (a volume model's in-plane side when square; its depth is kept), else each image's own.
        class_map: ``{data class: model class}`` for names that differ. Default None.
        progress: reports the stage ``certify``. Default None: silent.

    Returns:
        The :class:`Certification`: per image the prediction, radius, bound and counts, with
        ``certified_accuracy(radius)`` and ``to_dicts()``.

    Raises:
        ValueError: a multi-label model, a setting out of range, classes that do not match, or
            no readable image.

    Shape:
        - Tensors in: (N, C, H, W) float in [0, 1], labels (N,).

    >>> import torch, medrobust as mr
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8 * 8, 2))
    >>> model = mr.load_model(net, classes=["Normal", "Pneumonia"], network_channels=1)
    >>> x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> result = mr.certify(model, mr.open_images(x, labels=torch.tensor([0, 1]), classes=model.classes), n=200)
    >>> len(result), 0.0 <= result.certified_accuracy(0.1) <= 1.0, sorted(result.to_dicts()[0])[:3]
    (2, True, ['base_prediction', 'counts', 'id'])
    """
    from medrobust.data.class_names import match_classes
    from medrobust.defenses.randomized_smoothing import SmoothedClassifier
    from medrobust.evaluation.config_errors import invalid_configuration
    from medrobust.evaluation.config_sections import CertifyConfig

    try:  # the stage's checks, before any work
        CertifyConfig(sigma=sigma, n0=n0, n=n, alpha=alpha, batch=batch_size)
    except ValidationError as err:
        raise invalid_configuration(err, "mr.certify", what="settings") from None
    model = load_model(model, contract, **({"device": device} if device is not None else {}))
    smoothed = SmoothedClassifier(model, sigma, batch=batch_size)  # a multi-label model is refused here
    fixed = read_side(model.input_size)
    data = open_images(images, size=size or fixed)
    label_map = match_classes(data.classes, model.classes, dict(class_map or {})) if data.labelled else None
    names = list(model.classes)
    out: list[CertifiedImage] = []
    pixels, done, t0 = 0, 0, time.perf_counter()

    def name(k: int) -> str | None:
        return names[k] if 0 <= k < len(names) else None

    with (progress or SilentProgress()).stage("certify", len(data)) as bar:
        for x, y, ids in data.batches(min(batch_size, 32)):
            pixels = int(np.prod(x.shape[1:]))
            r = smoothed.certify_batch(x, n0=n0, n=n, alpha=alpha, seed=seed, start=done)
            labels = label_map[y.numpy()] if label_map is not None and y is not None else [None] * len(ids)
            for i, image_id in enumerate(ids):
                out.append(CertifiedImage(
                    id=image_id, label=None if labels[i] is None else name(int(labels[i])),
                    prediction=name(int(r["prediction"][i])),
                    radius=None if np.isnan(r["radius"][i]) else float(r["radius"][i]),
                    p_a_lower=float(r["p_a_lower"][i]), counts=dict(zip(names, r["counts"][i].tolist())),
                    smoothed_prediction=name(int(r["smoothed_prediction"][i])),
                    base_prediction=name(int(r["base_prediction"][i]))))
            done += len(ids)
            bar.advance(len(ids))
    if not out:
        raise ValueError(f"{data.source}: no readable images to certify" +
                         (f" ({len(data.skipped)} skipped: {data.skipped[0]})" if data.skipped else ""))
    return Certification(classes=names, sigma=sigma, n0=n0, n=n, alpha=alpha, seed=seed, images=out, pixels=pixels,
                         seconds=time.perf_counter() - t0, skipped=list(data.skipped))
