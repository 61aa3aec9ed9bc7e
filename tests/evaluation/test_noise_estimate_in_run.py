"""The image noise a run states beside its HU budgets, on CT data without a phantom manifest (a
user's DICOM series): estimated from the stored clean volumes (``run_metrics.stored_grid_record``).
The stored batch holds integer steps above the grid's lowest value (HU = -1024 + k); read as the
[0, 1] currency they became thousands of HU, no voxel was soft tissue, and every user's CT run
said "the image noise was not measured"."""

from __future__ import annotations

import pytest
import torch

import medrobust as mr
from tests.foreign_ct import CLASSES, TinyVolumeNet, write_user_series_tree

SETTINGS = {"attacks": [], "defenses": [], "adaptive": {"enabled": False},
            "detectors": {"reference": {"enabled": False}, "squeeze": {"enabled": False}}}


def test_a_users_ct_series_get_their_noise_estimated_in_hu(tmp_path) -> None:
    tree = write_user_series_tree(tmp_path / "series", per_class=2, size=32, depth=8, seed=3)
    torch.manual_seed(0)
    metrics = mr.evaluate(TinyVolumeNet().eval(), tree, SETTINGS, classes=CLASSES.split(","), input_size=[8, 32, 32],
                          intensity="hu_windows:40,80", run_dir=tmp_path / "run")
    noise = metrics.data["noise"]
    assert noise["unit"] == "HU" and noise["method"].startswith("estimate:")
    # the phantoms' generator adds about 6-7 HU in white matter (the CT demo's measured figure: 6.3 HU)
    assert noise["std"] == pytest.approx(6.5, abs=2.0)
