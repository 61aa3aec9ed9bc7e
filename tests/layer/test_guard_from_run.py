"""``mr.guard.from_run``: the guard a run evaluated — its model (refused when the file changed
since), its defense, the squeeze threshold it calibrated, and its figures in ``describe()`` —
built from the run's guard definition (``guard_definition``, read without the model), which is
checked here on the same real runs."""

from __future__ import annotations

import shutil

import pytest
import torch

import medrobust as mr
from medrobust.evaluation.results import read_metrics
from medrobust.layer.guard_definition import guard_definition, run_figures
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


@pytest.fixture(scope="module")
def cross_fitted_run(tmp_path_factory, trained_small_cnn):
    """A run on its test images only: its squeeze threshold cross-fitted (one per fold)."""
    root = tmp_path_factory.mktemp("cross-fitted")
    save_checkpoint(trained_small_cnn, root / "model")
    mr.evaluate(preset=_settings(root / "model"), run_dir=root / "run")
    mr.write_phantoms(root / "clean", per_class=4, size=32, seed=21)
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


def test_a_cross_fitted_threshold_needs_calibration_images(cross_fitted_run) -> None:
    with pytest.raises(ValueError, match="cross-fitted its squeeze threshold .* calibration=DIR"):
        mr.guard.from_run(cross_fitted_run / "run")
    g = mr.guard.from_run(cross_fitted_run / "run", calibration=str(cross_fitted_run / "clean"))
    assert g.describe()["detectors"][0]["calibration"]["n_images"] == 12


def test_the_definition_is_what_from_run_serves(run) -> None:
    """The definition a platform shows (no model loaded) names the guard ``from_run`` builds:
    the model file and the run's SHA-256, the defense, the threshold and the figures."""
    d = guard_definition(run / "run")
    metrics = read_metrics(run / "run")
    squeeze = next(det for det in metrics.detectors if det.name == "squeeze")
    assert d.run_folder == str(run / "run") and d.run_name == "run"
    assert d.model["path"] == str(run / "model") and d.model["sha256"] == metrics.model["sha256"]
    assert d.model["contract"]["classes"] == ["Normal", "Pneumonia", "Pneumothorax"]
    assert d.defense == "jpeg+tv" and d.defenses == ["jpeg+tv"]
    (detector,) = d.detectors
    assert detector["threshold"] == squeeze.threshold["threshold"] and not detector["cross_fitted"]
    assert detector["calibration_required"] is None and d.calibration == squeeze.calibration
    assert d.command == f"medrobust guard serve --run {run / 'run'}"
    assert d.evaluated == run_figures(metrics, "jpeg+tv")
    described = mr.guard.from_run(run / "run").describe()
    assert described["evaluated"] == d.evaluated and described["defense"].startswith("jpeg:")  # the spec in full
    assert described["model"] == {"file": d.model["path"], "sha256": d.model["sha256"]}
    assert described["detectors"][0]["threshold"] == pytest.approx(detector["threshold"])


def test_a_cross_fitted_definition_asks_for_calibration_images(cross_fitted_run) -> None:
    d = guard_definition(cross_fitted_run / "run")
    (detector,) = d.detectors
    assert detector["threshold"] is None and detector["cross_fitted"] is True
    assert detector["calibration_required"] == "calibration images required: --calibration DIR"
    assert d.command == f"medrobust guard serve --run {cross_fitted_run / 'run'} --calibration DIR"
    assert d.calibration.startswith("5-fold cross-fitting")


def test_from_run_finds_a_service_jobs_model_beside_its_run_folder(run, tmp_path, monkeypatch) -> None:
    """A service job's run names its model relative to the job's upload folder (``output_dir: ..``):
    ``from_run`` started elsewhere finds it there, and serves it once its SHA-256 is the run's."""
    job = tmp_path / "jobs" / "3f2a9c0d"
    shutil.copytree(run / "model", job / "upload" / "model")
    shutil.copytree(run / "run", job / "run")
    config = (job / "run" / "config.yaml").read_text()
    config = config.replace(f"path: {run / 'model'}\n", "path: model\n").replace(f"output_dir: {run}\n", "output_dir: ..\n")
    assert "    path: model\n" in config and "output_dir: ..\n" in config
    (job / "run" / "config.yaml").write_text(config)
    monkeypatch.chdir(tmp_path)
    g = mr.guard.from_run(job / "run")
    assert g.model_file == str(job / "upload" / "model")
    assert g.describe()["model"]["sha256"] == read_metrics(run / "run").model["sha256"]
