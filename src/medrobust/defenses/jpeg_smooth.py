"""A differentiable approximation of the JPEG round trip, for adaptive attacks: BPDA with a smooth
``g`` in the backward pass instead of the identity (Shin & Song, "JPEG-resistant Adversarial
Images", NIPS 2017 Workshop on Machine Learning and Computer Security).

:func:`smooth_jpeg` follows :func:`medrobust.defenses.jpeg.jpeg` (Pillow / libjpeg, baseline,
IJG tables, 4:2:0 chroma for RGB) step by step with torch operations, vectorised over the batch
and over the 8 x 8 blocks, except that each rounding of a quantised DCT coefficient ``t`` is
replaced by Shin & Song's differentiable approximation::

    round_approx(t) = round(t) + (t - round(t))^3

whose derivative ``3 (t - round(t))^2`` is nonzero almost everywhere (0 at integers, 3/4 at
half-integers) where ``round``'s is zero; it averages 1/4 over a quantisation step, so these
gradients are smaller than the identity's (sign-based attacks such as PGD do not mind).
``round_approx`` moves ``t`` towards the nearest integer but not onto it (leaving up to 1/8 of a
quantisation step), so the approximation is not the codec even in exact arithmetic; it is a
surrogate for gradients.

An attacker keeps the real codec in the forward pass and this one in the backward pass::

    g = smooth_jpeg(x, q)
    x_def = jpeg(x, q).detach() + (g - g.detach())     # forward: the codec's output exactly

(:func:`medrobust.defenses.defended.smooth_through`, the ``smooth`` gradient mode).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from medrobust.data.image_batch import check_image_batch
from medrobust.defenses.jpeg_quality import JPEG_VOLUME_REFUSAL, check_quality

LUMINANCE_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
"""ITU-T T.81 Annex K, Table K.1: the luminance quantisation table (quality 50), natural order."""

CHROMINANCE_TABLE = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
)
"""ITU-T T.81 Annex K, Table K.2: the chrominance quantisation table (quality 50), natural order."""

RGB_TO_YCBCR = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))
"""JFIF full-range RGB -> YCbCr (rows Y, Cb, Cr; chroma centred on 0 here, on 128 in the file)."""

YCBCR_TO_RGB = ((1.0, 0.0, 1.402), (1.0, -0.344136, -0.714136), (1.0, 1.772, 0.0))
"""JFIF full-range YCbCr -> RGB (columns Y, Cb, Cr), the constants libjpeg's decoder uses."""


def quantization_tables(quality: int = 75) -> tuple[torch.Tensor, torch.Tensor]:
    """The (luminance, chrominance) 8 x 8 int64 tables libjpeg writes at ``quality`` (natural
    order): ``jpeg_quality_scaling`` then ``jpeg_add_quant_table`` with ``force_baseline``.

    Args:
        quality: the JPEG quality, an integer from 1 to 95. Default 75.

    Returns:
        ``(luminance, chrominance)``, two (8, 8) int64 tensors with entries in [1, 255]; at
        quality 50 they are :data:`LUMINANCE_TABLE` and :data:`CHROMINANCE_TABLE`.
    """
    check_quality(quality)
    quality = int(quality)
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    luminance, chrominance = ((torch.tensor(base) * scale + 50).div(100, rounding_mode="floor").clamp(1, 255)
                              for base in (LUMINANCE_TABLE, CHROMINANCE_TABLE))
    return luminance, chrominance


