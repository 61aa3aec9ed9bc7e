"""Time the evaluation presets (``mr.evaluate(..., preset=...)``) on the study's model size:
a DenseNet121 Classifier (random init: the cost of a stage does not depend on the weights,
except that attacks run their full step count) at 224 px, on phantom images tested whole
(``split: test``). Prints JSON (and writes it with --out): per preset, the wall time of the
run, the images attacked, the runner's seconds per image of each stage, and the time per 100
attacked images.

    python benchmarks/bench_presets.py [--presets quick standard] [--images 10] [--size 224] [--out r.json]

Times scale with the attacked images (every attack, defense and detector stage is per image);
the baseline over the test set is a small part. On a shared CPU, numbers vary run to run:
quote them with the machine and the run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["quick", "standard"])
    parser.add_argument("--images", type=int, default=10, help="images attacked (3 classes, as even as possible)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--arch", default="densenet121")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import torch

    import medrobust as mr
    from medrobust.models import build_classifier

    torch.manual_seed(0)
    model = build_classifier(args.arch, ["Normal", "Pneumonia", "Pneumothorax"], args.size).eval()
    per_class = max(2, -(-args.images // 3))
    results = {"machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                           "processor": platform.processor() or platform.machine(),
                           "cuda": torch.cuda.is_available()},
               "arch": args.arch, "size": args.size, "presets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            start = time.perf_counter()
            metrics = mr.evaluate(model, f"phantom:seed=5,per_class={per_class}", preset=preset, size=args.size,
                                  run_dir=Path(tmp) / preset, attack_images=max(3, args.images))
            seconds = time.perf_counter() - start
            attacked = metrics.data["attack_images"]
            results["presets"][preset] = {
                "seconds": round(seconds, 1), "images_attacked": attacked, "images_tested": metrics.data["tested"],
                "minutes_per_100_images": round(seconds / attacked * 100 / 60, 1),
                "seconds_per_image_by_stage": {k: round(v, 3) for k, v in metrics.seconds_per_image.items()},
            }
            print(json.dumps({preset: results["presets"][preset]}), flush=True)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
