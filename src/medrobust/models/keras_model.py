"""Keras 3 models (``.keras`` files) as differentiable Classifiers, on Keras's torch backend.

With ``KERAS_BACKEND=torch`` a Keras model *is* a ``torch.nn.Module`` whose layers run torch
operations, so gradients flow from its output to a torch input tensor and every white-box
attack works on it unchanged. The backend is fixed when Keras is first imported, so this
module sets ``KERAS_BACKEND=torch`` (unless the user set it) before importing Keras, and
refuses a Keras that was already imported with another backend.

Security: the archive is checked from its central directory first
(:func:`~medrobust.safety.model_archive.check_model_archive`), so a zip bomb renamed
``.keras`` is refused before Keras extracts anything; files are then read with
``keras.saving.load_model(safe_mode=True)``, which refuses to deserialise Python code
(``Lambda`` layers holding bytecode). Legacy HDF5 files are not read.

Logits: Keras classifiers usually end in ``Dense(K, activation="softmax")`` (or a sigmoid).
A Classifier must return logits (its output kind applies the softmax/sigmoid), so
:class:`KerasNetwork` computes the pre-activation output instead: it rebuilds the functional
graph from ``model.inputs`` to a clone of the last layer configured with
``activation="linear"`` and holding the same weights (or, for a final ``Activation`` /
``Softmax`` layer, to that layer's input). The result is the exact logits, with exact
gradients. Only where the graph cannot be rebuilt (subclassed models) does it fall back to
inverting the probabilities (:mod:`medrobust.models.probability_logits`, with its
saturated-gradient caveat), and it says so in the log.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medrobust.models.classifier import Classifier
from medrobust.models.contract import ModelContract
from medrobust.models.input_layout import declared_layout, input_layout
from medrobust.models.output_kind import OutputKind
from medrobust.models.probability_logits import (
    FinalActivation,
    logits_from_probabilities,
)
from medrobust.safety.model_archive import check_model_archive

log = logging.getLogger(__name__)

_SQUASHING = ("softmax", "sigmoid")


def import_keras() -> Any:
    """Import Keras on the torch backend, or raise a clear error saying how to get there."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    wanted = os.environ["KERAS_BACKEND"]
    if "keras" not in sys.modules and wanted != "torch":
        raise RuntimeError(
            f"KERAS_BACKEND is {wanted!r}, but medrobust runs Keras models on the torch backend; "
            "set KERAS_BACKEND=torch in the environment before starting Python"
        )
    try:
        import keras
    except ImportError as err:
        raise ImportError(
            f"Keras is needed to load .keras models but could not be imported ({err}); "
            "install it with: pip install 'medrobust[keras]'"
        ) from None
    backend = keras.backend.backend()
    if backend != "torch":
        raise RuntimeError(
            f"Keras was already imported with the {backend!r} backend, but medrobust needs the torch backend; "
            "set KERAS_BACKEND=torch in the environment before anything imports Keras"
        )
    return keras


def _activation_name(layer: Any) -> str | None:
    """``"softmax"``/``"sigmoid"``/other name of a layer's activation, None when it has none.

    ``layer`` may also be a bare operation of a functional graph (``keras.ops.softmax(z)``),
    named by its class.
    """
    keras = import_keras()
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    if not isinstance(layer, keras.layers.Layer):
        name = type(layer).__name__.lower()
        return name if name in _SQUASHING else None
    activation = getattr(layer, "activation", None)
    if activation is None:
        return None
    return getattr(activation, "__name__", type(activation).__name__)


def _output_layer(model: Any) -> Any:
    """The layer that produces the model's single output (functional/sequential models)."""
    history = getattr(model.outputs[0], "_keras_history", None)
    operation = getattr(history, "operation", None)
    return operation if operation is not None else model.layers[-1]


