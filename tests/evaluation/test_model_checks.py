"""AutoAttack's checks of a model (Croce & Hein 2020, sec. 5) on every white-box row: a random
forward pass switches the gradient attacks to EOT, probabilities as output get their logits
recovered, zero gradients and a query attack beating the gradient ones are flagged — in the
metrics, on the scorecard's white-box row, in one wording."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import medrobust as mr
from medrobust.evaluation import evaluation_checks as wording
from medrobust.evaluation.scorecard import read_scorecard
from medrobust.evaluation.stages.model_checks import EOT_SAMPLES

CLASSES = ["Normal", "Pneumonia", "Pneumothorax"]
DATA = "phantom:seed=7,per_class=8"
SETTINGS = {
    "attacks": [{"name": "pgd", "params": {"eps": "8/255", "steps": 10}},
                {"name": "square", "params": {"eps": "8/255", "queries": 300}}],
    "defenses": [], "adaptive": {"enabled": False}, "attack_images": 24, "data": {"size": 32},
}


class _Wrapped(nn.Module):
    """A vendor's export of the conftest's small CNN: ``how`` says what the export adds."""

    def __init__(self, inner: nn.Module, how: str) -> None:
        super().__init__()
        self.inner, self.how = inner, how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.how == "rounded":  # the 8-bit quantisation of its pre-processing, kept in the graph: zero gradients
            x = torch.round(x * 255) / 255
        if self.how == "noisy":  # a random input transformation in the forward pass
            x = (x + 0.03 * torch.randn_like(x)).clamp(0, 1)
        logits = self.inner(x)
        return logits.softmax(1) if self.how == "softmax" else logits


def _evaluate(model: nn.Module, how: str, root, **contract):
    vendor = mr.load_model(_Wrapped(model, how), classes=CLASSES, network_channels=1, input_size=32, **contract)
    return mr.evaluate(vendor, DATA, SETTINGS, run_dir=root / how)


@pytest.fixture(scope="module")
def bare(tmp_path_factory, trained_small_cnn):
    root = tmp_path_factory.mktemp("checks")
    return root, _evaluate(trained_small_cnn, "bare", root)


def test_a_plain_model_raises_no_flag(bare) -> None:
    _, metrics = bare
    checks = metrics.model_checks
    assert checks.n_images == 24 and not checks.randomised and checks.eot_samples == 1
    assert checks.probabilities is None and checks.zero_gradient_images == 0 and checks.flags == []


def test_zero_gradients_and_square_beating_pgd_are_flagged_on_the_white_box_row(bare, trained_small_cnn) -> None:
    root, plain = bare
    metrics = _evaluate(trained_small_cnn, "rounded", root)
    checks = metrics.model_checks
    assert checks.zero_gradient_images == 24  # torch.round passes no gradient
    assert metrics.attack("pgd@8/255").adversarial.accuracy > plain.attack("pgd@8/255").adversarial.accuracy
    beaten = checks.query_beats_gradients["8/255"]
    assert beaten >= 1
    assert wording.zero_gradients(24, 24) in checks.flags
    assert wording.query_beats_gradients(beaten, "8/255", "the query attack (Square)") in checks.flags
    row = read_scorecard(root / "rounded").row("white-box")
    assert row.warning and wording.WHITE_BOX_UNDERESTIMATED in row.warning and "zero for 24 of 24" in row.warning


def test_a_random_forward_pass_switches_the_gradient_attacks_to_eot(bare, trained_small_cnn) -> None:
    root, _ = bare
    checks = _evaluate(trained_small_cnn, "noisy", root).model_checks
    assert checks.randomised and checks.eot_samples == EOT_SAMPLES
    assert wording.randomised(EOT_SAMPLES) in checks.flags


def test_probabilities_get_their_logits_recovered(bare, trained_small_cnn) -> None:
    root, plain = bare
    metrics = _evaluate(trained_small_cnn, "softmax", root, output_kind="softmax")
    assert metrics.model_checks.probabilities == "softmax"
    assert wording.probabilities(dlr=False) in metrics.model_checks.flags
    # cross-entropy on log p is the cross-entropy on the logits: PGD does as well as on the bare model
    assert metrics.attack("pgd@8/255").adversarial.accuracy == pytest.approx(plain.attack("pgd@8/255").adversarial.accuracy,
                                                                            abs=1 / 24)
