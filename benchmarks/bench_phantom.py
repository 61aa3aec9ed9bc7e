"""Benchmark the synthetic radiograph generator: images per second by size, one process and
a pool of all cores, plus the cost of writing 8-bit PNGs. Prints JSON (and writes it with --out).

    python benchmarks/bench_phantom.py [--n 400] [--sizes 64 128 256] [--out results.json]

Acceptance (issue 2): at least 200 images/s at 128 x 128 on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from medrobust.data.io import write_png
from medrobust.data.phantom import phantom_params, render_phantom


def _render_range(args: tuple[int, int, int]) -> int:
    start, stop, size = args
    for i in range(start, stop):
        render_phantom(phantom_params(0, i, i % 3), size)
    return stop - start


def rate_single(n: int, size: int) -> float:
    _render_range((0, 5, size))  # warm caches
    t = time.perf_counter()
    _render_range((0, n, size))
    return n / (time.perf_counter() - t)


def rate_pool(n: int, size: int, workers: int) -> float:
    chunks = [(i, min(n, i + n // (4 * workers) + 1), size) for i in range(0, n, n // (4 * workers) + 1)]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_render_range, [(0, 2, size)] * workers))  # start workers, warm caches
        t = time.perf_counter()
        done = sum(pool.map(_render_range, chunks))
        return done / (time.perf_counter() - t)


def rate_with_png(n: int, size: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        for i in range(n):
            write_png(Path(tmp) / f"{i}.png", render_phantom(phantom_params(0, i, i % 3), size))
        return n / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400, help="images per measurement")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    workers = os.cpu_count() or 1
    results = {
        "benchmark": "phantom_generation",
        "machine": {"cpus": workers, "python": platform.python_version(), "numpy": np.__version__},
        "n_images": args.n,
        "sizes": {},
    }
    for size in args.sizes:
        single = rate_single(args.n, size)
        pooled = rate_pool(args.n, size, workers)
        png = rate_with_png(max(50, args.n // 4), size)
        results["sizes"][str(size)] = {
            "images_per_s_one_process": round(single, 1),
            f"images_per_s_{workers}_processes": round(pooled, 1),
            "images_per_s_with_png_one_process": round(png, 1),
            "pool_speedup": round(pooled / single, 2),
        }
    target = results["sizes"].get("128")
    if target is not None:
        best = max(v for k, v in target.items() if k.startswith("images_per_s") and "png" not in k)
        results["target_128px_images_per_s"] = 200
        results["meets_target"] = best >= 200
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
