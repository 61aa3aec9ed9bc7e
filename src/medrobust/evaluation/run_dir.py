"""The run directory: the single source of truth of an evaluation.

::

    runs/NAME/
      config.yaml     the resolved configuration (every default written out)
      model/          model.safetensors + model.json (arch, classes, preprocessing, history)
      surrogates/     one checkpoint folder per transfer surrogate
      stages/         one file per finished stage or batch (.npz / .json), written atomically:
                      baseline/ (every test image's decision), inputs/ (the attack subset's
                      clean images), attacks/, transfer/, defenses/, detection/
      samples/        example images: original, adversarial, defended, heatmaps (examples.npz)
      metrics.json    every number, with the settings that produced it
      figures/*.png   written by the report
      report.html     self-contained

Every write goes to a temporary file in the same folder and is renamed into place, so a run
killed at any moment leaves only complete files; a restarted run skips what is there.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

# The runner, results and the report import the atomic writers from here too.
from medrobust.files.atomic_files import atomic_write_bytes, atomic_write_text  # noqa: F401 (re-exported)


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


def check_output_folder(folder: str | os.PathLike[str]) -> None:
    """Raise the :class:`OSError` that writing into ``folder`` would meet, before any work.

    Nothing is created: the nearest existing ancestor must be a folder we may write into, so a
    long training run does not end by failing to save. Read-only file systems and missing
    permissions are found with :func:`os.access`, which a root user passes except on a
    read-only file system; a full disk can only show when writing.
    """
    target = Path(folder)
    for candidate in (target, *target.parents):
        if not candidate.exists() and not candidate.is_symlink():
            continue
        if not candidate.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(target))
        if not os.access(candidate, os.W_OK | os.X_OK):
            code = errno.EROFS if _read_only_file_system(candidate) else errno.EACCES
            raise OSError(code, os.strerror(code), str(candidate))
        return


def _read_only_file_system(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def model_file_sha256(path: str | os.PathLike[str]) -> str | None:
    """SHA-256 of a model file (hex), or of a checkpoint folder's weights (each ``*.safetensors``
    file's name and content, in sorted order: not ``model.json``, whose training times differ
    from run to run); None when there is nothing to read (a model held in memory)."""
    import hashlib

    path = Path(path)
    digest = hashlib.sha256()
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*.safetensors") if p.is_file())
        if not files:
            return None
    else:
        return None
    for f in files:
        if path.is_dir():
            digest.update(f.relative_to(path).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def cached_json(path: Path, kind, compute):
    """The pydantic ``kind`` stored at ``path`` (a finished stage's result), or ``compute()``'s,
    stored there first (atomically, strict JSON)."""
    if path.is_file():
        return kind.model_validate(load_json(path))
    value = compute()
    save_json(path, value.model_dump())
    return value
