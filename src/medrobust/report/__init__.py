"""The report: reads a run directory and writes its figures, one self-contained report.html, the
printable statement.html, and comparisons of runs (compare.html)."""

from medrobust.report.compare import compare_runs
from medrobust.report.html import REPORT_FIGURES, build_report
from medrobust.report.statement import build_statement

__all__ = ["REPORT_FIGURES", "build_report", "build_statement", "compare_runs"]
