"""The ``certify`` stage (``certify: {...}``, ``--certify``): added to a finished run without
recomputing it, resumable per batch, the same per-image certificates whatever the batch split and
as ``mr.certify``'s, and its figures in metrics.json, the scorecard (apart from the rows and the
overall score), report.html and statement.html."""

from __future__ import annotations

import json
from html import unescape
from statistics import NormalDist

import numpy as np
import pytest
import yaml

import medrobust as mr
from medrobust.evaluation.certified_accuracy import REPORT_RADII, certified_accuracy
from medrobust.evaluation.config import load_config
from medrobust.evaluation.demo_config import demo_config, demo_settings
from medrobust.evaluation.scorecard import build_scorecard
from medrobust.evaluation.stages.certify import noise_note, stage_folder_name
from medrobust.execution.pixels import from_stored
from medrobust.execution.resumable_stage import finished_summary
from medrobust.execution.units import CertifyUnit, Workbench
from medrobust.report import build_report

SETTINGS = {
    "attacks": [{"name": "fgsm", "params": {"eps": "8/255"}}],
    "defenses": [], "adaptive": {"enabled": False}, "attack_images": 4, "batch_size": 2, "data": {"size": 32},
}
CERTIFY = {"sigma": 0.12, "n0": 10, "n": 100, "alpha": 0.001, "batch": 110}
DATA = "phantom:seed=7,per_class=4"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, trained_small_cnn):
    """A run without certificates, then the same run with them (resumed, so only they are computed)."""
    root = tmp_path_factory.mktemp("certify") / "run"
    plain = mr.evaluate(trained_small_cnn, DATA, SETTINGS, run_dir=root)
    stamps = {p: p.stat().st_mtime_ns for p in (root / "stages").rglob("batch-*.npz")}
    certified = mr.evaluate(trained_small_cnn, DATA, SETTINGS, run_dir=root, certify=CERTIFY)
    return root, plain, certified, stamps


def _stage(root):
    from medrobust.evaluation.config_sections import CertifyConfig

    return root / "stages" / "certify" / stage_folder_name(CertifyConfig(**CERTIFY))


def test_added_to_a_finished_run_it_computes_only_the_certificates(runs) -> None:
    root, plain, certified, stamps = runs
    assert plain.certified is None and certified.certified is not None
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # nothing finished was recomputed
    assert sorted(p.name for p in _stage(root).glob("batch-*.npz")) == ["batch-0000.npz", "batch-0001.npz"]


def test_resumed_it_reads_its_batches_back_and_gives_the_same_figures(runs, trained_small_cnn) -> None:
    root, _, certified, _ = runs
    stamps = {p: p.stat().st_mtime_ns for p in _stage(root).glob("batch-*.npz")}
    again = mr.evaluate(trained_small_cnn, DATA, SETTINGS, run_dir=root, certify=CERTIFY)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    exclude = {"seconds_per_image"}
    assert again.certified.model_dump(exclude=exclude) == certified.certified.model_dump(exclude=exclude)


def test_the_figures_are_the_per_image_certificates(runs, trained_small_cnn) -> None:
    root, _, metrics, _ = runs
    c = metrics.certified
    s = finished_summary(_stage(root))
    labels = finished_summary(root / "stages" / "inputs")["labels"]
    assert c.n == 4 and c.sigma == 0.12 and c.draws == 100 and c.n0 == 10 and c.pixels == 32 * 32
    assert [p.radius for p in c.points] == list(REPORT_RADII)
    for p in c.points:
        assert p.accuracy == pytest.approx(certified_accuracy(labels, s["prediction"], s["radius"], p.radius))
        assert p.grey_levels_per_pixel == pytest.approx(p.radius / 32 * 255, abs=1e-5)
    assert c.curve[0].radius == 0.0 and c.curve[0].accuracy >= c.points[0].accuracy >= c.points[-1].accuracy
    assert c.abstention_rate == pytest.approx(np.mean(s["prediction"] < 0))
    assert c.smoothed_clean_accuracy == pytest.approx(np.mean(s["smoothed_prediction"] == labels))
    assert c.base_clean_accuracy == pytest.approx(np.mean(s["base_prediction"] == labels))
    assert (s["counts"].sum(1) == 100).all() and c.curve[0].accuracy > 0  # the trained model certifies something
    assert c.note == noise_note(None, 0.12) and "not known" in c.note  # a model held in memory: no training record
    assert metrics.seconds_per_image["certify"] > 0


