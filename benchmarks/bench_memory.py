"""Peak memory of an evaluation against the size of its test set: streaming keeps it flat.

    python benchmarks/bench_memory.py [--sizes 1000,4000] [--size 64] [--out memory.json]

Each run is a fresh process evaluating one saved DenseNet121 checkpoint (untrained: memory does
not depend on the weights) on ``n`` phantom test images (``split: test``) with the same
configuration — SIA and PGD on a fixed attack subset of 60 images, the study's JPEG+TV defense
under its adaptive attack, both detectors — and reports its peak resident set size
(``ru_maxrss``). The runner streams the test set batch by batch and keeps adversarial images
in the stage files, so the peak should not grow with ``n``; ``summary.ratio`` is the largest
peak over the smallest (goal: within 1.2). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import medrobust as mr
config = json.loads(sys.argv[1])
t0 = time.perf_counter()
metrics = mr.evaluate(preset=config)
print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": time.perf_counter() - t0, "tested": metrics.data["tested"],
                  "clean_accuracy": metrics.baseline.accuracy}))
"""


def config(n: int, size: int, checkpoint: Path, out: Path) -> dict:
    return {
        "name": f"memory-{n}", "output_dir": str(out), "seed": 0, "device": "cpu", "batch_size": 30,
        "attack_images": 60, "sample_images": 2,
        "data": {"source": f"phantom:per_class={-(-n // 3)}", "size": size, "split": "test"},
        "model": {"load": {"path": str(checkpoint)}},
        "attacks": [{"name": "sia", "params": {"eps": "8/255", "n_copies": 4, "steps": 3}},
                    {"name": "pgd", "params": {"eps": "8/255", "steps": 3}}],
        "defenses": ["jpeg:quality=75+tv"], "adaptive": {"params": {"steps": 3}},
        "detectors": {"reference": {}, "squeeze": {}},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,4000", help="test set sizes (comma-separated)")
    parser.add_argument("--size", type=int, default=64, help="image size in pixels")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()

    from medrobust.models.checkpoint import save_checkpoint
    from medrobust.models.zoo import build_classifier

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        checkpoint = save_checkpoint(build_classifier("densenet121", ["Normal", "Pneumonia", "Pneumothorax"],
                                                      args.size, weights="none"), tmp_path / "model")
        for n in [int(s) for s in args.sizes.split(",")]:
            t0 = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(config(n, args.size, checkpoint, tmp_path))],
                                  capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"run with {n} images failed:\n{done.stderr[-3000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            runs.append({"test_images": n, **result, "process_seconds": time.perf_counter() - t0})
    peaks = [r["peak_rss_mib"] for r in runs]
    report = {
        "benchmark": "bench_memory", "machine": {"cpu": platform.processor() or platform.machine(),
                                                 "cores": os.cpu_count(), "python": platform.python_version()},
        "image_size": args.size, "runs": runs,
        "summary": {"peak_rss_mib": {str(r["test_images"]): round(r["peak_rss_mib"], 1) for r in runs},
                    "ratio": round(max(peaks) / min(peaks), 3), "goal": "ratio <= 1.2"},
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
