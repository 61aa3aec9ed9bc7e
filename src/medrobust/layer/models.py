"""``mr.load_model`` and ``mr.list_models``: a model from a file or from memory, as a
:class:`~medrobust.models.classifier.Classifier` (a network plus its input contract)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.nn as nn

from medrobust.models.classifier import Classifier, InputContract


def load_model(source: Any, *, classes: Sequence[str] | str | None = None, input_size: int | None = None,
               intensity: str | None = None, output_kind: str | None = None, arch: str | None = None,
               trust_pickle: bool = False, device: str = "cpu", **contract: Any) -> Classifier:
    """A Classifier from a path (medrobust checkpoint folder, TorchScript, state dict,
    ``.keras``, ``.onnx``: any file but a checkpoint needs ``classes`` and ``intensity``, which
    it cannot record), a Classifier (returned as it is), or a plain ``nn.Module`` taking
    images in [0, 1] and returning logits (wrapped with ``classes`` and the other contract
    options: ``input_size``, ``intensity`` (default ``unit``: the module takes [0, 1]),
    ``output_kind``, ``network_channels``...).

    Whole pickled modules are refused unless ``trust_pickle`` (unpickling runs the file's code).

    >>> import torch, medrobust as mr
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16 * 16, 2))
    >>> model = mr.load_model(net, classes=["Normal", "Pneumonia"], network_channels=1)
    >>> model.classes, tuple(model(torch.rand(3, 1, 16, 16)).shape)
    (['Normal', 'Pneumonia'], (3, 2))
    """
    if isinstance(source, Classifier) or (isinstance(source, nn.Module) and hasattr(source, "classes")
                                          and hasattr(source, "predict")):
        return source.to(_device(device)).eval()  # type: ignore[return-value]
    if isinstance(source, nn.Module):
        if not classes:
            raise ValueError("mr.load_model: a plain nn.Module needs classes=[...] (its output order)")
        names = classes.split(",") if isinstance(classes, str) else list(classes)
        contract_options = {"input_size": input_size, "intensity": intensity or "unit",
                            "output_kind": output_kind or "softmax", "network_channels": 1, **contract}
        model = Classifier(source, InputContract(classes=tuple(c.strip() for c in names), **contract_options))
        return model.to(_device(device)).eval()
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"mr.load_model: expected a path or a torch module, got {type(source).__name__}")
    check_contract(intensity=intensity, output_kind=output_kind, arch=arch)  # before the file is read
    from medrobust.models.loading import load_classifier

    return load_classifier(Path(source), arch=arch, classes=classes, input_size=input_size, intensity=intensity,
                           output_kind=output_kind, trust_pickle=trust_pickle, device=device, **contract)


def check_contract(*, intensity: Any = None, output_kind: Any = None, arch: str | None = None) -> None:
    """The names of a model's contract, checked before any model file is read (a load can take
    minutes): the intensity convention, the output kind and the zoo architecture. A ValueError
    names the misspelt value and the known ones."""
    from medrobust.contract_names import intensity_name, output_kind_name

    if isinstance(intensity, str):
        intensity_name(intensity)
    if isinstance(output_kind, str):
        output_kind_name(output_kind)
    if arch is not None:
        from medrobust.models.registry import get_spec

        get_spec(arch)


def _device(name: str):
    from medrobust.models.device import resolve_device

    return resolve_device(name)


@dataclass(frozen=True)
class ModelInfo:
    """One zoo architecture: its name, sizes and input conventions."""

    name: str
    description: str
    parameters: int
    keras_parameters: int  # Keras also counts BatchNorm moving mean/variance
    channels: int
    intensity: str
    imagenet: bool


def list_models(pattern: str = "*") -> list[ModelInfo]:
    """The zoo's architectures matching a shell-style ``pattern``, built for 3 classes."""
    from medrobust.models.classifier import count_parameters
    from medrobust.models.registry import get_spec
    from medrobust.models.registry import list_models as names
    from medrobust.models.zoo import build_classifier

    out = []
    for name in names(pattern):
        spec = get_spec(name)
        model = build_classifier(name, ["a", "b", "c"])
        n = count_parameters(model)
        bn_stats = sum(b.numel() for key, b in model.named_buffers() if key.endswith(("running_mean", "running_var")))
        out.append(ModelInfo(name, spec.description, n, n + bn_stats, spec.channels, spec.intensity.value, spec.imagenet))
    return out
