"""``autoattack`` as a configured attack of a run: the images each member broke are counted in the
metrics and named per image in ``per_image.csv``, and they account for every image it fooled."""

from __future__ import annotations

import csv
from collections import Counter

import pytest

import medrobust as mr

SETTINGS = {
    "attacks": [{"name": "autoattack", "params": {"eps": "2/255", "steps": 10, "queries": 100}, "transfer": False}],
    "defenses": [], "adaptive": {"enabled": False}, "attack_images": 12, "batch_size": 6, "data": {"size": 32},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory, trained_small_cnn):
    root = tmp_path_factory.mktemp("autoattack") / "run"
    return root, mr.evaluate(trained_small_cnn, "phantom:seed=7,per_class=6", SETTINGS, run_dir=root)


def test_each_member_s_images_are_counted_and_named_per_image(run) -> None:
    root, metrics = run
    outcome = metrics.attack("autoattack@2/255")
    with (root / "per_image.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["attack"] == "autoattack@2/255"]
    named = Counter(r["broken_by"] for r in rows if r["broken_by"])
    assert outcome.broken_by == dict(named) and set(named) <= {"clean", "apgd-ce", "apgd-t", "square"}
    fooled = [r for r in rows if r["clean_correct"] == "1" and r["adversarial_correct"] == "0"]
    assert {r["broken_by"] for r in fooled} <= {"apgd-ce", "apgd-t", "square"}
    assert len(fooled) == sum(v for k, v in named.items() if k != "clean") >= 1
    assert all(r["broken_by"] == "" for r in rows if r["adversarial_correct"] == "1")


def test_the_scorecard_does_not_call_the_query_attacker_untested(run) -> None:
    from medrobust.evaluation.scorecard import read_scorecard

    root, _ = run
    lines = [line for line in read_scorecard(root).not_tested if line.startswith("query-only attacker")]
    assert lines == ["query-only attacker: not a row of its own (Square ran inside autoattack, on the images its "
                     "gradient attacks left; those it broke count in the white-box row)"]
