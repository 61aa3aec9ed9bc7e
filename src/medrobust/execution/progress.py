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

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol


class Progress(Protocol):
    """What reports progress: ``stage(name, total)`` opens a stage, a context manager whose value
    has ``advance(n)`` (a :class:`StageProgress`)."""

    def stage(self, name: str, total: int) -> "StageProgress": ...


class StageProgress(Protocol):
    """One stage's progress: ``advance(n)`` as ``n`` more items are done (and, optionally,
    ``resumed(n)`` for items an earlier run finished: :func:`report_resumed`)."""

    def advance(self, n: int = 1) -> None: ...


def report_resumed(advance: Callable[[int], None], n: int) -> None:
    """Report ``n`` items an earlier run finished to a stage: through the stage's ``resumed(n)``
    when it has one, else as ``advance(n)``.

    Args:
        advance: the stage's ``advance``, a bound method (its object is the stage).
        n: the items finished by an earlier run.
    """
    stage = getattr(advance, "__self__", None)
    resumed = getattr(stage, "resumed", None)
    (resumed if callable(resumed) else advance)(n)


class _Silent:
    def advance(self, n: int = 1) -> None:
        pass


class SilentProgress:
    """The default :class:`Progress`: every stage does nothing."""

    @contextmanager
    def _ctx(self) -> Iterator[_Silent]:
        yield _Silent()

    def stage(self, name: str, total: int):  # noqa: ANN201  (a context manager)
        return self._ctx()
