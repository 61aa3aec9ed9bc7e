"""A vendor's first run: their trained model, their folder of images (class folders in capitals,
listed in another order than the model's classes), everything tested (``split: test``).

Checks that every statement is true on data the code has not seen: classes matched by name,
the normal class found whatever its spelling (or said to be missing), an evaluate-only run on
all images, a detector never judging an image it was calibrated on, bad configurations refused
before any file is written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from medrobust.cli import app
from medrobust.data.io import write_png
from medrobust.data.phantom import PhantomDataset
from medrobust.evaluation.config import ExperimentConfig, load_config
from medrobust.evaluation.results import read_metrics
from medrobust.evaluation.run_folder import RunFolderConflict, claim_run_folder
from medrobust.evaluation.runner import run_experiment

SIZE = 32
MODEL_CLASSES = ["Normal", "Pneumonia", "Pneumothorax"]


@pytest.fixture(scope="module")
def vendor_model(tmp_path_factory) -> Path:
    """A small CNN trained on phantoms and saved as a medrobust checkpoint (the vendor's model)."""
    from medrobust.models.checkpoint import save_checkpoint
    from medrobust.models.training import TrainConfig, train_classifier
    from medrobust.models.zoo import build_classifier

    ds = PhantomDataset(per_class=100, size=SIZE, seed=3)
    parts = ds.splits()
    train, val = parts["train"].load(), parts["val"].load()
    torch.manual_seed(0)
    model = build_classifier("small-cnn", MODEL_CLASSES, SIZE)
    train_classifier(model, train[:2], val[:2], TrainConfig(epochs=25, lr=3e-3, seed=0, early_stopping_patience=25,
                                                            plateau_patience=25))
    return save_checkpoint(model.cpu(), tmp_path_factory.mktemp("vendor") / "model")


def _folder(root: Path, names: dict[str, str], per_class: int = 6, seed: int = 21) -> Path:
    """Class folders named ``names[model class]`` holding phantoms of that class."""
    ds = PhantomDataset(per_class=per_class, size=SIZE, seed=seed, fractions=None)
    for image, label, item_id in ds.iter_valid():
        folder = names.get(MODEL_CLASSES[label])
        if folder is not None:
            write_png(root / folder / f"{item_id}.png", image)
    return root


def _config(tmp_path: Path, source: Path, model: Path, **data) -> dict:
    return {
        "name": "vendor", "output_dir": str(tmp_path / "runs"), "device": "cpu", "batch_size": 8,
        "attack_images": 12, "sample_images": 2,
        "data": {"source": str(source), "size": SIZE, **data},
        "model": {"load": {"path": str(model)}},
        "attacks": [{"name": "pgd", "params": {"eps": "8/255", "steps": 4}}],
        "defenses": [], "detectors": {"reference": {}, "squeeze": {"squeezers": ["bits:bits=5"], "folds": 3}},
    }


def _run(tmp_path: Path, cfg: dict) -> tuple[CliRunner, object]:
    path = tmp_path / "vendor.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = CliRunner().invoke(app, ["evaluate", str(path)])
    return result


CAPITALS = {"Normal": "NORMAL", "Pneumonia": "PNEUMONIA", "Pneumothorax": "PNEUMOTHORAX"}


@pytest.fixture(scope="module")
def vendor_run(vendor_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vendor-run")
    source = _folder(tmp / "images", CAPITALS)
    # the data's classes listed in another order than the model's: matching must go by name
    cfg = _config(tmp, source, vendor_model, classes=["PNEUMOTHORAX", "NORMAL", "PNEUMONIA"])
    result = _run(tmp, cfg)
    assert result.exit_code == 0, result.output
    return tmp / "runs" / "vendor", result.output, source


def test_classes_match_by_name_and_every_image_is_tested(vendor_run, vendor_model) -> None:
    from medrobust.data.sources import open_dataset
    from medrobust.models.loading import load_classifier

    run_dir, output, source = vendor_run
    m = read_metrics(run_dir)
    assert m.data["split"] == "test" and m.data["tested"] == 18 and m.baseline.n == 18
    assert "images tested" in output and "18" in output
    # the summary ends with the report as a link a terminal can open
    assert output.rstrip().splitlines()[-1] == f"report: {(run_dir / 'report.html').resolve().as_uri()}"
    # the truth, computed independently: predictions against the folder names, compared by name
    model = load_classifier(vendor_model)
    ds = open_dataset(str(source), size=SIZE, fractions=None)
    x, y, _ = ds.load()
    names_pred = [model.classes[i] for i in model.predict(x).tolist()]
    names_true = [ds.classes[i] for i in y.tolist()]
    truth = np.mean([p.lower() == t.lower() for p, t in zip(names_pred, names_true)])
    assert m.baseline.accuracy == pytest.approx(truth)
    assert truth > 0.5  # the model learnt something: a positional mismatch would show here
    assert m.data["class_map"] == {"PNEUMOTHORAX": "Pneumothorax", "NORMAL": "Normal", "PNEUMONIA": "Pneumonia"}


def test_flips_are_counted_against_the_normal_class_in_capitals(vendor_run) -> None:
    run_dir, _, _ = vendor_run
    m = read_metrics(run_dir)
    assert m.data["normal_class"] == "Normal"
    (pgd,) = m.attacks
    assert pgd.dangerous_flips is not None
    assert {f.true_class for f in pgd.dangerous_flips} == {"Pneumonia", "Pneumothorax"}
    assert [f.emergency for f in pgd.dangerous_flips] == [False, True]
    html = (run_dir / "report.html").read_text()
    assert "not assessed" not in html.split("<h2")[1]  # the summary section


def test_squeeze_detector_is_cross_fitted_on_test_only_data(vendor_run) -> None:
    run_dir, _, _ = vendor_run
    squeeze = next(d for d in read_metrics(run_dir).detectors if d.name == "squeeze")
    assert squeeze.calibration.startswith("3-fold cross-fitting over the 12 clean test images")
    assert squeeze.threshold["folds"] == 3
    assert "cross-fitting" in (run_dir / "report.html").read_text()


def test_per_image_lines_go_to_log_txt_not_the_terminal(vendor_run) -> None:
    run_dir, output, _ = vendor_run
    log = (run_dir / "log.txt").read_text()
    assert log.count("Attack Detected") + log.count("No Attack") >= 12
    assert "Attack Detected" not in output and "No Attack |" not in output
    assert (run_dir / "skipped.txt").read_text() == ""


def test_cross_fitting_never_judges_an_image_with_its_own_threshold() -> None:
    from medrobust.evaluation.stages.detection import cross_fit_folds

    folds = cross_fit_folds(17, 5, seed=0)
    assert sorted(np.concatenate(folds).tolist()) == list(range(17))
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    for i, a in enumerate(folds):
        for b in folds[i + 1:]:
            assert not set(a) & set(b)


@pytest.mark.parametrize("names, normal", [
    ({"Normal": "normal", "Pneumonia": "pneumonia", "Pneumothorax": "pneumothorax"}, "Normal"),
])
def test_lower_case_folders_match(vendor_model, tmp_path, names, normal) -> None:
    source = _folder(tmp_path / "images", names, per_class=3)
    cfg = ExperimentConfig.model_validate(_config(tmp_path, source, vendor_model, ))
    cfg.detectors.squeeze.enabled = False
    m = run_experiment(cfg)
    assert m.data["normal_class"] == normal and m.baseline.n == 9


def test_a_model_without_a_normal_class_says_flips_are_not_assessed(tmp_path) -> None:
    """A model whose classes have no normal one: no "none", no "no image" — "not assessed"."""
    from medrobust.models.checkpoint import save_checkpoint
    from medrobust.models.zoo import build_classifier

    torch.manual_seed(0)
    model = save_checkpoint(build_classifier("small-cnn", ["Effusion", "Pneumonia", "Pneumothorax"], SIZE),
                            tmp_path / "model")
    source = _folder(tmp_path / "images", {"Normal": "Effusion", "Pneumonia": "Pneumonia",
                                           "Pneumothorax": "Pneumothorax"}, per_class=3)
    cfg = _config(tmp_path, source, model)
    cfg["detectors"] = {"squeeze": {"enabled": False}, "reference": {"enabled": False}}
    result = _run(tmp_path, cfg)
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "vendor"
    m = read_metrics(run_dir)
    assert m.attacks[0].dangerous_flips is None and m.data["normal_class"] is None
    sentence = "dangerous flips not assessed: no class is named as normal (set data.normal_class)"
    assert sentence in result.output
    html = (run_dir / "report.html").read_text()
    assert sentence in html and "No image with a finding" not in html

    # naming the normal class explicitly turns the assessment on (report settings only: the run resumes)
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "vendor.yaml"), "--normal-class", "effusion"])
    assert result.exit_code == 0, result.output
    m = read_metrics(run_dir)
    assert m.data["normal_class"] == "Effusion" and m.attacks[0].dangerous_flips is not None
    assert sentence not in (run_dir / "report.html").read_text()


