"""One ModelContract (issue 26): what a user declares about a model file, checked when it is built,
torch-free to import, and the same object whichever face it comes from -- the command line's
flags, the configuration's ``model.load``, Python and the service's form -- reaching the one
loader, :func:`medrobust.models.loading.load_classifier`."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

import medrobust as mr
from medrobust.evaluation.config import LoadSection, load_config, validate_config
from medrobust.models.contract import ModelContract

CLASSES = ("Normal", "Pneumonia", "Pneumothorax")
DECLARATION = {"classes": list(CLASSES), "input_size": 32, "intensity": "imagenet", "output_kind": "softmax"}
"""One declaration, made in every face below."""


# --- each field checked when the contract is built -------------------------------------------------------------
def test_classes_are_a_list_or_one_comma_separated_string():
    assert ModelContract(classes="Normal, Pneumonia ,Pneumothorax").classes == CLASSES
    assert ModelContract(classes=list(CLASSES)).classes == CLASSES
    assert ModelContract(classes=" Normal ").classes == ("Normal",)
    assert ModelContract(classes="").classes is None and ModelContract(classes=[]).classes is None  # not declared


@pytest.mark.parametrize(("classes", "says"), [
    ("Normal,normal", "'Normal' and 'normal' name one class (names match case- and punctuation-blind)"),
    (["No_Finding", "no finding"], "'No_Finding' and 'no finding' name one class"),
    ("Normal,,Pneumonia", "'' has no letters or digits"),
    (["Normal", "--"], "'--' has no letters or digits"),
    (["Normal", 3], "every class name must be text"),
    (42, "give the model's class names in its output order, as a list or comma-separated"),
])
def test_bad_class_names_are_refused_in_one_line_naming_the_file(classes, says):
    with pytest.raises(ValueError) as info:
        ModelContract.from_options({"classes": classes}, where="model.onnx")
    message = str(info.value)
    assert message.startswith("model.onnx: classes ") and says in message and "\n" not in message


def test_the_input_size_is_an_image_size_kept_as_one_side_when_square():
    assert ModelContract(input_size=224).input_size == 224
    assert ModelContract(input_size=(224, 224)).input_size == 224  # one declaration, one value
    assert ModelContract(input_size=[150, 200]).input_size == (150, 200)
    assert ModelContract(input_size="64").input_size == 64  # as a form sends it
    assert ModelContract(input_size=[150, 200]).size == (150, 200) and ModelContract().size is None
    for bad in (0, -3, 7072, (0, 5), 2.5, True):
        with pytest.raises(ValueError, match="is not an image size"):
            ModelContract.from_options({"input_size": bad})


def test_channels_intensity_output_kind_arch_outputs_and_layout():
    contract = ModelContract(channels=1, intensity="[-1, 1]", output_kind="multilabel", arch="small-cnn",
                             outputs="auto", channels_last=True)
    assert (contract.channels, contract.intensity, contract.output_kind, contract.arch, contract.outputs,
            contract.channels_last) == (1, "symmetric", "multilabel", "small-cnn", None, True)
    assert ModelContract(network_channels=3).channels == 3  # the InputContract's name is accepted too
    assert ModelContract(intensity="none").intensity == "unit" and ModelContract(outputs="logits").outputs == "logits"
    assert ModelContract().trust_pickle is False and ModelContract(trust_pickle=True).trust_pickle is True
    for options, says in [({"channels": 2}, "network channels 2: a network takes 1 (grey) or 3 (RGB) channels"),
                          ({"intensity": "hu"}, "unknown intensity convention 'hu'"),
                          ({"output_kind": "logits"}, "unknown output kind 'logits'"),
                          ({"arch": " "}, "arch is empty"),
                          ({"outputs": "logit"}, "outputs 'logit': write logits or probabilities"),
                          ({"output_kind": "binary", "classes": CLASSES},
                           "a binary model needs two class names [negative, positive]"),
                          ({"clases": ["a"]}, "clases is not part of a model's contract")]:
        with pytest.raises(ValueError) as info:
            ModelContract.from_options(options, where="m.keras")
        assert str(info.value).startswith("m.keras: ") and says in str(info.value), options


def test_it_is_frozen_and_hashable():
    contract = ModelContract(**DECLARATION)
    with pytest.raises(ValidationError):
        contract.classes = ("a",)  # type: ignore[misc]
    assert hash(contract) == hash(ModelContract(**DECLARATION))


def test_given_refuses_a_contract_and_keywords_at_once():
    contract = ModelContract(**DECLARATION)
    assert ModelContract.given(contract, {"classes": None, "trust_pickle": False}) is contract
    assert ModelContract.given(DECLARATION, {}) == contract  # a mapping of its fields
    assert ModelContract.given(None, {"classes": "a,b", "input_size": None}) == ModelContract(classes=("a", "b"))
    with pytest.raises(ValueError, match=r"^m\.onnx: the model's contract was given twice, as contract= and as "
                                         r"intensity=; give it once"):
        ModelContract.given(contract, {"intensity": "unit"}, where="m.onnx")
    with pytest.raises(ValueError, match="given twice"):
        mr.load_model("m.onnx", contract, intensity="unit")


def test_resolve_gives_the_classifier_s_input_contract():
    resolved = ModelContract(classes="a,b", input_size=32, intensity="symmetric").resolve(channels=1)
    assert (resolved.classes, resolved.input_size, resolved.network_channels, resolved.intensity.value,
            resolved.output_kind.value, resolved.channels_last) == (("a", "b"), (32, 32), 1, "symmetric", "softmax", False)
    declared_wins = ModelContract(classes="a,b", channels=3, intensity="unit", channels_last=False)
    resolved = declared_wins.resolve(size=(16, 16), channels=1, channels_last=True)
    assert (resolved.input_size, resolved.network_channels, resolved.channels_last) == ((16, 16), 3, False)
    with pytest.raises(ValueError, match="intensity convention must be given"):
        ModelContract(classes="a,b").resolve()


def test_importing_the_contract_imports_no_torch():
    code = "import medrobust.models.contract, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    code = ("import sys, medrobust as mr; from medrobust.models import ModelContract; "
            "c = mr.ModelContract(classes='a,b', intensity='unit'); assert c == ModelContract(classes=['a', 'b'], "
            "intensity='unit'); import medrobust.evaluation.config; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_zoo_still_registers_before_a_registry_lookup():
    code = ("import medrobust.models.registry as r, sys; print(r._ARCHITECTURES.metadata('small-cnn')['channels'], "
            "len(r.list_models()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1", str(len(mr.list_models()))]


# --- the configuration's model.load: path + the contract's fields -------------------------------------------
def test_round_trip_through_the_configuration_s_model_load():
    contract = ModelContract(classes="Normal,Pneumonia", input_size=(150, 200), channels=1, intensity="byte",
                             output_kind="binary", outputs="probabilities", channels_last=True)
    section = LoadSection.of("model.onnx", contract)
    assert section.contract == contract and section.path == "model.onnx"
    config = validate_config({"model": {"load": section.model_dump(mode="json")}})
    text = config.resolved_yaml()
    assert text.index("    path: model.onnx") < text.index("    classes:")  # path first in config.yaml
    again = validate_config(yaml.safe_load(text))
    assert again.model.load.contract == contract and again.model.load == section


def test_a_configuration_written_before_the_contract_still_loads_and_resumes(tmp_path):
    """config.yaml of a run made before ModelContract (the load section's fields then) validates to the
    same contract, and to the same computed configuration, so a run folder resumes."""
    old = tmp_path / "config.yaml"
    old.write_text("name: old\ndata: {source: phantom, split: test}\n"
                   "model:\n  train: null\n  load:\n    path: model.pt\n    arch: null\n"
                   "    classes: [Normal, Pneumonia, Pneumothorax]\n    input_size: 32\n    intensity: imagenet\n"
                   "    output_kind: softmax\n    trust_pickle: false\n")
    config = load_config(old)
    assert config.model.load.contract == ModelContract(**DECLARATION)
    new = validate_config({"name": "old", "data": {"source": "phantom", "split": "test"},
                           "model": {"load": {"path": "model.pt", **ModelContract(**DECLARATION).declared()}}})
    assert config.without_report_only() == new.without_report_only()


def test_the_configuration_refuses_a_contract_value_with_the_contract_s_own_sentence():
    with pytest.raises(ValueError) as info:
        validate_config({"model": {"load": {"path": "m.onnx", "classes": ["Normal", "NORMAL"], "channels": 4}}})
    lines = str(info.value).splitlines()[1:]
    assert sorted(line.strip() for line in lines) == [
        "model.load.channels: network channels 4: a network takes 1 (grey) or 3 (RGB) channels",
        "model.load.classes: classes ['Normal', 'NORMAL']: 'Normal' and 'NORMAL' name one class (names match case- "
        "and punctuation-blind); give each class once, in the model's output order"]


# --- every face makes the same contract and hands it to the one loader ----------------------------------------
class Reached(Exception):
    """The loader was reached with ``contract``."""

    def __init__(self, path, contract) -> None:
        super().__init__(str(path))
        self.path, self.contract = path, contract


@pytest.fixture
def loader_reached(monkeypatch):
    """The one loader, replaced by one that stops with what it was given."""
    import medrobust.models.loading as loading

    def reached(path, contract=None, *, device="cpu", **options):
        raise Reached(path, ModelContract.given(contract, options))

    monkeypatch.setattr(loading, "load_classifier", reached)


def _reached(call) -> ModelContract:
    with pytest.raises(Reached) as info:
        call()
    return info.value.contract


def test_the_same_declaration_is_one_contract_from_every_face(tmp_path, loader_reached):
    expected = ModelContract(**DECLARATION)
    found = {}
    # Python: keywords, or the contract itself
    found["python keywords"] = _reached(lambda: mr.load_model("m.onnx", classes="Normal,Pneumonia,Pneumothorax",
                                                              input_size=32, intensity="imagenet", output_kind="softmax"))
    found["python contract"] = _reached(lambda: mr.load_model("m.onnx", expected))
    found["mr.evaluate"] = _reached(lambda: mr.evaluate("m.onnx", "images/", preset="quick", contract=expected,
                                                        output_dir=tmp_path / "runs"))
    found["mr.predict"] = _reached(lambda: mr.predict("m.onnx", "images/", contract=expected))
    # the command line's flags
    from medrobust.cli import app

    result = CliRunner().invoke(app, ["predict", "--model", "m.onnx", "--classes", "Normal, Pneumonia,Pneumothorax",
                                      "--input-size", "32", "--intensity", "imagenet", "--output-kind", "softmax",
                                      "x.png"])
    assert isinstance(result.exception, Reached), result.output
    found["command line"] = result.exception.contract
    result = CliRunner().invoke(app, ["evaluate", "--model", "m.onnx", "--data", "images/", "--classes",
                                      "Normal,Pneumonia,Pneumothorax", "--input-size", "32", "--intensity", "imagenet",
                                      "--output-kind", "softmax", "--output-dir", str(tmp_path / "runs")])
    assert isinstance(result.exception, Reached), result.output
    found["medrobust evaluate"] = result.exception.contract
    # the configuration (through the runner's load_model)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"name": "faces", "output_dir": str(tmp_path / "runs"),
                                      "data": {"source": "images/"}, "model": {"load": {"path": "m.onnx", **DECLARATION}},
                                      "defenses": []}))
    result = CliRunner().invoke(app, ["evaluate", str(config)])
    assert isinstance(result.exception, Reached), result.output
    found["configuration"] = result.exception.contract
    # the service's form, as the web process stores it and the job process passes it on
    pytest.importorskip("fastapi")
    from medrobust.service.job_process import job_arguments
    from medrobust.service.submission import _contract

    form = _contract({"classes": "Normal,Pneumonia,Pneumothorax", "input_size": "32", "intensity": "imagenet",
                      "output_kind": "softmax"})
    request = {"contract": form.declared(), "model_path": "m.onnx", "images_path": "images", "preset": "quick"}
    arguments = job_arguments(request, SimpleNamespace(run_name=str(tmp_path / "job-run")))
    found["service form"] = _reached(lambda: mr.evaluate(**arguments))
    assert found == {face: expected for face in found}
    assert not (tmp_path / "runs").exists()  # the contract reached the loader before anything was written


def test_the_command_line_declares_every_field(loader_reached):
    from medrobust.cli import app

    result = CliRunner().invoke(app, ["predict", "--model", "m.keras", "--classes", "a,b", "--intensity", "unit",
                                      "--channels", "1", "--arch", "small-cnn", "--trust-pickle", "--outputs",
                                      "probabilities", "--channels-first", "--output-kind", "binary", "x.png"])
    assert isinstance(result.exception, Reached), result.output
    assert result.exception.contract == ModelContract(classes="a,b", intensity="unit", channels=1, arch="small-cnn",
                                                      trust_pickle=True, outputs="probabilities", channels_last=False,
                                                      output_kind="binary")


def test_a_configuration_and_contract_options_together_are_refused(tmp_path):
    from medrobust.cli import app

    config = tmp_path / "run.yaml"
    config.write_text("model: {load: {path: m.onnx, classes: [a, b], intensity: unit}}\n")
    result = CliRunner().invoke(app, ["evaluate", str(config), "--intensity", "imagenet"])
    assert result.exit_code == 2
    assert (f"{config} names the model and its contract (model.load: path, classes, intensity, ...): put --intensity "
            "there, not on the command line") in result.stderr


def test_a_job_queued_before_the_contract_moved_out_of_its_class_settings_still_runs(tmp_path):
    pytest.importorskip("fastapi")
    from medrobust.service.job_process import job_arguments

    old = {"contract": {**DECLARATION, "normal_class": "Normal", "class_map": {"NORMAL": "Normal"}},
           "model_path": "m.onnx", "images_path": "images", "preset": "quick"}
    arguments = job_arguments(old, SimpleNamespace(run_name="run"))
    assert arguments["contract"] == ModelContract(**DECLARATION)
    assert arguments["normal_class"] == "Normal" and arguments["class_map"] == {"NORMAL": "Normal"}
    smuggled = {**old, "contract": {**DECLARATION, "trust_pickle": True}}
    assert job_arguments(smuggled, SimpleNamespace(run_name="run"))["contract"].trust_pickle is False
