"""Randomized smoothing's cost against the bare model: images per second of certification
(Cohen et al. 2019, CERTIFY and PREDICT: :class:`medrobust.defenses.randomized_smoothing.SmoothedClassifier`)
and of the same number of plain forward passes, and their ratio, measured in one run.

    python benchmarks/bench_certify.py [--arch densenet121] [--size 224] [--images 4] [--n 1000]
                                       [--n0 100] [--batch 400] [--device auto] [--out bench.json]
    python benchmarks/bench_certify.py --quick        # a small-cnn at 32 px, n = 200: checks it works

Certifying one image costs ``n0 + n`` forward passes of noisy copies, ``batch`` at a time. The
bare model's time is that of the same passes (``ceil(n0 / batch) + ceil(n / batch)`` forward
passes of the same sizes per image, on copies of the clean image, outputs discarded): the ratio
``certify / forward`` is the overhead of the noise draws, the decisions and the counting (goal:
at most 1.2). The two are timed alternately (median of ``--repeats`` after one warm-up each), so a
slow spell of a shared machine hits them alike. Prints JSON; ``summary`` holds the headline figures.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
from pathlib import Path

import numpy as np
import torch
from bench_defenses import timed_alternately  # run as a script: benchmarks/ is on the path

from medrobust.data.phantom import generate_phantom
from medrobust.defenses.randomized_smoothing import SmoothedClassifier
from medrobust.models.device import resolve_device
from medrobust.models.zoo import build_classifier

GOAL = 1.2
QUICK = {"arch": "small-cnn", "size": 32, "images": 2, "n": 200, "n0": 20, "batch": 100, "repeats": 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="densenet121")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--batch", type=int, default=400)
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="a small-cnn at 32 px, 2 images, n = 200")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = build_classifier(args.arch, ["Normal", "Pneumonia", "Pneumothorax"], args.size).to(device).eval()
    x = torch.from_numpy(np.stack([generate_phantom(k % 3, args.size, seed=k)[0] for k in range(args.images)]))
    x = x[:, None].float().to(device)
    smoothed = SmoothedClassifier(model, args.sigma, batch=args.batch)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    chunks = [min(args.batch, args.n0 - s) for s in range(0, args.n0, args.batch)] + \
             [min(args.batch, args.n - s) for s in range(0, args.n, args.batch)]

    def certify() -> None:
        smoothed.certify_batch(x, n0=args.n0, n=args.n, alpha=0.001, seed=0)

    @torch.no_grad()
    def forward() -> None:
        for i in range(len(x)):
            for m in chunks:
                model(x[i : i + 1].expand(m, -1, -1, -1).contiguous())

    seconds = timed_alternately({"certify": certify, "forward": forward}, args.repeats, sync)
    ratio = seconds["certify"] / seconds["forward"]
    out = {
        "settings": {k: getattr(args, k) for k in ("arch", "size", "images", "n", "n0", "batch", "sigma", "repeats")},
        "machine": {"device": str(device), "cuda": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                    "threads": torch.get_num_threads(), "platform": platform.platform(), "torch": torch.__version__},
        "forward_passes_per_image": len(chunks), "images_through_the_model_per_image": args.n0 + args.n,
        "seconds": seconds,
        "summary": {
            "certified_images_per_second": args.images / seconds["certify"],
            "bare_model_images_per_second": args.images / seconds["forward"],
            "bare_model_noisy_copies_per_second": args.images * (args.n0 + args.n) / seconds["forward"],
            "ratio_certify_to_forward": ratio, "goal": GOAL, "within_goal": bool(ratio <= GOAL),
        },
    }
    assert math.isfinite(ratio)
    text = json.dumps(out, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
