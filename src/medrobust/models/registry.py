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
    """How to build one architecture and what input it expects by default.

    Args:
        name: the registered name (``densenet121``, ``small-cnn``...).
        builder: ``(num_outputs, in_channels) -> nn.Module``, the network without its contract.
        description: one line for ``medrobust models``.
        channels: the network channels it is built with by default. Default 3.
        intensity: the intensity convention it expects. Default ImageNet statistics.
        imagenet: whether ImageNet weights can be loaded into it. Default False.
        spatial_dims: 2 for an image network (B, C, H, W), 3 for a volume network
            (B, C, D, H, W). Default 2.
    """

    name: str
    builder: NetworkBuilder
    description: str
    channels: int = 3
    intensity: Intensity = Intensity.IMAGENET
    imagenet: bool = False  # ImageNet weights can be loaded
    spatial_dims: int = 2


_ARCHITECTURES: ComponentRegistry[nn.Module] = ComponentRegistry("architecture", builtins="medrobust.models.zoo")


def register(name: str, description: str, channels: int = 3, intensity: Intensity = Intensity.IMAGENET,
             imagenet: bool = False, spatial_dims: int = 2) -> Callable[[NetworkBuilder], NetworkBuilder]:
    """Decorator: ``@register("resnet18", "...")`` over a ``(num_outputs, in_channels) -> nn.Module``.

    Args:
        name: the name the architecture is built by (``build_classifier(name, ...)``, ``arch:``).
        description: one line for ``medrobust models``.
        channels: the network channels it is built with. Default 3.
        intensity: the intensity convention it expects (a member or its name). Default ImageNet.
        imagenet: whether ImageNet weights can be loaded into it. Default False.
        spatial_dims: 3 for a network of volumes (B, C, D, H, W). Default 2 (images).

    Returns:
        The decorator, which registers the builder and returns it unchanged (a name registered
        twice by another builder is a ValueError).
    """
    return _ARCHITECTURES.register(name, description=description, channels=channels,
                                   intensity=Intensity.parse(intensity), imagenet=imagenet,
                                   spatial_dims=spatial_dims)


def list_models(pattern: str = "*") -> list[str]:
    """Registered architecture names matching a shell-style ``pattern``, sorted.

    Args:
        pattern: a shell-style pattern (``"resnet*"``). Default ``"*"``: every name.

    Returns:
        The matching names, sorted.

    Example:

    >>> list_models()
    ['densenet121', 'densenet121-3d', 'efficientnet-b0', 'resnet18', 'resnet50', 'small-cnn', 'small-cnn-3d']
    >>> list_models("resnet*")
    ['resnet18', 'resnet50']
    >>> spec = get_spec("small-cnn")
    >>> spec.channels, spec.intensity.value, spec.imagenet, spec.spatial_dims
    (1, 'unit', False, 2)
    >>> get_spec("small-cnn-3d").spatial_dims  # a volume network (B, C, D, H, W)
    3
    """
    return _ARCHITECTURES.names(pattern)


def get_spec(name: str) -> ModelSpec:
    """How to build architecture ``name``.

    Args:
        name: a registered architecture name.

    Returns:
        Its :class:`ModelSpec`.

    Raises:
        ValueError: ``name`` is unknown (the message names the known ones).
    """
    entry = _ARCHITECTURES.entry(name)
    return ModelSpec(entry.name, entry.factory, **entry.metadata)
