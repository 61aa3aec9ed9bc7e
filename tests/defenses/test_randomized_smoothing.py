"""Randomized smoothing (Cohen, Rosenfeld & Kolter 2019): a known answer on a linear classifier,
the Clopper-Pearson bound against scipy, abstention on a tie, determinism under the seed
(whatever the batch split), unclipped noise, multi-label refused, and noise training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from scipy.stats import beta, binomtest

from medrobust.defenses.randomized_smoothing import (
    SmoothedClassifier,
    certified_radius,
    clopper_pearson_lower,
    smoothing_seed,
)
from medrobust.models.classifier import Classifier, InputContract
from medrobust.models.training import TrainConfig, train_classifier

SIGMA = 0.25
SIZE = 8


def linear_binary(w: torch.Tensor, b: float) -> Classifier:
    """f(x) = [w.x + b > 0] as a binary Classifier (one logit; sigmoid above 0.5 means w.x + b > 0)."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(w.numel(), 1))
    with torch.no_grad():
        net[1].weight.copy_(w.reshape(1, -1))
        net[1].bias.fill_(b)
    contract = InputContract(("Normal", "Pneumonia"), network_channels=1, intensity="unit", output_kind="binary")
    return Classifier(net, contract).eval()


def three_class(seed: int, kind: str = "softmax") -> Classifier:
    """A random linear three-class (or three-finding) Classifier on 8 x 8 grey images."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(SIZE * SIZE, 3))
    contract = InputContract(("Normal", "Pneumonia", "Pneumothorax"), network_channels=1, intensity="unit",
                             output_kind=kind)
    return Classifier(net, contract).eval()


@pytest.fixture(scope="module")
def linear():
    """A linear classifier and an image at distance 1.5 sigma from its boundary (p_A = Phi(1.5))."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(SIZE * SIZE, generator=g)
    x = torch.rand(1, SIZE, SIZE, generator=g)
    distance = 1.5 * SIGMA
    b = float(distance * w.norm() - w @ x.flatten())  # w.x + b = distance * ||w||: class 1, |w.x + b| / ||w|| = distance
    return linear_binary(w, b), x, distance


def test_the_certificate_never_exceeds_the_exact_radius_and_approaches_it(linear) -> None:
    model, x, exact = linear
    smoothed = SmoothedClassifier(model, SIGMA, batch=20_000)
    small = [smoothed.certify(x, 100, 1_000, 0.001, smoothed.generator(seed)) for seed in range(5)]
    large = smoothed.certify(x, 100, 100_000, 0.001, smoothed.generator(0))
    for cert in [*small, large]:
        assert cert.prediction == 1 and cert.radius is not None
        assert cert.radius <= exact  # a lower bound of p_A gives a radius below the exact one
    assert large.radius > max(c.radius for c in small)
    assert large.radius >= 0.97 * exact  # n = 100,000: within 3% (the bound's slack at alpha = 0.001)
    # the radius is sigma * Phi^-1(p_A_lower), p_A_lower the Clopper-Pearson bound of the class's count
    assert large.p_a_lower == pytest.approx(beta.ppf(0.001, large.counts[1], 100_000 - large.counts[1] + 1))
    assert large.radius == pytest.approx(certified_radius(large.p_a_lower, SIGMA))
    assert large.counts.sum() == 100_000 and large.selection_counts.sum() == 100
    assert large.smoothed_prediction == 1


@pytest.mark.parametrize(("k", "n"), [(0, 10), (1, 10), (7, 10), (10, 10), (990, 1000), (501, 1000), (99_990, 100_000)])
@pytest.mark.parametrize("alpha", [0.001, 0.05])
def test_clopper_pearson_lower_bound_matches_scipy(k: int, n: int, alpha: float) -> None:
    ours = clopper_pearson_lower(k, n, alpha)
    # the one-sided lower bound at alpha is the lower end of the two-sided exact interval at 2 alpha
    assert ours == pytest.approx(binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact").low,
                                 abs=1e-12)
    assert ours == (0.0 if k == 0 else pytest.approx(beta.ppf(alpha, k, n - k + 1)))


