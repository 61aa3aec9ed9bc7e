"""`medrobust data phantom --modality ct` (issue 29): class folders of DICOM series, readable back."""

from __future__ import annotations

import csv

import numpy as np
from typer.testing import CliRunner

from medrobust.cli.app import app
from medrobust.data.dicom import read_dicom
from medrobust.data.phantom.ct_head import ct_head_params, render_ct_head
from medrobust.data.stored_grid import CT_HU


def test_ct_slices_are_written_as_single_dicom_files_in_hu(tmp_path):
    result = CliRunner().invoke(app, ["data", "phantom", "--modality", "ct", "--slices", "--n", "1", "--size", "32",
                                      "--seed", "5", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["label"] for r in rows] == ["normal", "haemorrhage", "infarct"] and rows[1]["depth"] == "1"
    slice_hu = CT_HU.to_units(read_dicom(tmp_path / rows[1]["path"]).astype(np.float64))
    np.testing.assert_allclose(slice_hu, render_ct_head(ct_head_params(5, 1, 1), 32, 1)[0], atol=1e-3)


def test_an_unknown_ct_format_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["data", "phantom", "--modality", "ct", "--format", "png", "--n", "1",
                                      "--out", str(tmp_path)])
    assert result.exit_code != 0 and "format 'png': use one of dicom, nifti, both" in result.output
