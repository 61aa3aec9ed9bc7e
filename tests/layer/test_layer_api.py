"""The public layer on inputs a Python user hands it: modules and tensors held in memory,
folders with and without class folders, a plain nn.Module."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import medrobust as mr
from medrobust.evaluation.run_folder import RunFolderConflict

CLASSES = ["Normal", "Pneumonia", "Pneumothorax"]


def test_a_folder_without_class_folders_is_unlabelled_and_one_with_them_is_labelled(tmp_path) -> None:
    mr.write_phantoms(tmp_path / "tree", per_class=2, size=32, seed=1)
    tree = mr.open_images(tmp_path / "tree")
    assert tree.labelled and tree.classes == CLASSES and len(tree) == 6
    assert sorted(tree.ids)[0].startswith("Normal/")
    flat = mr.open_images(tmp_path / "tree" / "Normal")
    assert not flat.labelled and len(flat) == 2 and all("/" not in i for i in flat.ids)
    with pytest.raises(ValueError, match="true class"):
        mr.attack(_linear(), tmp_path / "tree" / "Normal", "fgsm")


def _linear(size: int = 32, k: int = 3):
    torch.manual_seed(0)
    return mr.load_model(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(size * size, k)),
                         classes=CLASSES[:k], network_channels=1)


def test_tensors_need_their_classes_and_the_unit_range() -> None:
    x = torch.rand(4, 1, 8, 8)
    with pytest.raises(ValueError, match="classes"):
        mr.open_images(x, labels=torch.tensor([0, 1, 0, 1]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mr.open_images(x * 255, labels=torch.tensor([0, 1, 0, 1]), classes=["a", "b"])
    images = mr.open_images((x, torch.tensor([0, 1, 0, 1])), classes=["a", "b"])
    loaded, labels, _ = images.load()
    assert torch.equal(loaded, torch.round(x * 255) / 255) and labels.tolist() == [0, 1, 0, 1]  # the 8-bit grid


def test_attack_in_memory_is_within_budget_on_the_grid_and_scores_what_it_returns() -> None:
    model = _linear(16)
    x, y = torch.rand(6, 1, 16, 16), torch.tensor([0, 1, 2, 0, 1, 2])
    result = mr.attack(model, mr.open_images(x, labels=y, classes=CLASSES), "pgd:eps=4/255,steps=5", batch_size=4)
    x_adv = result.adversarial
    x_grid = torch.round(x * 255) / 255
    assert float((x_adv - x_grid).abs().max()) <= 4 / 255 + 1e-6
    assert torch.equal(torch.round(x_adv * 255) / 255, x_adv)
    assert np.array_equal(result.pred_adv, model.predict(x_adv).numpy())
    assert result.success.n_images == 6 and result.normal_class == "Normal"
    again = mr.attack(model, mr.open_images(x, labels=y, classes=CLASSES), "pgd:eps=4/255,steps=5", batch_size=4)
    assert torch.equal(again.adversarial, x_adv)  # the same seed, the same images


def test_evaluate_an_in_memory_model_on_tensors_and_refuse_other_tensors_in_the_same_folder(tmp_path) -> None:
    from medrobust.models import build_classifier

    torch.manual_seed(0)
    net = build_classifier("small-cnn", CLASSES, 32)
    x, y = torch.rand(9, 1, 32, 32), torch.tensor([0, 1, 2] * 3)
    settings = {"attacks": [{"name": "fgsm", "params": {"eps": "4/255"}}], "defenses": [],
                "detectors": {"reference": {"enabled": False}, "squeeze": {"enabled": False}},
                "attack_images": 9, "data": {"size": 32}}
    metrics = mr.evaluate(net, (x, y), settings, run_dir=tmp_path / "run")
    assert metrics.data["tested"] == 9 and metrics.data["source"].startswith("(in memory) sha256:")
    assert metrics.attacks[0].key == "fgsm@4/255"
    with pytest.raises(RunFolderConflict):  # other images: not mixed with the finished stages
        mr.evaluate(net, (torch.rand(9, 1, 32, 32), y), settings, run_dir=tmp_path / "run")


def test_a_configuration_file_beside_a_model_file_tests_every_image_as_its_mapping_does(tmp_path) -> None:
    """A YAML file without data or model sections, given with a saved model and a folder: every
    image is a test image, as with the same settings passed as a mapping (validated alone, the
    file once resolved the split for a model it would train, and tested 6 of the 36 images)."""
    import yaml

    from medrobust.models import build_classifier, save_checkpoint

    torch.manual_seed(0)
    checkpoint = save_checkpoint(build_classifier("small-cnn", CLASSES, 32), tmp_path / "model")
    mr.write_phantoms(tmp_path / "images", per_class=12, size=32, seed=5)
    settings = {"attacks": [{"name": "fgsm", "params": {"eps": "4/255"}}], "defenses": [],
                "detectors": {"reference": {"enabled": False}, "squeeze": {"enabled": False}}}
    config = tmp_path / "settings.yaml"
    config.write_text(yaml.safe_dump(settings))
    from_file = mr.evaluate(checkpoint, tmp_path / "images", config, run_dir=tmp_path / "file")
    from_mapping = mr.evaluate(checkpoint, tmp_path / "images", settings, run_dir=tmp_path / "mapping")
    assert from_file.data["tested"] == from_mapping.data["tested"] == 36
    assert from_file.baseline.accuracy == from_mapping.baseline.accuracy
    config.write_text(yaml.safe_dump({**settings, "attack_imagez": 3}))
    with pytest.raises(ValueError, match=r"settings\.yaml[\s\S]*attack_imagez"):
        mr.evaluate(checkpoint, tmp_path / "images", config, run_dir=tmp_path / "bad")


def test_defend_a_tensor_and_a_folder_keeping_the_layout(tmp_path) -> None:
    x = torch.rand(3, 1, 24, 24)
    assert mr.defend(x, "bits:bits=3").shape == x.shape
    mr.write_phantoms(tmp_path / "in", per_class=1, size=32, seed=2)
    done = mr.defend(tmp_path / "in", "jpeg", out=tmp_path / "out")
    assert sorted(done.files) == ["Normal/phantom-000000.png", "Pneumonia/phantom-000001.png",
                                  "Pneumothorax/phantom-000002.png"]
    assert all((tmp_path / "out" / f).is_file() for f in done.files)


def test_detect_with_a_calibrated_squeeze_detector_in_memory() -> None:
    model = _linear(16)
    clean = torch.rand(20, 1, 16, 16)
    detection = mr.detect(model, torch.rand(5, 1, 16, 16), detector="squeeze", calibration=clean, fpr=0.1)
    assert len(detection.result) == 5 and detection.detector["calibration"]["n_clean"] == 20
    with pytest.raises(ValueError, match="clean images"):
        mr.detect(model, clean, detector="squeeze")
