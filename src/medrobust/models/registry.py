"""A registry of network architectures: a ``register`` decorator and ``list_models(pattern)``."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

import torch.nn as nn

from medrobust.models.intensity import Intensity

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


_REGISTRY: dict[str, ModelSpec] = {}


def register(name: str, description: str, channels: int = 3, intensity: Intensity = Intensity.IMAGENET,
             imagenet: bool = False) -> Callable[[NetworkBuilder], NetworkBuilder]:
    """Decorator: ``@register("resnet18", "...")`` over a ``(num_outputs, in_channels) -> nn.Module``."""

    def wrap(builder: NetworkBuilder) -> NetworkBuilder:
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} is already registered")
        _REGISTRY[name] = ModelSpec(name, builder, description, channels, intensity, imagenet)
        return builder

    return wrap


def list_models(pattern: str = "*") -> list[str]:
    """Registered architecture names matching a shell-style ``pattern``, sorted."""
    _ensure_zoo()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def get_spec(name: str) -> ModelSpec:
    _ensure_zoo()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def _ensure_zoo() -> None:
    import medrobust.models.zoo  # noqa: F401  (registers the built-in architectures)
