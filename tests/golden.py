"""Golden runs: the figures and hashes a run gave when they were recorded, so a redesign that
moves code is held to changing no number (issue 26).

Two runs are recorded (``tests/evaluation/golden/*.json``, written by
``python -m tests.evaluation.record_golden``), both on one intra-op thread:

* ``reduced_demo`` — the demo's recipe, reduced as ``test_reproducible_demo`` reduces it;
* ``full_config`` — a loaded checkpoint (a small CNN trained here on one thread) under an
  epsilon sweep, a transfer surrogate, JPEG+TV and TVM against the adaptive portfolio, and both
  detectors (the squeeze detector cross-fitted, every image being a test image). The Ray test
  runs the same configuration on Ray and finds it equal to this one, so its record is the Ray
  run's too.

A record holds the SHA-256 of every stage array (timings aside) and of metrics.json without
timings, dates and the configuration it echoes (a new setting with its default changes no
number), plus a few headline figures for a reader. Floating point is not portable:
another CPU's kernels may round a convolution differently and so train another model. So each
record carries a canary — the hash of a few training steps of the same networks on fixed data —
and a machine whose canary differs cannot be held to the record: the test then says so and skips.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from tests.run_equality import results, stage_arrays

GOLDEN_DIR = Path(__file__).parent / "evaluation" / "golden"


@contextmanager
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def cpu_canary() -> str:
    """SHA-256 of two Adam steps of a small CNN and one of a DenseNet121 on fixed random data, on
    one thread: equal on machines whose kernels round as this one's."""
    from medrobust.models.zoo import build_classifier

    digest = hashlib.sha256()
    with one_thread():
        for arch, size in (("small-cnn", 32), ("densenet121", 32)):
            torch.manual_seed(0)
            model = build_classifier(arch, ["a", "b", "c"], size)
            x = torch.rand(8, 1, size, size, generator=torch.Generator().manual_seed(1))
            y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
            optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
            for _ in range(2):
                optimiser.zero_grad()
                model.loss(model(x), y).backward()
                optimiser.step()
            with torch.no_grad():
                digest.update(model.eval()(x).numpy().tobytes())
    return digest.hexdigest()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run_digest(run: Path) -> dict:
    """What a record holds of a run folder (see the module docstring)."""
    metrics = {k: v for k, v in results(run).items() if k not in ("config", "medrobust_version")}  # numbers only
    metrics["model"] = {k: v for k, v in metrics["model"].items() if k != "file"}  # where the model was: a temporary folder
    arrays = {key: _sha(np.ascontiguousarray(value).tobytes() + str(value.dtype).encode() + str(value.shape).encode())
              for key, value in stage_arrays(run).items()}
    return {
        "metrics_sha256": _sha(json.dumps(metrics, sort_keys=True).encode()),
        "arrays": arrays,
        "figures": {"clean_accuracy": metrics["baseline"]["accuracy"],
                    "attacks": {a["key"]: a["adversarial"]["accuracy"] for a in metrics["attacks"]},
                    "defenses": {d["name"]: d["adaptive_accuracy"] for d in metrics["defenses"]},
                    "detectors": {d["name"]: d["detection_rate"] for d in metrics["detectors"]},
                    "robustness_score": metrics["robustness_score"]["value"]},
    }


def record(name: str, run: Path) -> Path:
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    path = GOLDEN_DIR / f"{name}.json"
    path.write_text(json.dumps({"canary": cpu_canary(), **run_digest(run)}, indent=1, sort_keys=True) + "\n")
    return path


def assert_golden(name: str, run: Path) -> None:
    """``run`` holds exactly the recorded run ``name``'s arrays and metrics; skips (saying why) on
    a machine whose canary differs from the recording machine's."""
    import pytest

    recorded = json.loads((GOLDEN_DIR / f"{name}.json").read_text())
    canary = cpu_canary()
    if canary != recorded["canary"]:
        pytest.skip(f"this CPU's kernels round differently from the machine {name} was recorded on (canary "
                    f"{canary[:12]} vs {recorded['canary'][:12]}): its runs cannot be held to that record")
    digest = run_digest(run)
    assert digest["figures"] == recorded["figures"]
    assert sorted(digest["arrays"]) == sorted(recorded["arrays"])
    changed = [k for k, v in digest["arrays"].items() if recorded["arrays"][k] != v]
    assert not changed, f"{len(changed)} stage arrays differ from the record, e.g. {changed[:3]}"
    assert digest["metrics_sha256"] == recorded["metrics_sha256"]


def golden_checkpoint(folder: Path) -> Path:
    """A small CNN trained on phantoms on one thread (deterministic on a given machine), saved."""
    from medrobust.data.phantom import PhantomDataset
    from medrobust.models.checkpoint import save_checkpoint
    from medrobust.models.training import TrainConfig, train_classifier
    from medrobust.models.zoo import build_classifier

    with one_thread():
        parts = PhantomDataset(per_class=120, size=32, seed=11).splits()
        train, val = parts["train"].load(), parts["val"].load()
        torch.manual_seed(0)
        model = build_classifier("small-cnn", ["Normal", "Pneumonia", "Pneumothorax"], 32)
        train_classifier(model, train[:2], val[:2], TrainConfig(epochs=15, lr=3e-3, seed=0, early_stopping_patience=15,
                                                                plateau_patience=15))
    return save_checkpoint(model.cpu().eval(), folder / "model")


def full_config(root: Path, checkpoint: Path, name: str, execution: dict | None = None) -> dict:
    """A run exercising every kind of unit: attacks (with a sweep and a transfer surrogate, the
    same checkpoint), the transfer matrix, a randomised and a deterministic defense under their
    adaptive portfolio, and both detectors (the squeeze detector cross-fitted)."""
    return {
        "name": name, "output_dir": str(root), "seed": 3, "batch_size": 6, "attack_images": 12, "device": "cpu",
        "data": {"source": "phantom:per_class=6", "size": 32, "split": "test"},
        "model": {"load": {"path": str(checkpoint)}},
        "surrogates": [{"name": "twin", "load": {"path": str(checkpoint)}}],
        "attacks": [{"name": "pgd", "params": {"eps": "8/255", "steps": 3}, "transfer": True,
                     "eps_sweep": ["4/255", "8/255"]}],
        "defenses": ["jpeg+tv", "tvm"],
        "adaptive": {"params": {"steps": 2}, "eot_samples": 2, "max_eot_samples": 4, "max_steps": 4, "restarts": 2,
                     "portfolio": ["unrolled", "smooth", "square", "transfer"], "square_queries": 20},
        "detectors": {"reference": {}, "squeeze": {"folds": 3}},
        "execution": execution or {"engine": "local"},
    }


def run_full_config(root: Path, checkpoint: Path, name: str = "run") -> Path:
    import medrobust as mr

    with one_thread():
        mr.evaluate(preset=full_config(root, checkpoint, name))
    return root / name
