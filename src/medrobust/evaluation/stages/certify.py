"""The certify stage (``certify: {sigma, n0, n, alpha, batch}``, ``medrobust evaluate --certify``):
randomized smoothing's certified L2 radii (Cohen, Rosenfeld & Kolter, ICML 2019;
:mod:`medrobust.defenses.randomized_smoothing`) on the attack subset, resumable per batch.

Why the attack subset and not every test image: the certificates then stand beside the empirical
rows of the scorecard on the same images (a stratified share of the test set, right and wrong
answers alike), and their cost — ``n0 + n`` forward passes per image, 1,100 to 100,100 — is
bounded by ``attack_images`` rather than by the size of the test set.

The figure is a guarantee for the smoothed classifier (Gaussian noise, then a majority vote of the
base model), not for the base model as deployed: it is kept apart from the empirical scores and
never enters the overall score. Its folder is named by its settings
(``stages/certify/sigma-0.25_n0-100_n-1000_alpha-0.001_batch-400``): a run resumed with other
settings computes them afresh and never mixes the two.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from medrobust.evaluation.certified_accuracy import CERTIFIED_DEFINITION, certified_curve, certified_points
from medrobust.evaluation.config_sections import CertifyConfig
from medrobust.evaluation.context import RunContext
from medrobust.evaluation.results import CertifiedFigure
from medrobust.execution.resumable_stage import run_stage
from medrobust.execution.units import CertifyUnit

log = logging.getLogger(__name__)

PER_IMAGE = frozenset({"prediction", "radius", "p_a_lower", "counts", "selection_counts", "smoothed_prediction",
                       "p_value", "base_prediction", "seconds"})
DEFINITION = CERTIFIED_DEFINITION


def stage_folder_name(c: CertifyConfig) -> str:
    """The stage's folder under ``stages/certify``, named by every setting that changes its result."""
    return f"sigma-{c.sigma:g}_n0-{c.n0}_n-{c.n}_alpha-{c.alpha:g}_batch-{c.batch}"


def trained_noise(model, record: Path | None = None) -> float | None:
    """The Gaussian noise the model was trained under (0.0: none), from its checkpoint's training
    record (``record``, a model.json, when given and present: the run's own trained model, whether
    it was trained now or read back); None when nothing says (a model not trained by medrobust)."""
    from medrobust.evaluation.run_dir import load_json

    meta = load_json(record) if record is not None and record.is_file() else (getattr(model, "metadata", None) or {})
    training = meta.get("training")
    if not isinstance(training, dict):
        return None
    return float(training.get("noise_sigma") or 0.0)


def noise_note(trained: float | None, sigma: float) -> str | None:
    """What a reader must know of the base model's training noise beside the certificates."""
    if trained is None:
        return ("whether the model was trained under Gaussian noise is not known (its file does not say); a base "
                "model not trained under the certificate's noise usually gives small radii and many abstentions")
    if trained == 0:
        return (f"the model was not trained under Gaussian noise: Cohen et al. train the base model under the noise it "
                f"is certified with (train.noise_sigma: {sigma:g}); without it the smoothed classifier is usually "
                "inaccurate and its radii small")
    if abs(trained - sigma) > 1e-9:
        return f"the model was trained under Gaussian noise of sigma {trained:g} and certified at sigma {sigma:g}"
    return None


def run(ctx: RunContext) -> CertifiedFigure | None:
    """CERTIFY and PREDICT (Cohen et al. 2019) on the attack subset (resumable per batch under
    ``stages/certify/<settings>``).

    Args:
        ctx: the run's context (the attack subset, the model, the engine, the seed);
            ``ctx.config.certify`` gives the settings.

    Returns:
        The :class:`~medrobust.evaluation.results.CertifiedFigure`: certified accuracy at the report's
        radii and its curve, the abstention rate, the smoothed and the base model's clean
        accuracy; None when not configured or for a multi-label model (the certificate is of a
        single-label decision).
    """
    c = ctx.config.certify
    if c is None:
        return None
    labels = ctx.labels
    if labels.ndim > 1:
        log.warning("certify: not run: randomized smoothing certifies a single-label decision and this model is "
                    "multi-label")
        return None

    def unit(b: int, sl: slice) -> CertifyUnit:
        return CertifyUnit(seed=ctx.seed, start=sl.start, sigma=c.sigma, n0=c.n0, n=c.n, alpha=c.alpha, batch=c.batch,
                           images=ctx.inputs.images(b, "clean"))

    label = f"certify (randomized smoothing, sigma {c.sigma:g}, n {c.n})"
    with ctx.progress.stage(label, ctx.n) as bar:
        stage = run_stage(ctx.engine, ctx.stages / "certify" / stage_folder_name(c), ctx.n, ctx.batch_size, unit,
                          bar.advance, PER_IMAGE)
    s = stage.summary
    n = len(labels)
    pixels = int(np.prod(ctx.inputs.images(0, "clean").shape[1:])) if n else 0  # stored images: 1 x H x W
    pred, radius = s["prediction"], s["radius"]
    trained = trained_noise(ctx.model, ctx.root / "model" / "model.json" if ctx.config.model.train is not None else None)
    return CertifiedFigure(
        n=n, sigma=c.sigma, n0=c.n0, draws=c.n, alpha=c.alpha, pixels=pixels,
        points=certified_points(labels, pred, radius, pixels), curve=certified_curve(labels, pred, radius, pixels),
        abstention_rate=float((pred < 0).mean()) if n else 0.0,
        smoothed_clean_accuracy=float((s["smoothed_prediction"] == labels).mean()) if n else 0.0,
        smoothed_abstention_rate=float((s["smoothed_prediction"] < 0).mean()) if n else 0.0,
        base_clean_accuracy=float((s["base_prediction"] == labels).mean()) if n else 0.0,
        seconds_per_image=float(s["seconds"].sum()) / max(n, 1), definition=DEFINITION,
        noise_sigma_trained=trained, note=noise_note(trained, c.sigma))
