"""``mr.guard``: decisions, the fail-closed paths (each failure injected), the guard as a module
that attacks run on, thresholds as a detector fitted directly sets them, refusals, and files
(PNG, DICOM, an unreadable one) read as ``mr.predict`` reads them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import medrobust as mr
from medrobust.attacks import PGD
from medrobust.data.dicom import write_dicom
from medrobust.data.io import write_png
from medrobust.defenses.base import Defense
from medrobust.defenses.defended import DefendedClassifier
from medrobust.detection.base import DetectionResult, Detector
from medrobust.detection.squeeze import SqueezeDetector
from medrobust.execution.pixels import quantise_8bit
from medrobust.models.classifier import Classifier

NEVER = "squeeze:threshold=10"  # squeeze scores are at most 2: never flags
ALWAYS = "squeeze:threshold=-1"  # every score is above: always flags


def _white(x: torch.Tensor) -> torch.Tensor:
    """Which images of a batch are the white marker image (mean above 0.99)."""
    return x.reshape(len(x), -1).mean(1) > 0.99


class RaisingModel(Classifier):
    """The trained model, raising on any batch that holds the white marker image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(_white(x).any()):
            raise RuntimeError("out of memory (injected)")
        return super().forward(x)


class NaNModel(Classifier):
    """The trained model, answering NaN logits for the white marker image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return torch.where(_white(x).view(-1, 1), torch.full_like(out, float("nan")), out)


class RaisingDefense(Defense):
    """A defense that raises on the white marker image (and returns the others unchanged).

    Shape:
        - x: (B, C, H, W) float in [0, 1]; output the same.
    """

    differentiable = True

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if bool(_white(x).any()):
            raise ValueError("codec crashed (injected)")
        return x.clone()


class NaNDefense(Defense):
    """A defense that returns NaN for the white marker image (and the others unchanged).

    Shape:
        - x: (B, C, H, W) float in [0, 1]; output the same.
    """

    differentiable = True

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return torch.where(_white(x).view(-1, 1, 1, 1), torch.full_like(x, float("nan")), x)


class RaisingDetector(Detector):
    """A reference-free detector that raises on the white marker image, scores 0 otherwise.

    Shape:
        - x: (B, C, H, W) float in [0, 1]; scores (B,).
    """

    name = "fragile"

    def fit(self, model, clean):
        return self

    def score(self, model, x, reference=None):
        if bool(_white(x).any()):
            raise RuntimeError("detector crashed (injected)")
        return np.zeros(len(x))

    def detect(self, model, x, reference=None, names=None):
        s = self.score(model, x)
        return DetectionResult(np.zeros(len(x), bool), s, [[] for _ in s], detector=self.name, threshold=0.5)


@pytest.fixture(scope="module")
def test_images(phantom32):
    splits, _ = phantom32
    return quantise_8bit(splits["test"][0][:6])


def _with_white(x: torch.Tensor, at: int = 1) -> torch.Tensor:
    out = x.clone()
    out[at] = 1.0
    return out


def _assert_answered(result, bad: int, reason: str) -> None:
    """The bad image abstains with ``reason`` and no label; every other image is accepted with one."""
    for i, answer in enumerate(result):
        assert answer.id == str(i)
        if i == bad:
            assert answer.decision == "abstain" and reason in answer.reason, answer.reason
            assert answer.label is None and answer.undefended_label is None and answer.probabilities is None
        else:
            assert answer.decision == "accept" and answer.reason == "", answer.reason
            assert answer.label in answer.probabilities and answer.undefended_label is not None


def test_clean_images_are_accepted_with_the_defended_models_labels(trained_small_cnn, phantom32, test_images):
    splits, classes = phantom32
    g = mr.guard(trained_small_cnn, calibration=splits["val"][0])
    result = g.predict(test_images)
    assert len(result) == 6 and sum(result.counts().values()) == 6
    defended = DefendedClassifier("jpeg:quality=75+tv", trained_small_cnn)
    want = defended.predict(test_images)
    bare = trained_small_cnn.predict(test_images)
    threshold = g.detectors["squeeze"].threshold
    scores = g.scores(test_images)["squeeze"]
    for i, answer in enumerate(result):
        assert answer.scores["squeeze"] == pytest.approx(scores[i])
        assert answer.thresholds == {"squeeze": threshold}
        assert answer.flagged == bool(scores[i] > threshold)
        if answer.decision == "accept":
            assert answer.label == classes[int(want[i])] and answer.undefended_label == classes[int(bare[i])]
            assert sum(answer.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert result.counts()["accept"] >= 4  # at a 5% false positive rate, clean images pass
    json.dumps(result.to_dicts(), allow_nan=False)


class CountingModel(Classifier):
    """The trained model, recording the batch size of every forward pass."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.passes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.passes.append(len(x))
        return super().forward(x)


