"""The report: reads a run directory and writes its figures and one self-contained report.html."""

from medrobust.report.html import REPORT_FIGURES, build_report

__all__ = ["REPORT_FIGURES", "build_report"]
