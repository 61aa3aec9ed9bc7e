"""The study's detector on hand-made pairs: each condition fires alone, none fires on
identical images, the score crosses 1 exactly when flagged, and the log line is the study's."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from medrobust.data.similarity import mean_abs_difference, ssim
from medrobust.detection.reference import REASONS, ReferenceDetector, ReferenceRequiredError, study_log_line

SLOPE = 300.0  # MeanLogits: z = SLOPE * (mean - 0.5); class 0 (Normal) for z < 0, class 1 (Pneumonia) above


def ramp(size: int = 32, low: float = 0.2, high: float = 0.8) -> torch.Tensor:
    """(1, 1, size, size) diagonal intensity ramp from ``low`` to ``high``, mean (low + high) / 2."""
    t = torch.linspace(0.0, 1.0, size, dtype=torch.float64)
    return (low + (high - low) * (t[:, None] + t[None, :]) / 2.0).float()[None, None]


def _at(image: torch.Tensor, z: float) -> torch.Tensor:
    """``image`` shifted so that the model's logit z (class 1 vs class 0) is ``z``."""
    return image - image.mean() + 0.5 + z / SLOPE


def _checkerboard(size: int = 32) -> torch.Tensor:
    i = torch.arange(size)
    return (((i[:, None] + i[None, :]) % 2).float() * 2 - 1)[None, None]


