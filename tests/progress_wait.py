"""Waiting on work that moves: a test waits until a condition holds and fails only when what it
watches has stood still for a generous while, never on a fixed total. A machine busy with other
work makes such a test slower, not red; a job that is stuck still fails it.

``wait_for(read, until, progress=...)`` reads a value (a job's JSON, the files of a run folder)
until ``until(value)`` holds; ``progress(value)`` is what counts as moving (a job's stage, its
count and its finished stages; the number of files written), and each change of it restarts the
``idle_s`` limit."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

IDLE_S = 180.0
"""How long the watched work may stand still: far longer than its slowest step (one batch, one
process start) on a machine shared with other work."""


def wait_for(read: Callable[[], T], until: Callable[[T], bool], *, progress: Callable[[T], Hashable] = lambda v: v,
             idle_s: float = IDLE_S, interval_s: float = 0.1, what: str = "the condition") -> T:
    """The first value of ``read()`` for which ``until`` holds; TimeoutError when ``progress`` of
    the values read has not changed for ``idle_s`` seconds."""
    last_mark: object = object()
    last_change = time.monotonic()
    while True:
        value = read()
        if until(value):
            return value
        mark = progress(value)
        if mark != last_mark:
            last_mark, last_change = mark, time.monotonic()
        elif time.monotonic() - last_change > idle_s:
            raise TimeoutError(f"{what}: nothing moved for {idle_s:.0f} s; last seen: {value}")
        time.sleep(interval_s)


def files_written(folder: Path) -> tuple[int, int]:
    """How far a run folder has got: its number of files and their latest modification time. A
    file gone between the listing and its stat (a run's temporary file, renamed into place as it
    is written) is not counted; a folder gone while it is walked, the walk is made again."""
    while True:
        times = []
        try:
            for path in folder.rglob("*") if folder.is_dir() else []:
                try:
                    if path.is_file():
                        times.append(path.stat().st_mtime_ns)
                except FileNotFoundError:
                    continue
        except FileNotFoundError:
            continue
        return len(times), max(times, default=0)