def test_misspelled_folders_are_refused_before_anything_is_written(vendor_model, tmp_path) -> None:
    source = _folder(tmp_path / "images", {"Normal": "NORMAL", "Pneumonia": "PNEUMONA", "Pneumothorax": "PNEUMOTHORAX"},
                     per_class=2)
    result = _run(tmp_path, _config(tmp_path, source, vendor_model))
    assert result.exit_code == 2
    assert "['PNEUMONA'] are not model classes" in result.output and "class_map" in result.output
    assert not (tmp_path / "runs").exists()


def test_a_missing_model_class_needs_an_explicit_map(vendor_model, tmp_path) -> None:
    source = _folder(tmp_path / "images", {"Normal": "NORMAL", "Pneumonia": "PNEU"}, per_class=3)
    result = _run(tmp_path, _config(tmp_path, source, vendor_model))
    assert result.exit_code == 2 and "are not model classes" in result.output
    source_ok = _folder(tmp_path / "images2", {"Normal": "NORMAL", "Pneumonia": "PNEUMONIA"}, per_class=3)
    result = _run(tmp_path, _config(tmp_path, source_ok, vendor_model))
    assert result.exit_code == 2 and "['Pneumothorax'] have no data" in result.output
    # a 3-class model on 2-class data, mapped explicitly
    cfg = _config(tmp_path, source, vendor_model, class_map={"PNEU": "Pneumonia"})
    cfg["detectors"] = {"reference": {}}
    result = _run(tmp_path, cfg)
    assert result.exit_code == 0, result.output
    m = read_metrics(tmp_path / "runs" / "vendor")
    assert m.data["classes_without_images"] == ["Pneumothorax"]
    assert m.baseline.per_class["Pneumothorax"].recall is None
    assert "is not assessed" in (tmp_path / "runs" / "vendor" / "report.html").read_text()


