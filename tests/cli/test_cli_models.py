"""`medrobust models`, `train` and `predict` end to end on tiny data."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from medrobust.cli import app
from medrobust.data.io import write_png
from medrobust.data.phantom import generate_phantom

runner = CliRunner()


def test_models_lists_the_zoo_with_parameter_counts() -> None:
    result = runner.invoke(app, ["models", "dense*"])
    assert result.exit_code == 0, result.output
    assert "densenet121" in result.stdout and "7,217,027" in result.stdout and "7,300,675" in result.stdout


def test_train_then_predict(tmp_path) -> None:
    out = tmp_path / "model"
    result = runner.invoke(app, ["train", "--data", "phantom", "--per-class", "20", "--arch", "small-cnn",
                                 "--size", "32", "--epochs", "2", "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "model.json").read_text())
    assert meta["arch"] == "small-cnn" and len(meta["history"]) == 2
    assert 0.0 <= meta["metrics"]["test_accuracy"] <= 1.0
    assert "test accuracy" in result.stdout

    images = tmp_path / "images"
    for label in range(3):
        write_png(images / f"{label}.png", generate_phantom(label, 48, seed=label)[0])
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n-truncated")
    result = runner.invoke(app, ["predict", "--model", str(out), str(images), "--json"])
    assert result.exit_code == 3, result.output  # partial: one unreadable file
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 3
    for line in lines:
        assert line["class"] in ("Normal", "Pneumonia", "Pneumothorax")
        assert 1 / 3 <= line["confidence"] <= 1.0
    assert "broken.png" in result.stderr and "broken.png" not in result.stdout  # stdout: JSON lines only


def test_predict_refuses_an_untrusted_pickle(tmp_path) -> None:
    import torch

    path = tmp_path / "model.pt"
    torch.save({"not": np.array([1])}, path)  # a pickle that is not a state dict of tensors
    result = runner.invoke(app, ["predict", "--model", str(path), "--classes", "a,b,c", "--intensity", "unit",
                                 str(tmp_path)])
    assert result.exit_code == 2
    assert "error:" in result.stderr and "--trust-pickle" in result.stderr


def test_train_with_adversarial_examples_records_the_attack(tmp_path) -> None:
    out = tmp_path / "robust"
    result = runner.invoke(app, ["train", "--data", "phantom", "--per-class", "10", "--arch", "small-cnn",
                                 "--size", "32", "--epochs", "1", "--adversarial", "pgd:eps=4/255,steps=2",
                                 "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "adversarial training" in result.stdout
    meta = json.loads((out / "model.json").read_text())
    assert meta["training"]["adversarial"] == "pgd:eps=4/255,steps=2"
