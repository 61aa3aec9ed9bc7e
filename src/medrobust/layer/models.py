"""``mr.load_model`` and ``mr.list_models``: a model from a file or from memory, as a
:class:`~medrobust.models.classifier.Classifier` (a network plus its input contract)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.nn as nn

from medrobust.models.classifier import Classifier
from medrobust.models.contract import ModelContract

log = logging.getLogger(__name__)


def load_model(source: Any, contract: ModelContract | Mapping[str, Any] | None = None, *,
               classes: Sequence[str] | str | None = None, input_size: int | Sequence[int] | None = None,
               intensity: str | None = None, output_kind: str | None = None, arch: str | None = None,
               trust_pickle: bool = False, device: str = "cpu", **options: Any) -> Classifier:
    """A Classifier from a path (medrobust checkpoint folder, TorchScript, state dict,
    ``.keras``, ``.onnx``), a Classifier (returned as it is), or a plain ``nn.Module`` taking
    images in [0, 1] and returning logits.

    Args:
        source: the model: a path, a Classifier, or a plain ``nn.Module``.
        contract: what the user declares about it, a :class:`~medrobust.models.contract.ModelContract`
            (or a mapping of its fields). Any file but a medrobust checkpoint needs ``classes`` and
            ``intensity``, which it cannot record; a plain module needs ``classes`` and is read with
            ``intensity`` ``unit`` and 1 network channel unless the contract says otherwise.
        classes, input_size, intensity, output_kind, arch, trust_pickle, **options: the contract's
            fields as keywords (``channels``, ``outputs``, ``channels_last`` among ``options``),
            a convenience that builds the ModelContract: give either these or ``contract``, not
            both (a ValueError says so). Whole pickled modules are refused unless ``trust_pickle``
            (unpickling runs the file's code).
        device: where the model runs (``cpu``, the default; ``cuda``, ``auto``).

    Returns:
        The Classifier in eval mode on ``device``. A Classifier given is returned as it is (moved
        to ``device``, in eval mode), its own contract kept: a declared one is ignored with a
        warning.

    Shape:
        - Input: (B, 1, H, W) float images in [0, 1].
        - Output: logits (B, K) ((B, 1) for a binary model).

    Raises:
        ValueError: the contract given twice or refused, a plain module without ``classes``, an
            unknown architecture, or a model file that cannot be loaded (naming the file).
        FileNotFoundError: the model file does not exist.
        TypeError: ``source`` is neither a path nor a torch module.

    >>> import torch, medrobust as mr
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16 * 16, 2))
    >>> model = mr.load_model(net, classes=["Normal", "Pneumonia"], network_channels=1)
    >>> model.classes, tuple(model(torch.rand(3, 1, 16, 16)).shape)
    (['Normal', 'Pneumonia'], (3, 2))
    >>> same = mr.load_model(net, mr.ModelContract(classes="Normal,Pneumonia", channels=1))
    >>> same.contract == model.contract
    True
    """
    is_path = isinstance(source, (str, os.PathLike))
    loose = {"classes": classes, "input_size": input_size, "intensity": intensity, "output_kind": output_kind,
             "arch": arch, "trust_pickle": trust_pickle, **options}
    declared = ModelContract.given(contract, loose, where=Path(source) if is_path else None)  # before any file is read
    source = getattr(source, "guarded_classifier", source)  # a Guard: its defended model (the detectors only judge)
    if isinstance(source, Classifier) or (isinstance(source, nn.Module) and hasattr(source, "classes")
                                          and hasattr(source, "predict")):
        if declared.declared():
            log.warning("a loaded model carries its own contract; ignoring the declared %s",
                        ", ".join(declared.declared()))
        return source.to(_device(device)).eval()  # type: ignore[return-value]
    if isinstance(source, nn.Module):
        if not declared.classes:
            raise ValueError("mr.load_model: a plain nn.Module needs classes=[...] (its output order)")
        model = Classifier(source, declared.resolve(channels=1, intensity="unit"))
        return model.to(_device(device)).eval()
    if not is_path:
        raise TypeError(f"mr.load_model: expected a path or a torch module, got {type(source).__name__}")
    check_contract(declared)  # the architecture's name, before the file is read
    from medrobust.models.loading import load_classifier

    return load_classifier(Path(source), declared, device=device)


def check_contract(contract: ModelContract | None = None, *, arch: str | None = None) -> None:
    """The one name of a model's contract that its own validation cannot look up without torch:
    its zoo architecture, checked in the registry before any model file is read (a load can take
    minutes). (The intensity convention and the output kind were checked when the
    :class:`~medrobust.models.contract.ModelContract` was built.)

    Args:
        contract: the declared contract, whose ``arch`` is checked. Default None.
        arch: an architecture given apart, as ``mr.train`` takes it. Default None.

    Raises:
        ValueError: naming the misspelt architecture and the known ones.
    """
    for name in (contract.arch if contract is not None else None, arch):
        if name is not None:
            from medrobust.models.registry import get_spec

            get_spec(name)


def _device(name: str):
    from medrobust.models.device import resolve_device

    return resolve_device(name)


@dataclass(frozen=True)
class ModelInfo:
    """One zoo architecture: its name, sizes and input conventions.

    Args:
        name: the architecture's name (``densenet121``...).
        description: its one-line description.
        parameters: its parameters, built for 3 classes.
        keras_parameters: the same counted as Keras does (batch norms' moving mean and variance
            included).
        channels: the network channels it takes.
        intensity: the intensity convention it expects (``imagenet``, ``unit``...).
        imagenet: whether ImageNet weights can be loaded into it.
    """

    name: str
    description: str
    parameters: int
    keras_parameters: int  # Keras also counts BatchNorm moving mean/variance
    channels: int
    intensity: str
    imagenet: bool


def list_models(pattern: str = "*") -> list[ModelInfo]:
    """The zoo's architectures, each built once (for 3 classes) to count its parameters.

    Args:
        pattern: a shell-style pattern of names (``"resnet*"``). Default ``"*"``: all of them.

    Returns:
        One :class:`ModelInfo` per matching architecture, sorted by name.
    """
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
