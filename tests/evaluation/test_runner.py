"""The experiment runner end to end through the CLI: metrics.json, report.html, resuming."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from medrobust.cli import app
from medrobust.evaluation.results import read_metrics
from tests.progress_wait import files_written, wait_for

TINY = {
    "name": "tiny",
    "seed": 0,
    "device": "cpu",
    "batch_size": 8,
    "attack_images": 24,
    "sample_images": 3,
    "data": {"source": "phantom", "size": 32, "per_class": 60, "phantom_seed": 11},
    "model": {"train": {"arch": "small-cnn", "epochs": 8, "lr": 0.003}},
    "surrogates": [{"name": "other-cnn", "train": {"arch": "small-cnn", "epochs": 4, "lr": 0.003}}],
    "attacks": [
        {"name": "sia", "params": {"eps": "8/255", "n_copies": 2, "steps": 3}, "eps_sweep": ["4/255", "8/255"]},
        {"name": "pgd", "params": {"eps": "8/255", "steps": 5}, "eps_sweep": ["2/255", "8/255"]},
        {"name": "mifgsm", "params": {"eps": "8/255", "steps": 3}, "transfer": False},
    ],
    "defenses": ["jpeg:quality=75+tv"],
    "adaptive": {"attack": "pgd", "params": {"steps": 3}, "max_steps": 6, "square_queries": 30, "restarts": 1},
    "detectors": {"reference": {}, "squeeze": {"calibration_images": 30}},
    "certify": {"sigma": 0.12, "n0": 10, "n": 50, "batch": 60},
}


def _write_config(tmp_path: Path, **changes) -> Path:
    cfg = {**TINY, "output_dir": str(tmp_path / "runs"), **changes}
    path = tmp_path / f"{cfg['name']}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    result = CliRunner().invoke(app, ["evaluate", str(_write_config(tmp))])
    assert result.exit_code == 0, result.output
    return tmp / "runs" / "tiny", result.stdout


def test_metrics_hold_every_stage(finished_run) -> None:
    run_dir, _ = finished_run
    m = read_metrics(run_dir)
    n = m.data["attack_images"]
    assert n == 24
    assert sum(map(sum, m.baseline.confusion_matrix)) == m.data["n"]["test"]
    keys = [a.key for a in m.attacks]
    assert keys == ["sia@8/255", "sia@8/255 from other-cnn", "pgd@8/255", "pgd@8/255 from other-cnn", "mifgsm@8/255"]
    for a in m.attacks:
        assert sum(map(sum, a.clean.confusion_matrix)) == n
        assert sum(map(sum, a.adversarial.confusion_matrix)) == n
        if a.source == "white-box":
            assert a.adversarial.accuracy <= a.clean.accuracy
        assert a.perturbation.linf_max <= 8 / 255 + 1e-6
        assert {f.true_class for f in a.dangerous_flips} == {"Pneumonia", "Pneumothorax"}
    assert [p.eps for p in m.eps_sweep["pgd"]] == pytest.approx([2 / 255, 8 / 255])
    assert m.transfer is not None and m.transfer.sources == ["model", "other-cnn"]
    (defense,) = m.defenses
    assert defense.name == "jpeg:quality=75+tv"
    assert defense.gradient_mode == "unrolled, smooth, bpda, queries, transfer"  # every member ran
    assert [m.name for m in defense.adaptive_members] == ["unrolled", "smooth", "bpda", "square", "transfer"]
    assert defense.adaptive_accuracy <= min(m.accuracy for m in defense.adaptive_members)
    # the attacks' images through the defense, the sweeps' other budgets too (the non-adaptive row's grid)
    assert set(defense.non_adaptive) == {"sia@8/255", "pgd@8/255", "mifgsm@8/255", "pgd@2/255", "sia@4/255"}
    assert defense.non_adaptive_eps["pgd@2/255"] == pytest.approx(2 / 255)
    assert [d.name for d in m.detectors] == ["reference", "squeeze"]
    for d in m.detectors:
        assert set(d.fpr_benign) == {"jpeg90", "rewindow", "resize", "noise"}
        assert set(d.detection_rate) == {"sia@8/255", "pgd@8/255", "mifgsm@8/255"}
    assert m.detectors[0].fpr_clean == 0.0  # an image compared with itself is never flagged
    from medrobust.evaluation.scorecard import no_skill

    assert "Robustness score" in m.robustness_score.definition
    if no_skill(m.baseline) is None:  # the tiny model may not beat its majority class: then there is no score
        assert 0 <= m.robustness_score.value <= 100
    else:
        assert m.robustness_score.value is None
    for stage in ("baseline", "attack sia@8/255"):
        assert stage in m.seconds_per_image


def test_run_directory_layout(finished_run) -> None:
    run_dir, _ = finished_run
    for rel in ("config.yaml", "model/model.json", "model/model.safetensors", "surrogates/other-cnn/model.json",
                "samples/examples.npz", "metrics.json", "report.html"):
        assert (run_dir / rel).is_file(), rel
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["attacks"][0]["params"]["n_copies"] == 2  # given values kept
    assert config["detectors"]["reference"]["ssim_threshold"] == 0.85  # defaults written out


def test_report_has_every_figure_and_the_summary_numbers(finished_run) -> None:
    from medrobust.report.html import REPORT_FIGURES

    run_dir, stdout = finished_run
    html = (run_dir / "report.html").read_text()
    for figure in REPORT_FIGURES:
        assert figure in html, figure
    assert "http://" not in html and "https://" not in html
    m = read_metrics(run_dir)
    sia = m.attack("sia@8/255")
    assert f"{100 * sia.clean.accuracy:.1f}%" in html and f"{100 * sia.adversarial.accuracy:.1f}%" in html
    assert "report:" in stdout and "robustness score" in stdout


def _strip_volatile(m) -> dict:
    data = json.loads(m.model_dump_json())
    for key in ("created", "seconds_per_image", "seconds_total", "name", "config"):
        data.pop(key)
    for a in data["attacks"]:
        a.pop("seconds_per_image")
    for d in data["defenses"]:
        d.pop("seconds_per_image")
        for member in d["adaptive_members"]:
            member.pop("seconds_per_image")
    for d in data["detectors"]:
        d.pop("latency_ms_per_image")
    data["model"]["metrics"].pop("train_seconds", None)
    if data.get("certified"):
        data["certified"].pop("seconds_per_image")
    return data


def test_a_killed_run_resumes_without_recomputing_finished_work(tmp_path, finished_run) -> None:
    config = _write_config(tmp_path, name="resumed")
    run_dir = tmp_path / "runs" / "resumed"
    first_batch = run_dir / "stages" / "attacks" / "sia_8_255" / "batch-0001.npz"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "medrobust", "evaluate", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    # wait on the run's progress (files written), not on a fixed total: a busy machine is slower, not a failure
    wait_for(lambda: files_written(run_dir), lambda _: first_batch.is_file() or proc.poll() is not None,
             interval_s=0.05, what="the run before its first SIA batch")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first_batch.is_file(), "the run did not get as far as the SIA batches"
    assert not (run_dir / "metrics.json").exists()
    kept = {p: p.stat().st_mtime_ns for p in (run_dir / "stages").rglob("*.npz")}
    kept[run_dir / "model" / "model.safetensors"] = (run_dir / "model" / "model.safetensors").stat().st_mtime_ns

    result = CliRunner().invoke(app, ["evaluate", str(config)])
    assert result.exit_code == 0, result.output
    for path, mtime in kept.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was recomputed"
    reference_dir, _ = finished_run
    assert _strip_volatile(read_metrics(run_dir)) == _strip_volatile(read_metrics(reference_dir))


def test_a_different_config_in_the_same_run_dir_is_refused(tmp_path, finished_run) -> None:
    run_dir, _ = finished_run
    config = dict(TINY, output_dir=str(run_dir.parent), attack_images=12)
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["evaluate", str(path)])
    assert result.exit_code == 2 and "another configuration (attack_images differ)" in result.output
    assert "--restart" in result.output and "restart=True" not in result.output  # the fix in the CLI's words


def test_report_re_reads_a_run_with_another_normal_class_and_emergency_findings(tmp_path, finished_run) -> None:
    """`medrobust report RUN --normal-class/--emergency-findings` re-reads the stored stages (as
    `evaluate` does) — in a run folder that was moved, so its recorded output_dir is stale."""
    import shutil

    run_dir, _ = finished_run
    moved = tmp_path / "elsewhere" / "tiny-copy"
    shutil.copytree(run_dir, moved)
    before = read_metrics(moved)
    stage_files = {p: p.stat().st_mtime_ns for p in (moved / "stages").rglob("*.npz")}
    result = CliRunner().invoke(app, ["report", str(moved), "--normal-class", "Pneumonia",
                                      "--emergency-findings", "Normal"])
    assert result.exit_code == 0, result.output
    after = read_metrics(moved)
    assert before.data["normal_class"] == "Normal" and after.data["normal_class"] == "Pneumonia"
    assert after.data["emergency_findings"] == ["Normal"]
    flips = {f.true_class: f for f in after.attacks[0].dangerous_flips}
    assert set(flips) == {"Normal", "Pneumothorax"} and flips["Normal"].emergency
    assert not flips["Pneumothorax"].emergency
    assert after.attacks[0].adversarial == before.attacks[0].adversarial  # nothing recomputed
    assert all(p.stat().st_mtime_ns == t for p, t in stage_files.items())
    assert "Pneumonia" in (moved / "report.html").read_text()


def test_per_image_csv_has_a_row_per_image_and_attack_and_agrees_with_the_metrics(finished_run) -> None:
    import csv

    run_dir, _ = finished_run
    m = read_metrics(run_dir)
    with (run_dir / "per_image.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    keys = [a.key for a in m.attacks]
    sweep_keys = ["sia@4/255", "pgd@2/255", "sia@4/255 from other-cnn", "pgd@2/255 from other-cnn"]  # transferred too
    assert sorted({r["attack"] for r in rows}) == sorted(keys + sweep_keys)
    assert len(rows) == m.data["attack_images"] * len(keys + sweep_keys)
    assert set(rows[0]) >= {"id", "true_class", "clean_prediction", "adversarial_prediction", "budget_grey_levels",
                            "defended_prediction[jpeg:quality=75+tv]", "flagged[reference]", "flagged[squeeze]"}
    for attack in m.attacks:  # each attack's accuracy, recomputed from the table
        mine = [r for r in rows if r["attack"] == attack.key]
        assert sum(int(r["adversarial_correct"]) for r in mine) / len(mine) == pytest.approx(attack.adversarial.accuracy)
        assert {r["crafted_on"] for r in mine} == {attack.source}
    pgd = [r for r in rows if r["attack"] == "pgd@8/255"]
    reference = next(d for d in m.detectors if d.name == "reference")
    assert sum(int(r["flagged[reference]"]) for r in pgd) / len(pgd) == pytest.approx(reference.detection_rate["pgd@8/255"])
    defense = m.defenses[0]
    assert sum(r["defended_prediction[jpeg:quality=75+tv]"] == r["true_class"] for r in pgd) / len(pgd) == \
        pytest.approx(defense.non_adaptive["pgd@8/255"])
    assert all(r["flagged[reference]"] == "" for r in rows if r["attack"] in sweep_keys)
    assert 'href="per_image.csv"' in (run_dir / "report.html").read_text()


def test_evaluate_takes_the_emergency_findings_too(tmp_path, finished_run) -> None:
    import shutil

    run_dir, _ = finished_run
    moved = tmp_path / "copy" / "tiny"
    shutil.copytree(run_dir, moved)
    result = CliRunner().invoke(app, ["evaluate", str(moved / "config.yaml"), "--output-dir", str(moved.parent),
                                      "--emergency-findings", "Pneumonia,Pneumothorax"])
    assert result.exit_code == 0, result.output
    m = read_metrics(moved)
    assert m.data["emergency_findings"] == ["Pneumonia", "Pneumothorax"]
    assert all(f.emergency for f in m.attacks[0].dangerous_flips)
