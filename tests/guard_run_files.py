"""A finished run's files as a guard definition reads them (config.yaml and metrics.json), written
in milliseconds from the configuration and result types: no model is trained or evaluated. For
tests of what a guard definition says of runs that are costly to make (no defense, several
defenses, a service job's folder layout) and of the web process, which must read one without torch."""

from __future__ import annotations

from pathlib import Path

from medrobust.evaluation.config import ExperimentConfig
from medrobust.evaluation.results import (
    ClassificationReport,
    DefenseOutcome,
    DetectorOutcome,
    RobustnessScore,
    RunMetrics,
    write_metrics,
)

CLASSES = ["Normal", "Pneumonia"]
SHA256 = "5e" * 32
ADAPTIVE_ACCURACY = {"jpeg+tv": 0.625, "tv": 0.5}


def _report(wrong: int) -> ClassificationReport:
    """Eight images, four per class; ``wrong`` of the Pneumonia ones called Normal."""
    return ClassificationReport(n=8, accuracy=(8 - wrong) / 8, classes=CLASSES, per_class={},
                                confusion_matrix=[[4, 0], [wrong, 4 - wrong]])


def write_finished_run(run_dir: Path, *, defenses: tuple[str, ...] = ("jpeg+tv",), squeeze: str | None = "calibrated",
                       model_path: str = "model/chest-cnn", output_dir: str = "..") -> RunMetrics:
    """Write ``run_dir/config.yaml`` and ``run_dir/metrics.json`` of a finished run.

    Args:
        run_dir: the run folder (created).
        defenses: the defenses it evaluated.
        squeeze: ``"calibrated"`` (one threshold, on a calibration folder), ``"cross-fitted"``
            (one per fold) or None (no squeeze detector).
        model_path: the model file as the configuration names it.
        output_dir: the configuration's ``output_dir``.

    Returns:
        The metrics written.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    detectors = {"squeeze": {"calibration": "clean"} if squeeze == "calibrated" else {}} if squeeze else {}
    config = ExperimentConfig(name=run_dir.name, output_dir=output_dir, defenses=list(defenses), detectors=detectors,
                              model={"load": {"path": model_path, "classes": CLASSES, "intensity": "unit"}})
    (run_dir / "config.yaml").write_text(config.resolved_yaml())
    threshold = {"threshold": 0.25} if squeeze == "calibrated" else {"threshold": 0.3, "folds": 5}
    outcomes = [DetectorOutcome(
        name="squeeze", threshold=threshold, detection_rate={"pgd@8/255": 0.75, "sia@8/255": 0.5}, fpr_clean=0.0625,
        fpr_benign={"jpeg90": 0.125}, roc_auc={}, roc={}, reasons={}, latency_ms_per_image=1.0,
        calibration="8 clean images of the calibration folder clean" if squeeze == "calibrated"
        else "5-fold cross-fitting over the 8 clean test images")] if squeeze else []
    metrics = RunMetrics(
        name=run_dir.name, medrobust_version="0.1.0", created="2026-12-01T08:00:00+00:00",
        config=config.model_dump(mode="json"), data={"classes": CLASSES}, baseline=_report(1),
        model={"file": model_path, "sha256": SHA256, "differentiable": True,
               "contract": {"classes": CLASSES, "input_size": [32, 32], "stored_channels": 1, "network_channels": 1,
                            "intensity": "unit", "output_kind": "softmax", "channels_last": False, "threshold": 0.5}},
        attacks=[], eps_sweep={}, transfer=None, detectors=outcomes,
        defenses=[DefenseOutcome(name=d, clean=_report(2), clean_cost_pp=12.5, non_adaptive={},
                                 non_adaptive_recovery_pp={}, adaptive_attack="worst case of 2 adaptive attacks at 8/255",
                                 adaptive_accuracy=ADAPTIVE_ACCURACY.get(d, 0.25), adaptive_recovery_pp=50.0,
                                 gradient_mode="bpda", seconds_per_image=0.01, adaptive_eps=8 / 255) for d in defenses],
        robustness_score=RobustnessScore(value=50.0, definition="a synthetic run"), seconds_per_image={},
        seconds_total=1.0)
    write_metrics(metrics, run_dir)
    return metrics
