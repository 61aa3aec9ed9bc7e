"""Models: the Classifier contract, the zoo, training, checkpoints and loading users' own models.

Everything medrobust attacks, defends or monitors is a :class:`Classifier`: a network plus its
:class:`InputContract`, taking images in [0, 1] of shape (B, C, H, W) and returning logits.
Build one of the zoo's architectures with :func:`build_classifier` (``list_models()`` names
them), load a user's file with :func:`load_classifier` and the :class:`ModelContract` the user
declares for it, train with :func:`train_classifier`.

Importing this package is cheap and imports no torch: each name loads its module on first use
(PEP 562), so the service's web process can build a :class:`ModelContract`
(:mod:`medrobust.models.contract`) from a form without loading torch. The zoo's architectures
register themselves in the registry of :mod:`medrobust.models.registry` on its first lookup.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Classifier": "medrobust.models.classifier",
    "InputContract": "medrobust.models.classifier",
    "NotDifferentiableError": "medrobust.models.classifier",
    "Intensity": "medrobust.models.intensity",
    "ModelContract": "medrobust.models.contract",
    "ModelSpec": "medrobust.models.registry",
    "OutputKind": "medrobust.models.output_kind",
    "TrainConfig": "medrobust.models.training",
    "TrainResult": "medrobust.models.training",
    "build_classifier": "medrobust.models.zoo",
    "get_spec": "medrobust.models.registry",
    "list_models": "medrobust.models.registry",
    "load_checkpoint": "medrobust.models.checkpoint",
    "load_classifier": "medrobust.models.loading",
    "register": "medrobust.models.registry",
    "save_checkpoint": "medrobust.models.checkpoint",
    "train_classifier": "medrobust.models.training",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from medrobust.models.checkpoint import load_checkpoint, save_checkpoint
    from medrobust.models.classifier import Classifier, InputContract, NotDifferentiableError
    from medrobust.models.contract import ModelContract
    from medrobust.models.intensity import Intensity
    from medrobust.models.loading import load_classifier
    from medrobust.models.output_kind import OutputKind
    from medrobust.models.registry import ModelSpec, get_spec, list_models, register
    from medrobust.models.training import TrainConfig, TrainResult, train_classifier
    from medrobust.models.zoo import build_classifier


def __getattr__(name: str) -> Any:
    """Load an exported name from its module on first use (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'medrobust.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
