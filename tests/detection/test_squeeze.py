"""The squeeze detector: the score's formula, calibration to a target false positive rate on
held-out clean images, and detection of PGD images on the trained small CNN."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from medrobust.attacks.registry import build_attack
from medrobust.detection.metrics import detection_rate, false_positive_rate, roc_auc
from medrobust.detection.registry import build_detector
from medrobust.detection.squeeze import DEFAULT_SQUEEZERS, NotCalibratedError, SqueezeDetector

log = logging.getLogger(__name__)

TARGET_FPR = 0.05


@pytest.fixture(scope="module")
def detector() -> SqueezeDetector:
    return SqueezeDetector(batch_size=500)


@pytest.fixture(scope="module")
def calibrated(detector, trained_small_cnn, clean_phantoms):
    """The default detector fitted on the calibration half; scores of the held-out half."""
    calibration, held_out = clean_phantoms
    detector.fit(trained_small_cnn, calibration, target_fpr=TARGET_FPR)
    return detector, detector.score(trained_small_cnn, held_out)


def test_score_is_the_max_l1_distance_of_probabilities(detector, trained_small_cnn, phantom32) -> None:
    x = phantom32[0]["test"][0][:10]
    p = trained_small_cnn.predict_proba(x)
    expected = torch.stack([(p - trained_small_cnn.predict_proba(s(x))).abs().sum(1) for s in detector.squeezers], 1)
    d = detector.distances(trained_small_cnn, x)
    np.testing.assert_allclose(d, expected.double().numpy(), atol=1e-6)
    np.testing.assert_allclose(detector.score(trained_small_cnn, x), d.max(1))
    assert d.shape == (10, len(DEFAULT_SQUEEZERS)) and (d >= 0).all() and (d <= 2).all()
    # the probabilities of x given by the caller (the guard has them) replace the detector's own forward pass
    np.testing.assert_array_equal(detector.distances(trained_small_cnn, x, plain=p), d)
    shifted = detector.distances(trained_small_cnn, x, plain=torch.roll(p, 1, dims=1))  # and are really used
    assert not np.allclose(shifted, d)


def test_batches_do_not_change_scores(trained_small_cnn, phantom32) -> None:
    x = phantom32[0]["test"][0][:20]
    a = SqueezeDetector(batch_size=7).score(trained_small_cnn, x)
    b = SqueezeDetector(batch_size=64).score(trained_small_cnn, x)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_calibrated_fpr_holds_on_held_out_clean_images(calibrated, trained_small_cnn, clean_phantoms) -> None:
    """1200 clean phantoms calibrate, 1200 others are held out. The held-out FPR is a binomial
    estimate around the true rate at the threshold, which is itself 5% give or take the
    calibration quantile's own noise: with n = 1200 on each side the held-out FPR's standard
    deviation is about sqrt(2 * 0.05 * 0.95 / 1200) = 0.9 points, so the +-2 point band is
    2.25 standard deviations wide (a ~97.5% band; 400 + 400 would give only 1.3). Data, model
    and squeezers are seeded or deterministic, so the outcome is fixed, not flaky."""
    detector, held_out_scores = calibrated
    assert detector.calibration["n_clean"] == 1200
    assert detector.calibration["realised_fpr"] <= TARGET_FPR
    assert detector.calibration["realised_fpr"] == pytest.approx(TARGET_FPR)  # k = floor(0.05 * 1200) = 60 above, no ties
    held_out_fpr = false_positive_rate(held_out_scores > detector.threshold)
    log.info("squeeze detector: threshold %.4f, held-out FPR %.2f%% (target %.0f%%)", detector.threshold,
             100 * held_out_fpr, 100 * TARGET_FPR)
    assert abs(held_out_fpr - TARGET_FPR) <= 0.02
    # deterministic: the same images give the same scores
    np.testing.assert_array_equal(detector.score(trained_small_cnn, clean_phantoms[1][:50]), held_out_scores[:50])


def test_pgd_images_score_above_clean_ones(calibrated, trained_small_cnn, phantom32) -> None:
    detector, held_out_scores = calibrated
    x, y = phantom32[0]["test"]
    x_adv = build_attack("pgd", eps=8 / 255)(trained_small_cnn, x, y)
    adv_scores = detector.score(trained_small_cnn, x_adv)
    auc = roc_auc(held_out_scores, adv_scores)
    rate = detection_rate(adv_scores > detector.threshold)
    log.info("squeeze detector on PGD 8/255: ROC-AUC %.3f, detection rate %.1f%% at threshold %.4f", auc,
             100 * rate, detector.threshold)
    assert auc > 0.5
    assert rate > false_positive_rate(held_out_scores > detector.threshold)

    result = detector.detect(trained_small_cnn, x_adv)
    assert result.flags.tolist() == (adv_scores > detector.threshold).tolist()
    for flagged, reasons in zip(result.flags, result.reasons):
        assert bool(reasons) == bool(flagged)
        assert set(reasons) <= set(DEFAULT_SQUEEZERS)
    assert result.details["line"][0].startswith("image-0: ")


def test_detect_before_fit_is_a_clear_error(trained_small_cnn, phantom32) -> None:
    with pytest.raises(NotCalibratedError, match="fit"):
        SqueezeDetector().detect(trained_small_cnn, phantom32[0]["test"][0][:2])


def test_a_given_threshold_needs_no_fit(trained_small_cnn, phantom32) -> None:
    x = phantom32[0]["test"][0][:8]
    result = SqueezeDetector(["bits:bits=5"], threshold=-1.0).detect(trained_small_cnn, x)
    assert result.flags.all() and all(r == ["bits:bits=5"] for r in result.reasons)


def test_registry_builds_detectors_with_squeezer_lists() -> None:
    det = build_detector("squeeze:target_fpr=0.01,batch_size=16,squeezers=bits:bits=4;median:size=3")
    assert isinstance(det, SqueezeDetector)
    assert det.squeezer_names == ["bits:bits=4", "median:size=3"] and det.target_fpr == 0.01 and det.batch_size == 16
    assert build_detector("reference:ssim_threshold=0.9").describe()["ssim_threshold"] == 0.9
    with pytest.raises(ValueError, match="unknown detector"):
        build_detector("magic")
    with pytest.raises(ValueError, match="last"):
        build_detector("squeeze:batch_size=8;squeezers=bits:bits=4")


def test_bad_squeezer_lists_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        SqueezeDetector([])
    with pytest.raises(ValueError, match="distinct"):
        SqueezeDetector(["bits:bits=5", "bits:bits=5"])