def test_one_forward_pass_holds_the_image_its_squeezed_copies_and_its_defended_copy(trained_small_cnn, test_images):
    model = CountingModel(trained_small_cnn.network, trained_small_cnn.contract).eval()
    g = mr.guard(model, detectors=[NEVER])
    model.passes.clear()
    one = g.predict(test_images[:1])
    assert model.passes == [1 + 4 + 1]  # the image, the four default squeezes, the defended image
    model.passes.clear()
    g.predict(test_images[:3], batch_size=3)
    assert model.passes == [3 * 6]
    model.passes.clear()
    g.predict(test_images[:6], batch_size=2)  # three batches of two images, each one pass of 12
    assert model.passes == [12, 12, 12]
    # the answers are those of each piece computed apart: the scores of the detector's own passes
    assert one[0].scores["squeeze"] == pytest.approx(float(g.detectors["squeeze"].score(trained_small_cnn,
                                                                                         test_images[:1])[0]), abs=1e-6)
    # no defense: the label is the undefended one, from the same pass (no pass on the image twice)
    bare = mr.guard(model, defense=None, detectors=[NEVER])
    model.passes.clear()
    answers = bare.predict(test_images[:4], batch_size=4)
    assert model.passes == [4 * 5]
    assert [a.label for a in answers] == [a.undefended_label for a in answers]
    assert [a.label for a in answers] == [trained_small_cnn.classes[int(k)] for k in trained_small_cnn.predict(test_images[:4])]


def test_a_squeezer_that_is_the_defense_shares_the_defended_copy(trained_small_cnn, test_images):
    """Feature squeezing with the defense as its squeezer (does the defense move the answer?): two
    images in the pass, not three, and the score the detector computes on its own."""
    model = CountingModel(trained_small_cnn.network, trained_small_cnn.contract).eval()
    g = mr.guard(model, defense="jpeg:quality=75+tv", detectors=["squeeze:threshold=10,squeezers=jpeg:quality=75+tv"])
    model.passes.clear()
    answers = g.predict(test_images[:3], batch_size=3)
    assert model.passes == [3 * 2]  # the images and their defended copies
    alone = g.detectors["squeeze"].score(trained_small_cnn, test_images[:3])
    assert [a.scores["squeeze"] for a in answers] == pytest.approx(alone.tolist(), abs=1e-6)
    other = mr.guard(model, defense="jpeg:quality=75", detectors=["squeeze:threshold=10,squeezers=jpeg:quality=75+tv"])
    model.passes.clear()
    other.predict(test_images[:3], batch_size=3)
    assert model.passes == [3 * 3]  # another defense: the squeezer's copy is its own


@pytest.mark.parametrize("on_flag", ["abstain", "warn"])
def test_a_flagged_image_gets_on_flags_decision(trained_small_cnn, test_images, on_flag):
    g = mr.guard(trained_small_cnn, detectors=[ALWAYS], on_flag=on_flag)
    result = g.predict(test_images[:2])
    assert result.counts() == {"accept": 0, "abstain": 2 if on_flag == "abstain" else 0,
                               "warn": 2 if on_flag == "warn" else 0}
    for answer in result:
        assert answer.flagged and "flagged by the squeeze detector" in answer.reason
        assert f"> threshold {-1:.4g}" in answer.reason
        assert (answer.label is None) == (on_flag == "abstain")  # an abstention carries no label
        assert (answer.undefended_label is None) == (on_flag == "abstain")


