"""Example images of a run (``samples/examples.npz``), for the report's picture figures.

Keys (all arrays, no pickles):

* ``ids`` (k,) str, ``labels`` (k,) int, ``classes`` (K,) str
* ``original`` (k, H, W) float32 in [0, 1] and ``pred__original`` (k,) int
* for each white-box attack, A its stage folder (:class:`~medrobust.evaluation.stage_keys.StageKey`):
  ``adv__A`` (k, H, W) and ``pred__adv__A``; ``stage_labels`` / ``stage_folders`` map labels to A
* for each defense D (its spec made safe) and image set S (``clean`` or an attack's A):
  ``def__D__S`` and ``pred__def__D__S``
* Grad-CAM heatmaps in [0, 1]: ``cam__original`` and ``cam__adv__A`` (k, H, W)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medrobust.evaluation.stage_keys import folder_name
from medrobust.execution.batch_files import load_arrays, save_arrays

SAMPLES_FILE = Path("samples") / "examples.npz"


def stage_index(folders: dict[str, str]) -> dict[str, np.ndarray]:
    """The arrays that map each attack's label to its stage folder (``{label: folder}``), stored
    beside the examples so the report finds an attack's images without rebuilding names."""
    return {"stage_labels": np.array(list(folders), dtype=str), "stage_folders": np.array(list(folders.values()), dtype=str)}


def sample_name(samples: dict[str, np.ndarray], name: str) -> str:
    """How ``name`` (an attack's label, a defense's spec, ``original`` or ``clean``) is written in
    the examples' keys: an attack's stage folder from the stored index, else the name made safe
    (:func:`~medrobust.evaluation.stage_keys.folder_name`; examples written before the index)."""
    labels = samples.get("stage_labels")
    if labels is not None:
        found = np.flatnonzero(labels == name)
        if len(found):
            return str(samples["stage_folders"][found[0]])
    return folder_name(name)


def save_samples(run_dir: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    return save_arrays(Path(run_dir) / SAMPLES_FILE, **arrays)


def load_samples(run_dir: str | Path) -> dict[str, np.ndarray]:
    path = Path(run_dir) / SAMPLES_FILE
    return load_arrays(path) if path.is_file() else {}
