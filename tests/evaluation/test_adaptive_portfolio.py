"""The adaptive portfolio: the worst case is a per-image union, the doubling checks report their
figures, and a defense that masks gradients is flagged (end to end on a tiny model)."""

from __future__ import annotations

from html import escape
from pathlib import Path

import numpy as np
import pytest
import torch

import medrobust as mr
from medrobust.defenses.base import Defense
from medrobust.defenses.registry import _DEFENSES, register_defense
from medrobust.evaluation.adaptive_portfolio import (
    DoublingCheck,
    accuracy_noise,
    check_portfolio,
    double_until_converged,
    masking_reasons,
    worst_case,
)
from medrobust.evaluation.evaluation_checks import MASKING_MOOT, MASKING_WARNING
from medrobust.evaluation.results import read_metrics
from medrobust.evaluation.scorecard import read_scorecard
from medrobust.models.checkpoint import save_checkpoint
from medrobust.report import build_report


def test_the_worst_case_counts_an_image_fooled_by_several_members_once() -> None:
    clean = np.array([1, 1, 1, 1, 1, 0], bool)  # image 5 is wrong already on clean images
    members = {
        "a": [np.array([0, 1, 1, 1, 1, 1], bool)],  # fools image 0
        "b": [np.array([0, 0, 1, 1, 1, 1], bool), np.array([1, 1, 0, 1, 1, 1], bool)],  # two runs: 0, 1 and 2
        "c": [np.array([1, 1, 1, 1, 0, 1], bool)],  # fools image 4
    }
    robust, accuracy = worst_case(clean, members)
    assert robust.tolist() == [False, False, False, True, False, False]
    assert accuracy == {"a": 5 / 6, "b": 3 / 6, "c": 5 / 6}
    assert robust.mean() == pytest.approx(1 / 6)  # image 0 fooled by a and b counts once: 5 of 6 images fall
    assert robust.mean() <= min(accuracy.values())


def test_doubling_checks_converge_or_stop_at_their_limit() -> None:
    one_image = 1 / 60
    check = DoublingCheck("steps", (10,), (0.35,), one_image, 80)
    assert not check.converged and check.next_value() == 20
    check = DoublingCheck("steps", (10, 20), (0.35, 0.30), one_image, 80)
    assert not check.converged and check.next_value() == 40  # 3 images changed
    check = DoublingCheck("steps", (10, 20, 40), (0.35, 0.30, 0.2834), one_image, 80)
    assert check.converged and check.next_value() is None  # one image changed
    assert "converged" in check.text() and "10 -> 20 -> 40" in check.text() and "28.3%" in check.text()
    capped = DoublingCheck("steps", (10, 20, 40, 80), (0.5, 0.4, 0.3, 0.2), one_image, 80)
    assert capped.next_value() is None and not capped.converged and "NOT converged at the limit 80" in capped.text()
    assert DoublingCheck("steps", (10,), (0.5,), one_image, 10).next_value() is None  # no doubling fits the limit


def test_doubling_measures_only_until_the_last_doubling_changed_at_most_the_tolerance() -> None:
    accuracy = {10: 0.50, 20: 0.40, 40: 0.35, 80: 0.34, 160: 0.0}
    asked: list[int] = []

    def measure(steps: int) -> float:
        asked.append(steps)
        return accuracy[steps]

    check = double_until_converged("steps", 10, 160, measure, lambda acc: 0.02)
    assert asked == [10, 20, 40, 80] and check.converged  # 0.35 -> 0.34: within 0.02, so 160 is never run
    asked.clear()
    check = double_until_converged("steps", 10, 40, measure, lambda acc: 0.02)
    assert asked == [10, 20, 40] and not check.converged  # stopped by the limit, and says so


def test_noise_is_a_binomial_standard_error_of_at_least_one_image() -> None:
    assert accuracy_noise(0.5, 100) == pytest.approx(0.05)
    assert accuracy_noise(0.0, 60) == pytest.approx(1 / 60)
    assert accuracy_noise(0.99, 1000) == pytest.approx(np.sqrt(0.99 * 0.01 / 1000))


def test_masking_reasons_name_the_attack_and_the_numbers() -> None:
    assert masking_reasons(0.25, {"square": 0.30, "transfer": 0.25}, 0.0, "64/255", 60) == []
    reasons = masking_reasons(0.25, {"square": 0.20}, 0.05, "64/255", 60)
    assert reasons[0].startswith("square (20.0%) beat the best gradient attack (25.0%), 3 image(s) more")
    assert reasons[1].startswith("accuracy stays at 5.0% at eps 64/255")
    assert masking_reasons(None, {"square": 0.1}, None, "", 60) == []  # no gradient member: nothing to compare


