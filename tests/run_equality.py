"""Whether two run folders hold the same results: every stage array (but timings) and
metrics.json without what may differ between two equal runs (timings, dates, the engine,
the output folder)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

VARYING_KEYS = ("created", "execution", "output_dir")


def stage_arrays(run: Path) -> dict[str, np.ndarray]:
    out = {}
    for path in sorted((run / "stages").rglob("*.npz")):
        with np.load(path) as data:
            for key in data.files:
                if key != "seconds":
                    out[f"{path.relative_to(run)}:{key}"] = data[key]
    return out


def without_timings(value):
    """``value`` (parsed JSON) without timings, dates, the engine and the output folder."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items()
                if "second" not in k and "latency" not in k and k not in VARYING_KEYS}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def results(run: Path) -> dict:
    return without_timings(json.loads((run / "metrics.json").read_text()))


def assert_same_run(a: Path, b: Path, min_arrays: int = 100) -> None:
    arrays_a, arrays_b = stage_arrays(a), stage_arrays(b)
    assert sorted(arrays_a) == sorted(arrays_b)
    assert len(arrays_a) >= min_arrays  # every stage's batches: attacks, predictions, defenses, detection
    for key, value in arrays_a.items():
        assert np.array_equal(value, arrays_b[key]), key
    assert results(a) == results(b)