def test_training_with_split_test_and_no_training_folder_names_the_fix(tmp_path) -> None:
    cfg = {"data": {"split": "test"}, "model": {"train": {"arch": "small-cnn"}}}
    with pytest.raises(ValueError, match="train.data"):
        ExperimentConfig.model_validate(cfg)
    cfg = {"model": {"load": {"path": "m.pt", "classes": ["a", "b"]}},
           "surrogates": [{"name": "s", "train": {"arch": "small-cnn"}}], "data": {"split": "test"}}
    with pytest.raises(ValueError, match=r"surrogates\[s\].*train.data"):
        ExperimentConfig.model_validate(cfg)
    # loaded model, nothing to train: every image is tested by default
    loaded = ExperimentConfig.model_validate({"model": {"load": {"path": "m.pt", "classes": ["a", "b"]}}})
    assert loaded.data.split == "test"
    assert ExperimentConfig().data.split == (0.6, 0.2, 0.2)


@pytest.mark.parametrize("name", ["../../x", "/tmp/abs", "a/b", "..", "x y"])
def test_run_names_are_one_safe_folder_name(name) -> None:
    with pytest.raises(ValueError, match="one folder name"):
        ExperimentConfig.model_validate({"name": name})


def test_bad_component_is_refused_before_any_file_and_the_corrected_config_runs(vendor_model, tmp_path) -> None:
    source = _folder(tmp_path / "images", CAPITALS, per_class=2)
    cfg = _config(tmp_path, source, vendor_model)
    cfg["attacks"] = [{"name": "pgd", "params": {"eps": "8/255", "stepz": 3}}]
    result = _run(tmp_path, cfg)
    assert result.exit_code == 2 and "stepz" in result.output
    assert not (tmp_path / "runs").exists()
    cfg["attacks"] = [{"name": "pgd", "params": {"eps": "300/255"}}]
    result = _run(tmp_path, cfg)
    assert result.exit_code == 2 and "64/255" in result.output and "allow_large_eps" in result.output
    assert not (tmp_path / "runs").exists()


def test_an_unfinished_run_folder_is_taken_over_and_restart_starts_afresh(vendor_model, tmp_path) -> None:
    source = _folder(tmp_path / "images", CAPITALS, per_class=2)
    cfg = ExperimentConfig.model_validate(_config(tmp_path, source, vendor_model))
    claim_run_folder(cfg, "sha256:a")  # a folder claimed, nothing finished
    changed = cfg.model_copy(update={"attack_images": 6})
    folder = claim_run_folder(changed, "sha256:a")
    assert any("took it over" in n for n in folder.notes)
    (changed.run_dir / "metrics.json").write_text("{}")  # now it holds a finished result
    with pytest.raises(RunFolderConflict, match=r"attack_images differ\): start afresh with restart=True"):
        claim_run_folder(cfg, "sha256:a")
    claim_run_folder(cfg, "sha256:a", restart=True)
    assert not (cfg.run_dir / "metrics.json").exists()