def _halves(size: int = 32) -> torch.Tensor:
    """+1 on the left half, -1 on the right: zero mean."""
    return torch.where(torch.arange(size) < size // 2, 1.0, -1.0)[None, :].expand(size, size)[None, None].clone()


def _pairs() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """reason -> (original, candidate) built so that only that condition holds."""
    flat = torch.full((1, 1, 32, 32), 0.5 - 5 / SLOPE)
    textured = _at(0.5 + 0.2 * _checkerboard(), -5.0)
    return {
        # same mean (same prediction), 15 grey levels of +-0.06 checkerboard on a flat image: SSIM ~0.2
        "ssim": (flat, flat + 0.06 * _checkerboard()),
        # the mean moves 4.5/300 (3.8 grey levels): z from -5 to -0.5, Normal 99.3% -> 62.2%
        "confidence_drop": (_at(ramp(), -5.0), _at(ramp(), -0.5)),
        # a zero-mean +-0.1 step on a strongly textured image: 25.5 grey levels, SSIM ~0.96
        "mean_abs_diff": (textured, textured + 0.1 * _halves()),
        # z from -0.3 to +0.3: Normal 57.4% -> Pneumonia 57.4%, no confidence drop
        "label_change": (_at(ramp(), -0.3), _at(ramp(), 0.3)),
    }


def test_pairs_are_what_they_claim() -> None:
    pairs = _pairs()
    o, a = pairs["mean_abs_diff"]
    assert mean_abs_difference(o.numpy(), a.numpy())[0] == pytest.approx(25.5, abs=1e-3)
    assert ssim(o.numpy(), a.numpy())[0] > 0.9
    for _, a in pairs.values():
        assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0


@pytest.mark.parametrize("reason", REASONS)
def test_each_condition_fires_alone(reason: str, make_mean_classifier) -> None:
    model = make_mean_classifier(SLOPE)
    original, candidate = _pairs()[reason]
    result = ReferenceDetector().detect(model, candidate, original, names=["pair.png"])
    assert result.reasons == [[reason]]
    assert result.flags.tolist() == [True]
    assert result.scores[0] > 1.0
    assert result.details["line"][0].startswith("pair.png: Attack Detected | SSIM: ")


def test_identical_images_trigger_nothing_and_score_zero(make_mean_classifier) -> None:
    model = make_mean_classifier(SLOPE)
    x = torch.cat([original for original, _ in _pairs().values()])
    result = ReferenceDetector().detect(model, x, x.clone())
    assert result.flags.tolist() == [False] * len(x)
    assert result.reasons == [[] for _ in range(len(x))]
    np.testing.assert_allclose(result.scores, 0.0, atol=1e-9)
    assert all(" No Attack | SSIM: 1.00 | " in line for line in result.details["line"])


def test_all_pairs_in_one_batch_and_score_matches_flags(make_mean_classifier) -> None:
    model = make_mean_classifier(SLOPE)
    pairs = _pairs()
    original = torch.cat([o for o, _ in pairs.values()] + [o for o, _ in pairs.values()])
    candidate = torch.cat([a for _, a in pairs.values()] + [o for o, _ in pairs.values()])
    detector = ReferenceDetector()
    result = detector.detect(model, candidate, original)
    assert result.reasons == [[r] for r in pairs] + [[] for _ in pairs]
    scores = detector.score(model, candidate, original)
    np.testing.assert_allclose(scores, result.scores)
    assert ((scores > 1.0) == result.flags).all()
    assert result.reason_counts() == {r: 1 for r in REASONS}
    record = json.loads(json.dumps(result.to_json()))
    assert record["n_flagged"] == 4 and record["images"][3]["reasons"] == ["label_change"]


def test_score_matches_flags_on_random_pairs(make_mean_classifier) -> None:
    g = torch.Generator().manual_seed(0)
    model = make_mean_classifier(slope=30.0)
    original = torch.rand(40, 1, 16, 16, generator=g) * 0.5 + 0.25
    noise = (torch.rand(40, 1, 1, 1, generator=g) * 0.3) * (torch.rand(40, 1, 16, 16, generator=g) * 2 - 1)
    candidate = (original + noise).clamp(0, 1)
    detector = ReferenceDetector()
    result = detector.detect(model, candidate, original)
    assert 0 < result.n_flagged < 40
    assert ((result.scores > 1.0) == result.flags).all()


def test_thresholds_are_configurable(make_mean_classifier) -> None:
    model = make_mean_classifier(SLOPE)
    original, candidate = _pairs()["mean_abs_diff"]
    assert ReferenceDetector(mean_abs_threshold=30.0).detect(model, candidate, original).reasons == [[]]
    assert ReferenceDetector(ssim_threshold=0.99).detect(model, candidate, original).reasons == [
        ["ssim", "mean_abs_diff"]]
    original, candidate = _pairs()["confidence_drop"]
    assert ReferenceDetector(confidence_drop=0.5).detect(model, candidate, original).reasons == [[]]
    with pytest.raises(ValueError, match="fraction"):
        ReferenceDetector(confidence_drop=15)


def test_three_channel_images_use_the_channel_mean() -> None:
    original, candidate = _pairs()["ssim"]
    o3, a3 = original.expand(-1, 3, -1, -1), candidate.expand(-1, 3, -1, -1)
    grey = ssim(original.numpy(), candidate.numpy())
    assert ssim(o3.numpy(), a3.numpy()) == pytest.approx(grey)


def test_log_line_is_the_studys() -> None:
    assert study_log_line("00000322_004.jpeg", True, 0.88, "Normal", "Pneumothorax", 0.0064) == (
        "00000322_004.jpeg: Attack Detected | SSIM: 0.88 | Orig: Normal -> Adv: Pneumothorax | Confidence Drop: 0.64%")
    assert study_log_line("00000309_000.jpeg", True, 0.8812, "Normal", "Pneumothorax", -0.0261) == (
        "00000309_000.jpeg: Attack Detected | SSIM: 0.88 | Orig: Normal -> Adv: Pneumothorax | Confidence Drop: -2.61%")
    assert study_log_line("a.png", False, 0.999, "Normal", "Normal", 0.0) == (
        "a.png: No Attack | SSIM: 1.00 | Orig: Normal -> Adv: Normal | Confidence Drop: 0.00%")


def test_detect_writes_the_line_from_its_measures(make_mean_classifier) -> None:
    model = make_mean_classifier(SLOPE)
    original, candidate = _pairs()["confidence_drop"]
    result = ReferenceDetector().detect(model, candidate, original, names=["x.png"])
    assert result.details["line"] == [
        "x.png: Attack Detected | SSIM: 1.00 | Orig: Normal -> Adv: Normal | Confidence Drop: 37.08%"]


def test_without_a_reference_the_error_points_at_the_squeeze_detector(make_mean_classifier) -> None:
    model = make_mean_classifier(SLOPE)
    x = ramp()
    with pytest.raises(ReferenceRequiredError, match="squeeze"):
        ReferenceDetector().detect(model, x)
    with pytest.raises(ReferenceRequiredError, match="reference"):
        ReferenceDetector().score(model, x, None)


def test_shape_mismatch_and_range_are_clear_errors(make_mean_classifier) -> None:
    model = make_mean_classifier(SLOPE)
    with pytest.raises(ValueError, match="differ in shape"):
        ReferenceDetector().detect(model, ramp(32), ramp(16))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ReferenceDetector().detect(model, ramp() * 255, ramp())


def test_binary_output_kind_reads_labels_and_confidence() -> None:
    from medrobust.models.classifier import Classifier, InputContract

    class OneLogit(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (SLOPE * (x.double().mean(dim=(1, 2, 3)) - 0.5)).float()[:, None]

    contract = InputContract(classes=("Normal", "Pneumonia"), stored_channels=1, network_channels=1,
                             intensity="unit", output_kind="binary")
    model = Classifier(OneLogit(), contract).eval()
    original, candidate = _at(ramp(), -0.3), _at(ramp(), 0.3)
    result = ReferenceDetector().detect(model, candidate, original, names=["b.png"])
    assert result.reasons == [["label_change"]]
    line = result.details["line"][0]
    assert re.fullmatch(r"b\.png: Attack Detected \| SSIM: 1\.00 \| Orig: Normal -> Adv: Pneumonia \| "
                        r"Confidence Drop: -?0\.00%", line), line
    # score: 1 + p_A[Pneumonia] - p_A[Normal] = 1 + (2 sigmoid(0.3) - 1)
    assert result.scores[0] == pytest.approx(2 * torch.sigmoid(torch.tensor(0.3)).item(), abs=1e-5)
