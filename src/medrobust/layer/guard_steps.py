"""The steps of :class:`~medrobust.layer.guard.Guard`'s pipeline: each step's error becomes an
abstention with its reason (the guard fails closed), the checks that a step's values are finite,
and the timing of the steps a server reports."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch

from medrobust.data.stored_grid import StoredGrid

__all__ = ["STEPS", "Screen", "StepFailed", "untrusted_values", "step", "timed"]


class StepFailed(Exception):
    """One step of the guard raised on a batch (which step, and the error)."""

    def __init__(self, step: str, error: Exception) -> None:
        message = " ".join(str(error).split())[:300] or type(error).__name__
        super().__init__(f"{step} failed on this image ({type(error).__name__}: {message})")


def step(name: str, fn, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
    """``fn(*args, **kwargs)``; any error it raises becomes :class:`StepFailed` naming the step."""
    try:
        return fn(*args, **kwargs)
    except Exception as err:  # fail closed: every error of a step becomes an abstention
        raise StepFailed(name, err) from err


STEPS = ("read", "detectors", "defense", "model", "total")
"""The steps :meth:`Guard.predict` times when given ``timings``: reading (and resizing) the images,
the detectors (their squeezed copies of the image and their scores), the defense, the model (one
forward pass over the image as received, the detectors' copies and the defended copy), and the
whole call."""

Screen = Callable[[torch.Tensor, list[str], StoredGrid], list[str]]
"""A stateful check run on each batch as read, before the guard's own steps: ``screen(x, ids,
grid)`` (``grid``: the images' stored grid) returns one reason per image, ``""`` for an image it
does not flag (the query-attack watch of :mod:`medrobust.layer.guard_watch`). A screen that raises
makes its batch abstain (the guard fails closed)."""


@contextmanager
def timed(timings: dict[str, float] | None, name: str) -> Iterator[None]:
    """Add the block's wall time to ``timings[name]`` (nothing when ``timings`` is None)."""
    if timings is None:
        yield
        return
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


def untrusted_values(scores: dict[str, float], raw: torch.Tensor, defended_ok: bool, logits: torch.Tensor,
             probabilities: torch.Tensor) -> str:
    """Why one image's values cannot be trusted, or ``""``."""
    for name, score in scores.items():
        if not np.isfinite(score):
            return (f"the {name} detector's score is not a finite number ({score}): the model's output on the image, "
                    "or on the detector's changed copy of it, is not finite")
    if not bool(torch.isfinite(raw).all()):
        return "the model's output on the image is not a finite number (NaN or infinite)"
    if not defended_ok:
        return "the defense's output is not a finite number (NaN or infinite)"
    if not bool(torch.isfinite(logits).all()) or not bool(torch.isfinite(probabilities).all()):
        return "the model's output on the defended image is not a finite number (NaN or infinite)"
    return ""
