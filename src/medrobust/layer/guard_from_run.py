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
from medrobust.layer.guard_definition import guard_definition, run_figures

__all__ = ["guard_from_run", "run_figures"]


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
    from medrobust.evaluation.run_dir import model_file_sha256
    from medrobust.layer.models import load_model

    root = Path(run_dir)
    definition = guard_definition(root, defense)
    model = definition.model
    if model["path"] is None:
        raise FileNotFoundError(f"{root}: the run's model file cannot be found ({model['missing']}); put it back "
                                "where the run read it, or run the guard where the run was made")
    path = Path(model["path"])
    recorded = model["sha256"]
    now = model_file_sha256(path)
    if recorded and now != recorded:
        raise ValueError(f"{path}: the model file changed since {root} measured it (SHA-256 {now[:12]}..., the run's "
                         f"{recorded[:12]}...): evaluate the model again before serving it")
    detectors: list[Any] = []
    for d in definition.detectors:  # the squeeze detector, the one reference-free detector a run evaluates
        from medrobust.detection.squeeze import SqueezeDetector

        if calibration is None and d["threshold"] is None:
            raise ValueError(f"{root}: the run cross-fitted its squeeze threshold over its test images (one per fold, "
                             "none to serve); give clean images to calibrate it: calibration=DIR")
        detectors.append(SqueezeDetector(d["squeezers"], threshold=None if calibration is not None else d["threshold"],
                                         target_fpr=d["target_fpr"]))
    config_contract = _declared_contract(root)
    loaded = load_model(path, config_contract, device=device)
    built = guard(loaded, defense=definition.defense, detectors=detectors, fpr=definition.target_fpr or 0.05,
                  calibration=calibration, on_flag=on_flag, batch_size=batch_size, device=device)
    built.model_file = str(path)
    if calibration is None and detectors:
        built.calibration["squeeze"] = {"source": f"the run {root.name}: {definition.calibration}",
                                        "target_fpr": definition.target_fpr}
    built.run_figures = definition.evaluated
    return built


def _declared_contract(root: Path) -> Any:
    """The contract the run's configuration declared for its model file (None for a model it trained)."""
    from medrobust.evaluation.config import load_config

    load = load_config(root / "config.yaml").model.load
    return load.contract if load is not None else None


guard.from_run = guard_from_run  # type: ignore[attr-defined]  # mr.guard.from_run(RUN)
