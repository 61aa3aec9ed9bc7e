"""`medrobust predict`: with --json, stdout holds only strict JSON lines (no NaN, valid UTF-8)
and everything else (skipped files, errors) goes to stderr; a NaN-decoding DICOM and a file
name that is not UTF-8 are handled like any other input."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from medrobust.cli import app
from medrobust.data.dicom import write_dicom
from medrobust.data.io import write_png
from medrobust.models.checkpoint import save_checkpoint
from medrobust.models.zoo import build_classifier

CLASSES = ["Normal", "Pneumonia", "Pneumothorax"]
runner = CliRunner()

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR DS:UserWarning")  # the 'inf' header


def _strict(constant: str) -> float:
    raise ValueError(f"non-standard JSON constant {constant} on stdout")


def _json_lines(stdout: str) -> list[dict]:
    """Every stdout line parsed as strict JSON; fails on any other line, NaN or Infinity."""
    lines = stdout.splitlines()
    assert lines, "no output on stdout"
    return [json.loads(line, parse_constant=_strict) for line in lines]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    return save_checkpoint(build_classifier("small-cnn", CLASSES, 32), tmp_path_factory.mktemp("ckpt") / "model")


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        write_png(folder / name, rng.random((40, 40)))
    return folder


def test_nan_dicom_is_skipped_and_stdout_is_only_strict_json(checkpoint, images):
    bad = write_dicom(images / "slope.dcm", np.random.default_rng(1).random((40, 40)), slope=2.0)
    ds = pydicom.dcmread(bad)
    ds.RescaleSlope = "inf"
    ds.save_as(bad)

    result = runner.invoke(app, ["predict", "--model", str(checkpoint), "--json", str(images)])
    assert result.exit_code == 3, result.output  # partial: one file skipped
    records = _json_lines(result.stdout)
    assert sorted(os.path.basename(r["file"]) for r in records) == ["a.png", "b.png"]
    for r in records:
        assert r["class"] in CLASSES and 0.0 < r["confidence"] <= 1.0
    assert "1 file(s) skipped" in result.stderr
    assert "slope.dcm" in result.stderr and "Rescale Slope" in result.stderr
    assert "slope.dcm" not in result.stdout


def test_a_truncated_file_is_listed_on_stderr_not_stdout(checkpoint, images):
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n-truncated")
    result = runner.invoke(app, ["predict", "--model", str(checkpoint), "--json", str(images)])
    assert result.exit_code == 3
    assert len(_json_lines(result.stdout)) == 2
    assert "broken.png" in result.stderr and "broken.png" not in result.stdout


def test_long_file_names_are_not_wrapped(checkpoint, images):
    long_name = "x" * 180 + ".png"
    write_png(images / long_name, np.eye(40))
    result = runner.invoke(app, ["predict", "--model", str(checkpoint), "--json", str(images)], terminal_width=60)
    assert result.exit_code == 0, result.output
    assert any(r["file"].endswith(long_name) for r in _json_lines(result.stdout))


def test_errors_go_to_stderr_and_leave_stdout_empty(checkpoint, tmp_path):
    result = runner.invoke(app, ["predict", "--model", str(tmp_path / "missing"), "--json", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and "missing" in result.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX byte file names")
def test_non_utf8_file_name_is_escaped_in_json_and_table(checkpoint, images, monkeypatch):
    data = (images / "a.png").read_bytes()
    fd = os.open(os.path.join(os.fsencode(images), b"bad\xff.png"), os.O_WRONLY | os.O_CREAT, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)

    result = runner.invoke(app, ["predict", "--model", str(checkpoint), "--json", str(images)])
    assert result.exit_code == 0, result.output
    names = [r["file"] for r in _json_lines(result.stdout)]
    assert any(n.endswith("bad\\xff.png") for n in names)  # the byte shown as \xff, the image still read
    for name in names:
        name.encode("utf-8")  # a lone surrogate ("\udcff") would raise here

    monkeypatch.chdir(images)  # short relative names, so the table shows them whole
    table = runner.invoke(app, ["predict", "--model", str(checkpoint), "."])
    assert table.exit_code == 0, table.output
    assert "bad\\xff.png" in table.stdout