@functools.lru_cache(maxsize=16)
def _dct_matrix(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The orthonormal 8-point DCT-II matrix ``D[k, n] = c_k cos((2n + 1) k pi / 16)``, c_0 =
    sqrt(1/8), c_k = 1/2: JPEG's 2-D FDCT of a block B is ``D B D^T``, its IDCT ``D^T C D``."""
    k = torch.arange(8, dtype=torch.float64)[:, None]
    n = torch.arange(8, dtype=torch.float64)[None, :]
    matrix = torch.cos((2 * n + 1) * k * math.pi / 16) * 0.5
    matrix[0] = math.sqrt(1 / 8)
    return matrix.to(dtype=dtype, device=device)


def _round_approx(t: torch.Tensor) -> torch.Tensor:
    rounded = torch.round(t)
    return rounded + (t - rounded) ** 3


def _code_plane(plane: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """DCT, quantise with ``round_approx``, dequantise and inverse DCT each 8 x 8 block of the
    level-shifted planes (N, H, W), H and W multiples of 8."""
    n, height, width = plane.shape
    blocks = plane.reshape(n, height // 8, 8, width // 8, 8).transpose(2, 3)  # (N, H/8, W/8, 8, 8)
    dct = _dct_matrix(plane.dtype, plane.device)
    table = table.to(dtype=plane.dtype, device=plane.device)
    coefficients = _round_approx(dct @ blocks @ dct.T / table) * table
    return (dct.T @ coefficients @ dct).transpose(2, 3).reshape(n, height, width)


def _edge_pad(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate the last row and column of (B, C, H, W) up to multiples of ``multiple``."""
    height, width = x.shape[-2:]
    return F.pad(x, (0, -width % multiple, 0, -height % multiple), mode="replicate")


def smooth_jpeg(x: torch.Tensor, quality: int = 75) -> torch.Tensor:
    """Differentiable approximation of ``jpeg(x, quality)`` (Shin & Song 2017).

    Args:
        x: the images, float in [0, 1]; one channel is a grayscale JPEG, three an RGB one with
            4:2:0 chroma.
        quality: the JPEG quality, an integer from 1 to 95. Default 75, as
            :func:`~medrobust.defenses.jpeg.jpeg`.

    Returns:
        The approximated round trip, same shape, dtype and device as ``x``, in [0, 1],
        differentiable in ``x`` (float32 arithmetic for lower-precision inputs).

    Shape:
        - x: (B, 1, H, W) or (B, 3, H, W) float in [0, 1].
        - Output: the same shape.

    Steps:

    1. ``v = 255 x`` (not rounded to 8 bits), for RGB converted to YCbCr (JFIF, full range); all
       planes level-shifted by -128.
    2. Edge replication to multiples of 8 (16 for RGB, whose chroma is subsampled), as libjpeg
       does; RGB chroma averaged over 2 x 2 (libjpeg's ``h2v2_downsample``).
    3. Per 8 x 8 block, ``D B D^T`` (orthonormal DCT-II), ``round_approx(F / Q) * Q`` with the IJG
       tables scaled by ``quality`` (:func:`quantization_tables`), ``D^T C D``.
    4. +128; the chroma cropped to its true size ceil(H/2) x ceil(W/2) and upsampled **bilinearly**
       (half-pixel centres, edges replicated): that is libjpeg's default "fancy" ``h2v2`` upsampling
       (weights 9/16, 3/16, 3/16, 1/16), which Pillow decodes with, less its integer rounding.
       Nearest upsampling would be three times farther from the codec (measured, with exact
       rounding: 2.5-2.7 / 255 mean against 0.85-1.05 / 255). YCbCr -> RGB, crop, clamp to
       [0, 255], divide by 255.

    Not modelled: the 8-bit rounding of the input and of the output, libjpeg's 8-bit rounding of
    the Y, Cb and Cr planes before coding and after decoding, its integer ("islow") DCT and
    fixed-point resampling, and the exact rounding (``round_approx`` leaves up to 1/8 of a
    quantisation step per coefficient). Measured against Pillow (``jpeg``) on smooth 8-bit images
    (phantoms, sinusoids plus noise; 32 x 32, 64 x 64, 37 x 45; quality 50, 75, 90): mean absolute
    difference 0.4-0.75 / 255 for grayscale (0.3-0.55 with exact rounding in place of
    ``round_approx``) and 0.7-1.1 / 255 for RGB, mostly the unmodelled Y, Cb, Cr rounding (1.4-1.8
    times amplified in R and B; modelling it brings 4:4:4 down to 0.2-0.35 / 255); that is a ninth
    to a quarter of the codec's own mean change to those images (2.2-5.3 / 255). Single pixels
    differ by up to about 13 / 255 where a coefficient rounds the other way. Inputs off the 8-bit
    grid: 0.5-1.1 / 255 grayscale, 0.9-1.2 / 255 RGB.

    Example:

    >>> import torch
    >>> from medrobust.defenses.jpeg import jpeg
    >>> x = torch.linspace(0, 1, 24 * 24).reshape(1, 1, 24, 24).requires_grad_()
    >>> out = smooth_jpeg(x, quality=50)
    >>> out.shape, out.dtype
    (torch.Size([1, 1, 24, 24]), torch.float32)
    >>> bool((out - jpeg(x, quality=50)).abs().mean() * 255 < 1)  # close to the real codec
    True
    >>> out.sum().backward(); bool(x.grad.abs().sum() > 0)  # with a gradient
    True
    """
    check_quality(quality)
    check_image_batch(x, "smooth_jpeg", channels=(1, 3), volumes=JPEG_VOLUME_REFUSAL)
    if x.numel() == 0:
        return x.clone()
    luminance, chrominance = quantization_tables(quality)
    work = x.to(torch.promote_types(x.dtype, torch.float32))
    batch, channels, height, width = x.shape
    if channels == 1:
        padded = _edge_pad(work * 255.0 - 128.0, 8)
        decoded = _code_plane(padded[:, 0], luminance)[:, None] + 128.0
    else:
        to_ycbcr = torch.tensor(RGB_TO_YCBCR, dtype=work.dtype, device=work.device)
        ycbcr = torch.einsum("kc,bchw->bkhw", to_ycbcr, _edge_pad(work, 16) * 255.0)
        luma = _code_plane(ycbcr[:, 0] - 128.0, luminance)
        chroma = F.avg_pool2d(ycbcr[:, 1:], 2)
        chroma = _code_plane(chroma.flatten(0, 1), chrominance).unflatten(0, (batch, 2))
        chroma = chroma[..., : (height + 1) // 2, : (width + 1) // 2]
        chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)
        to_rgb = torch.tensor(YCBCR_TO_RGB, dtype=work.dtype, device=work.device)
        ycbcr = torch.cat([luma[:, None, : chroma.shape[-2], : chroma.shape[-1]] + 128.0, chroma], dim=1)
        decoded = torch.einsum("ck,bkhw->bchw", to_rgb, ycbcr)
    return (decoded[..., :height, :width].clamp(0.0, 255.0) / 255.0).to(x.dtype)
