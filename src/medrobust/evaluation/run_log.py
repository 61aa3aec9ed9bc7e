"""``RUN/log.txt``: every log line of a run, per-image lines included, appended across resumes.

The terminal shows progress and the summary; the file keeps what a person may need later: each
detector line per image, each skipped file, each stage's notes. While the context is open the
``medrobust`` loggers pass INFO records (the level is restored afterwards), so the file is
complete whether the run was started from the command line or from Python.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOG_FILE = "log.txt"


@contextmanager
def run_log(run_dir: Path) -> Iterator[Path]:
    """Append the ``medrobust`` loggers' records at INFO and above to ``run_dir/log.txt``."""
    path = Path(run_dir) / LOG_FILE
    handler = logging.FileHandler(path, mode="a", encoding="utf-8", errors="backslashreplace")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("medrobust")
    previous = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield path
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
        handler.close()
