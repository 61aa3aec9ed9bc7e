"""The run directory: the single source of truth of an evaluation.

::

    runs/NAME/
      config.yaml     the resolved configuration (every default written out)
      model/          model.safetensors + model.json (arch, classes, preprocessing, history)
      surrogates/     one checkpoint folder per transfer surrogate
      stages/         one file per finished stage or batch (.npz / .json), written atomically
      samples/        example images: original, adversarial, defended, heatmaps (examples.npz)
      metrics.json    every number, with the settings that produced it
      figures/*.png   written by the report
      report.html     self-contained

Every write goes to a temporary file in the same folder and is renamed into place, so a run
killed at any moment leaves only complete files; a restarted run skips what is there.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def save_arrays(path: str | Path, **arrays: Any) -> Path:
    """Atomically write an .npz of numpy arrays (no pickles: object arrays are refused)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
    return atomic_write_bytes(path, buffer.getvalue())


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def strict_json(obj: Any, what: str = "value") -> str:
    """``obj`` as indented strict JSON (RFC 8259: no NaN or infinity), ending in a newline.

    A non-finite number raises ValueError naming where it sits (``what`` and the key path),
    so an undefined value is stored as null by its producer, never written as a bare NaN.
    """
    try:
        return json.dumps(obj, indent=2, default=_json_default, allow_nan=False) + "\n"
    except ValueError:
        raise ValueError(f"{what}: a non-finite number at {_first_non_finite(obj) or '?'} cannot be stored "
                         "in JSON; it must be recorded as undefined (null)") from None


def _first_non_finite(obj: Any, where: str = "") -> str | None:
    if isinstance(obj, float) and not np.isfinite(obj):
        return where or "(top)"
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return None
    for key, value in items:
        found = _first_non_finite(value, f"{where}[{key!r}]")
        if found:
            return found
    return None


def save_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, strict_json(obj, str(path)))


def load_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in JSON")
