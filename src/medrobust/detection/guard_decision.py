"""A guard's decision rule, one implementation for the guard that serves
(:class:`~medrobust.layer.guard.Guard`) and the run stage that attacks it
(:mod:`medrobust.evaluation.stages.guard`), so what is measured is what is served.

Per image, with each detector ``d``'s suspicion score ``s_d`` on the image as received and its
calibrated threshold ``t_d``::

    flagged  = OR_d [ s_d > t_d ]                      (strict, as every detector's detect())
    decision = "abstain"  when a step failed on the image (fail closed)
               on_flag    when flagged ("abstain" or "warn")
               "accept"   otherwise

A label is given with ``accept`` and ``warn``, never with ``abstain``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

ON_FLAG = ("abstain", "warn")
"""What a guard does with an image a detector flags."""


def check_on_flag(on_flag: str) -> str:
    """``on_flag`` when it is one of :data:`ON_FLAG`, else a ValueError saying what each means."""
    if on_flag not in ON_FLAG:
        raise ValueError(f"on_flag must be 'abstain' (withhold the label of a flagged image) or 'warn' (give it "
                         f"with a warning), got {on_flag!r}")
    return on_flag


def detectors_fired(scores: Mapping[str, np.ndarray], thresholds: Mapping[str, np.ndarray | float | None]
                    ) -> dict[str, np.ndarray]:
    """Per detector, the images whose score is above its threshold.

    Args:
        scores: detector -> (N,) scores on the images as received.
        thresholds: detector -> its threshold, one for all images or (N,) one per image (a
            cross-fitted calibration); None: the detector has none and flags nothing.

    Returns:
        detector -> (N,) bool; a score that is not finite is not compared here (the caller
        fails the image closed).
    """
    out = {}
    for name, values in scores.items():
        s = np.asarray(values, dtype=np.float64).reshape(-1)
        t = thresholds.get(name)
        out[name] = np.zeros(len(s), dtype=bool) if t is None else s > np.asarray(t, dtype=np.float64)
    return out


def flagged(fired: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    """(n,) bool: any detector fired (:func:`detectors_fired`)."""
    out = np.zeros(n, dtype=bool)
    for flags in fired.values():
        out |= np.asarray(flags, dtype=bool)
    return out


def decisions(flags: np.ndarray, on_flag: str, failed: np.ndarray | None = None) -> np.ndarray:
    """The guard's decision per image (module docstring).

    Args:
        flags: (N,) bool, flagged by a detector.
        on_flag: ``"abstain"`` or ``"warn"``.
        failed: (N,) bool, a step failed on the image (it abstains whatever the flags say).
            Default None: none failed.

    Returns:
        (N,) str array of ``"accept"``, ``"abstain"`` or ``"warn"``.
    """
    check_on_flag(on_flag)
    flags = np.asarray(flags, dtype=bool).reshape(-1)
    out = np.where(flags, on_flag, "accept").astype("<U7")
    if failed is not None:
        out[np.asarray(failed, dtype=bool).reshape(-1)] = "abstain"
    return out


def accepts(scores: Mapping[str, np.ndarray], thresholds: Mapping[str, np.ndarray | float | None]) -> np.ndarray:
    """(N,) bool: no detector flags the image (the guard accepts it, whatever ``on_flag`` is)."""
    n = len(np.asarray(next(iter(scores.values()), []), dtype=np.float64).reshape(-1)) if scores else 0
    return ~flagged(detectors_fired(scores, thresholds), n)
