"""The `medrobust` command: --help, --version, data phantom, data gallery."""

from __future__ import annotations

import csv

from typer.testing import CliRunner

from medrobust import __version__
from medrobust.cli import app

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.stdout


def test_help_lists_the_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for word in ("data", "demo"):
        assert word in result.stdout


def test_data_phantom_writes_the_dataset(tmp_path) -> None:
    out = tmp_path / "phantoms"
    result = runner.invoke(app, ["data", "phantom", "--out", str(out), "--per-class", "5", "--size", "32", "--seed", "7"])
    assert result.exit_code == 0, result.output
    assert "wrote 15 images" in result.stdout
    for name in ("Normal", "Pneumonia", "Pneumothorax"):
        assert len(list((out / name).glob("*.png"))) == 5
    with open(out / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 15 and all(r["seed"] == "7" for r in rows)


def test_data_phantom_refuses_a_size_out_of_range(tmp_path) -> None:
    result = runner.invoke(app, ["data", "phantom", "--out", str(tmp_path), "--size", "16"])
    assert result.exit_code != 0
    assert "32" in result.output  # the message names the allowed range


def test_data_gallery(tmp_path) -> None:
    out = tmp_path / "g.png"
    result = runner.invoke(app, ["data", "gallery", "--out", str(out), "--per-class", "2", "--size", "48"])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 1000
