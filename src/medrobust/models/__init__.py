"""Models: the Classifier contract, the zoo, training, checkpoints and loading users' own models.

Everything medrobust attacks, defends or monitors is a :class:`Classifier`: a network plus its
:class:`InputContract`, taking images in [0, 1] of shape (B, C, H, W) and returning logits.
Build one of the zoo's architectures with :func:`build_classifier` (``list_models()`` names
them), load a user's file with :func:`load_classifier`, train with :func:`train_classifier`.

Importing this package registers the zoo's architectures (``medrobust.models.zoo`` is imported
here; its ``@register`` decorators fill the registry of :mod:`medrobust.models.registry`).
"""

from medrobust.models.checkpoint import load_checkpoint, save_checkpoint
from medrobust.models.classifier import Classifier, InputContract, NotDifferentiableError
from medrobust.models.intensity import Intensity
from medrobust.models.loading import load_classifier
from medrobust.models.output_kind import OutputKind
from medrobust.models.registry import ModelSpec, get_spec, list_models, register
from medrobust.models.training import TrainConfig, TrainResult, train_classifier
from medrobust.models.zoo import build_classifier

__all__ = [
    "Classifier",
    "InputContract",
    "Intensity",
    "ModelSpec",
    "NotDifferentiableError",
    "OutputKind",
    "TrainConfig",
    "TrainResult",
    "build_classifier",
    "get_spec",
    "list_models",
    "load_checkpoint",
    "load_classifier",
    "register",
    "save_checkpoint",
    "train_classifier",
]
