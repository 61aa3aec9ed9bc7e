"""The command line's progress display: the public layer's progress protocol
(:class:`medrobust.Progress`) as rich bars on a terminal, and as plain lines when stdout is
not a terminal (a pipe, a file, a CI log), where a live bar draws nothing until the run ends.

Plain lines, per stage::

    stage baseline: started, 600 to do
    stage baseline: 400/600 done by an earlier run    (said with the first batch of new work)
    stage baseline: about 12 min left
    stage baseline: 480/600 (80%), 2:12 elapsed, about 3 min left
    stage baseline: finished, 600/600 in 5:01

A count line at each tenth of a stage, at most one every :data:`LINE_INTERVAL_S` seconds (a
stage of a few seconds prints its start and finish only); every line depends on the count and
the clock alone, so a test with a fake clock sees exactly these lines.

Both displays state the estimated time left after a stage's first batch, when it is a minute
or more ("stage X: about N min left"): a configuration asking for ``steps: 1e9`` is the user's
choice, and the run says what it will cost. Work an earlier run finished (a resumed run's
stored batches, training epochs) is counted but not timed
(:func:`medrobust.execution.progress.report_resumed`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from medrobust.logs.stage_timer import StageTimer

LINE_INTERVAL_S = 30.0
"""The least time between two count lines of one stage in the plain display."""
WORTH_SAYING_S = 60.0
"""An estimated time left from this long on is stated after a stage's first batch."""


def duration_text(seconds: float) -> str:
    """``75`` -> ``1:15``, ``3725`` -> ``1:02:05``."""
    s = int(max(0.0, seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def time_left_text(seconds: float) -> str:
    """``"about 12 min left"`` (``"about 2.5 h"``, ``"about 3.1 days"``, ``"about 116 days"``; ``"less than
    a minute"``)."""
    if seconds < 60:
        return "less than a minute left"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60)} min left"
    hours = seconds < 48 * 3600
    amount = seconds / 3600 if hours else seconds / 86400
    return f"about {f'{amount:.1f}' if amount < 10 else round(amount)} {'h' if hours else 'days'} left"


class CliProgress:
    """The progress protocol for a command: rich bars when ``console`` is a terminal, plain
    lines otherwise (``plain`` forces one or the other); ``enabled=False`` shows nothing (when
    stdout carries JSON lines). Use as a context manager around the layer call."""

    def __init__(self, enabled: bool = True, *, console: Console | None = None, plain: bool | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if console is None:
            from medrobust.cli.app import console as stdout_console

            console = stdout_console
        self.enabled = enabled
        self.console = console
        self.plain = (not console.is_terminal) if plain is None else plain
        self.clock = clock
        self.bar: Progress | None = None
        if enabled and not self.plain:
            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console,
                                transient=False)
        self._started = False

    def __enter__(self) -> "CliProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None and self._started:
            self.bar.__exit__(*exc)

    def say(self, line: str) -> None:
        """One line above the bars (or among the plain lines)."""
        (self.bar.console if self.bar is not None else self.console).print(line, markup=False, highlight=False)

    @contextmanager
    def stage(self, name: str, total: int) -> Iterator["_Stage"]:
        if not self.enabled:
            yield _Stage(self, name, total, task=None)
            return
        if self.bar is not None and not self._started:  # drawn from the first stage on: an early error leaves stdout empty
            self.bar.__enter__()
            self._started = True
        task = self.bar.add_task(name, total=total) if self.bar is not None else None
        stage = _Stage(self, name, total, task)
        if self.plain:
            stage.line(f"started, {total} to do")
        yield stage
        if self.bar is not None:
            self.bar.update(task, completed=max(total, stage.timer.done))
        elif self.plain:
            stage.flush_resumed()
            stage.line(f"finished, {stage.timer.done}/{total} in {duration_text(stage.timer.elapsed())}")


class _Stage:
    """One stage of a :class:`CliProgress`: counts, times, and draws or prints."""

    def __init__(self, owner: CliProgress, name: str, total: int, task) -> None:
        self.owner, self.name, self.total, self.task = owner, name, total, task
        self.timer = StageTimer(total, owner.clock)
        self.estimate_given = False
        self.unsaid_resumed = 0
        self.tenths_said = 0
        self.last_line_at = self.timer.started

    def advance(self, n: int = 1) -> None:
        self.timer.advance(n)
        if not self.owner.enabled:
            return
        if self.owner.bar is not None:
            self.owner.bar.advance(self.task, n)
        if not self.estimate_given:  # after the first batch of this run's own work
            self.estimate_given = True
            self.flush_resumed()
            left = self.timer.seconds_left()
            if left is not None and left >= WORTH_SAYING_S:
                self.line(time_left_text(left))
        if self.owner.plain:
            self._count_line()

    def resumed(self, n: int) -> None:
        """``n`` items finished by an earlier run (read back): counted, not timed."""
        self.timer.resumed(n)
        if not self.owner.enabled:
            return
        self.unsaid_resumed += n
        if self.owner.bar is not None:  # restarts the bar's own speed estimate after them
            self.owner.bar.reset(self.task, completed=self.timer.done)

    def line(self, text: str) -> None:
        self.owner.say(f"stage {self.name}: {text}")
        self.last_line_at = self.owner.clock()

    def flush_resumed(self) -> None:
        if self.unsaid_resumed and self.owner.plain:
            self.line(f"{self.unsaid_resumed}/{self.total} done by an earlier run")
        self.unsaid_resumed = 0

    def _count_line(self) -> None:
        done = min(self.timer.done, self.total)
        if self.total <= 0 or done >= self.total:
            return  # the finish line says it
        tenths = done * 10 // self.total
        if tenths <= self.tenths_said or self.owner.clock() - self.last_line_at < LINE_INTERVAL_S:
            return
        self.tenths_said = tenths
        self.flush_resumed()
        left = self.timer.seconds_left()
        self.line(f"{done}/{self.total} ({100 * done // self.total}%), {duration_text(self.timer.elapsed())} elapsed"
                  + (f", {time_left_text(left)}" if left is not None else ""))
