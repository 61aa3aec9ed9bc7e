"""The registry of network architectures: a ``register`` decorator and ``list_models(pattern)``.

One :class:`~medrobust.specs.components.ComponentRegistry` (kind "architecture"), the same mechanism
as attacks, defenses and detectors; each entry is a builder ``(num_outputs, in_channels) ->
nn.Module`` with its description and default input convention as metadata. The built-in
architectures (:mod:`medrobust.models.zoo`) register on the registry's first lookup (it imports
the zoo by name then: :mod:`medrobust.models`'s ``__init__`` is lazy, so that the model contract
imports no torch); this module imports none of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.nn as nn

from medrobust.models.intensity import Intensity
from medrobust.specs.components import ComponentRegistry

NetworkBuilder = Callable[[int, int], nn.Module]  # (num_outputs, in_channels) -> network


@dataclass(frozen=True)
class ModelSpec:
    """How to build one architecture and what input it expects by default."""

    name: str
    builder: NetworkBuilder
    description: str
    channels: int = 3
    intensity: Intensity = Intensity.IMAGENET
    imagenet: bool = False  # ImageNet weights can be loaded


_ARCHITECTURES: ComponentRegistry[nn.Module] = ComponentRegistry("architecture", builtins="medrobust.models.zoo")


def register(name: str, description: str, channels: int = 3, intensity: Intensity = Intensity.IMAGENET,
             imagenet: bool = False) -> Callable[[NetworkBuilder], NetworkBuilder]:
    """Decorator: ``@register("resnet18", "...")`` over a ``(num_outputs, in_channels) -> nn.Module``."""
    return _ARCHITECTURES.register(name, description=description, channels=channels,
                                   intensity=Intensity.parse(intensity), imagenet=imagenet)


def list_models(pattern: str = "*") -> list[str]:
    """Registered architecture names matching a shell-style ``pattern``, sorted.

    Example:

    >>> list_models()
    ['densenet121', 'efficientnet-b0', 'resnet18', 'resnet50', 'small-cnn']
    >>> list_models("resnet*")
    ['resnet18', 'resnet50']
    >>> spec = get_spec("small-cnn")
    >>> spec.channels, spec.intensity.value, spec.imagenet
    (1, 'unit', False)
    """
    return _ARCHITECTURES.names(pattern)


def get_spec(name: str) -> ModelSpec:
    """How to build architecture ``name`` (a clear error naming the known ones if unknown)."""
    entry = _ARCHITECTURES.entry(name)
    return ModelSpec(entry.name, entry.factory, **entry.metadata)
