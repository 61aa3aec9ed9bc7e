"""Arrays on disk: one ``.npz`` per batch of a stage (and the report's example images), written
atomically (a run killed at any moment leaves only complete files) and read without pickles."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from medrobust.files.atomic_files import atomic_write_bytes


def save_arrays(path: str | Path, **arrays: Any) -> Path:
    """Atomically write an .npz of numpy arrays (compressed).

    Args:
        path: the file to write (its folder is created if missing).
        **arrays: the arrays by name (anything ``np.asarray`` takes): numbers, booleans and
            strings. Not object arrays: numpy would pickle one, and :func:`load_arrays`, which
            reads no pickles, would refuse the file.

    Returns:
        ``path``, as a Path.
    """
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
    return atomic_write_bytes(path, buffer.getvalue())


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an .npz written by :func:`save_arrays`, read without pickles.

    Args:
        path: the .npz file.

    Returns:
        ``{name: array}``, all read into memory.
    """
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
