"""Throughput of the defenses, and batched TV against scikit-image's per-image loop.

    python benchmarks/bench_defenses.py [--batch 32] [--size 224] [--threads 1,2] [--device auto] [--out bench.json]

Measured on one-channel phantom radiographs, float32. For TV (the study's lambda = 0.1, i.e.
scikit-image weight 0.05) two comparisons, each with the ratio scikit-image time / our time
measured in the same run (the two timed alternately, median of ``--repeats``), the PSNR between
the two outputs, and the PSNR of each against the exact minimiser (scikit-image run to
``eps = 1e-12``) on ``--reference-images`` images:

* ``defaults``: each solver with its own default stopping rule (ours: FGP, RMS change per
  iteration <= 1.5e-3 over windows of 4 iterations, at most 200; scikit-image: Chambolle, energy
  change < 2e-4 * E_0, at most 200 iterations).
* ``same_iterations``: both run exactly ``--iterations`` dual updates (no early stop; scikit-image's
  ``max_num_iter`` counts one more).

CPU figures are given per torch intra-op thread count (``--threads``; the library uses torch's
setting); scikit-image is single-threaded numpy. On a CUDA machine the same TV/TVM/JPEG figures
are added for the GPU. Timings are medians of ``--repeats`` runs after one warm-up. Prints JSON;
``summary`` holds the headline ratios.

``--device``: ``auto`` (default) the CPU figures, plus the CUDA ones when a GPU is present;
``cpu`` the CPU figures only (as ``--no-cuda``); ``cuda`` the CUDA figures only, with
scikit-image's CPU rate at its defaults timed once on the same batch for the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from skimage.restoration import denoise_tv_chambolle

from medrobust.data.phantom import generate_phantom
from medrobust.defenses.jpeg import jpeg
from medrobust.defenses.registry import build_defense
from medrobust.defenses.total_variation import DEFAULT_TOL, skimage_weight, tv_denoise
from medrobust.defenses.tvm import tvm
from medrobust.models.zoo import build_classifier

STUDY_LAMBDA = 0.1


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def timed(fn: Callable[[], object], repeats: int, sync: Callable[[], None] = lambda: None) -> float:
    """Median wall time of ``repeats`` calls after one warm-up."""
    return timed_alternately({"fn": fn}, repeats, sync)["fn"]


def timed_alternately(fns: dict[str, Callable[[], object]], repeats: int,
                      sync: Callable[[], None] = lambda: None) -> dict[str, float]:
    """Median wall time of each function, the functions called in turn ``repeats`` times after one
    warm-up each, so that a slow spell of a shared machine hits them alike."""
    for fn in fns.values():
        fn()
        sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def phantom_batch(batch: int, size: int) -> torch.Tensor:
    return torch.from_numpy(np.stack([generate_phantom(k % 3, size, seed=k)[0] for k in range(batch)]))[:, None]


def accuracy(outputs: np.ndarray, reference: list[np.ndarray]) -> dict[str, float]:
    """Worst and mean PSNR (dB) of the first outputs against the exact minimisers."""
    values = [psnr(outputs[i], r) for i, r in enumerate(reference)]
    return {"min_db": round(min(values), 2), "mean_db": round(float(np.mean(values)), 2)}


def tv_comparisons(x: torch.Tensor, repeats: int, iterations: int, reference: list[np.ndarray]) -> dict[str, object]:
    """Ours vs scikit-image on the CPU, for the current torch thread count."""
    w = skimage_weight(STUDY_LAMBDA)
    images = [im for im in x[:, 0].numpy()]
    settings = {
        "defaults": ({}, {}),
        "same_iterations": ({"tol": 0.0, "max_iter": iterations}, {"eps": 0.0, "max_num_iter": iterations + 1}),
    }
    out: dict[str, object] = {}
    for name, (ours_kw, sk_kw) in settings.items():
        ours_out = tv_denoise(x, STUDY_LAMBDA, **ours_kw)[:, 0].numpy()
        sk_out = np.stack([denoise_tv_chambolle(im, weight=w, **sk_kw) for im in images])
        t = timed_alternately({
            "ours": lambda kw=ours_kw: tv_denoise(x, STUDY_LAMBDA, **kw),
            "skimage": lambda kw=sk_kw: [denoise_tv_chambolle(im, weight=w, **kw) for im in images],
        }, repeats)
        between = [psnr(a, b) for a, b in zip(ours_out, sk_out)]
        out[name] = {
            "ours": {"solver": "fgp", **(ours_kw or {"tol": DEFAULT_TOL, "max_iter": 200}),
                     "images_per_s": round(len(x) / t["ours"], 1), "psnr_vs_exact": accuracy(ours_out, reference)},
            "skimage": {"solver": "chambolle", **(sk_kw or {"eps": 2e-4, "max_num_iter": 200}),
                        "images_per_s": round(len(x) / t["skimage"], 1),
                        "psnr_vs_exact": accuracy(sk_out, reference)},
            "ratio_ours_over_skimage": round(t["skimage"] / t["ours"], 2),
            "psnr_between_db": {"min": round(min(between), 2), "mean": round(float(np.mean(between)), 2)},
        }
    return out


def device_figures(x: torch.Tensor, device: torch.device, repeats: int) -> dict[str, object]:
    """images/s of tv, tvm, jpeg and jpeg+tv at their defaults on ``device``, and of a DenseNet121
    forward pass (random weights, inference mode) on the same batch for scale (left out, with a
    note, where MONAI is not installed)."""
    x = x.to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    hybrid = build_defense("jpeg+tv")
    figures: dict[str, float] = {}
    try:
        model = build_classifier("densenet121", ["Normal", "Pneumonia", "Pneumothorax"], x.shape[-1]).eval().to(device)
    except ImportError as err:
        model, missing = None, f"densenet121 left out: {err}"
    if model is not None:
        def forward() -> None:
            with torch.inference_mode():
                model(x)

        figures["densenet121_forward"] = timed(forward, repeats, sync)
    figures = {
        **figures,
        "tv": timed(lambda: tv_denoise(x, STUDY_LAMBDA), repeats, sync),
        "tvm": timed(lambda: tvm(x, generator=torch.Generator(device=device).manual_seed(0)), repeats, sync),
        "jpeg_q75": timed(lambda: jpeg(x, 75), repeats, sync),
        "jpeg_q75_2_workers": timed(lambda: jpeg(x, 75, workers=2), repeats, sync),
        "jpeg+tv": timed(lambda: hybrid(x), repeats, sync),
    }
    rates: dict[str, object] = {f"{k}_images_per_s": round(len(x) / v, 1) for k, v in figures.items()}
    return rates if model is not None else {**rates, "note": missing}


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", default="1,2", help="torch intra-op thread counts for the CPU figures")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=20, help="iterations of the same-iteration comparison")
    parser.add_argument("--reference-images", type=int, default=8, help="images solved exactly for accuracy")
    parser.add_argument("--no-cuda", action="store_true", help="skip the CUDA figures")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: CPU figures, plus CUDA ones when present; cpu: CPU only; cuda: CUDA only")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    run_cpu = args.device in ("auto", "cpu")
    run_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available() and not args.no_cuda)

    x = phantom_batch(args.batch, args.size)
    w = skimage_weight(STUDY_LAMBDA)
    reference = [denoise_tv_chambolle(x[i, 0].double().numpy(), weight=w, eps=1e-12, max_num_iter=5000)
                 for i in range(min(args.reference_images, args.batch))] if run_cpu else []
    default_threads = torch.get_num_threads()
    result: dict[str, object] = {
        "config": {"batch": args.batch, "size": args.size, "channels": 1, "dtype": "float32",
                   "study_lambda": STUDY_LAMBDA, "skimage_weight": w, "repeats": args.repeats},
        "machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
                    "default_torch_threads": default_threads,
                    "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "cpu": {},
    }
    for threads in (int(t) for t in args.threads.split(",") if t.strip() and run_cpu):
        torch.set_num_threads(threads)
        result["cpu"][f"threads_{threads}"] = {  # type: ignore[index]
            "tv_vs_skimage": tv_comparisons(x, args.repeats, args.iterations, reference),
            **device_figures(x, torch.device("cpu"), args.repeats),
        }
    torch.set_num_threads(default_threads)
    result["summary"] = {
        "target_tv_ratio_over_skimage": 2.0,
        **{f"tv_ratio_{name}_{key}": figures["tv_vs_skimage"][name]["ratio_ours_over_skimage"]  # type: ignore[index]
           for key, figures in result["cpu"].items()  # type: ignore[union-attr]
           for name in ("defaults", "same_iterations")},
    }
    if run_cuda:
        device = torch.device("cuda")
        ours = tv_denoise(x.to(device), STUDY_LAMBDA)[:, 0].cpu().numpy()
        start = time.perf_counter()
        sk = [denoise_tv_chambolle(im, weight=w) for im in x[:, 0].numpy()]
        sk_seconds = time.perf_counter() - start
        result["cuda"] = {
            "device": torch.cuda.get_device_name(0),
            **device_figures(x, device, args.repeats),
            "tv_psnr_vs_skimage_defaults_db_min": round(min(psnr(a, b) for a, b in zip(ours, sk)), 2),
        }
        cpu = result["cpu"]  # type: ignore[assignment]
        if cpu:
            cpu_figures = cpu.get(f"threads_{default_threads}") or next(iter(cpu.values()))  # type: ignore[union-attr]
            sk_rate = cpu_figures["tv_vs_skimage"]["defaults"]["skimage"]["images_per_s"]
        else:  # --device cuda: scikit-image's loop timed once above (no CPU figures to read it from)
            sk_rate = round(len(x) / sk_seconds, 1)
        result["cuda"]["tv_ratio_over_skimage_cpu_defaults"] = round(  # type: ignore[index]
            result["cuda"]["tv_images_per_s"] / sk_rate, 1)  # type: ignore[index]
        result["summary"]["tv_ratio_cuda_over_skimage_cpu_defaults"] = (  # type: ignore[index]
            result["cuda"]["tv_ratio_over_skimage_cpu_defaults"])  # type: ignore[index]
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
