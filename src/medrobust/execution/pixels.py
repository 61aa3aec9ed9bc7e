"""The run's stored grid: what a file (and the run's batch files) stores of an image in [0, 1].

Every image an attack produces is rounded to the run's grid before it is scored, because that is
what an attacker can deliver to a PACS: 8-bit grey levels for a PNG
(:data:`~medrobust.data.stored_grid.EIGHT_BIT`), integer HU for a CT DICOM series or NIfTI file
(:data:`~medrobust.data.stored_grid.CT_HU`). Batch files store the grid's integer steps exactly,
in the smallest unsigned type that holds them, and the type says which grid a batch is on:
``uint8`` is the 8-bit grid (``k / 255``), ``uint16`` the CT grid (``k / 4095``, ``k = HU + 1024``).
So a unit of work shipped to another process needs nothing but its arrays to know its grid.
"""

from __future__ import annotations

import numpy as np
import torch

from medrobust.data.stored_grid import CT_HU, EIGHT_BIT, StoredGrid

_STORAGE: dict[str, tuple[StoredGrid, type]] = {EIGHT_BIT.name: (EIGHT_BIT, np.uint8), CT_HU.name: (CT_HU, np.uint16)}
_BY_DTYPE = {np.dtype(dtype): grid for grid, dtype in _STORAGE.values()}


def quantise_8bit(x: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] rounded to the 8-bit grey-level grid: what a PNG stores, so what is
    scored is what a file written from it holds.

    Args:
        x: images in [0, 1].

    Returns:
        ``round(255 x) / 255``, on ``x``'s device and of its dtype.

    Shape:
        - x: any, e.g. (B, C, H, W).
        - Output: the same as ``x``.
    """
    return EIGHT_BIT.round(x)


def storage_dtype(grid: StoredGrid) -> np.dtype:
    """The batch files' integer type for ``grid``.

    Args:
        grid: the run's stored grid.

    Returns:
        uint8 for the 8-bit grid, uint16 for the CT grid.

    Raises:
        ValueError: a grid a run does not store.
    """
    if grid.name not in _STORAGE or _STORAGE[grid.name][0] != grid:
        raise ValueError(f"a run stores images on the 8-bit or the CT grid, not on the {grid.name} grid")
    return np.dtype(_STORAGE[grid.name][1])


def stored_grid_of(a: np.ndarray) -> StoredGrid:
    """The grid a stored batch is on, by its integer type (module docstring).

    Args:
        a: a stored batch.

    Returns:
        The 8-bit grid for uint8, the CT grid for uint16.

    Raises:
        ValueError: another type.
    """
    try:
        return _BY_DTYPE[np.dtype(a.dtype)]
    except KeyError:
        raise ValueError(f"stored images are uint8 (8-bit) or uint16 (CT), got {a.dtype}") from None


def to_stored(x: torch.Tensor, grid: StoredGrid = EIGHT_BIT) -> np.ndarray:
    """Grey images (or volumes) as the integers a batch file stores on ``grid`` (exact for images on it).

    Args:
        x: grey images in [0, 1] on ``grid``, on any device (only channel 0 is kept).
        grid: the run's stored grid. Default the 8-bit grid.

    Returns:
        ``rint(levels x)`` as a numpy array of :func:`storage_dtype`, on the CPU.

    Shape:
        - x: (B, 1, H, W) or volumes (B, 1, D, H, W).
        - Output: (B, H, W) or (B, D, H, W).
    """
    dtype = storage_dtype(grid)
    return np.rint(x[:, 0].detach().cpu().numpy() * float(grid.levels)).astype(dtype)


def from_stored(a: np.ndarray) -> torch.Tensor:
    """Stored integers back as grey images in [0, 1] (the inverse of :func:`to_stored`; the grid
    read from the dtype).

    Args:
        a: uint8 grey levels or uint16 CT steps.

    Returns:
        ``a / levels`` as a float32 tensor on the CPU, with a channel axis.

    Shape:
        - a: (B, H, W) or (B, D, H, W).
        - Output: (B, 1, H, W) or (B, 1, D, H, W).
    """
    grid = stored_grid_of(a)
    return torch.from_numpy(a.astype(np.float32) / float(grid.levels)).unsqueeze(1)