def test_nan_image_abstains_and_the_others_are_answered(trained_small_cnn, test_images):
    x = test_images[:4].clone()
    x[2, 0, 3, 3] = float("nan")
    result = mr.guard(trained_small_cnn, detectors=[NEVER]).predict(x)
    _assert_answered(result, 2, "non-finite value")
    assert result[2].thresholds == {"squeeze": 10.0} and result[2].scores == {"squeeze": None}
    labelled = mr.guard(trained_small_cnn, detectors=[NEVER]).predict((x, torch.zeros(4, dtype=torch.long)))
    _assert_answered(labelled, 2, "non-finite value")  # (images, labels): the labels are not needed


def test_image_outside_unit_range_abstains(trained_small_cnn, test_images):
    x = test_images[:3].clone()
    x[0] *= 255.0
    _assert_answered(mr.guard(trained_small_cnn, detectors=[NEVER]).predict(x.numpy()), 0, "outside [0, 1]")


def test_model_raising_abstains_only_on_the_image_it_fails(trained_small_cnn, test_images):
    model = RaisingModel(trained_small_cnn.network, trained_small_cnn.contract).eval()
    result = mr.guard(model, detectors=None).predict(_with_white(test_images[:4]))
    _assert_answered(result, 1, "the model failed on this image (RuntimeError: out of memory (injected))")


def test_model_returning_nan_abstains(trained_small_cnn, test_images):
    model = NaNModel(trained_small_cnn.network, trained_small_cnn.contract).eval()
    result = mr.guard(model, detectors=None).predict(_with_white(test_images[:4]))
    _assert_answered(result, 1, "the model's output on the image is not a finite number")
    # with the squeeze detector in front, its score is the first value found not finite
    result = mr.guard(model, detectors=[NEVER]).predict(_with_white(test_images[:4]))
    _assert_answered(result, 1, "the squeeze detector's score is not a finite number")


def test_defense_raising_abstains(trained_small_cnn, test_images):
    result = mr.guard(trained_small_cnn, defense=RaisingDefense(), detectors=None).predict(_with_white(test_images[:4]))
    _assert_answered(result, 1, "the defense failed on this image (ValueError: codec crashed (injected))")


def test_defense_returning_nan_abstains(trained_small_cnn, test_images):
    result = mr.guard(trained_small_cnn, defense=NaNDefense(), detectors=None).predict(_with_white(test_images[:4]))
    _assert_answered(result, 1, "the defense's output is not a finite number")


def test_detector_raising_abstains(trained_small_cnn, test_images):
    result = mr.guard(trained_small_cnn, detectors=[RaisingDetector()]).predict(_with_white(test_images[:4]))
    _assert_answered(result, 1, "the fragile detector failed on this image")


def test_files_png_dicom_and_an_unreadable_one(trained_small_cnn, tmp_path):
    folder = tmp_path / "incoming"
    rng = np.random.default_rng(0)
    write_png(folder / "a.png", rng.random((40, 40)))
    write_dicom(folder / "b.dcm", rng.random((48, 48)))
    (folder / "c.png").write_bytes(b"not a png at all")
    g = mr.guard(trained_small_cnn, detectors=[NEVER])
    result = g.predict(folder)
    by_id = {a.id: a for a in result}
    assert sorted(by_id) == ["a.png", "b.dcm", "c.png"]
    assert by_id["c.png"].decision == "abstain" and "unreadable image" in by_id["c.png"].reason
    assert by_id["c.png"].label is None
    read = mr.open_images([folder / "a.png", folder / "b.dcm"], size=32)  # as mr.predict reads them
    x, _, ids = read.load()
    want = DefendedClassifier("jpeg:quality=75+tv", trained_small_cnn).predict(x)
    for i, name in enumerate(ids):
        assert by_id[name].decision == "accept"
        assert by_id[name].label == trained_small_cnn.classes[int(want[i])]
    missing = g.predict([folder / "a.png", tmp_path / "gone.png"])
    assert [a.decision for a in missing] == ["accept", "abstain"]
    assert "file not found" in missing[1].reason


def test_guard_is_attackable_within_budget(trained_small_cnn, phantom32, test_images):
    _, classes = phantom32
    splits, _ = phantom32
    y = splits["test"][1][:6]
    g = mr.guard(trained_small_cnn, detectors=[NEVER])
    x = test_images.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(g(x), y).backward()
    assert float(x.grad.abs().sum()) > 0  # BPDA through JPEG, exact through TV: a gradient reaches the input
    x_adv = PGD(eps=4 / 255, steps=5)(g, test_images, y)
    assert x_adv.shape == test_images.shape
    assert float((x_adv - test_images).abs().max()) <= 4 / 255 + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert g.classes == classes and g(test_images).shape == (6, 3)


