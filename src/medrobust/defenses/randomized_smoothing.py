"""Randomized smoothing: a classifier with a certified L2 radius (Cohen, Rosenfeld & Kolter, ICML
2019, "Certified adversarial robustness via randomized smoothing", Algorithms CERTIFY and PREDICT).

The smoothed classifier of a base classifier ``f`` answers, for an image ``x``, the class the base
classifier most often gives to ``x`` under Gaussian noise::

    g(x) = argmax_c P(f(x + e) = c),   e ~ N(0, sigma^2 I)

and when the top class has probability ``p_A`` at least ``p_A_lower`` > 1/2, ``g`` gives that class
to every image within the L2 ball of radius ``R = sigma * Phi^-1(p_A_lower)`` around ``x``
(Cohen et al., Theorem 1). The guarantee is the smoothed classifier's (noise + majority vote), not
the base model's: a deployed model answering ``f(x)`` once carries no such certificate.

Units: the noise is added to the image as medrobust stores it, in [0, 1] units (so ``sigma = 0.25``
is about 64 grey levels of an 8-bit image per pixel, and ``R`` is an L2 distance in the same
units); the model's own preprocessing (resize, channel repeat, intensity) comes after, inside it.
As in Cohen et al.'s code, the noisy image is **not clipped** to [0, 1]: clipping would change the
noise distribution and with it the proof of the radius.

CERTIFY: ``n0`` draws choose the top class ``c_A`` (the base classifier's decision counted per
class), ``n`` fresh draws count it, ``p_A_lower`` is the one-sided Clopper-Pearson lower bound at
level ``alpha`` (:func:`clopper_pearson_lower`); below 1/2 the smoothed classifier abstains
(prediction and radius None). With probability at least ``1 - alpha`` over the draws, a radius
returned is a true certificate. PREDICT: the top two counts of ``n`` draws are tested against an
even split (a two-sided binomial test); it abstains unless the test rejects at ``alpha``, so it
returns a class other than ``g(x)`` with probability at most ``alpha``. Here PREDICT reuses
CERTIFY's ``n`` estimation draws (each procedure's guarantee holds on its own draws; the two are
reported side by side, never combined), so the smoothed classifier's clean accuracy costs nothing
more.

Draws are made on the model's device, ``batch`` noisy copies of one image per forward pass, and
counted there (no host round trip until an image is done). Each image's draws come from its own
``torch.Generator`` seeded with :func:`smoothing_seed` (the run's seed and the image's position in
its stream), so an image's certificate does not depend on the batch it was in, the order batches
ran or the process that ran them (on the same kind of device: CPU and CUDA generators differ).

The base classifier's decision is its own rule (argmax, or a binary model's sigmoid above its
threshold); an output that is not finite counts for no class. A multi-label model is refused:
the certificate is of a single-label decision.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from medrobust.defenses.base import stream_seed
from medrobust.models.batched_prediction import eval_mode, model_device

ABSTAIN = -1
"""The class index stored for an abstention (CERTIFY or PREDICT declined to answer)."""
DEFAULT_BATCH = 400
"""Noisy copies per forward pass by default (Cohen et al.'s ImageNet setting)."""


def clopper_pearson_lower(successes: int, trials: int, alpha: float) -> float:
    """The one-sided Clopper-Pearson lower confidence bound of a binomial proportion.

    With probability at least ``1 - alpha``, the true proportion is at least the bound: the
    ``alpha`` quantile of Beta(k, n - k + 1) (Clopper & Pearson 1934), as Cohen et al. compute
    it (``proportion_confint(k, n, alpha=2 * alpha, method="beta")[0]``).

    Args:
        successes: draws that gave the class, ``k`` (0 to ``trials``).
        trials: draws, ``n`` (at least 1).
        alpha: the error level, in (0, 1).

    Returns:
        The bound in [0, 1] (0 when ``k`` is 0).

    >>> round(clopper_pearson_lower(990, 1000, 0.001), 4)
    0.976
    """
    if not 0 <= successes <= trials or trials < 1:
        raise ValueError(f"successes must lie in 0..trials and trials be at least 1, got {successes} of {trials}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if successes == 0:
        return 0.0
    from scipy.stats import beta

    return float(beta.ppf(alpha, successes, trials - successes + 1))


def certified_radius(p_a_lower: float, sigma: float) -> float | None:
    """Cohen et al.'s L2 radius ``sigma * Phi^-1(p_A_lower)``; None (abstain) below 1/2.

    Args:
        p_a_lower: a lower bound of the top class's probability under noise.
        sigma: the noise's standard deviation, in [0, 1] image units.

    Returns:
        The radius in the same units, or None when ``p_a_lower`` < 1/2.

    >>> round(certified_radius(0.9772498680518208, 0.5), 6)
    1.0
    """
    if p_a_lower < 0.5:
        return None
    from scipy.stats import norm

    return float(sigma * norm.ppf(p_a_lower))


def two_sided_p_value(top: int, second: int) -> float:
    """PREDICT's test: the two-sided binomial p-value of ``top`` successes in ``top + second``
    trials at probability 1/2 (1.0 when both are 0)."""
    if top + second == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(int(top), int(top + second), 0.5, alternative="two-sided").pvalue)


def smoothing_seed(seed: int, position: int) -> int:
    """The generator seed of the image at ``position`` in its stream: the seed mixed with this
    module's name (so noise draws never replay an attack's random start seeded alike) plus the
    position, so each image's draws are its own."""
    return (stream_seed(int(seed), "randomized-smoothing") + int(position)) % (2**63)


@dataclass(frozen=True)
class SmoothingCertificate:
    """One image's CERTIFY and PREDICT.

    Args:
        prediction: CERTIFY's class index, None when it abstains.
        radius: the certified L2 radius in [0, 1] image units, None when it abstains.
        p_a_lower: the lower bound of the selected class's probability under noise.
        counts: the ``n`` estimation draws' decisions per class.
        selection_counts: the ``n0`` selection draws' decisions per class.
        smoothed_prediction: PREDICT's class index (on the estimation draws), None when it abstains.
        p_value: PREDICT's two-sided binomial p-value.
    """

    prediction: int | None
    radius: float | None
    p_a_lower: float
    counts: np.ndarray
    selection_counts: np.ndarray
    smoothed_prediction: int | None
    p_value: float


def _decision_rule(model: nn.Module) -> tuple[Callable[[torch.Tensor], torch.Tensor], int | None]:
    """The base classifier's decision on a batch (class indices, -1 where its output is not finite)
    and its number of classes (None: read from the first logits)."""
    kind = getattr(model, "output_kind", None)
    if kind is not None:
        kind_name = str(getattr(kind, "value", kind))
        if kind_name == "multilabel":
            raise ValueError("randomized smoothing certifies a single-label decision (one class per image); this "
                             "model is multi-label (each finding decided apart), so it cannot be certified")
        threshold = float(getattr(getattr(model, "contract", None), "threshold", 0.5))
        classes = getattr(model, "classes", None)
        return (lambda x: kind.decide(model(x), threshold)), (len(classes) if classes else None)

    def argmax(x: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        finite = torch.isfinite(logits).all(dim=1)
        return torch.where(finite, logits.argmax(dim=1), torch.full_like(finite, -1, dtype=torch.long))

    return argmax, None


class SmoothedClassifier:
    """The smoothed classifier ``g`` of a base classifier (see the module docstring).

    Args:
        model: the base classifier: a :class:`~medrobust.models.classifier.Classifier` (its own
            decision rule) or any module returning (B, K) logits (argmax). Multi-label refused.
        sigma: the noise's standard deviation in [0, 1] image units (> 0). Default 0.25.
        batch: noisy copies per forward pass (the memory knob). Default 400.

    Raises:
        ValueError: a multi-label model, ``sigma`` not a positive finite number, or ``batch`` < 1.

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    >>> _ = net[1].weight.data.copy_(torch.tensor([[0.0] * 4, [1.0] * 4])), net[1].bias.data.zero_()
    >>> g = SmoothedClassifier(net, sigma=0.25, batch=100)
    >>> cert = g.certify(torch.full((1, 2, 2), 0.5), n0=100, n=1000, alpha=0.001,
    ...                  generator=torch.Generator().manual_seed(0))
    >>> cert.prediction, 0 < cert.radius < 1.0  # the exact radius: |w.x + b| / ||w|| = 2 / 2
    (1, True)
    """

    def __init__(self, model: nn.Module, sigma: float = 0.25, *, batch: int = DEFAULT_BATCH) -> None:
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be a positive number (the noise's standard deviation in [0, 1] image units, "
                             f"e.g. 0.25), got {sigma!r}")
        if int(batch) < 1:
            raise ValueError(f"batch (noisy copies per forward pass) must be at least 1, got {batch}")
        self.model = model
        self.sigma = float(sigma)
        self.batch = int(batch)
        self._decide, self.num_classes = _decision_rule(model)
        self.device = model_device(model) or torch.device("cpu")

    def generator(self, seed: int) -> torch.Generator:
        """A generator on the model's device, seeded with ``seed``."""
        return torch.Generator(device=self.device).manual_seed(int(seed))

    @torch.no_grad()
    def sample_counts(self, x: torch.Tensor, num: int, generator: torch.Generator) -> torch.Tensor:
        """The base classifier's decisions on ``num`` noisy copies of ``x``, counted per class.

        Args:
            x: one image (C, H, W) in [0, 1].
            num: noisy copies (drawn ``batch`` at a time).
            generator: the draws' generator, on the model's device.

        Returns:
            (K + 1,) int64 counts on the model's device: index 0 the draws whose output was not
            finite, index ``1 + c`` class ``c``.
        """
        x = x.to(self.device)
        counts: torch.Tensor | None = None
        with eval_mode(self.model):
            for start in range(0, num, self.batch):
                m = min(self.batch, num - start)
                noise = torch.randn((m, *x.shape), generator=generator, device=self.device, dtype=x.dtype)
                decided = self._decide(x.unsqueeze(0) + self.sigma * noise)  # not clipped (Cohen et al.)
                if counts is None:
                    k = self.num_classes or int(self.model(x.unsqueeze(0)).shape[1])
                    self.num_classes = k
                    counts = torch.zeros(k + 1, dtype=torch.long, device=self.device)
                counts.scatter_add_(0, decided.long() + 1, torch.ones_like(decided, dtype=torch.long))
        if counts is None:
            counts = torch.zeros((self.num_classes or 0) + 1, dtype=torch.long, device=self.device)
        return counts

    def certify(self, x: torch.Tensor, n0: int, n: int, alpha: float, generator: torch.Generator) -> SmoothingCertificate:
        """CERTIFY (and PREDICT on the same estimation draws) for one image.

        Args:
            x: one image (C, H, W) in [0, 1].
            n0: selection draws (at least 1).
            n: estimation draws (at least 1).
            alpha: the error level, in (0, 1).
            generator: the draws' generator (selection first, then estimation).

        Returns:
            The image's :class:`SmoothingCertificate`.
        """
        if n0 < 1 or n < 1:
            raise ValueError(f"n0 and n (noise draws) must be at least 1, got n0={n0}, n={n}")
        selection = self.sample_counts(x, n0, generator)[1:].cpu().numpy()
        counts = self.sample_counts(x, n, generator)[1:].cpu().numpy()
        top = int(np.argmax(selection))
        p_lower = clopper_pearson_lower(int(counts[top]), n, alpha)
        radius = certified_radius(p_lower, self.sigma)
        order = np.argsort(-counts, kind="stable")
        first, second = int(counts[order[0]]), int(counts[order[1]]) if len(order) > 1 else 0
        p_value = two_sided_p_value(first, second)
        return SmoothingCertificate(prediction=top if radius is not None else None, radius=radius, p_a_lower=p_lower,
                                    counts=counts, selection_counts=selection,
                                    smoothed_prediction=int(order[0]) if p_value <= alpha else None, p_value=p_value)

    def predict(self, x: torch.Tensor, n: int, alpha: float, generator: torch.Generator) -> int | None:
        """PREDICT alone: the top class of ``n`` draws, None unless it beats the runner-up at ``alpha``."""
        counts = self.sample_counts(x, n, generator)[1:].cpu().numpy()
        order = np.argsort(-counts, kind="stable")
        first, second = int(counts[order[0]]), int(counts[order[1]]) if len(order) > 1 else 0
        return int(order[0]) if two_sided_p_value(first, second) <= alpha else None

    def certify_batch(self, x: torch.Tensor, *, n0: int, n: int, alpha: float, seed: int,
                      start: int = 0) -> dict[str, np.ndarray]:
        """CERTIFY and PREDICT for each image of a batch, image ``i`` drawing from its own generator
        (:func:`smoothing_seed` of ``seed`` and ``start + i``), plus the base model's own decision.

        Args:
            x: (B, C, H, W) images in [0, 1].
            n0, n, alpha: as :meth:`certify`'s.
            seed: the stream's seed.
            start: the batch's first image's position in its stream. Default 0.

        Returns:
            Arrays: ``prediction`` and ``smoothed_prediction`` (B,) int64 (:data:`ABSTAIN` when
            abstaining), ``radius`` (B,) float64 (NaN when abstaining), ``p_a_lower`` and
            ``p_value`` (B,) float64, ``counts`` and ``selection_counts`` (B, K) int64 and
            ``base_prediction`` (B,) int64 (the base model on the clean image; -1: not finite).
        """
        rows = [self.certify(x[i], n0, n, alpha, self.generator(smoothing_seed(seed, start + i))) for i in range(len(x))]
        with torch.no_grad(), eval_mode(self.model):
            base = self._decide(x.to(self.device)).cpu().numpy().astype(np.int64) if len(x) else np.zeros(0, np.int64)
        k = self.num_classes or 0
        return {
            "prediction": np.array([ABSTAIN if r.prediction is None else r.prediction for r in rows], dtype=np.int64),
            "radius": np.array([np.nan if r.radius is None else r.radius for r in rows], dtype=np.float64),
            "p_a_lower": np.array([r.p_a_lower for r in rows], dtype=np.float64),
            "counts": np.stack([r.counts for r in rows]).astype(np.int64) if rows else np.zeros((0, k), np.int64),
            "selection_counts": (np.stack([r.selection_counts for r in rows]).astype(np.int64) if rows
                                 else np.zeros((0, k), np.int64)),
            "smoothed_prediction": np.array([ABSTAIN if r.smoothed_prediction is None else r.smoothed_prediction
                                             for r in rows], dtype=np.int64),
            "p_value": np.array([r.p_value for r in rows], dtype=np.float64),
            "base_prediction": base,
        }
