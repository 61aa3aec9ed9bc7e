"""The guard a finished run defines, read without a model (``guard_definition``), on run files
written from the result types: the chosen defense and the command that serves another, a
cross-fitted threshold, the service's folder layout (the model beside the run folder), and the
errors (a run not finished, a defense not evaluated, nothing to guard). The same definition on
real runs, with ``mr.guard.from_run`` built from it, is in test_guard_from_run.py."""

from __future__ import annotations

import shlex
import shutil

import pytest

from medrobust.evaluation.results import read_metrics
from medrobust.layer.guard_definition import (
    CALIBRATION_REQUIRED,
    DefenseNotEvaluated,
    guard_definition,
    run_figures,
)
from tests.guard_run_files import SHA256, write_finished_run


def test_the_first_defense_is_served_and_another_is_named_in_the_command(tmp_path) -> None:
    run = tmp_path / "runs with space" / "chest"
    write_finished_run(run, defenses=("jpeg+tv", "tv"), output_dir="runs with space")
    first = guard_definition(run)
    assert first.defense == "jpeg+tv" and first.defenses == ["jpeg+tv", "tv"]
    assert shlex.split(first.command) == ["medrobust", "guard", "serve", "--run", str(run)]
    assert first.evaluated == run_figures(read_metrics(run), "jpeg+tv")
    assert first.evaluated["defense"]["adaptive_accuracy"] == 0.625
    assert first.detectors == [{"name": "squeeze", "squeezers": ["bits:bits=5", "median:size=2", "jpeg", "tv"],
                                "threshold": 0.25, "cross_fitted": False, "target_fpr": 0.05,
                                "calibration": "8 clean images of the calibration folder clean",
                                "calibration_required": None}]
    assert first.summary == ("jpeg+tv: 62.5% accuracy under adaptive attack (worst case of 2 adaptive attacks at "
                             "8/255), 75.0% on clean images; squeeze detector: flags 50.0% of attacked images (lowest "
                             "of 2 attacks: sia@8/255) at 6.2% false positives on clean images (target 5.0%)")
    other = guard_definition(run, defense="tv")
    assert other.defense == "tv" and other.evaluated["defense"]["adaptive_accuracy"] == 0.5
    assert shlex.split(other.command)[-2:] == ["--defense", "tv"]
    as_dict = other.to_dict()
    assert as_dict["run"] == {"name": "chest", "folder": str(run)}
    assert as_dict["defense"] == {"chosen": "tv", "evaluated": ["jpeg+tv", "tv"]}
    assert as_dict["model"]["sha256"] == SHA256 and as_dict["model"]["contract"]["classes"] == ["Normal", "Pneumonia"]


def test_a_cross_fitted_threshold_is_null_and_the_command_asks_for_calibration_images(tmp_path) -> None:
    write_finished_run(tmp_path / "run", squeeze="cross-fitted")
    d = guard_definition(tmp_path / "run")
    (squeeze,) = d.detectors
    assert squeeze["threshold"] is None and squeeze["cross_fitted"] is True
    assert squeeze["calibration_required"] == CALIBRATION_REQUIRED == "calibration images required: --calibration DIR"
    assert d.needs_calibration and d.command.endswith(" --calibration DIR")
    assert d.calibration == "5-fold cross-fitting over the 8 clean test images"


def test_the_model_of_a_service_job_is_found_beside_its_run_folder(tmp_path, monkeypatch) -> None:
    """A job runs in its upload folder with ``output_dir: ..``: the run names ``model/chest-cnn``
    relative to ``jobs/ID/upload``, which a guard started anywhere else must still find."""
    job = tmp_path / "data" / "jobs" / "3f2a9c0d41b7e655"
    (job / "upload" / "model" / "chest-cnn").mkdir(parents=True)
    (job / "upload" / "images").mkdir()
    write_finished_run(job / "chest-cnn-3f2a9c0d")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    model = guard_definition(job / "chest-cnn-3f2a9c0d").model
    assert model["file"] == "model/chest-cnn" and model["path"] == str(job / "upload" / "model" / "chest-cnn")
    # a run started from its output_dir's parent (medrobust evaluate's default layout) is found the same way
    write_finished_run(tmp_path / "project" / "runs" / "exp", output_dir="runs", model_path="models/chest.onnx")
    (tmp_path / "project" / "models").mkdir()
    (tmp_path / "project" / "models" / "chest.onnx").write_bytes(b"onnx")
    assert guard_definition(tmp_path / "project" / "runs" / "exp").model["path"] == str(
        tmp_path / "project" / "models" / "chest.onnx")
    shutil.rmtree(job / "upload" / "model")
    missing = guard_definition(job / "chest-cnn-3f2a9c0d").model
    assert missing["path"] is None and "'model/chest-cnn' is not at" in missing["missing"]


def test_a_run_that_has_not_finished_is_refused_in_one_sentence(tmp_path) -> None:
    write_finished_run(tmp_path / "run")
    (tmp_path / "run" / "metrics.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"run: not a finished run \(no metrics.json\);"):
        guard_definition(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match=r"nowhere: not a finished run \(no config.yaml\);"):
        guard_definition(tmp_path / "nowhere")


def test_a_defense_the_run_did_not_evaluate_is_refused_with_those_it_did(tmp_path) -> None:
    write_finished_run(tmp_path / "run", defenses=("jpeg+tv", "tv"))
    with pytest.raises(DefenseNotEvaluated, match=r"evaluated the defenses \['jpeg\+tv', 'tv'\], not 'median'"):
        guard_definition(tmp_path / "run", defense="median")


def test_a_run_with_no_defense_and_no_squeeze_detector_has_nothing_to_guard(tmp_path) -> None:
    write_finished_run(tmp_path / "run", defenses=(), squeeze=None)
    with pytest.raises(ValueError, match="nothing to guard: the run evaluated no defense and no reference-free "
                                         "detector"):
        guard_definition(tmp_path / "run")
    write_finished_run(tmp_path / "detector-only", defenses=())  # a detector alone is a guard
    d = guard_definition(tmp_path / "detector-only")
    assert d.defense is None and d.evaluated["defense"] is None and d.summary.startswith("squeeze detector: flags 50.0%")
