"""``robustbench: true`` / ``--robustbench``: the accuracy under AutoAttack at 8/255 L-inf on float
images (RobustBench's terms), per batch as a direct call of the attack gives it, never rounded to
8 bits, added to a finished run without recomputing it, and printed by the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

import medrobust as mr
from medrobust.attacks.autoattack import AutoAttack
from medrobust.cli import app
from medrobust.evaluation.results import read_metrics
from medrobust.evaluation.stages.robustbench import EPS
from medrobust.execution.pixels import from_stored, to_stored
from medrobust.execution.resumable_stage import finished_summary
from medrobust.execution.units import FloatAttackUnit, Workbench

SETTINGS = {
    "attacks": [{"name": "apgd", "params": {"eps": "8/255", "steps": 10}, "eps_sweep": ["2/255", "8/255"]}],
    "defenses": [], "adaptive": {"enabled": False}, "attack_images": 8, "batch_size": 4, "data": {"size": 32},
}
DATA = "phantom:seed=7,per_class=6"


@pytest.fixture(scope="module")
def run(tmp_path_factory, trained_small_cnn):
    root = tmp_path_factory.mktemp("robustbench") / "run"
    metrics = mr.evaluate(trained_small_cnn, DATA, {**SETTINGS, "robustbench": True}, run_dir=root)
    return root, metrics


def test_the_figure_is_autoattack_on_float_images_batch_by_batch(run, trained_small_cnn) -> None:
    root, metrics = run
    rb = metrics.robustbench
    assert rb is not None and rb.n == 8 and rb.eps == pytest.approx(8 / 255)
    assert 0 < rb.clean_accuracy and rb.robust_accuracy <= rb.clean_accuracy
    assert 0 < rb.largest_linf <= EPS + 1e-6
    inputs = finished_summary(root / "stages" / "inputs")
    labels = inputs["labels"]
    clean = np.concatenate([np.load(p)["clean"] for p in sorted((root / "stages" / "inputs").glob("batch-*.npz"))])
    right, broken = [], {}
    for start in range(0, 8, 4):  # the stage's batches, each seeded with seed + start
        x = from_stored(clean[start:start + 4])
        y = torch.from_numpy(labels[start:start + 4])
        attack = AutoAttack(eps=8 / 255, quantize_bits=None, seed=0)
        x_adv = attack(trained_small_cnn, x, y, generator=attack.make_generator(x.device, start))
        with torch.no_grad():
            right += ((trained_small_cnn.predict(x_adv) == y) & (trained_small_cnn.predict(x) == y)).tolist()
        for member in attack.broken_by:
            if member and member != "clean":
                broken[member] = broken.get(member, 0) + 1
    assert rb.robust_accuracy == pytest.approx(np.mean(right))
    assert rb.broken_by == broken and sum(broken.values()) >= 1


def test_the_unit_never_rounds_to_the_storage_grid(trained_small_cnn, phantom32) -> None:
    # an L-inf attack at 8/255 ends on the grid anyway (x +- 8/255); at 3.5/255 a rounded image could not
    splits, _ = phantom32
    x, y = splits["test"][0][:6], splits["test"][1][:6]
    unit = FloatAttackUnit(seed=0, start=0, attack="pgd", params={"eps": 3.5 / 255, "steps": 5},
                           clean=to_stored(x), labels=y.numpy())
    out = unit.run(Workbench({"model": trained_small_cnn}, torch.device("cpu")))
    assert np.allclose(out["linf"], 3.5 / 255, atol=1e-6)  # rounded: 3/255 or 4/255
    assert out["clean_pred"].shape == out["pred"].shape == (6,)


def test_the_cli_adds_it_to_a_finished_run_and_prints_it(run, tmp_path, trained_small_cnn) -> None:
    from medrobust.models.checkpoint import save_checkpoint

    _, first = run
    save_checkpoint(trained_small_cnn, tmp_path / "model")
    config = {**SETTINGS, "name": "plain", "output_dir": str(tmp_path), "data": {**SETTINGS["data"], "source": DATA},
              "model": {"load": {"path": str(tmp_path / "model")}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "c.yaml")])
    assert result.exit_code == 0, result.output
    assert "RobustBench" not in result.output and read_metrics(tmp_path / "plain").robustbench is None
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "plain" / "stages").rglob("batch-*.npz")}
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "c.yaml"), "--robustbench"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.replace("│", " ").split())  # the table's cells wrap at 80 columns
    rb = first.robustbench
    for words in ("RobustBench: AutoAttack (without", "FAB-T) at 8/255 L-inf, float images", "scored on the grid",
                  f"{100 * rb.clean_accuracy:.1f}% -> {100 * rb.robust_accuracy:.1f}% on 8 images"):
        assert words in text
    again = read_metrics(tmp_path / "plain").robustbench
    assert again.model_dump(exclude={"seconds_per_image"}) == rb.model_dump(exclude={"seconds_per_image"})
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())  # nothing finished was recomputed
    report = " ".join((tmp_path / "plain" / "report.html").read_text().split())
    assert "In RobustBench's terms (AutoAttack without FAB-T at 8/255 L-inf" in report
    assert f"keeps an accuracy of <b>{100 * rb.robust_accuracy:.1f}%</b>" in report