def test_the_largest_certifiable_radius_is_what_a_unanimous_vote_certifies() -> None:
    from medrobust.evaluation.certified_accuracy import largest_certifiable_radius

    always_one = linear_binary(torch.zeros(SIZE * SIZE), 50.0)  # w.x + b = 50 whatever the noise: every draw votes 1
    smoothed = SmoothedClassifier(always_one, SIGMA, batch=1_000)
    for n, alpha in ((1_000, 0.001), (10_000, 0.001), (1_000, 0.05)):
        cert = smoothed.certify(torch.rand(1, SIZE, SIZE), 100, n, alpha, smoothed.generator(0))
        assert cert.counts[1] == n
        assert cert.radius == pytest.approx(largest_certifiable_radius(SIGMA, n, alpha), rel=1e-9)
    # sigma x Phi^-1(alpha^(1/n)): 0.616 at the quick preset's n = 1,000, reaching farther with more draws
    assert largest_certifiable_radius(0.25, 1_000, 0.001) == pytest.approx(0.25 * 2.4617, abs=1e-3)
    assert largest_certifiable_radius(0.25, 100_000, 0.001) > largest_certifiable_radius(0.25, 10_000, 0.001) > 0.616


def test_clopper_pearson_refuses_impossible_counts() -> None:
    with pytest.raises(ValueError, match="successes"):
        clopper_pearson_lower(11, 10, 0.001)
    with pytest.raises(ValueError, match="alpha"):
        clopper_pearson_lower(5, 10, 0.0)


def test_a_tie_abstains_in_certify_and_predict(linear) -> None:
    model, x, _ = linear
    w = model.network[1].weight.detach().flatten()
    on_boundary = linear_binary(w, float(-(w @ x.flatten())))  # w.x + b = 0: either class half the time
    smoothed = SmoothedClassifier(on_boundary, SIGMA, batch=1_000)
    cert = smoothed.certify(x, 100, 2_000, 0.001, smoothed.generator(0))
    assert cert.prediction is None and cert.radius is None and cert.p_a_lower < 0.5
    assert cert.smoothed_prediction is None and cert.p_value > 0.001
    assert smoothed.predict(x, 2_000, 0.001, smoothed.generator(1)) is None
    assert certified_radius(0.4999, SIGMA) is None


