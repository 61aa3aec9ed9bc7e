"""JPEG: a real Pillow round trip, grayscale and RGB, rounding to 8 bits, quality."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from medrobust.defenses.jpeg import JPEG, jpeg

from .helpers import psnr


def _pillow_round_trip(pixels: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())))


def test_grayscale_round_trip_equals_pillow(phantoms) -> None:
    out = jpeg(phantoms, quality=50)
    assert out.shape == phantoms.shape and out.dtype == phantoms.dtype
    assert out.min() >= 0 and out.max() <= 1
    levels = out * 255
    assert torch.allclose(levels, levels.round(), atol=1e-4)  # on the 8-bit grid
    pixels = np.rint(phantoms[0, 0].numpy() * 255).astype(np.uint8)
    np.testing.assert_array_equal(np.rint(out[0, 0].numpy() * 255).astype(np.uint8), _pillow_round_trip(pixels, 50))


def test_rgb_round_trip_equals_pillow() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 24, 32, generator=g)
    out = jpeg(x, quality=80)
    assert out.shape == x.shape
    pixels = np.rint(x[1].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    expected = _pillow_round_trip(pixels, 80).transpose(2, 0, 1)
    np.testing.assert_array_equal(np.rint(out[1].numpy() * 255).astype(np.uint8), expected)


def test_rounds_to_8_bits_not_truncates() -> None:
    # a flat image of 100.6 grey levels is stored as 101 (truncation would give 100); JPEG keeps flat blocks exactly
    x = torch.full((1, 1, 16, 16), 100.6 / 255)
    assert torch.allclose(jpeg(x, quality=90) * 255, torch.full_like(x, 101.0), atol=1e-3)


def test_lower_quality_loses_more(phantoms) -> None:
    errors = [psnr(jpeg(phantoms, quality=q), phantoms) for q in (10, 50, 95)]
    assert errors[0] < errors[1] < errors[2]
    assert errors[2] > 40.0


def test_threads_give_the_same_result(phantoms) -> None:
    assert torch.equal(jpeg(phantoms, 60, workers=3), jpeg(phantoms, 60))


@pytest.mark.parametrize("quality", [0, 96, 50.5, True])
def test_bad_quality_is_refused(quality) -> None:
    with pytest.raises(ValueError, match="quality"):
        JPEG(quality)


def test_two_channels_are_refused() -> None:
    with pytest.raises(ValueError, match="one .grayscale. or three"):
        jpeg(torch.rand(1, 2, 8, 8))


def test_module_is_not_differentiable_and_matches_function(phantoms) -> None:
    defense = JPEG(quality=50)
    assert not defense.differentiable and not defense.randomized
    assert torch.equal(defense(phantoms), jpeg(phantoms, 50))
    assert defense.describe()["quality"] == 50
