"""Atomic file writes: a file appears under its name complete, or not at all.

Every file medrobust writes (run-directory stages and reports, checkpoints, PNG and DICOM
exports, manifests) goes through :func:`open_atomic`: the bytes go to a hidden temporary file
in the same folder, which is renamed over the final name (``os.replace``, atomic on one file
system, POSIX ``rename(2)``) only once it is complete and closed. A process killed at any
moment therefore leaves either the old file or the new one, never half of one, and a write
that fails (full disk, a serialisation error) deletes its temporary file and leaves the old
file untouched.

This module sits below every room (it imports nothing of medrobust), so data, models and the
run directory share it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def open_atomic(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """Open a binary handle whose content appears at ``path`` only once the block ends without
    an exception; otherwise the temporary file is deleted and ``path`` is left as it was.

    Parent folders are created. The temporary file is ``.NAME.PID.RANDOM.tmp`` beside ``path``,
    opened exclusively ("x", not ``mkstemp``) so the result gets the usual umask permissions.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with tmp_path.open("xb") as handle:
            yield handle
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`open_atomic`); returns the path."""
    with open_atomic(path) as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically, encoded as ``encoding`` (no newline translation)."""
    return atomic_write_bytes(path, text.encode(encoding))
