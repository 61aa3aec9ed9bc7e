"""Resumable batched stages: each batch's result is one .npz in the stage folder, written
atomically by the driver alone; a restarted run loads finished batches and computes only the
rest, whichever engine computed the finished ones.

A stage keeps in memory only its per-image summaries (decisions, distances, scores); its images
(``x_adv``, ``clean``) stay in the batch files and are read back one batch at a time
(:meth:`StageResult.images`), so memory stays flat in the number of images.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medrobust.execution.batch_files import save_arrays
from medrobust.execution.progress import report_resumed

log = logging.getLogger(__name__)

IMAGE_KEYS = frozenset({"x_adv", "clean"})
"""Keys of a batch file that hold images: read back batch by batch, never all at once."""


@dataclass
class StageResult:
    """A finished stage: its per-image summary in memory, its images in its batch files.

    Args:
        folder: the stage's folder (``batch-NNNN.npz`` files).
        batches: how many batches the stage has.
        summary: per-image arrays (decisions, distances, scores...), concatenated over batches
            in order; the image keys (:data:`IMAGE_KEYS`) are left on disk.

    Shape:
        - :meth:`images`: (B, H, W) uint8, one batch.
        - :meth:`take`: (len(positions), H, W) uint8.
    """

    folder: Path
    batches: int
    summary: dict[str, np.ndarray]

    def batch_path(self, b: int) -> Path:
        """The file of batch ``b``."""
        return self.folder / batch_file_name(b)

    def images(self, b: int, key: str = "x_adv") -> np.ndarray:
        """One batch's images, as stored.

        Args:
            b: the batch's index.
            key: which images: ``"x_adv"`` (the default) or ``"clean"``.

        Returns:
            (B, H, W) uint8 grey levels.
        """
        with np.load(self.batch_path(b), allow_pickle=False) as data:
            return data[key]

    def take(self, positions: np.ndarray, batch_size: int, key: str = "x_adv") -> np.ndarray:
        """The images at ``positions``, reading only the batches that hold them.

        Args:
            positions: indices into the stage's items, in the order wanted.
            batch_size: the stage's batch size (to find each position's batch).
            key: which images: ``"x_adv"`` (the default) or ``"clean"``.

        Returns:
            (len(positions), H, W) uint8, in the order of ``positions``.
        """
        out = []
        for b in sorted({int(p) // batch_size for p in positions}):
            part = self.images(b, key)
            out += [(int(p), part[int(p) - b * batch_size]) for p in positions if int(p) // batch_size == b]
        order = {p: i for i, p in enumerate(int(p) for p in positions)}
        return np.stack([img for _, img in sorted(out, key=lambda item: order[item[0]])])


class _DriverSide:
    """The "engine" of a stage whose units are already its results (arrays the driver reads
    itself, e.g. the attack subset's clean images): nothing is dispatched."""

    def map(self, units):
        yield from units


DRIVER = _DriverSide()


def batch_file_name(b: int) -> str:
    """The file name of batch ``b`` in its stage's folder.

    Args:
        b: the batch's index, from 0.

    Returns:
        ``batch-NNNN.npz`` (``batch-0007.npz``).
    """
    return f"batch-{b:04d}.npz"


def _finished_summary(path: Path, required: frozenset[str]) -> dict[str, np.ndarray] | None:
    """A finished batch file's summary arrays, or None when it is missing or lacks ``required`` keys
    (written by an older medrobust: it is computed again)."""
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        if not required <= set(data.files):
            log.info("%s: written by an older version (no %s); computing it again", path,
                     ", ".join(sorted(required - set(data.files))))
            return None
        return {k: data[k] for k in data.files if k not in IMAGE_KEYS}


def finished_summary(folder: Path) -> dict[str, np.ndarray] | None:
    """A finished stage's per-image arrays, read from its batch files in order; images stay on disk.

    Args:
        folder: the stage's folder.

    Returns:
        ``{key: array}`` concatenated over the batch files, or None when the folder holds none.
    """
    paths = sorted(folder.glob("batch-*.npz")) if folder.is_dir() else []
    parts = [part for part in (_finished_summary(p, frozenset()) for p in paths) if part is not None]
    if not parts:
        return None
    return {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}


def run_stage(engine, folder: Path, n: int, batch_size: int, make_unit: Callable[[int, slice], object],
              advance: Callable[[int], None] | None = None, required: frozenset[str] = frozenset(),
              finish: Callable[[int, dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None) -> StageResult:
    """Run the stage of ``n`` items in batches through ``engine``; finished batches are read back.

    Each result is written to ``folder/batch-NNNN.npz`` as it arrives, in any order, by this
    (the driver's) process alone; the per-image log lines a unit captured are written to the run's
    log first.

    Args:
        engine: where units run (:mod:`medrobust.execution.engines`, or :data:`DRIVER` for units
            that are already their results).
        folder: the stage's folder (created if missing).
        n: the stage's items.
        batch_size: items per batch.
        make_unit: ``make_unit(b, slice)`` describes batch ``b``; called only for batches not
            finished yet, one at a time as the engine has room.
        advance: the progress stage's ``advance``, given each batch's items as it is written
            (batches read back are reported as resumed: :func:`report_resumed`). Default None.
        required: keys a finished batch file must hold to be reused (one written by an older
            version without them is computed again). Default: none.
        finish: ``finish(b, arrays)`` returns the arrays to write, e.g. with driver-side arrays
            added. Default None.

    Returns:
        The :class:`StageResult`: every batch's per-image arrays, concatenated in batch order.
    """
    from medrobust.execution.units import LOG_KEY, replay_log

    folder.mkdir(parents=True, exist_ok=True)
    slices = [slice(s, min(n, s + batch_size)) for s in range(0, n, batch_size)]
    parts: dict[int, dict[str, np.ndarray]] = {}
    todo = []
    for b, sl in enumerate(slices):
        found = _finished_summary(folder / batch_file_name(b), required)
        if found is None:
            todo.append(b)
        else:
            parts[b] = found
            if advance is not None:  # read back, not computed: counted but not timed
                report_resumed(advance, sl.stop - sl.start)
    units = ((b, make_unit(b, slices[b])) for b in todo)
    for b, result in engine.map(units):
        if LOG_KEY in result:
            replay_log(result.pop(LOG_KEY))
        if finish is not None:
            result = finish(b, result)
        save_arrays(folder / batch_file_name(b), **result)
        parts[b] = {k: v for k, v in result.items() if k not in IMAGE_KEYS}
        if advance is not None:
            advance(slices[b].stop - slices[b].start)
    summary: dict[str, np.ndarray] = {}
    if parts:
        keys = parts[0].keys() if 0 in parts else next(iter(parts.values())).keys()
        summary = {k: np.concatenate([parts[b][k] for b in range(len(slices))]) for k in keys}
    return StageResult(folder=folder, batches=len(slices), summary=summary)
