"""Intensity conventions: how a network expects its input scaled.

medrobust's currency is always [0, 1]; each :class:`~medrobust.models.classifier.Classifier`
maps it to its network's convention inside ``forward``, so an attack budget is always in
units of the stored image (grey levels, HU), whatever the network sees.

Three kinds: a fixed affine map (:class:`Intensity`: unit, ImageNet, symmetric, byte); CT
windows (:class:`HUWindows`: the stored image read as HU on the
:data:`~medrobust.data.stored_grid.CT_HU` grid, one clipped window per network channel, as
intracranial-haemorrhage models and the vendors' pipelines take it); and per-image percentile
normalisation (:class:`PercentileNormalization`, for MRI-like data whose values have no fixed
unit). Windowing belongs to the model, not the data: the attacker edits stored HU, and two
models with different windows are attacked in the same units. :func:`parse_intensity` reads any
of them from the one canonical text :func:`~medrobust.specs.contract_names.intensity_name` gives.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import Enum
from typing import Any, Union

import torch

from medrobust.data.stored_grid import CT_HU
from medrobust.specs.contract_names import PERCENTILE, hu_windows, intensity_name, percentile_bounds

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Intensity(str, Enum):
    """How a network's training scaled its input; :meth:`apply` maps [0, 1] images to it.

    Attributes:
        UNIT: ``"unit"``, [0, 1] as stored (also accepted as ``"none"``).
        IMAGENET: ``"imagenet"``, ``(x - mean) / std`` with ImageNet statistics.
        SYMMETRIC: ``"symmetric"``, [-1, 1] (also accepted as ``"[-1,1]"``).
        BYTE: ``"byte"``, [0, 255] (also accepted as ``"[0,255]"``).
    """

    UNIT = "unit"  # [0, 1] as stored (also accepted as "none")
    IMAGENET = "imagenet"  # (x - mean) / std with ImageNet statistics
    SYMMETRIC = "symmetric"  # [-1, 1]: 2x - 1 (also accepted as "[-1,1]")
    BYTE = "byte"  # [0, 255]: 255 x (also accepted as "[0,255]")

    @classmethod
    def parse(cls, value: "str | Intensity") -> "Intensity":
        """The convention named ``value`` (a member, a name or an alias); ValueError naming the known ones."""
        if isinstance(value, cls):
            return value
        return cls(intensity_name(value))

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Map images in [0, 1] of shape (B, C, H, W) (or volumes (B, C, D, H, W)) to this convention
        (differentiable).

        ImageNet statistics are per channel for 3 channels; a 1-channel network gets the
        mean of the three means and stds (0.449, 0.226).
        """
        if self is Intensity.UNIT:
            return x
        if self is Intensity.SYMMETRIC:
            return x * 2.0 - 1.0
        if self is Intensity.BYTE:
            return x * 255.0
        mean, std = _imagenet_statistics(x.shape[1] == 3, x.dtype, x.device)
        if x.dim() == 5 and mean.dim() == 4:  # volumes (B, 3, D, H, W): one more spatial axis
            mean, std = mean[..., None], std[..., None]
        return (x - mean) / std