def test_a_masking_warning_stands_beside_a_worst_case_only_above_zero(portfolio_run, masking_defense) -> None:
    d = next(d for d in read_metrics(portfolio_run).defenses if d.name == masking_defense)
    # its transfer member took the worst case to 0%: the signs are listed, without "may be optimistic"
    assert d.gradient_masking and d.adaptive_accuracy == 0.0 and not d.masking_flagged
    html = (portfolio_run / "report.html").read_text()
    assert escape(MASKING_MOOT) in html
    assert d.model_copy(update={"adaptive_accuracy": 0.25}).masking_flagged
    assert not d.model_copy(update={"adaptive_accuracy": 0.25, "gradient_masking": []}).masking_flagged


def test_portfolio_names_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown adaptive portfolio member"):
        check_portfolio(["unrolled", "pgd"])
    with pytest.raises(ValueError, match="empty"):
        check_portfolio([])


class _RoundToGrid(Defense):
    """A deliberately gradient-masking layer: rounding to the 8-bit grid, written with
    ``torch.round`` and declared differentiable. Stored images are already on the grid, so it
    changes nothing, but its gradient is zero everywhere: gradient attacks stall."""

    name = "masking-round"
    differentiable = True

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return torch.round(x * 255) / 255


@pytest.fixture(scope="module")
def masking_defense():
    register_defense("masking-round")(_RoundToGrid)
    yield "masking-round"
    _DEFENSES._entries.pop("masking-round", None)


@pytest.fixture(scope="module")
def portfolio_run(tmp_path_factory, trained_small_cnn, masking_defense) -> Path:
    tmp = tmp_path_factory.mktemp("portfolio")
    images = tmp / "images"
    mr.write_phantoms(images, per_class=8, size=32, seed=21)
    checkpoint = save_checkpoint(trained_small_cnn, tmp / "model")
    config = {
        "name": "portfolio", "output_dir": str(tmp / "runs"), "seed": 0, "batch_size": 12, "attack_images": 24,
        "data": {"source": str(images), "size": 32}, "model": {"load": {"path": str(checkpoint)}},
        "attacks": [{"name": "pgd", "params": {"eps": "8/255", "steps": 5}}],
        "defenses": [masking_defense, "tvm:weight=0.03,max_iter=20"],
        "adaptive": {"attack": "pgd", "params": {"steps": 2}, "portfolio": ["unrolled", "smooth", "square", "transfer"],
                     "restarts": 2, "max_steps": 8, "eot_samples": 2, "max_eot_samples": 4, "square_queries": 40},
        "detectors": {"reference": {"enabled": False}, "squeeze": {"enabled": False}},
    }
    mr.evaluate(preset=config)
    run_dir = tmp / "runs" / "portfolio"
    build_report(run_dir)
    return run_dir


def _stage_pred(run_dir: Path, key: str, defense: str | None = None) -> np.ndarray:
    from medrobust.evaluation.stage_keys import folder_name as array_key

    folder = run_dir / "stages" / "defenses" / (array_key(key) if defense is None else f"{array_key(defense)}/{array_key(key)}")
    files = sorted(folder.glob("batch-*.npz"))
    assert files, folder
    return np.concatenate([np.load(f)["pred"] for f in files])


def test_the_reported_worst_case_is_the_union_of_every_run_per_image(portfolio_run) -> None:
    m = read_metrics(portfolio_run)
    labels = np.concatenate([np.load(f)["labels"] for f in sorted((portfolio_run / "stages" / "inputs").glob("batch-*.npz"))])
    for d in m.defenses:
        ran = [mem for mem in d.adaptive_members if mem.accuracy is not None]
        assert ran and d.adaptive_accuracy <= min(mem.accuracy for mem in ran) + 1e-12
        assert d.adaptive_accuracy <= d.clean.accuracy + 1e-12
        robust = _stage_pred(portfolio_run, "clean", d.name) == labels
        for mem in ran:
            for key in mem.runs:
                pred = _stage_pred(portfolio_run, key, d.name) if mem.name == "transfer" else _stage_pred(portfolio_run, key)
                robust &= pred == labels
        assert d.adaptive_accuracy == pytest.approx(robust.mean())