def _logits_model(model: Any, path: Path) -> tuple[Any, FinalActivation | None]:
    """A Keras model returning logits, and the activation still to invert (None when exact).

    Functional and sequential models: rebuilt up to the pre-activation of the last layer.
    Subclassed models: returned unchanged, with the last layer's activation as a hint for the
    probability-inverting fallback.
    """
    keras = import_keras()
    try:
        inputs, outputs = model.inputs, model.outputs
    except AttributeError:
        inputs = outputs = None
    if not inputs or not outputs:
        layers = getattr(model, "layers", [])
        hint = _activation_name(layers[-1]) if layers else None
        if hint in _SQUASHING:
            log.warning(
                "%s: a subclassed Keras model whose last layer applies %s; its graph cannot be rebuilt, so "
                "logits are recovered from its probabilities (gradients vanish where they saturate)", path, hint)
            return model, hint  # type: ignore[return-value]
        log.info("%s: a subclassed Keras model; its output is taken as logits", path)
        return model, None
    if len(outputs) != 1:
        raise ValueError(
            f"{path}: the Keras model has {len(outputs)} outputs; medrobust needs one (B, K) output — "
            "save a model with a single classification output"
        )
    layer = _output_layer(model)
    name = _activation_name(layer)
    if name not in _SQUASHING:
        return model, None
    try:
        if isinstance(layer, (keras.layers.Softmax, keras.layers.Activation)) or not isinstance(layer, keras.layers.Layer):
            pre_activation = layer.input  # a softmax/sigmoid layer or operation: its input is the logits
        else:
            config = layer.get_config()
            config["activation"] = "linear"
            linear = type(layer).from_config(config)
            pre_activation = linear(layer.input)
            linear.set_weights(layer.get_weights())
        logits_model = keras.Model(inputs, pre_activation, name=f"{model.name}_logits")
    except Exception as err:  # noqa: BLE001 — any layer may fail to clone: fall back to inverting
        log.warning(
            "%s: could not rebuild the Keras model without its final %s (%s: %s); logits are recovered from "
            "its probabilities instead (gradients vanish where they saturate)", path, name, type(err).__name__, err)
        return model, name  # type: ignore[return-value]
    log.info("%s: using the pre-%s output of layer %r as logits", path, name, layer.name)
    return logits_model, None


class KerasNetwork(nn.Module):
    """A Keras model (torch backend) as a torch network returning logits.

    ``forward`` takes a torch tensor in the model's layout (channels-last, already scaled by
    the Classifier) and returns a float32 torch tensor; gradients flow to the input. Keras is
    called with ``training=False`` (dropout off, batch norm on its moving statistics), as an
    attack or an evaluation needs.
    """

    def __init__(self, keras_model: Any, invert: FinalActivation | None = None) -> None:
        super().__init__()
        self.keras_model = keras_model
        self.invert = invert

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keras = import_keras()
        device = f"{x.device.type}:{x.device.index}" if x.device.index is not None else x.device.type
        with keras.device(device):  # Keras moves inputs to its current device: keep them where they are
            out = self.keras_model(x, training=False)
        if isinstance(out, (list, tuple)):
            out = out[0]
        out = out.float()
        if out.ndim == 1:
            out = out[:, None]
        if self.invert is not None:
            out = logits_from_probabilities(out, self.invert)
        return out


def _declared_shape(model: Any) -> tuple[object, ...] | None:
    """The model's declared input shape, None when it declares none (a subclassed model)."""
    try:
        return tuple(model.inputs[0].shape)
    except (AttributeError, IndexError, TypeError):
        return None


def load_keras_classifier(path: str | Path, contract: ModelContract, *, device: str | torch.device = "cpu") -> Classifier:
    """A Classifier around a ``.keras`` file with the user's declared ``contract``.

    Input size and channels are read from the model's input shape when it has them (a declared
    value that disagrees is an error: :mod:`medrobust.models.input_layout`); ``channels_last``
    defaults to True (Keras's layout; the Classifier permutes (B, C, H, W) to (B, H, W, C));
    ``intensity`` defaults to ``"unit"``. ``contract.outputs``: None (detect a final
    softmax/sigmoid), ``"logits"`` (use the output as is) or ``"probabilities"`` (invert the
    output kind's softmax/sigmoid). Use :func:`medrobust.models.loading.load_classifier`, which
    also checks the contract is complete and one forward pass.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: Keras model file not found; check the path")
    check_model_archive(path)
    keras = import_keras()
    channels_last = True if contract.channels_last is None else contract.channels_last
    dev = str(device)
    try:
        with keras.device(dev):
            model = keras.saving.load_model(str(path), compile=False, safe_mode=True)
    except Exception as err:  # noqa: BLE001 — any failure is reported with the file named
        raise ValueError(
            f"{path}: could not be loaded as a Keras 3 model with safe_mode on ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); re-save it with model.save('model.keras') "
            "without Lambda layers or custom objects"
        ) from None

    shape = _declared_shape(model)
    found = input_layout(shape, channels_last, path, "Keras model") if shape is not None else (None, None)
    size, channels = declared_layout(contract, found, path, "Keras model")
    kind = OutputKind.parse(contract.output_kind or OutputKind.SOFTMAX)

    if contract.outputs is None:
        keras_logits, invert = _logits_model(model, path)
    elif contract.outputs == "logits":
        keras_logits, invert = model, None
    else:  # probabilities
        keras_logits, invert = model, ("softmax" if kind is OutputKind.SOFTMAX else "sigmoid")

    try:
        resolved = contract.resolve(size=size, channels=channels, channels_last=channels_last, intensity="unit")
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    metadata: dict[str, object] = {"source": str(path), "format": "keras",
                                   "logits": f"inverted {invert}" if invert else "exact"}
    return Classifier(KerasNetwork(keras_logits, invert), resolved, arch=None, metadata=metadata).eval()
