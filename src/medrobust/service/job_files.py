"""Where a job's files live in the data directory, and how much room they take.

``DIR/jobs/ID/upload/`` holds what the tenant sent (the model, the extracted images) and
``DIR/jobs/ID/RUN_NAME/`` the run directory the worker writes; ``DIR/incoming/`` receives uploads
before they are checked, on the same file system so a checked upload is moved, not copied.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class JobFiles:
    data_dir: Path
    job_id: str
    run_name: str = "run"
    """The run folder's name (and the run's name in its report and in comparisons)."""

    @property
    def root(self) -> Path:
        return self.data_dir / "jobs" / self.job_id

    @property
    def upload(self) -> Path:
        return self.root / "upload"

    @property
    def run(self) -> Path:
        return self.root / self.run_name

    @property
    def log(self) -> Path:
        return self.root / "worker.log"

    @property
    def attempt_outcome(self) -> Path:
        """What the job's process wrote at its end (:mod:`medrobust.service.job_process`)."""
        return self.root / "attempt.json"

    def size(self) -> int:
        return folder_bytes(self.root)

    def delete(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def incoming_dir(data_dir: Path) -> Path:
    return data_dir / "incoming"


def folder_bytes(folder: Path) -> int:
    """Bytes of the regular files under ``folder`` (links are not followed)."""
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            total += st.st_size
    return total


def run_name(model_file: str, job_id: str) -> str:
    """A run name that says which model it evaluated: ``chest-densenet-3f2a9c0d``."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(model_file).name.split(".")[0]).strip("-.")[:40] or "model"
    return f"{stem}-{job_id[:8]}"


def job_files(data_dir: Path, row: sqlite3.Row) -> JobFiles:
    """The files of the job in ``row`` (its request names its run folder)."""
    return JobFiles(data_dir, row["id"], json.loads(row["request"]).get("run_name", "run"))