def test_a_gradient_masking_layer_is_flagged(portfolio_run, masking_defense) -> None:
    m = read_metrics(portfolio_run)
    d = next(d for d in m.defenses if d.name == masking_defense)
    by_name = {mem.name: mem for mem in d.adaptive_members}
    assert d.clean.accuracy > 0.5  # the layer changes no stored image: the model still works through it
    assert by_name["transfer"].accuracy < by_name["unrolled"].accuracy  # zero gradients stall PGD
    assert d.masking_eps_accuracy is not None and d.masking_eps_accuracy > 0
    assert any("at eps 64/255" in r for r in d.gradient_masking)
    assert any(r.startswith("transfer (") and "beat the best gradient attack" in r for r in d.gradient_masking)
    assert by_name["smooth"].accuracy is None and "smooth approximation" in by_name["smooth"].not_run
    row = read_scorecard(portfolio_run).row("adaptive", next(r.label for r in read_scorecard(portfolio_run).rows
                                                             if r.label.startswith(masking_defense)
                                                             and r.threat_model == "adaptive"))
    assert row.warning and row.warning.startswith(MASKING_WARNING)
    html = (portfolio_run / "report.html").read_text()
    assert MASKING_WARNING in html and "Adaptive attackers against masking-round" in html


def test_step_and_eot_checks_report_their_figures(portfolio_run) -> None:
    m = read_metrics(portfolio_run)
    tvm = next(d for d in m.defenses if d.name.startswith("tvm"))
    checks = {c.quantity: c for c in tvm.adaptive_checks}
    assert set(checks) == {"EOT draws", "steps"}
    eot, steps = checks["EOT draws"], checks["steps"]
    assert eot.values[:2] == [2, 4] and len(eot.accuracies) == len(eot.values) and max(eot.values) <= 4
    assert steps.values[:2] == [2, 4] and max(steps.values) <= 8 and len(steps.accuracies) == len(steps.values)
    assert steps.tolerance == pytest.approx(1 / 24)
    assert steps.converged == (abs(steps.accuracies[-1] - steps.accuracies[-2]) <= 1 / 24 + 1e-12)
    unrolled = next(mem for mem in tvm.adaptive_members if mem.name == "unrolled")
    assert f"EOT over {eot.values[-1]} draws" in unrolled.description and f"{steps.values[-1]} steps" in unrolled.description
    assert sum(" restart 1 " in key for key in unrolled.runs) == 1  # the second random start counts in the union
    assert len(set(unrolled.runs)) == len(unrolled.runs)  # the run the EOT and step checks share is listed once
    html = (portfolio_run / "report.html").read_text()
    assert escape(steps.text) in html and escape(eot.text) in html


def test_a_black_box_faces_square_and_transfer_and_masking_is_not_assessed(tmp_path, trained_small_cnn) -> None:
    import copy

    black_box = copy.deepcopy(trained_small_cnn)
    black_box.differentiable = False  # as an ONNX model: outputs only
    images = tmp_path / "images"
    mr.write_phantoms(images, per_class=4, size=32, seed=22)
    m = mr.evaluate(black_box, str(images), preset="quick", run_dir=tmp_path / "run", size=32, attack_images=12)
    (d,) = m.defenses
    assert [(mem.name, mem.accuracy is not None) for mem in d.adaptive_members] == [("square", True), ("transfer", True)]
    assert d.adaptive_checks == [] and not d.gradient_masking and not d.gradient_masking_assessed
    assert d.adaptive_accuracy <= min(mem.accuracy for mem in d.adaptive_members)
    card = read_scorecard(tmp_path / "run")
    row = next(r for r in card.rows if r.threat_model == "adaptive")
    assert row.warning == "gradient masking not assessed: no gradient attack could run through the defense"
    # the guard (quick includes it) faces Square's queries through its defense, the adaptive member's own images
    # (it reported only the undefended model's images before, and read far better than the adaptive row)
    from medrobust.evaluation.results import QUERY_MEMBER

    g = m.guard
    assert g is not None and g.not_run
    adaptive = {round(p.eps * 255): p.accuracy for p in d.adaptive_sweep}
    for b in g.budgets:
        (queried,) = [mem for mem in b.members if mem.name == QUERY_MEMBER]
        assert queried.evasion_rate is not None and queried.runs and all("adaptive vs" in r for r in queried.runs)
        assert queried.evasion_rate <= 1 - adaptive[round(b.eps * 255)] + 1e-9  # the guard can only refuse more
        assert b.evasion_rate >= queried.evasion_rate
    guarded = next(r for r in card.rows if r.threat_model == "guarded")
    assert "Square-through-the-defense" in guarded.label and "none aims at the detectors" in guarded.warning
    assert g.queried_through_defense
