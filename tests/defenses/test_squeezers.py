"""Feature squeezers on hand-made arrays: bit depth and the median filter (scipy's conventions)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from medrobust.defenses.squeezers import BitDepth, MedianFilter, bit_depth, median_filter


def test_bit_depth_by_hand() -> None:
    x = torch.tensor([0.0, 0.1, 0.49, 0.51, 0.9, 1.0]).view(1, 1, 1, 6)
    assert torch.equal(bit_depth(x, 1), torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0]).view(1, 1, 1, 6))
    # 3 bits: 7 steps; 0.1 * 7 = 0.7 -> 1, 0.49 * 7 = 3.43 -> 3, 0.51 * 7 = 3.57 -> 4, 0.9 * 7 = 6.3 -> 6
    assert torch.allclose(bit_depth(x, 3) * 7, torch.tensor([0.0, 1, 3, 4, 6, 7]).view(1, 1, 1, 6))


def test_bit_depth_8_keeps_8_bit_images() -> None:
    x = torch.arange(256.0).view(1, 1, 16, 16) / 255
    assert torch.allclose(bit_depth(x, 8), x)


def test_median_2x2_by_hand() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]).view(1, 1, 3, 3) / 10
    # the window of (i, j) is rows i-1..i, columns j-1..j; the border repeats the edge (scipy "reflect");
    # of four values the upper middle one is taken
    expected = torch.tensor([
        [1.0, 2.0, 3.0],  # (0, 1): {1, 2, 1, 2} -> 2
        [4.0, 4.0, 5.0],  # (1, 0): {1, 1, 4, 4} -> 4; (1, 1): {1, 2, 4, 5} -> 4; (1, 2): {2, 3, 5, 6} -> 5
        [7.0, 7.0, 8.0],  # (2, 1): {4, 5, 7, 8} -> 7; (2, 2): {5, 6, 8, 9} -> 8
    ])
    assert torch.allclose(median_filter(x, 2)[0, 0] * 10, expected)


def test_median_3x3_removes_an_impulse() -> None:
    x = torch.full((1, 1, 5, 5), 0.2)
    x[0, 0, 2, 2] = 1.0
    assert torch.allclose(median_filter(x, 3), torch.full_like(x, 0.2))


@pytest.mark.parametrize("size", [2, 3, 4, 5])
def test_median_equals_scipy_reflect(size) -> None:
    rng = np.random.default_rng(size)
    a = rng.random((2, 3, 9, 11)).astype(np.float32)
    expected = np.stack([np.stack([ndimage.median_filter(c, size=size, mode="reflect") for c in img]) for img in a])
    np.testing.assert_array_equal(median_filter(torch.from_numpy(a), size).numpy(), expected)


def test_median_gradient_goes_to_the_selected_pixel() -> None:
    x = torch.tensor([[0.1, 0.9, 0.3], [0.5, 0.2, 0.7], [0.4, 0.8, 0.6]]).view(1, 1, 3, 3).requires_grad_(True)
    out = median_filter(x, 3)
    (grad,) = torch.autograd.grad(out[0, 0, 1, 1], x)
    assert grad.sum() == 1.0 and grad[0, 0].flatten()[torch.argmax(grad)] == 1.0
    assert x[0, 0].flatten()[torch.argmax(grad)].item() == pytest.approx(0.5)  # the median of the 9 values


def test_flags_and_validation() -> None:
    assert not BitDepth().differentiable and MedianFilter().differentiable
    with pytest.raises(ValueError):
        BitDepth(0)
    with pytest.raises(ValueError):
        MedianFilter(0)
    with pytest.raises(ValueError, match="larger than the image"):
        median_filter(torch.rand(1, 1, 2, 2), 7)
