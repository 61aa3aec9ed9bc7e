"""``medrobust attack`` and ``medrobust evaluate`` give the same predictions and the same attack
success on the same images, model and seed, for a softmax model and for a binary single-logit
model whose threshold is not 0.5 (where an argmax of probabilities and the model's own
decision rule disagree)."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

import medrobust as mr
from medrobust.cli import app
from medrobust.models.checkpoint import save_checkpoint
from medrobust.models.zoo import build_classifier

runner = CliRunner()
BATCH = 8
SEED = 3


def _binary_model_with_a_threshold_that_matters(images: Path) -> torch.nn.Module:
    """A binary (single-logit) model whose threshold is the median positive probability on the
    images, so about half the decisions differ from an argmax of [1 - p, p]."""
    torch.manual_seed(4)
    model = build_classifier("small-cnn", ["Normal", "Pneumonia"], 32, output_kind="binary")
    x, _, _ = mr.open_images(images).load()
    p = model.predict_proba(x)[:, 1]
    threshold = float(p.median())
    model.contract = dataclasses.replace(model.contract, threshold=threshold)
    decided, argmax = model.predict(x), model.predict_proba(x).argmax(1)
    assert (decided != argmax).any(), "the threshold must change some decisions for this test to mean anything"
    return model


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("agree") / "images"
    mr.write_phantoms(root, per_class=6, size=32, seed=8)
    return root


def _two_class_folder(data: Path, root: Path) -> Path:
    for cls in ("Normal", "Pneumonia"):
        for f in (data / cls).glob("*.png"):
            (root / cls).mkdir(parents=True, exist_ok=True)
            (root / cls / f.name).write_bytes(f.read_bytes())
    return root


@pytest.mark.parametrize("kind", ["softmax", "binary"])
def test_attack_and_evaluate_agree(kind, data, tmp_path, trained_small_cnn) -> None:
    if kind == "softmax":
        folder, model = data, trained_small_cnn
    else:
        folder = _two_class_folder(data, tmp_path / "two")
        model = _binary_model_with_a_threshold_that_matters(folder)
    checkpoint = save_checkpoint(model, tmp_path / "model")

    out = tmp_path / "attack"
    result = runner.invoke(app, ["attack", "--model", str(checkpoint), "--data", str(folder), "--split", "all",
                                 "--attack", "pgd", "--eps", "8/255", "--param", "steps=5", "--batch-size", str(BATCH),
                                 "--seed", str(SEED), "--out", str(out)])
    assert result.exit_code == 0, result.output
    with open(out / "attack.csv", newline="") as fh:
        rows = {r["id"]: r for r in csv.DictReader(fh)}
    summary = json.loads((out / "summary.json").read_text())

    n = len(rows)
    config = {
        "name": "agree", "output_dir": str(tmp_path / "runs"), "seed": SEED, "batch_size": BATCH,
        "attack_images": n, "data": {"source": str(folder), "size": 32},
        "model": {"load": {"path": str(checkpoint)}},
        "attacks": [{"name": "pgd", "params": {"eps": "8/255", "steps": 5}, "transfer": False}],
        "defenses": [], "detectors": {"reference": {"enabled": False}, "squeeze": {"enabled": False}},
    }
    (tmp_path / "agree.yaml").write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["evaluate", str(tmp_path / "agree.yaml")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "runs" / "agree" / "metrics.json").read_text())
    (outcome,) = metrics["attacks"]

    assert metrics["data"]["tested"] == n == metrics["data"]["attack_images"]
    assert outcome["success_rate_all"] == pytest.approx(summary["success_rate_all"])
    assert outcome["success_rate_correct"] == pytest.approx(summary["success_rate_correct"])
    assert outcome["adversarial"]["accuracy"] == pytest.approx(summary["adversarial_accuracy"])
    assert outcome["clean"]["accuracy"] == pytest.approx(summary["clean_accuracy"])

    # image by image: the runner's stored predictions are the attack command's
    classes = metrics["data"]["classes"]
    baseline_files = sorted((tmp_path / "runs" / "agree" / "stages" / "baseline").glob("batch-*.npz"))
    baseline = np.concatenate([np.load(p)["pred"] for p in baseline_files])
    stage = sorted((tmp_path / "runs" / "agree" / "stages" / "attacks").glob("*/batch-*.npz"))
    pred_adv = np.concatenate([np.load(p)["pred"] for p in stage])
    ids = list(rows)  # attack.csv lists the images in the data's order, as the runner reads them
    assert [classes[i] for i in baseline] == [rows[i]["pred_clean"] for i in ids]
    assert [classes[i] for i in pred_adv] == [rows[i]["pred_adv"] for i in ids]
