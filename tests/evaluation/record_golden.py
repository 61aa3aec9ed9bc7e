"""Record the golden runs (tests/golden.py) on this machine: ``python -m tests.evaluation.record_golden``.

Run it only when a change is meant to change numbers (say why in the commit); a redesign must
leave the records as they are."""

from __future__ import annotations

import tempfile
from pathlib import Path

import medrobust as mr
from tests.evaluation.test_reproducible_demo import _reduced_demo
from tests.golden import golden_checkpoint, one_thread, record, run_full_config


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with one_thread():
            metrics = mr.evaluate(preset=_reduced_demo(root / "demo"))
        print(record("reduced_demo", root / "demo" / metrics.name))
        print(record("full_config", run_full_config(root / "full", golden_checkpoint(root))))


if __name__ == "__main__":
    main()
