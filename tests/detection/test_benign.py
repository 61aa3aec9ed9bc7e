"""The benign changes stay within their definitions and are seeded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medrobust.detection.benign import (
    BENIGN_CHANGES,
    benign_changes,
    gaussian_noise,
    resize_round_trip,
    rewindow,
    rewindow_parameters,
)


@pytest.fixture(scope="module")
def images(phantom32) -> torch.Tensor:
    splits, _ = phantom32
    return splits["test"][0][:24]


def test_shapes_ranges_and_keys(images) -> None:
    out = benign_changes(images, torch.Generator().manual_seed(0))
    assert tuple(out) == BENIGN_CHANGES
    for name, x in out.items():
        assert x.shape == images.shape and x.dtype == images.dtype, name
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0, name
        assert not torch.equal(x, images), f"{name} changed nothing"


def test_seeded(images) -> None:
    a = benign_changes(images, 7)
    b = benign_changes(images, torch.Generator().manual_seed(7))
    c = benign_changes(images, 8)
    for name in BENIGN_CHANGES:
        assert torch.equal(a[name], b[name]), name
    assert not torch.equal(a["noise"], c["noise"]) and not torch.equal(a["rewindow"], c["rewindow"])
    assert torch.equal(a["jpeg90"], c["jpeg90"]) and torch.equal(a["resize"], c["resize"])  # deterministic ones


def test_noise_is_one_grey_level() -> None:
    x = torch.full((8, 1, 64, 64), 0.5)  # mid-grey: no clipping
    d = gaussian_noise(x, torch.Generator().manual_seed(0)) - x
    assert float(d.std()) == pytest.approx(1 / 255, rel=0.02)
    assert abs(float(d.mean())) < 1e-4


def test_rewindow_recovers_a_window_within_five_percent(images) -> None:
    g = torch.Generator().manual_seed(3)
    level, width = rewindow_parameters(len(images), torch.Generator().manual_seed(3))
    out = rewindow(images, g)
    assert ((level / 0.5 - 1).abs() <= 0.05).all() and ((width - 1).abs() <= 0.05).all()
    assert (level / 0.5 - 1).abs().max() > 0.02  # the draws spread over the range
    for i in range(len(images)):
        x, y = images[i].flatten().double(), out[i].flatten().double()
        inside = (y > 0) & (y < 1)  # unclipped pixels follow y = (x - L') / W' + 0.5
        slope, intercept = np.polyfit(x[inside].numpy(), y[inside].numpy(), 1)
        w = 1.0 / slope
        lev = (0.5 - intercept) * w
        assert w == pytest.approx(float(width[i]), abs=1e-4)
        assert lev == pytest.approx(float(level[i]), abs=1e-4)
        assert abs(w - 1.0) <= 0.05 + 1e-6 and abs(lev / 0.5 - 1.0) <= 0.05 + 1e-6


def test_rewindow_identity_without_change(images) -> None:
    out = rewindow(images, torch.Generator().manual_seed(0), max_change=0.0)
    torch.testing.assert_close(out, images)


def test_resize_round_trip_keeps_a_constant_and_smooths(images) -> None:
    flat = torch.full((2, 1, 32, 32), 0.3)
    torch.testing.assert_close(resize_round_trip(flat), flat)
    out = resize_round_trip(images)
    diff = (out - images).abs().mean()
    assert 0 < float(diff) < 8 / 255  # a small blur (about 5 grey levels at 32 px), not a different image
    with pytest.raises(ValueError, match="factor"):
        resize_round_trip(images, 1.5)


def test_jpeg90_is_close_to_the_original(images) -> None:
    out = benign_changes(images, 0)["jpeg90"]
    assert float((out - images).abs().mean()) < 3 / 255