@dataclass(frozen=True)
class HUWindows:
    """CT windows: the stored image in HU, one network channel per (level, width) window.

    For a window (L, W), the channel is ``clip((HU - (L - W/2)) / W, 0, 1)`` with
    ``HU = -1024 + 4095 x`` (:data:`~medrobust.data.stored_grid.CT_HU`): a voxel at ``L - W/2``
    gives 0, one at ``L + W/2`` gives 1, and the gradient outside the window is zero (as in a
    vendor's pipeline: a change the window clips away cannot move the model). The stored image
    has 1 channel; the network sees ``len(windows)`` channels.

    Args:
        windows: (level, width) pairs in HU, widths positive.

    Example (the brain window 40/80 maps 0 HU to 0, 80 HU to 1):

    >>> import torch
    >>> brain = HUWindows(((40.0, 80.0),))
    >>> x = torch.tensor([0.0, 80.0, 1000.0]).add(1024).div(4095).view(1, 1, 1, 3)
    >>> brain.apply(x).flatten().tolist(), brain.value, brain.channels
    ([0.0, 1.0, 1.0], 'hu_windows:40,80', 1)
    """

    windows: tuple[tuple[float, float], ...]

    @property
    def value(self) -> str:
        """The canonical text (``hu_windows:40,80;80,200``), as model.json and the config record it."""
        return intensity_name(list(self.windows))

    @property
    def channels(self) -> int:
        """The network's channels: one per window."""
        return len(self.windows)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, ...) stored images in [0, 1] -> (B, len(windows), ...) windowed, each in [0, 1]
        (differentiable; any number of spatial dimensions, so volumes too)."""
        if x.shape[1] != 1:
            raise ValueError(f"CT windows take the stored image's one channel (HU), got {x.shape[1]} channels")
        view = (1, -1) + (1,) * (x.dim() - 2)
        levels = torch.tensor([w[0] for w in self.windows], dtype=x.dtype, device=x.device).view(view)
        widths = torch.tensor([w[1] for w in self.windows], dtype=x.dtype, device=x.device).view(view)
        hu = CT_HU.to_units(x)
        return ((hu - (levels - widths / 2)) / widths).clamp(0.0, 1.0)


@dataclass(frozen=True)
class PercentileNormalization:
    """Per-image percentile normalisation: each image scaled so its ``low`` and ``high``
    percentiles (over all its channels and voxels) map to 0 and 1, then clipped to [0, 1].

    For data without a fixed unit (MRI: the same tissue reads differently on two scanners), as
    nnU-Net-style pipelines do. Percentiles interpolate linearly between order statistics (numpy's
    default); the gradient flows through the voxel values and through the two order statistics.
    An image whose two percentiles are equal maps to 0.

    Args:
        low: the percentile mapped to 0, in [0, 100).
        high: the percentile mapped to 1, in (low, 100].

    >>> import torch
    >>> x = torch.linspace(0, 1, 101).view(1, 1, 1, 101)
    >>> y = PercentileNormalization(10.0, 90.0).apply(x)
    >>> round(float(y[0, 0, 0, 10]), 6), round(float(y[0, 0, 0, 50]), 6), float(y.min()), float(y.max())
    (0.0, 0.5, 0.0, 1.0)
    """

    low: float = 1.0
    high: float = 99.0

    @property
    def value(self) -> str:
        """The canonical text (``percentile:1,99``)."""
        return intensity_name({"normalize": PERCENTILE, "low": self.low, "high": self.high})

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, ...) images -> the same shape, each image normalised by its own percentiles (differentiable)."""
        flat = x.flatten(1).sort(dim=1).values
        lo, hi = (_order_statistic(flat, q) for q in (self.low, self.high))
        view = (-1,) + (1,) * (x.dim() - 1)
        span = (hi - lo).view(view)
        scaled = (x - lo.view(view)) / torch.where(span > 0, span, torch.ones_like(span))
        return torch.where(span > 0, scaled, torch.zeros_like(scaled)).clamp(0.0, 1.0)


def _order_statistic(sorted_rows: torch.Tensor, percentile: float) -> torch.Tensor:
    """The ``percentile`` of each row of ``sorted_rows`` (B, N), linearly interpolated (numpy's
    'linear' method); by indexing a sort, so no size limit (torch.quantile has one) and a gradient."""
    n = sorted_rows.shape[1]
    position = percentile / 100.0 * (n - 1)
    below = int(position)
    above = min(below + 1, n - 1)
    frac = position - below
    return sorted_rows[:, below] * (1.0 - frac) + sorted_rows[:, above] * frac


AnyIntensity = Union[Intensity, HUWindows, PercentileNormalization]
"""Every convention a contract can hold; each has ``.value`` (its canonical text) and ``.apply(x)``."""


def parse_intensity(value: Any) -> AnyIntensity:
    """The convention ``value`` gives (an object of :data:`AnyIntensity`, a name, an alias, a
    ``hu_windows:``/``percentile:`` text or mapping); ValueError naming the forms.

    >>> parse_intensity({"hu_windows": [[40, 80], [600, 2800]]}).channels, parse_intensity("imagenet").value
    (2, 'imagenet')
    """
    if isinstance(value, Intensity | HUWindows | PercentileNormalization):
        return value
    name = intensity_name(value)
    windows = hu_windows(name)
    if windows is not None:
        return HUWindows(windows)
    bounds = percentile_bounds(name)
    if bounds is not None:
        return PercentileNormalization(*bounds)
    return Intensity(name)


def network_channels_of(intensity: AnyIntensity) -> int | None:
    """The network channels a convention fixes (one per CT window), else None."""
    return intensity.channels if isinstance(intensity, HUWindows) else None


@functools.lru_cache(maxsize=16)
def _imagenet_statistics(rgb: bool, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet mean and std, per channel (1, 3, 1, 1) for RGB or their channel averages for grey,
    made once per dtype and device: a forward pass on a GPU copies nothing from the host."""
    if rgb:
        return (torch.tensor(IMAGENET_MEAN, dtype=dtype).view(1, 3, 1, 1).to(device),
                torch.tensor(IMAGENET_STD, dtype=dtype).view(1, 3, 1, 1).to(device))
    return (torch.tensor(sum(IMAGENET_MEAN) / 3, dtype=dtype).to(device),
            torch.tensor(sum(IMAGENET_STD) / 3, dtype=dtype).to(device))