def test_any_batch_split_and_mr_certify_give_the_same_certificates(runs, trained_small_cnn) -> None:
    root, _, _, _ = runs
    s = finished_summary(_stage(root))
    clean = np.concatenate([np.load(p)["clean"] for p in sorted((root / "stages" / "inputs").glob("batch-*.npz"))])
    bench = Workbench({"model": trained_small_cnn}, trained_small_cnn.device)
    split = [bench.execute(CertifyUnit(seed=0, start=a, images=clean[a:b], **CERTIFY)) for a, b in ((0, 1), (1, 4))]
    for key in ("prediction", "radius", "counts", "selection_counts", "smoothed_prediction"):
        assert np.array_equal(np.concatenate([part[key] for part in split]), s[key], equal_nan=True), key
    layer = mr.certify(trained_small_cnn, from_stored(clean), sigma=0.12, n0=10, n=100, seed=0, batch_size=110)
    assert [i.radius for i in layer.images] == [None if np.isnan(r) else pytest.approx(r) for r in s["radius"]]


def test_the_scorecard_keeps_it_apart_and_the_pages_show_it(runs) -> None:
    root, plain, metrics, _ = runs
    build_report(root)
    card = json.loads((root / "scorecard.json").read_text())
    entry = card["certified"]
    assert entry["label"] == "certified (L2, randomized smoothing)" and "not the base model" in entry["holds_for"]
    assert [p["accuracy"] for p in entry["points"]] == [p.accuracy for p in metrics.certified.points]
    assert not any("randomized smoothing" in r["label"] for r in card["rows"])  # never a row
    assert card["overall"] == build_scorecard(plain).overall  # never part of the overall score
    assert "certified" in card["definitions"] and "certified" not in build_scorecard(plain).definitions
    assert any("randomized smoothing): not computed" in line for line in build_scorecard(plain).not_tested)
    assert not any("certifi" in line for line in build_scorecard(plain).not_tested)  # no claim where there is none
    report = " ".join(unescape((root / "report.html").read_text()).split())
    assert "The certificate holds for the smoothed classifier (noise, then the base model's majority vote), not for " \
           "the base model answering once" in report
    reach = entry["largest_radius"]
    assert reach == pytest.approx(metrics.certified.sigma * NormalDist().inv_cdf(
        metrics.certified.alpha ** (1 / metrics.certified.draws)), abs=1e-6)
    assert f"no image can be certified beyond an L2 radius of {reach:.2f}" in report
    for p in metrics.certified.points:
        cell = f"{100 * p.accuracy:.1f}%" + ("" if p.radius <= reach else f" (beyond {reach:.2f}, the most "
                                             f"{metrics.certified.draws:,} draws can certify: not a finding about the model)")
        assert f"<td>{p.radius:g}</td><td>{p.grey_levels_per_pixel:.2f}</td><td>{cell}</td>" in report
    assert any(p.radius > reach for p in metrics.certified.points)  # the test run's few draws reach below 1.0
    assert (root / "figures" / "19_certified_accuracy.png").stat().st_size > 1000
    statement = (root / "statement.html").read_text()
    assert "Certified robustness (a guarantee, apart from the scores)" in statement
    assert 'data-field="/certified/points/3/accuracy"' in statement
    assert 'data-field="/certified/largest_radius"' in statement and "not a finding about the model" in statement


def test_the_smoothed_demo_trains_under_noise_and_certifies_at_the_same_sigma() -> None:
    from pathlib import Path

    config = demo_config(quick=True, smoothed=True)
    assert config.name == "demo-smoothed-quick" and config.model.train.noise_sigma == config.certify.sigma == 0.25
    assert demo_config().certify is None and demo_config().model.train.noise_sigma == 0.0
    example = Path(__file__).resolve().parents[2] / "examples" / "demo-smoothed.yaml"
    assert yaml.safe_load(example.read_text()) == demo_settings(False, smoothed=True)
    assert load_config(example) == demo_config(False, smoothed=True)
