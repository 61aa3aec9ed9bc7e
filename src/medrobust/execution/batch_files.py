"""Arrays on disk: one ``.npz`` per batch of a stage (and the report's example images), written
atomically (a run killed at any moment leaves only complete files) and read without pickles."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from medrobust.files.atomic_files import atomic_write_bytes


def save_arrays(path: str | Path, **arrays: Any) -> Path:
    """Atomically write an .npz of numpy arrays (no pickles: object arrays are refused)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
    return atomic_write_bytes(path, buffer.getvalue())


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