def test_thresholds_match_a_detector_fitted_directly(trained_small_cnn, phantom32):
    splits, _ = phantom32
    clean = quantise_8bit(splits["val"][0][:40])
    g = mr.guard(trained_small_cnn, calibration=clean, fpr=0.1)
    direct = SqueezeDetector().fit(trained_small_cnn, clean, target_fpr=0.1)
    assert g.detectors["squeeze"].threshold == pytest.approx(direct.threshold, rel=1e-6)
    described = g.describe()["detectors"][0]
    assert described["threshold"] == pytest.approx(direct.threshold, rel=1e-6)
    assert described["target_fpr"] == 0.1
    assert described["calibration"] == {"n_images": 40, "source": "tensors", "target_fpr": 0.1, "skipped": 0}


def test_describe_names_the_model_file_and_its_sha256(trained_small_cnn, tmp_path):
    from medrobust.evaluation.run_dir import model_file_sha256
    from medrobust.models.checkpoint import save_checkpoint

    path = save_checkpoint(trained_small_cnn, tmp_path / "model")
    info = mr.guard(path, detectors=[NEVER], on_flag="warn").describe()
    assert info["model"] == {"file": str(path), "sha256": model_file_sha256(path)} and info["model"]["sha256"]
    assert info["classes"] == trained_small_cnn.classes and info["on_flag"] == "warn"
    assert info["defense"].startswith("jpeg:quality=75") and "+tv:" in info["defense"]
    assert info["medrobust"] == mr.__version__
    (detector,) = info["detectors"]
    assert detector["name"] == "squeeze" and detector["threshold"] == 10.0 and detector["target_fpr"] is None
    assert detector["calibration"]["source"] == "the threshold given in the detector's spec"
    json.dumps(info, allow_nan=False)


@pytest.mark.parametrize(("kwargs", "sentence"), [
    ({"detectors": ["reference"]}, "a guard in production has no original image"),
    ({"detectors": ["squeeze"]}, "pass calibration=IMAGES"),
    ({"detectors": [NEVER], "on_flag": "ignore"}, "on_flag must be 'abstain'"),
    ({"detectors": [NEVER], "fpr": 5}, "fpr must be in [0, 1)"),
    ({"detectors": [NEVER], "defense": "jpge"}, "jpge"),
])
def test_refusals(kwargs, sentence):
    with pytest.raises(ValueError) as err:
        mr.guard("no-such-model-file.pt", **kwargs)  # refused before the model is looked for
    assert sentence in str(err.value)


@pytest.mark.parametrize("kind", ["binary", "multilabel"])
def test_labels_follow_the_models_own_decision_rule(linear_classifier, kind):
    classes = ("Normal", "Pneumonia") if kind == "binary" else ("Effusion", "Nodule", "Mass")
    model = linear_classifier(3, classes=classes, kind=kind)
    x = quantise_8bit(torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(2)))
    result = mr.guard(model, detectors=[NEVER]).predict(x)
    decided = DefendedClassifier("jpeg:quality=75+tv", model).predict(x)
    for answer, d in zip(result, decided):
        assert answer.decision == "accept"
        if kind == "binary":
            assert answer.label == classes[int(d)] and set(answer.probabilities) == set(classes)
        else:
            assert answer.label == ("|".join(c for c, f in zip(classes, d.tolist()) if f) or "none")


def test_the_public_layer_takes_a_guard_for_its_defended_model(trained_small_cnn, phantom32) -> None:
    splits, _ = phantom32
    x, y = splits["test"][0][:12], splits["test"][1][:12]
    g = mr.guard(trained_small_cnn, calibration=splits["val"][0][:40])
    assert mr.load_model(g) is g.defended
    images = mr.open_images((x, y), classes=g.classes)
    on_guard = mr.attack(g, images, "pgd:eps=4/255,steps=5")
    on_defended = mr.attack(g.defended, images, "pgd:eps=4/255,steps=5")
    assert torch.equal(on_guard.adversarial, on_defended.adversarial)
    assert np.array_equal(mr.predict(g, x).labels, mr.predict(g.defended, x).labels)
