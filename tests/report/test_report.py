"""The report: built from a synthetic run directory alone; self-contained; every figure; the
summary's numbers equal metrics.json's; missing optional parts give notes, not crashes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from medrobust.evaluation.results import RunMetrics
from medrobust.report import REPORT_FIGURES, build_report
from medrobust.report.figure import ReportFigure
from medrobust.report.run_contents import RunContents, read_history
from medrobust.report.summary import build_summary

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SIA, PGD = "sia@8/255", "pgd@8/255"  # keys of the synthetic run (conftest)


def resolve(metrics: dict, source: str) -> float:
    """The value at a summary source path such as ``attacks[sia@8/255].dangerous_flips[Pneumothorax].count``:
    ``name`` steps into a field, ``[k]`` into a dict key or the list item whose key/name/true_class is k,
    ``[*]`` sums the rest of the path over a list."""
    tokens = re.findall(r"\[([^\]]*)\]|\.?([A-Za-z_]+)", source)
    return _walk(metrics, [index if index else field for index, field in tokens], [bool(index) for index, _ in tokens])


def _walk(node, parts: list[str], is_index: list[bool]) -> float:
    for n, (part, indexed) in enumerate(zip(parts, is_index)):
        if indexed and part == "*":
            return sum(_walk(item, parts[n + 1:], is_index[n + 1:]) for item in node)
        if isinstance(node, list):
            node = next(i for i in node if part in (i.get("key"), i.get("name"), i.get("true_class")))
        else:
            node = node[part]
    return float(node)


def test_report_is_written_with_every_figure(complete_run) -> None:
    run_dir, _, path = complete_run
    assert path == run_dir / "report.html"
    html = path.read_text()
    for figure_id, title in REPORT_FIGURES.items():
        png = run_dir / "figures" / f"{figure_id}.png"
        assert png.read_bytes().startswith(PNG_MAGIC), figure_id
        assert f'<figure id="{figure_id}">' in html, figure_id
        assert f"<b>{title}.</b>" in html, title
    assert html.count("<figure ") == len(REPORT_FIGURES)
    assert sorted(p.stem for p in (run_dir / "figures").glob("*.png")) == sorted(REPORT_FIGURES)


def test_report_is_self_contained(complete_run) -> None:
    html = complete_run[2].read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html)
    assert "http://" not in html and "https://" not in html
    images = re.findall(r"<img [^>]*>", html)
    assert len(images) == len(REPORT_FIGURES)
    assert all('src="data:image/png;base64,' in img for img in images)
    assert "<script" not in html and "<link" not in html and "@import" not in html


def test_report_has_sections_config_and_footer(complete_run) -> None:
    _, metrics, path = complete_run
    html = path.read_text()
    for section in ("summary", "data-model", "baseline", "attacks", "eps-sweep", "transfer", "defenses", "detection",
                    "methods"):
        assert f'<section id="{section}">' in html
    assert "source: phantom" in html  # the config as YAML
    assert f"medrobust {metrics.medrobust_version}" in html and metrics.created in html
    # per attack: clean -> adversarial accuracy, success rates, perturbation
    sia = metrics.attack(SIA)
    assert f"{100 * sia.clean.accuracy:.1f}% &rarr; <b>{100 * sia.adversarial.accuracy:.1f}%</b>" in html
    assert f"{sia.perturbation.ssim_mean:.3f}" in html and f"{sia.perturbation.psnr_mean_db:.1f}" in html
    assert "img000: Attack Detected | SSIM: 0.81" in html  # the study's log lines


def test_summary_numbers_equal_metrics(complete_run) -> None:
    run_dir, metrics, path = complete_run
    raw = json.loads((run_dir / "metrics.json").read_text())
    summary = build_summary(RunContents.read(run_dir))
    html = path.read_text()
    assert summary.html in html
    assert len(summary.numbers) >= 10
    for number in summary.numbers:
        assert resolve(raw, number.source) == pytest.approx(number.value), number
        assert number.text in summary.html, number
    by_name = {n.name: n for n in summary.numbers}
    sia = metrics.attack(SIA)
    assert by_name["attack_clean_accuracy"].text == f"{100 * sia.clean.accuracy:.1f}%"
    assert by_name["attack_adversarial_accuracy"].text == f"{100 * sia.adversarial.accuracy:.1f}%"
    assert "SIA at 8/255, by an attacker who can compute the model's gradients, takes accuracy from <b>78.3%</b> " \
           "to <b>53.3%</b>" in summary.html
    assert ("<b>3</b> pneumothorax images were reported as Normal after the attack (<b>18.8%</b> of the pneumothorax "
            "images the model had right) &mdash; <b>missed emergencies</b>") in summary.html
    assert by_name["strongest_adversarial_accuracy"].source == f"attacks[{PGD}].adversarial.accuracy"
    assert "wins back <b>6.7 points</b> against an attacker who ignores it" in summary.html
    assert "on re-encoded images (jpeg90)" in summary.html
    assert f"{metrics.robustness_score.value:.1f}" in summary.html
    assert metrics.robustness_score.definition in summary.html


def test_missing_optional_parts_give_notes(tmp_path: Path, write_run) -> None:
    write_run(tmp_path, transfer=False, defenses=False, detectors=False, samples=False, history=False)
    html = build_report(tmp_path).read_text()
    produced = {p.stem for p in (tmp_path / "figures").glob("*.png")}
    assert produced == {"01_baseline_confusion", "03_classwise_accuracy", "05_confusion_after_attack",
                        "06_accuracy_drop_per_class", "15_accuracy_vs_epsilon"}
    for text in ("no transfer matrix", "no defenses", "no detectors", "no training history",
                 "no example images for this attack", "Grad-CAM"):
        assert text in html, text
    assert "Even crafted without access" not in html


def test_rebuild_removes_figures_a_run_no_longer_allows(tmp_path: Path, write_run) -> None:
    write_run(tmp_path, defenses=False, detectors=False)
    build_report(tmp_path)
    assert (tmp_path / "figures" / "14_gradcam.png").is_file()
    (tmp_path / "samples" / "examples.npz").unlink()
    build_report(tmp_path)
    assert not (tmp_path / "figures" / "14_gradcam.png").exists()
    assert not list(tmp_path.glob("**/*.tmp"))


def test_run_without_attacks(tmp_path: Path, write_run) -> None:
    metrics = write_run(tmp_path, transfer=False, defenses=False, detectors=False, samples=False)
    bare = RunMetrics.model_validate({**metrics.model_dump(), "attacks": [], "eps_sweep": {}})
    (tmp_path / "metrics.json").write_text(bare.model_dump_json())
    html = build_report(tmp_path).read_text()
    assert "no attack results" in html
    assert "02_training_curves" in html


def test_history_is_read_gracefully(tmp_path: Path) -> None:
    assert read_history(tmp_path / "absent.json") == []
    (tmp_path / "broken.json").write_text("{not json")
    assert read_history(tmp_path / "broken.json") == []
    (tmp_path / "nested.json").write_text(json.dumps({"training": {"history": [
        {"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5, "val_loss": 1.1, "val_accuracy": 0.4}, {"epoch": 2}]}}))
    assert len(read_history(tmp_path / "nested.json")) == 1


def test_missing_metrics_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="metrics.json"):
        build_report(tmp_path)


def test_figures_are_figure_objects(complete_run) -> None:
    from medrobust.report import figures_classification as fc

    fig = fc.baseline_confusion(complete_run[1])
    assert isinstance(fig, ReportFigure) and fig.png.startswith(PNG_MAGIC) and fig.filename == "01_baseline_confusion.png"
    assert "60 clean test images" in fig.caption


def test_the_adaptive_figure_takes_the_non_adaptive_figure_at_the_adaptive_budget() -> None:
    """The figure once said n/a where the table gave the non-adaptive accuracies: the keys at the
    adaptive attacker's budget are found by their budget, sweep keys at other budgets left out."""
    from medrobust.report.figures_robustness import strongest_non_adaptive

    from .conftest import make_metrics

    metrics = make_metrics()
    defense = metrics.defenses[0]
    defense.adaptive_eps = 8 / 255
    defense.non_adaptive["pgd@2/255"] = 0.05  # a sweep budget: lower, but not the adaptive attacker's budget
    defense.non_adaptive_eps["pgd@2/255"] = 2 / 255
    key, ignored, undefended = strongest_non_adaptive(defense, metrics)
    at_main = {k: v for k, v in defense.non_adaptive.items() if k != "pgd@2/255"}
    assert key == min(at_main, key=at_main.get) and ignored == at_main[key]
    assert undefended == pytest.approx(metrics.attack(key).adversarial.accuracy)
