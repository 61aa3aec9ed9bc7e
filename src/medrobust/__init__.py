"""medrobust: how far can a medical image classifier be fooled, what do defenses win back,
and can attacks be detected.

The public layer, one function per job, each returning a typed result and printing nothing::

    import medrobust as mr

    contract = mr.ModelContract(classes="Normal,Pneumonia,Pneumothorax", intensity="imagenet")
    model = mr.load_model("model.onnx", contract)       # what the file cannot say, declared once
    images = mr.open_images("my_images/")               # <Class>/<image>.png
    mr.predict(model, images)                            # Predictions
    mr.attack(model, images, "sia:eps=8/255")            # AttackResult
    mr.defend(x, "jpeg+tv")                              # defended tensor
    mr.detect(model, x_adv, reference=x)                 # Detection
    guard = mr.guard(model, calibration="clean_images/") # Guard: defense + calibrated detectors
    guard.predict("incoming/")                           # GuardResult: accept / abstain / warn
    mr.train("phantom", "small-cnn", epochs=5)           # Trained
    mr.certify(model, "my_images/", sigma=0.25)          # Certification: certified L2 radius per image
    mr.evaluate(model, "my_images/", preset="quick")     # RunMetrics (and a run folder)
    mr.evaluate("model.onnx", "my_images/", contract=contract)  # the same, loading the file itself
    mr.compare("runs/a", "runs/b", out="compare.html")   # Comparison (scorecards side by side)

``model`` may be a path or an in-memory module; ``images`` a path, a dataset or tensors with
labels. Progress goes through one protocol (:class:`Progress`: ``stage(name, total)`` then
``advance(n)``); the command line draws it as bars. The classes are re-exported by their
packages (``from medrobust.attacks import SIA``).

The currency everywhere is a float32 tensor of images in [0, 1], shape (B, C, H, W), with
C = 1 for radiographs. Importing this package is cheap: each function loads its room (and
torch) on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from medrobust._version import __version__

_LAYER = {
    "load_model": "medrobust.layer.models", "list_models": "medrobust.layer.models",
    "ModelContract": "medrobust.models.contract",
    "open_images": "medrobust.layer.images", "Images": "medrobust.layer.images",
    "predict": "medrobust.layer.predict", "Predictions": "medrobust.layer.predict",
    "attack": "medrobust.layer.attack", "AttackResult": "medrobust.layer.attack",
    "defend": "medrobust.layer.defend", "Defended": "medrobust.layer.defend",
    "detect": "medrobust.layer.detect", "Detection": "medrobust.layer.detect",
    "guard": "medrobust.layer.guard_from_run", "Guard": "medrobust.layer.guard", "GuardResult": "medrobust.layer.guard_answers",
    "QueryWatch": "medrobust.layer.guard_watch",
    "train": "medrobust.layer.train", "Trained": "medrobust.layer.train",
    "evaluate": "medrobust.layer.evaluate",
    "certify": "medrobust.layer.certify", "Certification": "medrobust.layer.certify",
    "compare": "medrobust.layer.compare", "Comparison": "medrobust.layer.compare",
    "PRESETS": "medrobust.layer.presets",
    "write_phantoms": "medrobust.layer.phantoms", "phantom_gallery": "medrobust.layer.phantoms",
    "ExperimentConfig": "medrobust.evaluation.config", "load_config": "medrobust.evaluation.config",
    "RunMetrics": "medrobust.evaluation.results",
    "Progress": "medrobust.execution.progress",
}

__all__ = ["__version__", *_LAYER]

if TYPE_CHECKING:
    from medrobust.evaluation.config import ExperimentConfig, load_config
    from medrobust.evaluation.results import RunMetrics
    from medrobust.execution.progress import Progress
    from medrobust.layer.attack import AttackResult, attack
    from medrobust.layer.certify import Certification, certify
    from medrobust.layer.compare import Comparison, compare
    from medrobust.layer.defend import Defended, defend
    from medrobust.layer.detect import Detection, detect
    from medrobust.layer.evaluate import evaluate
    from medrobust.layer.guard import Guard
    from medrobust.layer.guard_answers import GuardResult
    from medrobust.layer.guard_from_run import guard
    from medrobust.layer.guard_watch import QueryWatch
    from medrobust.layer.images import Images, open_images
    from medrobust.layer.models import list_models, load_model
    from medrobust.layer.phantoms import phantom_gallery, write_phantoms
    from medrobust.layer.predict import Predictions, predict
    from medrobust.layer.presets import PRESETS
    from medrobust.layer.train import Trained, train
    from medrobust.models.contract import ModelContract


def __getattr__(name: str) -> Any:
    """Load a public-layer name from its module on first use (PEP 562)."""
    module = _LAYER.get(name)
    if module is None:
        raise AttributeError(f"module 'medrobust' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
