"""The stored grid of a modality: which integer values a file holds, and how [0, 1] maps onto them.

medrobust's currency is one float32 tensor in [0, 1] whatever the modality (DESIGN.md, "The one
idea"). A modality says what [0, 1] *means*: the linear map from the currency onto the integer
values its files store, and the unit a person reads a budget in. Two grids exist:

* :data:`EIGHT_BIT`: a PNG's grey levels 0..255, so ``x = k / 255`` and ``eps = 8/255`` is
  8 grey levels;
* :data:`CT_HU`: 12-bit CT in Hounsfield units, -1024..3071 HU, so ``HU = -1024 + 4095 x`` and
  1 HU is 1/4095 of the currency: an L-inf budget of 4 HU is ``eps = 4/4095``. CT values outside
  the range are clipped when read (air below -1024 HU carries nothing; metal above 3071 HU is
  rare and saturates on most scanners too), and the readers log how many voxels were.

Why linear on the stored domain, rather than on a window: the attacker edits the stored file,
so a budget must be a distance in the stored values (HU); a window belongs to the model that
reads the file (its contract, :mod:`medrobust.models.intensity`), and two models of one
volume with different windows are attacked in the same units.

Adversarial images are rounded to the grid before they are scored (:meth:`StoredGrid.round`),
because that is what an attacker can deliver: a PNG of 8-bit grey levels, a DICOM of integer HU.
The robustness score's reference budget is a property of the grid too (:attr:`StoredGrid.score_budget`):
the area under the accuracy curve is taken up to a budget that means the same to a reader of the
modality's images. On the 8-bit grid it is 8/255, the budget the literature reports (every 8-bit
number unchanged). On CT it is **16 HU** (16/4095 of the currency): about two to three times a
routine head CT's image noise (5-8 HU in brain), and under half the contrast between fresh blood
and brain (about 40-50 HU), so an attacker inside it makes no change a reader would see as a
lesion. 8/255 on the CT grid would be 128 HU, more than the contrast of every finding a head CT
is read for; an HU grid of 2-16 HU (0.0005-0.004) would never reach it, and no CT run would be scored.

No torch import is needed: the methods work on numpy arrays and torch tensors alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


@dataclass(frozen=True)
class StoredGrid:
    """The integer values ``low .. high`` a modality's files store, mapped linearly onto [0, 1].

    ``to_units(x) = low + x (high - low)``; ``from_units(v) = (v - low) / (high - low)``; the grid
    points are ``x = k / (high - low)`` for integers ``k``.

    Args:
        name: what the grid is called in messages (``"8-bit"``, ``"CT"``).
        low: the stored value of 0 (an integer).
        high: the stored value of 1 (an integer above ``low``).
        unit: the unit a budget is stated in to a person (``"grey levels"``, ``"HU"``).
        score_units: the robustness score's reference budget in stored units (module docstring).
            Default None: 8/255 of the range (8 grey levels on the 8-bit grid).

    Raises:
        ValueError: ``high`` is not above ``low``, or either is not an integer.

    Example:

    >>> CT_HU.to_units(0.0), CT_HU.to_units(1.0), CT_HU.eps_in_units(4 / 4095)
    (-1024.0, 3071.0, 4.0)
    >>> float(CT_HU.from_units(40.0)) * 4095, EIGHT_BIT.eps_in_units(8 / 255)
    (1064.0, 8.0)
    >>> EIGHT_BIT.score_budget == 8 / 255, CT_HU.eps_in_units(CT_HU.score_budget)
    (True, 16.0)
    """

    name: str
    low: int
    high: int
    unit: str
    score_units: float | None = None

    def __post_init__(self) -> None:
        if int(self.low) != self.low or int(self.high) != self.high or not self.high > self.low:
            raise ValueError(f"stored grid {self.name!r}: low {self.low} and high {self.high} must be integers "
                             "with high above low")

    @property
    def levels(self) -> int:
        """Grid steps from 0 to 1 (``high - low``): 255 for 8 bits, 4095 for 12-bit CT."""
        return int(self.high - self.low)

    @property
    def score_budget(self) -> float:
        """The budget in [0, 1] units up to which the robustness score's area is taken (module
        docstring): ``score_units / levels``, or 8/255 when the grid names none."""
        return 8 / 255 if self.score_units is None else float(self.score_units) / self.levels

    def to_units(self, x: T) -> T:
        """Currency values in [0, 1] (numpy or torch, any shape) as stored values (grey levels, HU)."""
        return x * float(self.levels) + float(self.low)  # type: ignore[operator,return-value]

    def from_units(self, v: T) -> T:
        """Stored values (grey levels, HU; numpy or torch, any shape) as the currency, not clipped."""
        return (v - float(self.low)) / float(self.levels)  # type: ignore[operator,return-value]

    def round(self, x: T) -> T:
        """``x`` (numpy or torch, in [0, 1]) rounded to the nearest grid point, of its type and
        dtype: ``round(levels x) / levels``, which is what a file written from ``x`` holds."""
        levels = float(self.levels)
        if hasattr(x, "detach"):  # a torch tensor, without importing torch here
            return x.mul(levels).round() / levels  # type: ignore[attr-defined,no-any-return]
        array: Any = x
        return np.round(array * levels) / levels  # type: ignore[no-any-return]

    def eps_in_units(self, eps: float) -> float:
        """A budget in [0, 1] units as a number of stored units (``8/255`` -> 8 grey levels, ``4/4095`` -> 4 HU)."""
        return float(eps) * self.levels

    def eps_from_units(self, amount: float) -> float:
        """A budget in stored units (4 HU) as the currency's eps (``4 / 4095``)."""
        return float(amount) / self.levels

    def stored_values(self, x: Any) -> np.ndarray:
        """Currency values (numpy, any shape) as the integer stored values, int32 (rounded, clipped to the grid)."""
        array = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
        return (np.rint(array * self.levels) + self.low).astype(np.int32)

    def clip_units(self, values: np.ndarray) -> tuple[np.ndarray, int]:
        """Stored values (float, any shape) clipped to ``low .. high``, and how many lay outside
        (the readers log that count: a clipped voxel is information the file had and the grid lacks)."""
        outside = int(np.count_nonzero((values < self.low) | (values > self.high)))
        return np.clip(values, self.low, self.high), outside


