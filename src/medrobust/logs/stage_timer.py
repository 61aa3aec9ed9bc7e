"""A stage's count and the time it has taken, for an estimate of the time left: what a progress
display states after a stage's first batch. Imports nothing (the service's web process may use
it without torch)."""

from __future__ import annotations

import time
from collections.abc import Callable


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
