"""How the runner reports progress without printing: a small protocol the command line draws
(rich bars on a terminal, plain lines otherwise; :mod:`medrobust.cli.progress`); the default
does nothing.

A stage is ``with progress.stage(name, total) as bar:`` then ``bar.advance(n)`` as work is
done. Work an earlier run finished (a resumed run's stored batches or training epochs) is
reported with :func:`report_resumed`: a stage that times its work (to estimate the time left)
may define ``resumed(n)`` beside ``advance`` and counts that work without timing it, so a
resumed run's estimate is not flattered by results read back from disk in milliseconds. A
stage without ``resumed`` (any other implementation of the protocol) just sees ``advance(n)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol


class Progress(Protocol):
    def stage(self, name: str, total: int) -> "StageProgress": ...


class StageProgress(Protocol):
    def advance(self, n: int = 1) -> None: ...


def report_resumed(advance: Callable[[int], None], n: int) -> None:
    """Report ``n`` items an earlier run finished to a stage's ``advance`` (a bound method of
    the stage): through the stage's ``resumed(n)`` when it has one, else as ``advance(n)``."""
    stage = getattr(advance, "__self__", None)
    resumed = getattr(stage, "resumed", None)
    (resumed if callable(resumed) else advance)(n)


class StageTimer:
    """A stage's count and the time it has taken, for an estimate of the time left.

    The speed is measured on the work done in this process since the stage started (or since
    the last work an earlier run finished was counted, :meth:`resumed`), so the first estimate
    is ready after the first batch. ``clock``: seconds (monotonic), replaceable in tests.
    """

    def __init__(self, total: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = max(0, int(total))
        self.clock = clock
        self.started = clock()
        self.done = 0
        self.resumed_items = 0
        self.timed_items = 0
        self.timed_since = self.started

    def resumed(self, n: int) -> None:
        """``n`` items finished by an earlier run: counted, not timed."""
        self.done += n
        self.resumed_items += n
        if self.timed_items == 0:  # the clock of this run's own work starts after them
            self.timed_since = self.clock()

    def advance(self, n: int) -> None:
        self.done += n
        self.timed_items += n

    def elapsed(self) -> float:
        return self.clock() - self.started

    def seconds_left(self) -> float | None:
        """Seconds to finish at the speed measured so far; None before any timed work, or
        when the count has reached the total."""
        left = self.total - self.done
        if self.timed_items <= 0 or left <= 0:
            return None
        return (self.clock() - self.timed_since) / self.timed_items * left


class _Silent:
    def advance(self, n: int = 1) -> None:
        pass


class SilentProgress:
    @contextmanager
    def _ctx(self) -> Iterator[_Silent]:
        yield _Silent()

    def stage(self, name: str, total: int):  # noqa: ANN201  (a context manager)
        return self._ctx()
