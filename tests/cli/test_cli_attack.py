"""`medrobust attack` end to end: white-box and transferred, CSV and summary contents."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from medrobust.cli import app
from medrobust.data.io import read_image
from medrobust.models.checkpoint import save_checkpoint

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, trained_small_cnn, second_small_cnn):
    root = tmp_path_factory.mktemp("models")
    save_checkpoint(trained_small_cnn, root / "target")
    save_checkpoint(second_small_cnn, root / "surrogate")
    return root


def _read(out):
    with open(out / "attack.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return rows, json.loads((out / "summary.json").read_text())


def test_white_box_pgd_writes_images_csv_and_summary(tmp_path, checkpoints) -> None:
    out = tmp_path / "pgd"
    result = runner.invoke(app, ["attack", "--model", str(checkpoints / "target"), "--data", "phantom:seed=11",
                                 "--per-class", "150", "--size", "32", "--attack", "pgd", "--eps", "8/255",
                                 "--limit", "24", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows, summary = _read(out)
    assert len(rows) == 24
    for key in ("true", "pred_clean", "conf_clean", "pred_adv", "conf_adv", "linf", "l2", "ssim", "psnr"):
        assert key in rows[0]
    assert max(float(r["linf"]) for r in rows) <= 8 / 255 + 1e-6
    image = read_image(out / rows[0]["file"])
    assert image.shape == (32, 32)
    assert summary["n_images"] == 24
    assert summary["adversarial_accuracy"] <= summary["clean_accuracy"]
    assert summary["success_rate_correct"] > 0.8
    assert summary["attack"]["name"] == "pgd" and summary["attack"]["eps"] == pytest.approx(8 / 255)
    # written once, by the public layer, naming what was attacked as given
    assert summary["target"] == str(checkpoints / "target") and summary["data"] == "phantom:seed=11"
    assert summary["surrogate"] is None
    assert "success rate (correct before)" in result.stdout


def test_transfer_from_a_surrogate(tmp_path, checkpoints) -> None:
    out = tmp_path / "transfer"
    result = runner.invoke(app, ["attack", "--model", str(checkpoints / "target"), "--surrogate",
                                 str(checkpoints / "surrogate"), "--data", "phantom:seed=11", "--per-class", "150",
                                 "--size", "32", "--attack", "mifgsm", "--eps", "8/255", "--limit", "16",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    _, summary = _read(out)
    assert summary["surrogate"].endswith("surrogate")
    assert 0.0 <= summary["success_rate_all"] <= 1.0


def test_unknown_attack_parameter_is_one_clear_error(tmp_path, checkpoints) -> None:
    result = runner.invoke(app, ["attack", "--model", str(checkpoints / "target"), "--data", "phantom",
                                 "--attack", "pgd", "--param", "epsilon=3", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "unknown parameter" in result.stderr


def test_folders_in_capitals_match_by_name_and_flips_are_reported(tmp_path, checkpoints) -> None:
    from medrobust.data.io import write_png
    from medrobust.data.phantom import PhantomDataset

    folders = {"Normal": "NORMAL", "Pneumonia": "PNEUMONIA", "Pneumothorax": "PNEUMOTHORAX"}
    ds = PhantomDataset(per_class=3, size=32, seed=5, fractions=None)
    for image, label, item_id in ds.iter_valid():
        write_png(tmp_path / "data" / folders[ds.classes[label]] / f"{item_id}.png", image)
    out = tmp_path / "out"
    result = runner.invoke(app, ["attack", "--model", str(checkpoints / "target"), "--data", str(tmp_path / "data"),
                                 "--split", "all", "--size", "32", "--attack", "pgd", "--eps", "8/255", "--out",
                                 str(out)])
    assert result.exit_code == 0, result.output
    rows, summary = _read(out)
    assert {r["true"] for r in rows} == {"Normal", "Pneumonia", "Pneumothorax"}  # the model's names, by name
    assert summary["normal_class"] == "Normal"
    assert {f["true_class"] for f in summary["dangerous_flips"]} == {"Pneumonia", "Pneumothorax"}


def test_a_budget_above_64_grey_levels_is_refused(tmp_path, checkpoints) -> None:
    result = runner.invoke(app, ["attack", "--model", str(checkpoints / "target"), "--data", "phantom",
                                 "--attack", "pgd", "--eps", "300/255", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "64/255" in result.stderr and "--allow-large-eps" in result.stderr
