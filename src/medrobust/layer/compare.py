"""``mr.compare``: the scorecards of several runs side by side, with the accuracies that differ
from the first run's beyond the test set's noise marked (non-overlapping 95% Wilson intervals;
see :mod:`medrobust.report.compare`)."""

from __future__ import annotations

import os

from medrobust.report.compare import Comparison, comparison, write_comparison

__all__ = ["Comparison", "compare"]


def compare(*run_dirs: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Comparison:
    """Compare two or more run directories (the first is the reference); returns a
    :class:`Comparison` (rows matched by threat model, each accuracy compared with the
    reference's) and, with ``out``, writes it as an HTML page there (``Comparison.html``).

    Example::

        c = mr.compare("runs/demo", "runs/demo-adversarial", out="compare.html")
        for row, measure, run in c.differences():
            print(row.label, measure.name, c.runs[run].name, measure.change[run])
    """
    result = comparison(list(run_dirs))
    if out is not None:
        write_comparison(result, out)
    return result