def test_config_files_are_untrusted(tmp_path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("a: &a [x, x]\nb: &b [*a, *a]\nattacks: [{name: sia, params: {p: *b}}]\n")
    with pytest.raises(ValueError, match="anchor|alias"):
        load_config(bomb)


def test_metrics_with_undefined_rates_read_back_and_report(tmp_path) -> None:
    """No image classified correctly: the success rate over correct images is undefined — stored as
    null, read back, and shown as "not defined"; metrics.json is strict JSON; `report` works."""
    from medrobust.models.checkpoint import save_checkpoint
    from medrobust.models.zoo import build_classifier

    net = build_classifier("small-cnn", ["Effusion", "Pneumonia", "Pneumothorax"], SIZE)
    last = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():  # a model that always answers Effusion, a class the data has no image of
        last.weight.zero_()
        last.bias.copy_(torch.tensor([10.0, 0.0, 0.0]))
    model = save_checkpoint(net, tmp_path / "model")
    source = _folder(tmp_path / "images", {"Pneumonia": "Pneumonia", "Pneumothorax": "Pneumothorax"}, per_class=3)
    cfg = _config(tmp_path, source, model, class_map={"Pneumonia": "Pneumonia"})
    cfg["detectors"] = {"reference": {}}
    result = _run(tmp_path, cfg)
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "vendor"
    text = (run_dir / "metrics.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    m = read_metrics(run_dir)
    (pgd,) = m.attacks
    assert pgd.n_correct_before == 0 and pgd.success_rate_correct is None and m.baseline.accuracy == 0.0
    assert m.data["normal_class"] is None  # Effusion is not normal: flips not assessed
    html = (run_dir / "report.html").read_text()
    assert "not defined (0 correctly classified images)" in html
    result = CliRunner().invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output


def test_odd_files_are_skipped_listed_and_the_run_is_partial(vendor_model, tmp_path) -> None:
    """A non-UTF-8 file name among the tested images, an unreadable file and a self-referencing
    link: the run finishes, ids round-trip through JSON, the summary says the result is partial
    (exit 3), skipped.txt lists both bad entries, no per-image line floods the terminal."""
    import os

    source = _folder(tmp_path / "images", CAPITALS, per_class=2)
    pneumonia = source / "PNEUMONIA"
    good = sorted(pneumonia.iterdir())[0].read_bytes()
    with open(os.path.join(os.fsencode(pneumonia), b"bad\xff.png"), "wb") as fh:
        fh.write(good)
    (pneumonia / "truncated.png").write_bytes(good[:40])
    (pneumonia / "loop.png").symlink_to("loop.png")
    cfg = _config(tmp_path, source, vendor_model)
    result = _run(tmp_path, cfg)
    assert result.exit_code == 3, result.output
    run_dir = tmp_path / "runs" / "vendor"
    skipped = (run_dir / "skipped.txt").read_text().splitlines()
    assert len(skipped) == 2 and any("truncated.png" in s for s in skipped) and any("loop.png" in s for s in skipped)
    assert "2 files skipped" in result.output and "partial" in result.output
    assert "skipping" not in result.output  # per-image lines only in log.txt
    assert "loop.png" in (run_dir / "log.txt").read_text()
    m = read_metrics(run_dir)
    assert m.data["tested"] == 7  # 6 phantoms + the file with the undecodable name
    ids = json.loads((run_dir / "metrics.json").read_text())["data"]["skipped"]
    assert ids == m.data["skipped"]


def test_squeeze_calibrated_on_a_separate_clean_folder(vendor_model, tmp_path) -> None:
    source = _folder(tmp_path / "images", CAPITALS, per_class=2)
    clean = _folder(tmp_path / "clean", CAPITALS, per_class=4, seed=77)
    cfg = ExperimentConfig.model_validate(_config(tmp_path, source, vendor_model))
    cfg.detectors.squeeze.calibration = str(clean)
    cfg.detectors.reference.enabled = False
    m = run_experiment(cfg)
    (squeeze,) = m.detectors
    assert squeeze.calibration.startswith(f"12 clean images in {clean}")
    assert "folds" not in squeeze.threshold


def test_budgets_above_16_grey_levels_are_marked_visible() -> None:
    from medrobust.report.tables import eps_text

    assert eps_text(8 / 255) == "8/255" and eps_text(32 / 255) == "32/255 (visible)"


def test_a_surrogate_trains_on_its_own_folder_when_every_image_is_tested(vendor_model, tmp_path) -> None:
    source = _folder(tmp_path / "images", CAPITALS, per_class=2)
    training = _folder(tmp_path / "train", {"Normal": "normal", "Pneumonia": "pneumonia",
                                            "Pneumothorax": "pneumothorax"}, per_class=5, seed=31)
    raw = _config(tmp_path, source, vendor_model)
    raw["surrogates"] = [{"name": "sur", "train": {"arch": "small-cnn", "epochs": 1, "data": str(training)}}]
    raw["detectors"] = {"squeeze": {"enabled": False}, "reference": {"enabled": False}}
    cfg = ExperimentConfig.model_validate(raw)
    assert cfg.data.split == "test"
    m = run_experiment(cfg)
    assert m.data["tested"] == 6 and [a.key for a in m.attacks] == ["pgd@8/255", "pgd@8/255 from sur"]
    meta = json.loads((cfg.run_dir / "surrogates" / "sur" / "model.json").read_text())
    assert meta["training"]["data"] == str(training)


def test_a_run_folder_is_not_resumed_on_changed_images(vendor_model, tmp_path) -> None:
    """The same configuration over a folder whose images were replaced, edited, added or removed
    is refused (never the old stages' numbers for images no longer there); restart recomputes."""
    source = _folder(tmp_path / "images", CAPITALS, per_class=2)
    cfg = _config(tmp_path, source, vendor_model)
    cfg["detectors"] = {"reference": {"enabled": False}, "squeeze": {"enabled": False}}
    assert _run(tmp_path, cfg).exit_code == 0
    assert _run(tmp_path, cfg).exit_code == 0  # unchanged: resumed
    victim = sorted((source / "NORMAL").iterdir())[0]
    victim.write_bytes(sorted((source / "PNEUMONIA").iterdir())[0].read_bytes())  # replaced by another image
    result = _run(tmp_path, cfg)
    assert result.exit_code == 2
    assert "the images changed since this run folder was written" in result.output
    assert "--restart" in result.output
    path = tmp_path / "vendor.yaml"
    result = CliRunner().invoke(app, ["evaluate", str(path), "--restart"])
    assert result.exit_code == 0, result.output
    (source / "NORMAL" / "extra.png").write_bytes(victim.read_bytes())  # an image added
    assert "images changed" in _run(tmp_path, cfg).output


def test_only_the_configured_detectors_run(vendor_model, tmp_path) -> None:
    """``detectors: {reference: {}}`` runs the reference detector alone; the scorecard says the
    squeeze detector was not tested because it was not configured."""
    from medrobust.evaluation.scorecard import read_scorecard

    source = _folder(tmp_path / "images", CAPITALS, per_class=2)
    cfg = _config(tmp_path, source, vendor_model)
    cfg["detectors"] = {"reference": {}}
    result = _run(tmp_path, cfg)
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "vendor"
    assert [d.name for d in read_metrics(run_dir).detectors] == ["reference"]
    assert "detector squeeze" not in result.output
    not_tested = read_scorecard(run_dir).not_tested
    assert "the reference-free squeeze detector: not tested (not configured)" in not_tested
    assert not any("reference detector" in line for line in not_tested)


def test_the_data_size_follows_the_model_and_a_set_mismatch_is_said(vendor_model, tmp_path) -> None:
    """A configuration without data.size reads the images at the model's input size (it used to
    read them at 64 px whatever the model took); a size the user set that differs is stated."""
    source = _folder(tmp_path / "images", CAPITALS, per_class=2)
    cfg = _config(tmp_path, source, vendor_model)
    cfg["detectors"] = {}
    del cfg["data"]["size"]
    assert _run(tmp_path, cfg).exit_code == 0
    run_dir = tmp_path / "runs" / "vendor"
    m = read_metrics(run_dir)
    assert m.data["size"] == SIZE and m.config["data"]["size"] == SIZE
    assert not any("resized by the model" in n for n in m.data["notes"])
    cfg["data"]["size"] = 48
    cfg["name"] = "vendor-48"
    result = _run(tmp_path, cfg)
    assert result.exit_code == 0, result.output
    notes = read_metrics(tmp_path / "runs" / "vendor-48").data["notes"]
    assert any(f"read at 48 x 48 px (data.size) and resized by the model to its input size {SIZE} x {SIZE}" in n
               for n in notes)
