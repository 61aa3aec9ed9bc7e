"""Every name is checked before a model is loaded or an image read (a load can take minutes): the
preset, attack, defense and detector specs, architecture and contract names. The model loader is
made to fail the test if it is reached, and the model and image paths do not exist, so the
error seen can only come from the name check."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import medrobust as mr
from medrobust.cli import app


@pytest.fixture(autouse=True)
def no_model_load(monkeypatch):
    import medrobust.models.loading as loading

    def never(*args, **kwargs):
        raise AssertionError("a model was loaded before the names were checked")

    monkeypatch.setattr(loading, "load_classifier", never)


MISSING_MODEL = "no-such-model.onnx"
MISSING_IMAGES = "no-such-folder/"


def _config(**changes) -> dict:
    return {"name": "early", "data": {"source": MISSING_IMAGES},
            "model": {"load": {"path": MISSING_MODEL, "classes": ["Normal", "Pneumonia"]}},
            "attacks": [{"name": "pgd", "params": {"eps": "8/255"}}], **changes}


def test_an_unknown_preset_is_reported_before_the_model_loads(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown preset 'quik'; choose one of quick, standard, thorough"):
        mr.evaluate(MISSING_MODEL, MISSING_IMAGES, preset="quik", output_dir=tmp_path)


def test_a_misspelt_contract_name_is_reported_before_the_model_loads(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown intensity convention 'unti'"):
        mr.evaluate(MISSING_MODEL, MISSING_IMAGES, preset="quick", intensity="unti", output_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown output kind 'softmaks'"):
        mr.evaluate(MISSING_MODEL, MISSING_IMAGES, preset="quick", output_kind="softmaks", output_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown architecture 'resnet19'"):
        mr.evaluate(MISSING_MODEL, MISSING_IMAGES, preset="quick", arch="resnet19", output_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown intensity convention 'unti'"):
        mr.load_model(MISSING_MODEL, classes=["Normal", "Pneumonia"], intensity="unti")


@pytest.mark.parametrize("changes, message", [
    ({"attacks": [{"name": "pgdd"}]}, r"attacks\[0\] \(pgdd\): unknown attack 'pgdd'"),
    ({"defenses": ["jpeg+tvv"]}, r"defenses\[0\]: .*tvv"),
    ({"detectors": {"sqeeze": {}}}, r"(?s)invalid configuration:.*sqeeze"),
    ({"detectors": {"squeeze": {"squeezers": ["bitz"]}}}, r"detectors.squeeze: .*bitz"),
    ({"model": {"load": {"path": MISSING_MODEL, "classes": ["A", "B"], "intensity": "unti"}}},
     r"(?s)invalid configuration:.*unknown intensity convention 'unti'"),
    ({"model": {"load": {"path": MISSING_MODEL, "classes": ["A", "B"], "output_kind": "logit"}}},
     r"(?s)invalid configuration:.*unknown output kind 'logit'"),
    ({"model": {"train": {"arch": "densnet121"}}, "data": {"source": MISSING_IMAGES, "split": [0.6, 0.2, 0.2]}},
     r"model.train.arch: unknown architecture 'densnet121'"),
])
def test_a_configuration_s_names_are_checked_before_the_model_loads_or_an_image_is_read(tmp_path, changes,
                                                                                       message) -> None:
    with pytest.raises(ValueError, match=message):
        mr.evaluate(preset=_config(**changes, output_dir=str(tmp_path)))
    if "model" not in changes:  # and with the model given apart from the configuration (replacing its model)
        with pytest.raises(ValueError, match=message):
            mr.evaluate(MISSING_MODEL, preset=_config(**changes, output_dir=str(tmp_path)))
    assert not (tmp_path / "early").exists()  # nothing written either


def test_attack_detector_and_training_names_are_checked_before_the_model_or_images() -> None:
    with pytest.raises(ValueError, match="unknown attack 'pgdd'"):
        mr.attack(MISSING_MODEL, MISSING_IMAGES, "pgdd")
    with pytest.raises(ValueError, match="unknown detector 'refrence'"):
        mr.detect(MISSING_MODEL, MISSING_IMAGES, detector="refrence")
    with pytest.raises(ValueError, match="unknown architecture 'densnet121'"):
        mr.train(MISSING_IMAGES, "densnet121")
    with pytest.raises(ValueError, match="unknown attack 'pgdd'"):
        mr.train(MISSING_IMAGES, "small-cnn", adversarial="pgdd:eps=4/255")


def test_the_command_line_reports_a_misspelt_name_first() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["evaluate", "--model", MISSING_MODEL, "--data", MISSING_IMAGES, "--preset", "quik"])
    assert result.exit_code == 2 and "unknown preset 'quik'" in result.stderr
    result = runner.invoke(app, ["attack", "--model", MISSING_MODEL, "--data", MISSING_IMAGES, "--attack", "pgdd"])
    assert result.exit_code == 2 and "unknown attack 'pgdd'" in result.stderr
    result = runner.invoke(app, ["detect", "--model", MISSING_MODEL, "--input", MISSING_IMAGES, "--detector", "sqeeze"])
    assert result.exit_code == 2 and "unknown detector 'sqeeze'" in result.stderr
    result = runner.invoke(app, ["predict", "--model", MISSING_MODEL, "--classes", "A,B", "--intensity", "unti", "x.png"])
    assert result.exit_code == 2 and "unknown intensity convention 'unti'" in result.stderr
