"""``mr.compare``: the scorecards of several runs side by side, with the accuracies that differ
from the first run's beyond the test set's noise marked (non-overlapping 95% Wilson intervals;
see :mod:`medrobust.report.compare`)."""

from __future__ import annotations

import os

from medrobust.report.compare import Comparison, comparison, write_comparison

__all__ = ["Comparison", "compare"]


def compare(*run_dirs: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Comparison:
    """Compare two or more run directories, the first being the reference. Nothing is recomputed:
    every number is a field of a run's scorecard.

    Args:
        *run_dirs: the run folders (each holds metrics.json), at least two.
        out: an HTML file to write the comparison to (its path is then the result's ``html``).
            Default None: nothing written.

    Returns:
        The :class:`Comparison`: rows matched by threat model, each accuracy compared with the
        reference's.

    Raises:
        ValueError: fewer than two runs, a scorecard that cannot be read, or ``out`` a folder.
        FileNotFoundError: a run folder or its metrics.json is missing.

    Example::

        c = mr.compare("runs/demo", "runs/demo-adversarial", out="compare.html")
        for row, measure, run in c.differences():
            print(row.label, measure.name, c.runs[run].name, measure.change[run])
    """
    result = comparison(list(run_dirs))
    if out is not None:
        write_comparison(result, out)
    return result