EIGHT_BIT = StoredGrid("8-bit", 0, 255, "grey levels", score_units=8)
"""A PNG's (and the run's batch files') grid: 256 grey levels, ``x = k / 255``; the robustness
score's area is taken up to 8/255."""

CT_HU = StoredGrid("CT", -1024, 3071, "HU", score_units=16)
"""12-bit CT in Hounsfield units: ``HU = -1024 + 4095 x``; air is -1000 HU, water 0 HU; the
robustness score's area is taken up to 16 HU (module docstring)."""


def grid_of_record(record: dict[str, Any] | None) -> StoredGrid:
    """The grid a run's metrics.json names (its ``data.grid``: name, unit, low, high):
    :data:`CT_HU` for a grid in HU, else :data:`EIGHT_BIT` (metrics.json names no grid on 8-bit
    data, and runs before CT named none).

    >>> grid_of_record({"name": "CT", "unit": "HU", "low": -1024, "high": 3071}) is CT_HU, grid_of_record(None).name
    (True, '8-bit')
    """
    return CT_HU if (record or {}).get("unit") == CT_HU.unit else EIGHT_BIT


def grid_for_bits(bits: int) -> StoredGrid:
    """The unsigned ``bits``-bit grid ``0 .. 2**bits - 1`` (8 bits: :data:`EIGHT_BIT`); what an
    attack's ``quantize_bits`` names. The 12-bit grid has :data:`CT_HU`'s points (an offset of
    -1024 moves no point of [0, 1])."""
    if bits == 8:
        return EIGHT_BIT
    if not 1 <= int(bits) <= 16:
        raise ValueError(f"bits must be between 1 and 16, got {bits}")
    return StoredGrid(f"{bits}-bit", 0, (1 << int(bits)) - 1, "levels")
