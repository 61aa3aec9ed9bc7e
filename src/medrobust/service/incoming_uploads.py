"""The folders of ``DIR/incoming/`` where uploads are received, and their removal once nobody is
receiving into them.

Each request receives its upload into a fresh folder ``DIR/incoming/<job id>/`` and removes it
when it ends, whatever the outcome (a queued job's files are moved to ``DIR/jobs/<id>/`` first).
A folder outlives its request only when the web process died during it (killed, out of memory,
the machine stopped): nothing would ever remove it, and it is counted against no tenant. So at
start-up the web process removes every folder no live process is receiving into.

Which folders those are cannot be told from their age alone: several web processes may serve
one data directory (behind a proxy, or while one is restarted), and an upload in progress in
another of them may be a minute old. So a request holds an exclusive ``flock`` on its folder for
as long as it lives; the kernel drops the lock when the process ends, however it ends. A folder
whose lock can be taken, and that was last changed before this process started (so not one
another process has just created and is about to lock), belongs to no live request and is
removed. Loose files directly in ``incoming/`` (none are written there today) are removed on
their age alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from medrobust.service.job_files import incoming_dir

log = logging.getLogger(__name__)


@contextlib.contextmanager
def receiving_folder(folder: Path) -> Iterator[Path]:
    """Create ``folder`` (it must not exist), hold an exclusive lock on it while the block runs,
    then remove it with whatever is left in it (the block moves out what it keeps)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.mkdir()
    handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        os.close(handle)  # the lock goes with it


def remove_stale_uploads(data_dir: Path, started: float) -> int:
    """Remove what dead requests left in ``DIR/incoming/``: every folder no live process holds
    locked and last changed before ``started`` (this process's start, a ``time.time()``), and
    every loose file older than it. Returns how many entries were removed; logs one line."""
    incoming = incoming_dir(data_dir)
    if not incoming.is_dir():
        return 0
    removed, freed = 0, 0
    for entry in sorted(incoming.iterdir()):
        try:
            info = entry.lstat()
            if info.st_mtime >= started:
                continue
            if entry.is_dir() and not entry.is_symlink():
                size = _locked_free_size(entry)
                if size is None:
                    continue
                freed += size
            else:
                freed += info.st_size
                entry.unlink()
            removed += 1
        except OSError as err:  # another process removed it first, or it cannot be read: leave it
            log.debug("left %s in place: %s", entry, err)
    if removed:
        log.info("removed %d unfinished upload%s (%.1f MB) left in %s by a web process that stopped during them",
                 removed, "" if removed == 1 else "s", freed / 2**20, incoming)
    return removed


def _locked_free_size(folder: Path) -> int | None:
    """Remove ``folder`` if no process holds its lock (taking the lock ourselves meanwhile) and
    return the bytes it held; None when a live request is receiving into it."""
    handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        size = sum(p.lstat().st_size for p in folder.rglob("*") if not p.is_dir() or p.is_symlink())
        shutil.rmtree(folder)
        return size
    finally:
        os.close(handle)
