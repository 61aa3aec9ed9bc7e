"""``mr.guard.from_run(RUN)``: the guard a finished run evaluated — its model (checked against the
SHA-256 the run measured), its defense and its reference-free detector with the threshold the run
calibrated — with the run's figures attached, so what is served says what it was measured to do.

The squeeze detector's threshold is the run's own when the run calibrated it once (on its
validation split or a calibration folder). A run that had only its test images cross-fitted one
threshold per fold and judged no image with its own: there is no single threshold to serve, so
``calibration=`` clean images are then required (and may replace the run's threshold in any case).
The study's reference detector needs the original image and is never part of a guard.

``mr.guard`` is looked up here (the public layer's lazy table), where :func:`guard_from_run` is
attached to it as ``mr.guard.from_run``: this module needs :mod:`medrobust.layer.guard`, never the
other way round.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medrobust.layer.guard import Guard, guard


def run_figures(metrics: Any, defense: str | None) -> dict[str, Any]:
    """What the run measured of this guard's parts: the defense's clean cost and its adaptive
    accuracy (worst case, at the adaptive budget), the squeeze detector's rates, and the guard
    stage's figures (the guard attacked as served: evasion, flagged and abstained rates and the
    accuracy on accepted images per budget, the clean abstention rate).

    Args:
        metrics: the run's :class:`~medrobust.evaluation.results.RunMetrics`.
        defense: the guard's defense spec, or None.

    Returns:
        A JSON-ready dict: ``run``, ``created``, ``defense`` (or None), ``squeeze`` (or None) and
        ``guard`` (None when the run's guard stage did not evaluate this defense).
    """
    out: dict[str, Any] = {"run": metrics.name, "created": metrics.created, "defense": None, "squeeze": None}
    for d in metrics.defenses:
        if d.name == defense:
            out["defense"] = {"clean_accuracy": d.clean.accuracy, "clean_cost_pp": d.clean_cost_pp,
                              "adaptive_accuracy": d.adaptive_accuracy, "adaptive_eps": d.adaptive_eps,
                              "adaptive_attack": d.adaptive_attack}
    for det in metrics.detectors:
        if det.name == "squeeze":
            out["squeeze"] = {"detection_rate": dict(det.detection_rate), "fpr_clean": det.fpr_clean,
                              "fpr_benign": dict(det.fpr_benign), "calibration": det.calibration}
    g = metrics.guard
    out["guard"] = None if g is None or g.defense != defense else {
        "detectors": list(g.detectors), "on_flag": g.on_flag, "attacker": g.attacker,
        "clean": {"abstention_rate": g.clean.abstained_rate, "flagged_rate": g.clean.flagged_rate,
                  "accuracy_on_accepted": g.clean.accuracy_on_accepted},
        "budgets": [{"eps": b.eps, "evasion_rate": b.evasion_rate, "flagged_rate": b.flagged_rate,
                     "abstained_rate": b.abstained_rate, "accuracy_on_accepted": b.accuracy_on_accepted,
                     "accepted": b.accepted, "n": b.n} for b in g.budgets]}
    return out


def guard_from_run(run_dir: str | Path, *, defense: str | None = None, calibration: Any = None,
                   on_flag: str = "abstain", batch_size: int = 32, device: str = "cpu") -> Guard:
    """The guard a finished run evaluated (module docstring).

    Args:
        run_dir: the run folder (``config.yaml``, ``metrics.json``, the model it trained or names).
        defense: which of the run's defenses to serve. Default None: the run's first.
        calibration: clean images to calibrate the squeeze detector on instead of the run's
            threshold (required when the run cross-fitted it). Default None.
        on_flag: ``"abstain"`` (default) or ``"warn"``.
        batch_size: images per batch. Default 32.
        device: where the model runs. Default ``cpu``.

    Returns:
        The :class:`~medrobust.layer.guard.Guard`, its ``run_figures`` set.

    Raises:
        FileNotFoundError: no run there.
        ValueError: a defense the run did not evaluate, a model file that changed since the run,
            or a cross-fitted threshold without ``calibration``.
    """
    from medrobust.evaluation.config import load_config
    from medrobust.evaluation.results import read_metrics
    from medrobust.evaluation.run_dir import model_file_sha256
    from medrobust.layer.models import load_model

    root = Path(run_dir)
    metrics = read_metrics(root)
    config = load_config(root / "config.yaml")
    if defense is not None and defense not in config.defenses:
        raise ValueError(f"{root}: the run evaluated the defenses {config.defenses or 'none'}, not {defense!r}")
    chosen = defense if defense is not None else (config.defenses[0] if config.defenses else None)
    if config.model.load is not None:
        path, contract = Path(config.model.load.path), config.model.load.contract
    else:
        path, contract = root / "model", None
    recorded = metrics.model.get("sha256")
    now = model_file_sha256(path)
    if recorded and now != recorded:
        raise ValueError(f"{path}: the model file changed since {root} measured it (SHA-256 {now[:12]}..., the run's "
                         f"{recorded[:12]}...): evaluate the model again before serving it")
    detectors: list[Any] = []
    sq = config.detectors.squeeze
    if sq is not None and sq.enabled:
        from medrobust.detection.squeeze import SqueezeDetector

        outcome = next((d for d in metrics.detectors if d.name == "squeeze"), None)
        threshold = (outcome.threshold or {}).get("threshold") if outcome is not None else None
        cross_fitted = outcome is None or "folds" in (outcome.threshold or {})  # one threshold per fold, none to serve
        if calibration is None and (threshold is None or cross_fitted):
            raise ValueError(f"{root}: the run cross-fitted its squeeze threshold over its test images (one per fold, "
                             "none to serve); give clean images to calibrate it: calibration=DIR")
        detectors.append(SqueezeDetector(sq.squeezers, threshold=None if calibration is not None else threshold,
                                         target_fpr=sq.target_fpr))
    loaded = load_model(path, contract, device=device)
    built = guard(loaded, defense=chosen, detectors=detectors, fpr=sq.target_fpr if sq is not None else 0.05,
                  calibration=calibration, on_flag=on_flag, batch_size=batch_size, device=device)
    built.model_file = str(path)
    if calibration is None and detectors:
        built.calibration["squeeze"] = {"source": f"the run {root.name}: {outcome.calibration}",
                                        "target_fpr": sq.target_fpr}
    built.run_figures = run_figures(metrics, chosen)
    return built


guard.from_run = guard_from_run  # type: ignore[attr-defined]  # mr.guard.from_run(RUN)
