"""Example images of a run (``samples/examples.npz``), for the report's picture figures.

Keys (all arrays, no pickles):

* ``ids`` (k,) str, ``labels`` (k,) int, ``classes`` (K,) str
* ``original`` (k, H, W) float32 in [0, 1] and ``pred__original`` (k,) int
* for each attack key A (sanitised by :func:`array_key`): ``adv__A`` (k, H, W) and ``pred__adv__A``
* for each defense D and image set S (``clean`` or an attack key): ``def__D__S`` and ``pred__def__D__S``
* Grad-CAM heatmaps in [0, 1]: ``cam__original`` and ``cam__adv__A`` (k, H, W)
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from medrobust.evaluation.run_dir import load_arrays, save_arrays

SAMPLES_FILE = Path("samples") / "examples.npz"


def array_key(name: str) -> str:
    """A name made safe for an .npz key: letters, digits, '.', '-' and '_' only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")


def save_samples(run_dir: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    return save_arrays(Path(run_dir) / SAMPLES_FILE, **arrays)


def load_samples(run_dir: str | Path) -> dict[str, np.ndarray]:
    path = Path(run_dir) / SAMPLES_FILE
    return load_arrays(path) if path.is_file() else {}
