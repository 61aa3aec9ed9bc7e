"""A model whose output is NaN or infinite for some images: never a prediction.

An argmax of NaN is index 0, so such images used to be counted as the first class ("Normal")
with nothing skipped. Now each is listed as not tested, the run is partial (exit 3), detectors
see its adversarial versions as suspicious rather than failing on NaN scores, and a model that
answers NaN for most images stops the run early with one line naming it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml
from typer.testing import CliRunner

from medrobust.cli import app
from medrobust.data.class_names import NO_ANSWER
from medrobust.data.io import write_png
from medrobust.data.phantom import PhantomDataset
from medrobust.evaluation.classification import classification_report
from medrobust.evaluation.results import read_metrics

SIZE = 32
CLASSES = ["Normal", "Pneumonia", "Pneumothorax"]


class SometimesNaN(nn.Module):
    """A linear model that answers NaN for images brighter than ``cut`` on average (all: cut < 0)."""

    def __init__(self, cut: float) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(SIZE * SIZE, 3)
        self.cut = cut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.linear(x.mean(1).flatten(1))
        bright = x.mean(dim=(1, 2, 3)) > self.cut
        return torch.where(bright.unsqueeze(1), torch.full_like(logits, float("nan")), logits)


def _images(root: Path) -> tuple[Path, np.ndarray]:
    ds = PhantomDataset(per_class=6, size=SIZE, seed=5, fractions=None)
    means = []
    for image, label, item_id in ds.iter_valid():
        write_png(root / CLASSES[label] / f"{item_id}.png", image)
        means.append(float(np.round(image.numpy() * 255).mean() / 255))
    return root, np.array(means)


def _run(tmp_path: Path, cut: float) -> tuple[object, Path]:
    source, _ = _images(tmp_path / "images")
    model = torch.jit.script(SometimesNaN(cut))
    model_path = tmp_path / "nan-model.pt"
    model.save(str(model_path))
    cfg = {"name": "nan", "output_dir": str(tmp_path / "runs"), "device": "cpu", "batch_size": 8,
           "attack_images": 6, "sample_images": 2, "data": {"source": str(source), "size": SIZE},
           "model": {"load": {"path": str(model_path), "classes": CLASSES, "input_size": SIZE, "intensity": "unit"}},
           "attacks": [{"name": "pgd", "params": {"eps": "8/255", "steps": 2}}], "defenses": [],
           "detectors": {"reference": {}, "squeeze": {"squeezers": ["bits:bits=5"], "folds": 2,
                                                      "calibration_images": 10}}}
    path = tmp_path / "nan.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return CliRunner().invoke(app, ["evaluate", str(path)]), tmp_path / "runs" / "nan"


def test_images_without_a_finite_output_are_listed_and_the_run_is_partial(tmp_path) -> None:
    _, means = _images(tmp_path / "probe")
    ordered = np.sort(means)
    cut = float(ordered[-5] + ordered[-4]) / 2  # the 4 brightest of 18 images answer NaN
    result, run_dir = _run(tmp_path, cut)
    assert result.exit_code == 3, result.output
    m = read_metrics(run_dir)
    assert m.baseline.n == 14 and m.data["tested"] == 14
    not_finite = [s for s in m.data["skipped"] if "output for this image is not finite" in s]
    assert len(not_finite) == 4
    assert "partial" in result.output
    # no image was silently counted as the first class: the clean predictions are all real answers
    assert sum(map(sum, m.baseline.confusion_matrix)) == 14


def test_a_model_that_answers_nan_for_most_images_stops_with_one_line(tmp_path) -> None:
    result, run_dir = _run(tmp_path, cut=-1.0)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    message = " ".join(lines)
    assert "nan-model.pt" in message and "not a finite number" in message and "18 of the first 18" in message
    assert "Traceback" not in result.output
    assert not (run_dir / "metrics.json").exists()


def test_no_answer_is_wrong_and_in_no_column() -> None:
    y = np.array([0, 1, 2, 2])
    pred = np.array([0, NO_ANSWER, 2, NO_ANSWER])
    r = classification_report(y, pred, CLASSES)
    assert r.n == 4 and r.accuracy == 0.5 and r.no_answer == 2
    assert r.confusion_matrix == [[1, 0, 0], [0, 0, 0], [0, 0, 1]]
    assert r.per_class["Pneumonia"].recall == 0.0 and r.per_class["Pneumothorax"].recall == 0.5
    assert r.per_class["Pneumothorax"].support == 2


def test_decisions_of_non_finite_logits_are_no_answer() -> None:
    from medrobust.models.output_kind import OutputKind

    logits = torch.tensor([[0.1, 2.0, 0.3], [float("nan"), 0.0, 0.0], [float("inf"), 0.0, 0.0]])
    assert OutputKind.SOFTMAX.decide(logits).tolist() == [1, NO_ANSWER, NO_ANSWER]
    assert OutputKind.BINARY.decide(torch.tensor([[3.0], [float("nan")]])).tolist() == [1, NO_ANSWER]
    multi = OutputKind.MULTILABEL.decide(torch.tensor([[3.0, -3.0], [float("nan"), 1.0]]))
    assert multi.tolist() == [[1, 0], [NO_ANSWER, NO_ANSWER]]


def test_detector_scores_of_a_non_finite_output_are_the_most_suspicious() -> None:
    from medrobust.detection.metrics import roc_auc

    assert roc_auc(np.array([0.1, 0.2]), np.array([np.inf, 0.15])) == pytest.approx(0.75)
