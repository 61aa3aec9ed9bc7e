"""A user's own 3-D CT model with flags only (issue 29, the run; "tried as a new user would"): a
tiny 3-D CNN exported outside medrobust to ONNX and TorchScript at 8 x 16 x 16, and DICOM series
with shuffled, suffix-less slice names under the user's class folders (``bleed``, ``clear``,
``stroke``), evaluated, predicted and attacked from the command line with ``--classes`` and
``--window 40,80`` alone: budgets in HU beside the measured noise, what refuses volumes left out
with its reason, the volumes read at the model's in-plane side, adversarial volumes written back as
DICOM series in HU."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from medrobust.cli.app import app
from medrobust.defenses.total_variation import HU_TV
from tests.foreign_ct import CLASSES, export_user_volume_model, write_user_series_tree

pytest.importorskip("onnxruntime")

SHAPE = (8, 16, 16)
runner = CliRunner()


@pytest.fixture(scope="module")
def user_ct(tmp_path_factory):
    """The user's series tree (two heads per class, 32 px in-plane, 8 slices) and model files."""
    root = tmp_path_factory.mktemp("user_ct")
    tree = write_user_series_tree(root / "series", per_class=2, size=32, depth=SHAPE[0], seed=3)
    return tree, export_user_volume_model(root / "model", SHAPE)


@pytest.fixture(scope="module")
def onnx_run(user_ct, tmp_path_factory):
    tree, model = user_ct
    out = tmp_path_factory.mktemp("runs")
    result = runner.invoke(app, ["evaluate", "--model", str(model.onnx), "--data", f"{tree}/", "--classes", CLASSES,
                                 "--window", "40,80", "--preset", "quick", "--output-dir", str(out), "--name", "vol"])
    return result, out / "vol"


@pytest.mark.slow  # the quick preset's Square sweeps and adaptive Square through TV: minutes on 2 shared cores
def test_evaluate_with_flags_only_states_hu_budgets_and_what_volumes_leave_out(onnx_run):
    result, run = onnx_run
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    data, config = metrics["data"], metrics["config"]
    assert data["grid"]["unit"] == "HU"
    assert data["size"] == SHAPE[-1] and data["tested"] == 6  # read at the model's in-plane side, not its depth
    assert [round(e * 4095, 6) for e in config["grid"]] == [2, 4, 8, 16]  # budgets in HU, not 16..128 HU
    assert [a["attack"] for a in metrics["attacks"]] == ["square"] and metrics["attacks"][0]["eps"] * 4095 == \
        pytest.approx(16)
    assert [d["name"] for d in metrics["defenses"]] == [HU_TV]  # the preset's TV at its weight for HU
    scorecard = json.loads((run / "scorecard.json").read_text())
    left_out = [line for line in scorecard["not_tested"] if "refuses volumes" in line]
    assert any(line.startswith("jpeg+tv (the preset's defense): evaluated as tv alone") for line in left_out)
    assert any(line.startswith("the squeeze detector's JPEG squeezer: left out") for line in left_out)
    assert any(line.startswith(f"tv (the preset's defense): run as {HU_TV} on CT") for line in scorecard["not_tested"])
    output = " ".join(result.output.replace("│", " ").split())  # the summary table's cells, unwrapped
    noise = data["noise"]["std"]  # estimated on the stored volumes (None where too little is soft tissue)
    assert "The attacker changes each voxel by at most 16 HU" + (
        f", at or above the image noise of {noise:g} HU" if noise is not None else
        " (the image noise was not measured)") in output
    assert "evaluated as tv alone, since its JPEG refuses volumes" in output


@pytest.mark.slow
def test_the_report_states_budgets_in_hu(onnx_run):
    _, run = onnx_run
    text = " ".join(re.sub(r"<[^>]+>", " ", (run / "report.html").read_text()).split())  # the words a reader sees
    assert "The attacker changes each voxel by at most 16 HU" in text and "at 2 HU" in text


def test_a_volume_model_reads_volumes_at_its_in_plane_side_not_its_depth():
    from medrobust.evaluation.config import ExperimentConfig
    from medrobust.evaluation.run_models import resolve_size

    class VolumeModel:
        input_size = SHAPE

    config, note = resolve_size(ExperimentConfig(), VolumeModel())
    assert config.data.size == SHAPE[-1] and note is None
    config, note = resolve_size(ExperimentConfig(data={"size": 32}), VolumeModel())
    assert note is not None and "its input size 8 x 16 x 16" in note


def test_a_torchscript_volume_model_takes_its_size_as_depth_height_width(user_ct):
    tree, model = user_ct
    series = sorted(p for p in tree.glob("*/*") if p.is_dir())
    result = runner.invoke(app, ["predict", "--model", str(model.torchscript), "--classes", CLASSES, "--window",
                                 "40,80", "--input-size", "8,16,16", "--json", *map(str, series)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert len(lines) == len(series) and {r["class"] for r in lines} <= set(CLASSES.split(","))


def test_attack_writes_adversarial_volumes_back_as_dicom_series_in_hu(user_ct, tmp_path):
    from medrobust.data.dicom_series import read_dicom_series

    tree, model = user_ct
    out = tmp_path / "adv"
    result = runner.invoke(app, ["attack", "--model", str(model.torchscript), "--data", str(tree), "--classes",
                                 CLASSES, "--window", "40,80", "--input-size", "8,16,16", "--attack", "pgd",
                                 "--eps", "4HU", "--param", "steps=2", "--split", "all", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "mean L-inf (HU)" in result.output
    rows = (out / "attack.csv").read_text().splitlines()[1:]
    assert len(rows) == 6
    first = rows[0].split(",")[1]  # the series' id: its folder, written back as a series
    clean, adversarial = read_dicom_series(tree / first), read_dicom_series(out / first)
    assert adversarial.shape == (SHAPE[0], 16, 16) and clean.shape == (SHAPE[0], 32, 32)
    assert np.allclose(adversarial.spacing[1:], [2 * s for s in clean.spacing[1:]], rtol=1e-4)
    assert np.array_equal(adversarial.hu, np.rint(adversarial.hu))  # integer HU
