"""What Ray costs: the demo's evaluation on the local engine against Ray, and the per-unit overhead.

    python benchmarks/bench_engine.py [--workers 2] [--from-run runs/demo] [--units 120] [--out engine.json]

Two measurements, each local and Ray timed in the same run:

* ``overhead``: ``--units`` small units of work (a prediction of a small CNN on 4 images of
  32 px, a few milliseconds each) run through :class:`LocalEngine` and through
  :class:`RayEngine` with one worker (so nothing runs in parallel). The per-unit scheduling
  overhead is ``(Ray time - local time) / units``: serialising the unit and its result, the
  round trip to the actor, and writing nothing (the stage files are the driver's in both).
* ``demo``: the demo configuration (``medrobust demo``'s, phantoms at 64 px, DenseNet121) with its
  trained models taken from ``--from-run`` (a finished ``medrobust demo`` run; without it the
  models are trained first, untimed), evaluated again from scratch: local engine, then Ray with
  ``--workers`` workers. On a machine with as many cores as workers no speed-up is expected:
  the figure shows Ray's overhead; the speed-up comes with more machines.

A Ray instance is started on this machine (``--workers`` CPUs) and stopped at the end. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def overhead(units: int) -> dict:
    from medrobust.execution.engines import LocalEngine, RayEngine
    from medrobust.execution.model_shipping import ModelSource
    from medrobust.execution.units import PredictUnit, Workbench
    from medrobust.models.zoo import build_classifier

    model = build_classifier("small-cnn", ["Normal", "Pneumonia", "Pneumothorax"], 32).eval()
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32), dtype=np.uint8)
    work = [(b, PredictUnit(seed=0, start=4 * b, images=images)) for b in range(units)]
    local = LocalEngine(Workbench({"model": model}, torch.device("cpu")))
    list(local.map(work[:5]))  # warm-up
    t0 = time.perf_counter()
    list(local.map(work))
    local_s = time.perf_counter() - t0
    ray_engine = RayEngine([ModelSource.from_module("model", model)], "cpu", workers=1)
    try:
        list(ray_engine.map(work[:5]))  # the actor loads the model at its first unit
        t0 = time.perf_counter()
        list(ray_engine.map(work))
        ray_s = time.perf_counter() - t0
    finally:
        ray_engine.close()
    return {"units": units, "local_ms_per_unit": 1000 * local_s / units, "ray_ms_per_unit": 1000 * ray_s / units,
            "overhead_ms_per_unit": 1000 * (ray_s - local_s) / units}


def demo(workers: int, from_run: Path | None) -> dict:
    import medrobust as mr
    from medrobust.evaluation.demo_config import demo_settings

    out: dict = {"workers": workers}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = {**demo_settings(), "output_dir": str(root), "device": "cpu"}
        if from_run is None:
            mr.evaluate(preset={**settings, "name": "trained"})
            from_run = root / "trained"
        for engine in ("local", "ray"):
            name = f"demo-{engine}"
            run = root / name
            run.mkdir()
            for folder in ("model", "surrogates"):  # the trained models: only the evaluation is timed
                if (from_run / folder).is_dir():
                    shutil.copytree(from_run / folder, run / folder)
            execution = {"engine": "ray", "workers": workers} if engine == "ray" else {"engine": "local"}
            t0 = time.perf_counter()
            metrics = mr.evaluate(preset={**settings, "name": name, "execution": execution})
            out[f"{engine}_seconds"] = time.perf_counter() - t0
            out[f"{engine}_overall_score"] = metrics.robustness_score.value
    out["ray_over_local"] = out["ray_seconds"] / out["local_seconds"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--from-run", type=Path, help="a finished `medrobust demo` run whose trained models to reuse")
    parser.add_argument("--units", type=int, default=120)
    parser.add_argument("--skip-demo", action="store_true", help="only the per-unit overhead")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    try:
        report = {"benchmark": "bench_engine",
                  "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                              "torch_threads": torch.get_num_threads(), "ray": ray.__version__},
                  "overhead": overhead(args.units)}
        if not args.skip_demo:
            report["demo"] = demo(args.workers, args.from_run)
    finally:
        ray.shutdown()
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
