"""Errors and records for bad input files.

A bad file never stops a run: readers raise :class:`ImageReadError` with one sentence that
names the file, the problem and the fix; datasets catch it, log it, record a
:class:`SkippedFile` and carry on with the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class ImageReadError(ValueError):
    """A file could not be read as an image. ``str(err)`` names the file, the problem and the fix."""

    def __init__(self, path: str | Path, problem: str, fix: str = "") -> None:
        from medrobust.data.record_ids import printable_path

        self.path = printable_path(path)  # undecodable bytes of a name as \xNN: the message can always be written
        self.problem = problem
        self.fix = fix
        message = f"{self.path}: {problem}"
        if fix:
            message += f"; {fix}"
        super().__init__(message)


class DataSourceError(ValueError):
    """A data source as a whole is unusable (missing CSV, empty folder, unknown class name...)."""


@dataclass(frozen=True)
class SkippedFile:
    """A file that a dataset skipped, and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"
