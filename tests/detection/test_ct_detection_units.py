"""The detection stage on CT (issue 29): a unit judging CT volumes makes the CT benign changes
(recalibration shift, reconstruction noise, one-slice shift, resampling) on the stored grid, never a
radiograph's JPEG re-encoding (which refuses volumes) or 8-bit re-windowing, and the stage's set
names, the per-image columns and the outcome's false-alarm keys follow; the squeeze detector on
CT data gets the volume squeezers unless the configuration lists its own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medrobust.data.stored_grid import CT_HU, EIGHT_BIT
from medrobust.detection.benign import BENIGN_CHANGES, CT_BENIGN_CHANGES
from medrobust.detection.reference import ReferenceDetector
from medrobust.detection.squeeze import DEFAULT_SQUEEZERS, VOLUME_SQUEEZERS, SqueezeDetector
from medrobust.evaluation.config import ExperimentConfig
from medrobust.evaluation.squeezers_for_data import squeezers_for_data
from medrobust.execution.detect_units import DetectUnit, benign_names_of
from medrobust.execution.pixels import to_stored
from medrobust.execution.units import Workbench
from medrobust.models.zoo import build_classifier


@pytest.fixture(scope="module")
def ct_batch():
    """Four 4 x 16 x 16 head-like volumes in HU (brain 30 HU, noise) stored as the run stores them, and
    a tiny 3-D CNN on a brain window."""
    torch.manual_seed(0)
    model = build_classifier("small-cnn-3d", ["normal", "haemorrhage", "infarct"], (4, 16, 16),
                             intensity="hu_windows:40,80").eval()
    hu = 30.0 + 6.0 * torch.randn(4, 1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    clean = to_stored(CT_HU.round(CT_HU.from_units(hu.round())), CT_HU)
    attacked = to_stored(CT_HU.round(CT_HU.from_units(hu.round() + 4.0)), CT_HU)
    return model, clean, attacked


class _Recorder:
    """A detector that flags nothing and keeps every batch it is asked to judge."""

    requires_reference = False
    threshold = None

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def detect(self, model, x, reference=None, names=None):
        from medrobust.detection.base import DetectionResult

        self.seen.append(x.clone())
        return DetectionResult(flags=[False] * len(x), scores=[0.0] * len(x), reasons=[[] for _ in x])


def test_the_benign_images_a_ct_unit_judges_are_ct_changes_in_hu(ct_batch):
    """A recalibration of a few HU, 3 HU of noise, one slice, a resampling: each on the HU grid and a
    few HU from the clean volume on average (a radiograph's re-windowing moves CT by ~100 HU)."""
    model, clean, _ = ct_batch
    recorder = _Recorder()
    DetectUnit(seed=0, start=0, detector=recorder, clean=clean, ids=[f"ct-{i}" for i in range(4)]).run(
        Workbench({"model": model}, torch.device("cpu")))
    x, *benign = recorder.seen
    assert len(benign) == len(CT_BENIGN_CHANGES)
    shift = CT_HU.eps_in_units(float((benign[0] - x).abs().max()))
    assert 0 < shift <= 5.5  # window_shift: at most 5 HU, rounded to integer HU
    for name, image in zip(CT_BENIGN_CHANGES, benign):
        steps = image.double() * CT_HU.levels
        assert torch.allclose(steps, steps.round(), atol=1e-2), name  # integer HU, as a DICOM stores
        assert CT_HU.eps_in_units(float((image - x).abs().mean())) < 12.0, name


def test_a_unit_on_ct_volumes_judges_the_ct_benign_changes(ct_batch):
    model, clean, attacked = ct_batch
    assert clean.dtype == np.uint16 and clean.ndim == 4
    assert benign_names_of(clean) == CT_BENIGN_CHANGES  # volumes: slice_shift included
    assert benign_names_of(clean[:, 0]) == tuple(c for c in CT_BENIGN_CHANGES if c != "slice_shift")
    assert benign_names_of(np.zeros((2, 8, 8), np.uint8)) == BENIGN_CHANGES  # radiographs unchanged
    sets = DetectUnit.sets(["pgd@4HU"], benign_names_of(clean))
    assert sets == ["clean", "window_shift", "recon_noise", "slice_shift", "resample", "pgd@4HU"]
    unit = DetectUnit(seed=0, start=0, detector=ReferenceDetector(), needs_reference=True, clean=clean,
                      attacked=[attacked], ids=[f"ct-{i}" for i in range(4)])
    out = unit.run(Workbench({"model": model}, torch.device("cpu")))  # JPEG on volumes would raise here
    assert sorted(k for k in out if k.endswith("__flags")) == [f"s{i}__flags" for i in range(len(sets))]
    assert not out["s0__flags"].any()  # clean against itself


def test_squeeze_on_ct_gets_the_volume_squeezers_unless_listed():
    config = ExperimentConfig(detectors={"squeeze": {}}, attacks=[{"name": "pgd", "params": {"eps": "4HU"}}])
    assert squeezers_for_data(config, CT_HU).detectors.squeeze.squeezers == list(VOLUME_SQUEEZERS)
    assert squeezers_for_data(config, EIGHT_BIT) is config  # radiographs: the defaults, unchanged
    listed = ExperimentConfig(detectors={"squeeze": {"squeezers": ["median:size=2"]}})
    assert squeezers_for_data(listed, CT_HU).detectors.squeeze.squeezers == ["median:size=2"]
    assert not any(s.startswith(("jpeg", "bits")) for s in VOLUME_SQUEEZERS)
    assert [s.split(":")[0] for s in DEFAULT_SQUEEZERS] == ["bits", "median", "jpeg", "tv"]


def test_the_volume_squeezers_score_ct_volumes(ct_batch):
    model, clean, _ = ct_batch
    from medrobust.execution.pixels import from_stored

    det = SqueezeDetector(VOLUME_SQUEEZERS)
    scores = det.score(model, from_stored(clean))
    assert scores.shape == (4,) and np.isfinite(scores).all()
