"""How the runner reports progress without printing: a small protocol the CLI implements
with rich progress bars (count, elapsed, ETA per stage); the default does nothing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Progress(Protocol):
    def stage(self, name: str, total: int) -> "StageProgress": ...


class StageProgress(Protocol):
    def advance(self, n: int = 1) -> None: ...


class _Silent:
    def advance(self, n: int = 1) -> None:
        pass


class SilentProgress:
    @contextmanager
    def _ctx(self) -> Iterator[_Silent]:
        yield _Silent()

    def stage(self, name: str, total: int):  # noqa: ANN201  (a context manager)
        return self._ctx()
