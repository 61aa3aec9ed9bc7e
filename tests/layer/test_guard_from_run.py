"""``mr.guard.from_run``: the guard a run evaluated — its model (refused when the file changed
since), its defense, the squeeze threshold it calibrated, and its figures in ``describe()``."""

from __future__ import annotations

import shutil

import pytest
import torch

import medrobust as mr
from medrobust.evaluation.results import read_metrics
from medrobust.models.checkpoint import save_checkpoint

DATA = "phantom:seed=7,per_class=6"


def _settings(model_dir, calibration=None) -> dict:
    squeeze = {"calibration": str(calibration), "calibration_images": 10} if calibration else {}
    return {"model": {"load": {"path": str(model_dir)}}, "data": {"source": DATA, "size": 32},
            "attacks": [{"name": "pgd", "params": {"eps": "8/255", "steps": 3}}], "defenses": ["jpeg+tv"],
            "adaptive": {"portfolio": ["unrolled"], "restarts": 1, "max_steps": 3, "params": {"steps": 3}},
            "detectors": {"squeeze": squeeze}, "attack_images": 12}


@pytest.fixture(scope="module")
def run(tmp_path_factory, trained_small_cnn):
    root = tmp_path_factory.mktemp("guard-run")
    save_checkpoint(trained_small_cnn, root / "model")
    mr.write_phantoms(root / "clean", per_class=4, size=32, seed=21)
    mr.evaluate(preset=_settings(root / "model", root / "clean"), run_dir=root / "run")
    return root


def test_the_guard_is_the_runs_with_its_threshold_and_figures(run) -> None:
    g = mr.guard.from_run(run / "run")
    metrics = read_metrics(run / "run")
    squeeze = next(d for d in metrics.detectors if d.name == "squeeze")
    described = g.describe()
    assert described["defense"] == g.defense_spec and g.defense_spec.startswith("jpeg")
    assert described["detectors"][0]["threshold"] == pytest.approx(squeeze.threshold["threshold"])
    assert described["model"]["sha256"] == metrics.model["sha256"]
    evaluated = described["evaluated"]
    assert evaluated["run"] == "run" and evaluated["defense"]["adaptive_accuracy"] == metrics.defenses[0].adaptive_accuracy
    assert evaluated["squeeze"]["fpr_clean"] == squeeze.fpr_clean
    answers = g.predict(torch.rand(3, 1, 32, 32)).answers
    assert len(answers) == 3 and all(a.decision in ("accept", "abstain") for a in answers)


def test_a_model_file_changed_since_the_run_is_refused(run, tmp_path, second_small_cnn) -> None:
    moved = tmp_path / "run"
    shutil.copytree(run / "run", moved)
    save_checkpoint(second_small_cnn, tmp_path / "other")  # another model's weights where the run's model was
    config = (moved / "config.yaml").read_text().replace(str(run / "model"), str(tmp_path / "other"))
    (moved / "config.yaml").write_text(config)
    with pytest.raises(ValueError, match="the model file changed since .* measured it"):
        mr.guard.from_run(moved)


def test_a_cross_fitted_threshold_needs_calibration_images(tmp_path, trained_small_cnn) -> None:
    save_checkpoint(trained_small_cnn, tmp_path / "model")
    mr.evaluate(preset=_settings(tmp_path / "model"), run_dir=tmp_path / "run")
    with pytest.raises(ValueError, match="cross-fitted its squeeze threshold .* calibration=DIR"):
        mr.guard.from_run(tmp_path / "run")
    mr.write_phantoms(tmp_path / "clean", per_class=4, size=32, seed=21)
    g = mr.guard.from_run(tmp_path / "run", calibration=str(tmp_path / "clean"))
    assert g.describe()["detectors"][0]["calibration"]["n_images"] == 12
