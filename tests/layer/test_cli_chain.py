"""The command-line tour, chained as a user would on a folder: attack it, defend the result,
detect it against the originals, predict on it; and a vendor's evaluation in one command
(no YAML), repeated from the configuration it wrote."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import medrobust as mr
from medrobust.cli import app
from medrobust.models.checkpoint import save_checkpoint

runner = CliRunner()
CLASSES = ["Normal", "Pneumonia", "Pneumothorax"]


@pytest.fixture(scope="module")
def chain(tmp_path_factory, trained_small_cnn):
    root = tmp_path_factory.mktemp("chain")
    mr.write_phantoms(root / "originals", per_class=4, size=32, seed=5)
    (root / "originals" / "Normal" / "notes.txt").write_text("not an image")  # ignored, as a user's folder has
    save_checkpoint(trained_small_cnn, root / "model")
    return root


def _invoke(args: list[str]):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result


def _images(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))


def test_attack_then_defend_then_detect_against_the_originals(chain) -> None:
    originals, model = chain / "originals", str(chain / "model")
    _invoke(["attack", "--model", model, "--data", str(originals), "--split", "all", "--attack", "pgd",
             "--eps", "8/255", "--out", str(chain / "attacked")])
    assert _images(chain / "attacked") == _images(originals)  # the source's relative layout, class folders kept
    with open(chain / "attacked" / "attack.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["file"] for r in rows} == set(_images(originals)) and len(rows) == 12

    _invoke(["defend", "--input", str(chain / "attacked"), "--defense", "jpeg+tv", "--out", str(chain / "defended")])
    assert _images(chain / "defended") == _images(originals)

    for folder in ("attacked", "defended"):
        result = _invoke(["detect", "--model", model, "--input", str(chain / folder), "--reference", str(originals),
                          "--json"])
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        summary = lines[-1]["summary"]
        assert summary["n_images"] == 12 and summary["skipped"] == []  # every image found its original
        assert {rec["name"] for rec in lines[:-1]} == set(_images(originals))
        if folder == "attacked":  # PGD at 8/255 on a trained model: the study's detector flags images
            assert summary["n_flagged"] >= 1

    result = _invoke(["predict", "--model", model, str(chain / "attacked"), "--json"])
    predicted = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(predicted) == 12 and {p["class"] for p in predicted} <= set(CLASSES)


def test_attack_predictions_are_the_files_predictions(chain) -> None:
    """What attack.csv reports for an image is what the model says about the PNG it wrote."""
    model = str(chain / "model")
    out = chain / "attacked-again"
    _invoke(["attack", "--model", model, "--data", str(chain / "originals"), "--split", "all", "--attack", "fgsm",
             "--eps", "4/255", "--out", str(out)])
    with open(out / "attack.csv", newline="") as fh:
        reported = {r["file"]: r["pred_adv"] for r in csv.DictReader(fh)}
    predicted = mr.predict(model, out)
    assert {i: c for i, c in zip(predicted.ids, (r["class"] for r in predicted.records()))} == reported


def test_a_vendor_evaluation_in_one_command_and_its_repeat(chain, tmp_path) -> None:
    model, data = str(chain / "model"), str(chain / "originals")
    result = _invoke(["evaluate", "--model", model, "--data", data, "--preset", "quick", "--output-dir",
                      str(tmp_path), "--name", "vendor"])
    run = tmp_path / "vendor"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["load"]["path"] == model and config["data"]["source"] == data
    assert config["data"]["split"] == "test"
    assert [a["name"] for a in config["attacks"]] == ["apgd", "sia"]
    assert config["grid"] == [g / 255 for g in (1, 2, 4, 8)] and config["attacks"][0]["eps_sweep"] == config["grid"]
    assert config["defenses"] == ["jpeg+tv"] and config["adaptive"]["enabled"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["data"]["tested"] == 12
    assert {a["key"] for a in metrics["attacks"]} == {"apgd@8/255", "sia@8/255"}
    assert [d["name"] for d in metrics["detectors"]] == ["reference", "squeeze"]
    assert "medrobust evaluate" in result.stdout and "config.yaml" in result.stdout

    again = _invoke(["evaluate", str(run / "config.yaml")])  # the same run: resumed, nothing recomputed
    assert json.loads((run / "metrics.json").read_text())["attacks"] == metrics["attacks"]
    assert "robustness score" in again.stdout


def test_evaluate_needs_a_config_or_a_model_and_data(chain) -> None:
    result = runner.invoke(app, ["evaluate", "--model", str(chain / "model")])
    assert result.exit_code == 2 and "--data" in result.stderr


def test_the_command_line_imports_only_the_public_layer() -> None:
    cli = Path(mr.__file__).parent / "cli"
    pattern = re.compile(r"^\s*(from|import) medrobust\.(attacks|defenses|detection|data|models)\b")
    offending = [f"{p.name}:{n}" for p in cli.glob("*.py")
                 for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.match(line)]
    assert offending == []


def test_importing_medrobust_does_not_import_torch() -> None:
    code = "import sys, medrobust as mr; assert 'torch' not in sys.modules, 'torch imported'; print(mr.__all__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "evaluate" in done.stdout


def test_the_readme_command_line_tour_on_tiny_data(tmp_path) -> None:
    """Every command of the README's command-line tour, as a user chains them, on 32 px phantoms."""
    data, model = tmp_path / "phantoms", tmp_path / "model"
    _invoke(["data", "phantom", "--out", str(data), "--per-class", "4", "--size", "32", "--seed", "9"])
    _invoke(["data", "gallery", "--out", str(tmp_path / "gallery.png"), "--per-class", "2", "--size", "32"])
    assert (tmp_path / "gallery.png").stat().st_size > 0
    assert "Pneumothorax" in _invoke(["data", "info", str(data), "--check"]).stdout
    assert "small-cnn" in _invoke(["models", "small*"]).stdout
    _invoke(["train", "--data", str(data), "--arch", "small-cnn", "--size", "32", "--epochs", "2", "--out", str(model)])
    lines = _invoke(["predict", "--model", str(model), str(data), "--json"]).stdout.splitlines()
    predicted = [json.loads(line) for line in lines]
    assert len(predicted) == 12 and {p["class"] for p in predicted} <= set(CLASSES)
    _invoke(["attack", "--model", str(model), "--data", str(data), "--split", "all", "--attack", "fgsm", "--eps", "8/255",
             "--out", str(tmp_path / "fgsm")])
    _invoke(["defend", "--input", str(tmp_path / "fgsm"), "--out", str(tmp_path / "defended")])
    _invoke(["detect", "--model", str(model), "--input", str(tmp_path / "defended"), "--reference", str(data)])
    _invoke(["detect", "--model", str(model), "--input", str(tmp_path / "fgsm"), "--detector", "squeeze",
             "--calibrate", str(data), "--fpr", "0.1"])
    _invoke(["evaluate", "--model", str(model), "--data", str(data), "--preset", "quick", "--output-dir",
             str(tmp_path / "runs"), "--name", "tour"])
    run = tmp_path / "runs" / "tour"
    _invoke(["report", str(run)])
    _invoke(["statement", str(run)])
    _invoke(["compare", str(run), str(run), "--out", str(tmp_path / "compare.html")])
    assert all((run / f).is_file() for f in ("metrics.json", "scorecard.json", "report.html", "statement.html"))
    assert (tmp_path / "compare.html").is_file()
