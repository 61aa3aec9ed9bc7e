"""ONNX models as black-box Classifiers: answers without gradients.

An ONNX file is run by onnxruntime on the CPU, outside autograd, so :class:`OnnxClassifier`
sets ``differentiable = False``. It still honours the whole input contract (resize, channel
repeat, intensity, channels-last are done in torch by :meth:`Classifier.prepare`), so query
attacks (``square``), transfer attacks (crafted on a differentiable surrogate), defenses and
detectors use it like any other model. A white-box attack that calls
``require_gradients(model, "PGD")`` gets a :class:`NotDifferentiableError` that points at
those two; so does anyone who feeds it a tensor that requires a gradient.

If the graph ends in ``Softmax`` or ``Sigmoid`` (detected with the ``onnx`` package when it is
installed, or stated with ``outputs="probabilities"``), the output is turned back into logits
(:mod:`medrobust.models.probability_logits`), so probabilities are not squashed twice.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medrobust.models.classifier import Classifier, InputContract, require_gradients
from medrobust.models.contract import ModelContract
from medrobust.models.input_layout import declared_layout, input_layout
from medrobust.models.output_kind import OutputKind
from medrobust.models.probability_logits import (
    FinalActivation,
    logits_from_probabilities,
)

log = logging.getLogger(__name__)

_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError(
            f"onnxruntime is needed to run .onnx models but could not be imported ({err}); "
            "install it with: pip install 'medrobust[onnx]'"
        ) from None
    return onnxruntime


def final_activation(path: str | Path) -> FinalActivation | None:
    """``"softmax"``/``"sigmoid"`` when the graph's output comes straight from such a node.

    Needs the ``onnx`` package; without it (or for an unreadable graph) returns None and the
    caller relies on what the user said.
    """
    try:
        import onnx
    except ImportError:
        log.info("%s: the onnx package is not installed; cannot check whether the model outputs probabilities", path)
        return None
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as err:  # noqa: BLE001 — a graph onnx cannot parse is not worth failing over
        log.info("%s: could not inspect the ONNX graph (%s)", path, err)
        return None
    if not graph.output:
        return None
    name = graph.output[0].name
    producer = next((node for node in graph.node if name in node.output), None)
    if producer is None:
        return None
    return {"Softmax": "softmax", "Sigmoid": "sigmoid"}.get(producer.op_type)  # type: ignore[return-value]


class OnnxClassifier(Classifier):
    """A Classifier whose network is an onnxruntime session: forward without gradients.

    ``network`` is an empty placeholder module (no parameters), so ``state_dict()`` is empty;
    ``device`` is where inputs are prepared and where logits are returned (CPU by default).
    The session has a fixed batch size when the graph says so; forward then runs in chunks.
    """

    differentiable = False

    def __init__(self, path: str | Path, contract: InputContract, invert: FinalActivation | None = None,
                 metadata: dict[str, object] | None = None, device: str | torch.device = "cpu",
                 session: Any = None) -> None:
        super().__init__(nn.Module(), contract, arch=None, metadata=metadata)
        self.path = Path(path)
        if session is None:
            session = _import_onnxruntime().InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        self.session = session
        self._input = _single_input(self.session, self.path)
        self._output_name = self.session.get_outputs()[0].name
        self._dtype = _NUMPY_TYPES.get(self._input.type)
        if self._dtype is None:
            raise ValueError(f"{self.path}: the ONNX input is {self._input.type}; medrobust feeds float images")
        batch = self._input.shape[0] if self._input.shape else None
        self._batch = batch if isinstance(batch, int) and batch > 0 else None
        self.invert = invert
        self._device = torch.device(device)

    @property
    def device(self) -> torch.device:
        return self._device

    def to(self, *args: Any, **kwargs: Any) -> OnnxClassifier:
        """Move where inputs are prepared (the session itself always runs on the CPU)."""
        for arg in (*args, kwargs.get("device")):
            if isinstance(arg, torch.Tensor):
                self._device = arg.device
                break
            if isinstance(arg, (str, torch.device)):
                self._device = torch.device(arg)
                break
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:
            require_gradients(self, "a gradient through this ONNX model")
        with torch.no_grad():
            prepared = self.prepare(x).to("cpu").numpy().astype(self._dtype, copy=False)
            prepared = np.ascontiguousarray(prepared)
            step = self._batch or len(prepared)
            chunks = [self.session.run([self._output_name], {self._input.name: prepared[i : i + step]})[0]
                      for i in range(0, len(prepared), step)] if len(prepared) else []
            out = torch.from_numpy(np.concatenate(chunks).astype(np.float32, copy=False)) if chunks else \
                torch.empty(0, 1 if self.output_kind is OutputKind.BINARY else len(self.classes))
            if out.ndim == 1:
                out = out[:, None]
            if self.invert is not None:
                out = logits_from_probabilities(out, self.invert)
        return out.to(x.device)


def _single_input(session: Any, path: Path) -> Any:
    """The session's one input (its name, shape and type), or a clear error."""
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ValueError(
            f"{path}: the ONNX model has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
            "medrobust needs one image input — export the model with a single input"
        )
    return inputs[0]


def load_onnx_classifier(path: str | Path, contract: ModelContract, *,
                         device: str | torch.device = "cpu") -> OnnxClassifier:
    """A black-box Classifier around an ``.onnx`` file with the user's declared ``contract``.

    Input size and channels come from the graph's input shape when static (NCHW unless
    ``contract.channels_last``; a 5-D input (N, C, D, H, W) makes a volume model, whose size is
    (D, H, W)); a declared value that disagrees is an error
    (:mod:`medrobust.models.input_layout`). ``intensity`` defaults to ``"unit"``.
    ``contract.outputs``: None (detect a final Softmax/Sigmoid node), ``"logits"`` or
    ``"probabilities"``. Use :func:`medrobust.models.loading.load_classifier`, which also checks
    the contract is complete and one forward pass.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ONNX model file not found; check the path")
    ort = _import_onnxruntime()
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 — reported with the file named
        raise ValueError(
            f"{path}: onnxruntime could not open it ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
            "check it is an ONNX model and re-export it if needed"
        ) from None
    channels_last = bool(contract.channels_last)
    shape = _single_input(session, path).shape
    spatial_dims = 3 if len(shape) == 5 else 2
    found = input_layout(shape, channels_last, path, "ONNX model", volumes=True)
    size, channels = declared_layout(contract, found, path, "ONNX model", spatial_dims)
    kind = OutputKind.parse(contract.output_kind or OutputKind.SOFTMAX)
    detected = final_activation(path)
    if contract.outputs is None:
        invert = detected
    elif contract.outputs == "logits":
        invert = None
    else:  # probabilities
        invert = detected or ("softmax" if kind is OutputKind.SOFTMAX else "sigmoid")
    if invert:
        log.info("%s: the model outputs %s probabilities; converting them back to logits", path, invert)
    try:
        resolved = contract.resolve(size=size, channels=channels, channels_last=channels_last, intensity="unit",
                                    spatial_dims=spatial_dims)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    metadata: dict[str, object] = {"source": str(path), "format": "onnx",
                                   "logits": f"inverted {invert}" if invert else "exact"}
    return OnnxClassifier(path, resolved, invert=invert, metadata=metadata, device=device, session=session).eval()
