"""The differentiable JPEG approximation (Shin & Song 2017) against the real codec (Pillow), its
tables, DCT and gradients."""

from __future__ import annotations

import io

import numpy as np
import pytest
import scipy.fft
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from medrobust.data.phantom import generate_phantom
from medrobust.defenses.jpeg import JPEG, jpeg
from medrobust.defenses.jpeg_smooth import _dct_matrix, quantization_tables, smooth_jpeg

RGB_TO_YCBCR = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])


def _on_8_bits(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round() / 255


def _sinusoids(batch: int, channels: int, height: int, width: int, seed: int) -> torch.Tensor:
    """Smooth images on the 8-bit grid: 0.5 + four random low-frequency plane waves (amplitude 0.1
    each) per channel + Gaussian noise (sigma 0.02)."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.arange(height, dtype=torch.float64)[:, None]
    cols = torch.arange(width, dtype=torch.float64)[None, :]
    x = torch.full((batch, channels, height, width), 0.5, dtype=torch.float64)
    for _ in range(4):
        frequency = 0.25 * torch.rand(2, batch, channels, 1, 1, generator=g, dtype=torch.float64)
        phase = 6.3 * torch.rand(batch, channels, 1, 1, generator=g, dtype=torch.float64)
        x += 0.1 * torch.sin(frequency[0] * rows + frequency[1] * cols + phase)
    x += 0.02 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    return _on_8_bits(x.clamp(0, 1).float())


def _phantoms(height: int, width: int) -> torch.Tensor:
    images = [generate_phantom(k % 3, max(height, width), seed=10 + k)[0][:height, :width] for k in range(3)]
    return _on_8_bits(torch.from_numpy(np.stack(images))[:, None])


# Measured mean |smooth_jpeg - jpeg| in 1/255 (grayscale: phantoms / sinusoids; RGB: sinusoids):
#                  q50          q75          q90
#  gray 32 x 32    0.64 0.45    0.62 0.48    0.63 0.66
#  gray 64 x 64    0.58 0.45    0.56 0.48    0.53 0.61
#  gray 37 x 45    0.66 0.43    0.68 0.48    0.61 0.62
#  RGB  32 x 32    0.99         0.72         1.00
#  RGB  64 x 64    0.99         0.89         1.02
#  RGB  37 x 45    0.99         0.99         1.02
# jpeg's own mean change to these images: 2.2-5.1 / 255 (ratios 0.09-0.25).
@pytest.mark.parametrize("quality", [50, 75, 90])
@pytest.mark.parametrize("size", [(32, 32), (64, 64), (37, 45)])
@pytest.mark.parametrize("channels", [1, 3])
def test_close_to_the_real_codec(channels, size, quality) -> None:
    batches = [_sinusoids(4, channels, *size, seed=0)] + ([_phantoms(*size)] if channels == 1 else [])
    bound = 0.9 if channels == 1 else 1.3
    for x in batches:
        real = jpeg(x, quality)
        error = (smooth_jpeg(x, quality) - real).abs().mean().item() * 255
        change = (real - x).abs().mean().item() * 255
        assert error < change / 3, (error, change)
        assert error < bound, error


def _pillow_tables(quality: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The tables libjpeg wrote into a colour JPEG (Pillow reads them back in natural order)."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buffer, format="JPEG", quality=quality)
    tables = Image.open(io.BytesIO(buffer.getvalue())).quantization
    return tuple(torch.tensor(list(tables[i])).reshape(8, 8) for i in (0, 1))


def test_quantization_tables() -> None:
    luminance, chrominance = quantization_tables(50)  # quality 50: Annex K as printed
    assert luminance[0].tolist() == [16, 11, 10, 16, 24, 40, 51, 61]
    assert luminance[7].tolist() == [72, 92, 95, 98, 112, 100, 103, 99]
    assert chrominance[0].tolist() == [17, 18, 24, 47, 99, 99, 99, 99] and chrominance[7, 7] == 99
    luminance, chrominance = quantization_tables(75)  # scale 50: floor((base * 50 + 50) / 100)
    assert luminance[0].tolist() == [8, 6, 5, 8, 12, 20, 26, 31]
    assert (luminance[7, 7], chrominance[0, 0], chrominance[7, 7]) == (50, 9, 50)
    luminance, chrominance = quantization_tables(10)  # scale 500, clamped to 255 (baseline)
    assert (luminance[0, 0], luminance[7, 7], chrominance[7, 7]) == (80, 255, 255)
    assert quantization_tables(95)[0][0].tolist() == [2, 1, 1, 2, 2, 4, 5, 6]  # scale 10
    for quality in (1, 10, 30, 33, 50, 75, 90, 95):  # 30, 33: libjpeg divides 5000 / quality in integers
        for ours, written in zip(quantization_tables(quality), _pillow_tables(quality)):
            assert torch.equal(ours, written), quality


def test_dct_is_jpegs_orthonormal_dct_ii() -> None:
    blocks = np.random.default_rng(0).uniform(-128, 128, (5, 8, 8))
    dct = _dct_matrix(torch.float64, torch.device("cpu"))
    ours = (dct @ torch.from_numpy(blocks) @ dct.T).numpy()
    np.testing.assert_allclose(ours, scipy.fft.dctn(blocks, axes=(1, 2), norm="ortho"), atol=1e-10)
    # JPEG's FDCT: F(u, v) = C(u) C(v) / 4 sum f(x, y) cos((2x+1) u pi / 16) cos((2y+1) v pi / 16), C(0) = 1/sqrt 2
    np.testing.assert_allclose(ours[:, 0, 0], blocks.sum(axis=(1, 2)) / 8, atol=1e-10)


def _distance_to_rounding_jumps(x: torch.Tensor, quality: int) -> float:
    """How far the quantised DCT coefficients of ``x`` (B, C, 16, 16) lie from k + 1/2, where
    round() jumps: computed here with numpy / scipy (the JFIF matrix, 2 x 2 chroma means)."""
    v = x.double().numpy() * 255
    luminance, chrominance = (t.numpy() for t in quantization_tables(quality))
    if v.shape[1] == 3:
        ycbcr = np.einsum("kc,bchw->bkhw", RGB_TO_YCBCR, v)
        planes = [(ycbcr[:, 0] - 128, luminance)]
        planes += [(ycbcr[:, k].reshape(-1, 8, 2, 8, 2).mean(axis=(2, 4)), chrominance) for k in (1, 2)]
    else:
        planes = [(v[:, 0] - 128, luminance)]
    distance = np.inf
    for plane, table in planes:
        blocks = plane.reshape(len(plane), plane.shape[1] // 8, 8, -1, 8).swapaxes(2, 3)
        t = scipy.fft.dctn(blocks, axes=(-2, -1), norm="ortho") / table
        distance = min(distance, np.abs(t - np.floor(t) - 0.5).min())
    return float(distance)


@pytest.mark.parametrize("channels", [1, 3])
def test_gradients_match_finite_differences(channels) -> None:
    # mid-grey inputs (no clamping) whose coefficients lie > 1e-3 quantisation steps from round()'s jumps (seed 6:
    # 2.7e-3 and 6.4e-3; gradcheck's eps moves them by < 1e-5)
    x = 0.3 + 0.4 * torch.rand(1, channels, 16, 16, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    assert _distance_to_rounding_jumps(x, 75) > 1e-3
    assert torch.autograd.gradcheck(lambda v: smooth_jpeg(v, 75), x.requires_grad_(), eps=1e-6, atol=1e-6)


def test_gradients_are_finite_and_informative() -> None:
    x = _phantoms(32, 32).requires_grad_()
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    (grad,) = torch.autograd.grad((smooth_jpeg(x, 50) * weights).sum(), x)
    assert torch.isfinite(grad).all() and (grad != 0).float().mean() > 0.9
    # not the identity's gradient (BPDA's usual stand-in): JPEG low-passes it block by block (measured 0.91)
    assert (grad - weights).abs().mean() > 0.5 * weights.abs().mean()


def test_shape_dtype_range_and_module() -> None:
    x = torch.rand(2, 3, 20, 13, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = smooth_jpeg(x, 30)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert out.min() >= 0 and out.max() <= 1
    half = x.to(torch.bfloat16)  # computed in float32, returned in bfloat16
    assert smooth_jpeg(half, 30).dtype == torch.bfloat16
    assert torch.allclose(smooth_jpeg(half, 30).double(), smooth_jpeg(half.double(), 30), atol=4e-3)
    assert torch.equal(JPEG(quality=30).smooth_approximation(x), out)
    assert smooth_jpeg(torch.zeros(0, 1, 8, 8)).shape == (0, 1, 8, 8)


@pytest.mark.parametrize("bad", [{"quality": 0}, {"quality": 96}, {"quality": 50.5}, {"x": torch.rand(1, 2, 8, 8)}])
def test_bad_arguments_are_refused(bad) -> None:
    arguments = {"x": torch.rand(1, 1, 8, 8), "quality": 75} | bad
    with pytest.raises(ValueError, match="quality|channels|shape"):
        smooth_jpeg(**arguments)


@settings(max_examples=15, deadline=None)
@given(batch=st.integers(2, 3), channels=st.sampled_from([1, 3]), height=st.integers(1, 20), width=st.integers(1, 20),
       quality=st.integers(1, 95), seed=st.integers(0, 2**31 - 1))
def test_range_and_batch_independence(batch, channels, height, width, quality, seed) -> None:
    x = torch.rand(batch, channels, height, width, generator=torch.Generator().manual_seed(seed))
    out = smooth_jpeg(x, quality)
    assert out.shape == x.shape and torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    for i in range(batch):
        assert torch.allclose(smooth_jpeg(x[i : i + 1], quality), out[i : i + 1], atol=1e-5)


@pytest.mark.gpu
def test_matches_the_cpu_on_the_gpu() -> None:
    x = _sinusoids(2, 3, 37, 45, seed=1)
    out = smooth_jpeg(x.cuda(), 75)
    assert out.device.type == "cuda" and torch.allclose(out.cpu(), smooth_jpeg(x, 75), atol=1e-4)