def test_same_seed_same_counts_and_any_batch_split_gives_the_same_certificates() -> None:
    model = three_class(0)
    x = torch.rand(5, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    smoothed = SmoothedClassifier(model, 0.5, batch=64)
    whole = smoothed.certify_batch(x, n0=20, n=300, alpha=0.001, seed=7)
    again = smoothed.certify_batch(x, n0=20, n=300, alpha=0.001, seed=7)
    parts = [smoothed.certify_batch(x[a:b], n0=20, n=300, alpha=0.001, seed=7, start=a) for a, b in ((0, 2), (2, 5))]
    other_chunks = SmoothedClassifier(model, 0.5, batch=64).certify_batch(x[3:], n0=20, n=300, alpha=0.001, seed=7,
                                                                           start=3)
    for key, value in whole.items():
        assert np.array_equal(value, again[key], equal_nan=True), key
        assert np.array_equal(value, np.concatenate([p[key] for p in parts]), equal_nan=True), key
        assert np.array_equal(value[3:], other_chunks[key], equal_nan=True), key
    other_seed = smoothed.certify_batch(x, n0=20, n=300, alpha=0.001, seed=8)
    assert not np.array_equal(whole["counts"], other_seed["counts"])
    assert whole["counts"].shape == (5, 3) and (whole["counts"].sum(1) == 300).all()
    assert smoothing_seed(7, 3) != smoothing_seed(8, 3) != smoothing_seed(7, 4)


def test_the_noisy_images_are_not_clipped() -> None:
    seen: list[float] = []

    class Recorder(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(float(x.min()))
            return torch.stack([x.flatten(1).mean(1), -x.flatten(1).mean(1)], dim=1)

    smoothed = SmoothedClassifier(Recorder(), 0.25, batch=50)
    smoothed.certify(torch.zeros(1, 4, 4), 10, 50, 0.001, smoothed.generator(0))
    assert min(seen) < -0.5  # a black image plus noise of sigma 0.25 goes well below 0


def test_a_multilabel_model_and_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="single-label decision.*multi-label"):
        SmoothedClassifier(three_class(0, kind="multilabel"), 0.25)
    with pytest.raises(ValueError, match="sigma must be a positive number"):
        SmoothedClassifier(three_class(0), math.nan)
    with pytest.raises(ValueError, match="batch"):
        SmoothedClassifier(three_class(0), 0.25, batch=0)


def test_noise_training_adds_unclipped_gaussian_noise_to_training_batches_and_one_fixed_draw_to_validation() -> None:
    seen: dict[bool, list[torch.Tensor]] = {True: [], False: []}

    class Recorder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(16, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen[self.training].append(x.detach().clone())
            return self.linear(x.flatten(1))

    x, y = torch.full((8, 1, 4, 4), 0.5), torch.tensor([0, 1] * 4)
    for sigma in (0.0, 1.0):
        seen[True].clear(), seen[False].clear()
        model = Classifier(Recorder(), InputContract(("a", "b"), network_channels=1, intensity="unit"))
        config = TrainConfig(epochs=2, batch_size=8, noise_sigma=sigma, augment=TrainConfig().augment.__class__(
            False, 0, 0, 0, 0), channels_last=False)
        train_classifier(model, (x, y), (x, y), config)
        assert (float(seen[True][0].min()) < 0) == (sigma > 0)  # 0.5 - 1.0 * N(0, 1) over 128 pixels falls below 0
        first, second = seen[False]  # one validation pass per epoch
        assert torch.equal(first, second)  # the same images every epoch: the losses compare epochs
        if sigma == 0:
            assert float(first.min()) == float(first.max()) == 0.5  # clean
        else:  # the validation noise is the training's sigma, unclipped, and not a training batch's draw
            assert 0.8 < float((first - 0.5).std()) < 1.2 and float(first.min()) < 0
            assert not torch.equal(first, seen[True][0])
    with pytest.raises(ValueError, match="noise_sigma"):
        TrainConfig(noise_sigma=-0.1)


def test_the_training_record_names_the_noise_only_when_there_was_some() -> None:
    from medrobust.evaluation.stages.certify import noise_note, trained_noise

    assert "noise_sigma" not in TrainConfig().to_json()  # recorded as before noise training existed
    assert TrainConfig(noise_sigma=0.25).to_json()["noise_sigma"] == 0.25

    class Model:
        def __init__(self, metadata) -> None:
            self.metadata = metadata

    assert trained_noise(Model({"training": TrainConfig(noise_sigma=0.25).to_json()})) == 0.25
    assert trained_noise(Model({"training": TrainConfig().to_json()})) == 0.0
    assert trained_noise(Model({})) is None
    assert noise_note(0.25, 0.25) is None and "not trained under Gaussian noise" in noise_note(0.0, 0.25)
    assert "sigma 0.5 and certified at sigma 0.25" in noise_note(0.5, 0.25)


def test_a_run_reads_its_trained_models_noise_from_model_json_trained_now_or_read_back(tmp_path) -> None:
    import json

    from medrobust.evaluation.stages.certify import trained_noise

    record = tmp_path / "model.json"
    record.write_text(json.dumps({"training": TrainConfig(noise_sigma=0.25).to_json()}))

    class FreshlyTrained:  # a model trained in this process carries no metadata
        metadata: dict = {}

    assert trained_noise(FreshlyTrained(), record) == 0.25
    assert trained_noise(FreshlyTrained(), tmp_path / "missing.json") is None
