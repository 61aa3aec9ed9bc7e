"""One entry point for every model file a user brings: :func:`load_classifier`.

=====================================  ===============================================
file                                   loaded as
=====================================  ===============================================
directory with model.json + weights    medrobust checkpoint (contract from model.json)
``*.keras``                            Keras 3 on the torch backend (differentiable)
``*.onnx``                             onnxruntime session (black box, no gradients)
TorchScript archive (any suffix)       ``torch.jit.load``
other torch file + ``arch``            state dict of that zoo architecture, strict
other torch file + ``trust_pickle``    a whole pickled ``nn.Module`` (runs its code!)
=====================================  ===============================================

Security: a zip-format file (``.keras``, TorchScript, ``torch.save``) is first checked from its
central directory alone (:mod:`medrobust.safety.model_archive`: members, expanded size,
compression ratio, member paths), so a zip bomb is refused in milliseconds with the limit
named. Nothing is unpickled by default. A TorchScript archive is recognised from its zip
member names before anything is read; a state dict is read with ``weights_only=True`` or from
safetensors; a whole pickled module, which can execute arbitrary code while loading, is only
read when the user passes ``trust_pickle=True``.

A foreign (non-checkpoint) model does not say what it expects, so the user states the
contract: class names and the intensity convention (both required: no file format but a
medrobust checkpoint records its preprocessing, and a guessed [0, 1] would silently evaluate
another model), output kind, network channels, input size. The stated values are checked
before the file is read; one forward pass on a blank image then checks the output has the
shape the contract implies, so a wrong ``classes`` or ``output_kind`` fails at load time with
the file named and the shape the model returned, not in the middle of a run.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medrobust.files.model_formats import is_torchscript
from medrobust.models.batched_prediction import eval_mode
from medrobust.models.checkpoint import is_checkpoint, load_checkpoint
from medrobust.models.classifier import Classifier
from medrobust.models.contract import ModelContract
from medrobust.models.device import resolve_device
from medrobust.models.output_kind import OutputKind
from medrobust.models.pretrained import WeightsError, read_state_dict, remap_keys
from medrobust.models.registry import get_spec
from medrobust.models.zoo import num_outputs
from medrobust.safety.model_archive import check_model_archive

log = logging.getLogger(__name__)

DRY_RUN_SIZE = 64  # side of the blank test image when the model has no fixed input size
DRY_RUN_DEPTH = 16  # slices of the blank test volume when a volume model has no fixed input size

# Heads of torchvision / MONAI layouts that map onto our networks' ``head`` (ResNet: fc,
# EfficientNet: _fc). The DenseNet121 study head (two layers) has no counterpart there.
_LAYOUT_HEADS = ("fc.", "_fc.")


def load_classifier(path: str | Path, contract: ModelContract | Mapping[str, Any] | None = None, *,
                    device: str | torch.device = "cpu", **options: Any) -> Classifier:
    """Load any supported model file as a Classifier in eval mode on ``device``.

    Defaults for foreign models: ``output_kind`` softmax; ``channels`` the zoo spec's when
    ``arch`` is given, else what a Keras/ONNX file declares, else 3 (a TorchScript network that
    fails on 3 channels and runs on 1 is read as grey). One blank image is run through the model
    before it is returned, so a wrong contract fails here with the file named.

    Args:
        path: the model file, or a medrobust checkpoint folder (see the module docstring's table).
        contract: the :class:`~medrobust.models.contract.ModelContract` the user declares for the
            file (or a mapping of its fields). ``classes`` and ``intensity`` are required except
            for medrobust checkpoints, which carry their own contract (a declared one is then
            ignored, with a warning). Default None: nothing declared.
        device: where the model runs (``"cpu"``, the default; ``"cuda"``, ``"auto"``).
        **options: the contract's fields as keywords (``classes=..., intensity=...``), which
            build one: give these or ``contract``, not both.

    Returns:
        The Classifier in eval mode on ``device``; probabilities from a Keras/ONNX file are turned
        back into logits.

    Shape:
        - Input: (B, 1, H, W) float in [0, 1].
        - Output: logits (B, K) ((B, 1) binary).

    Raises:
        ValueError: a refused contract, a missing class list or intensity, a format that cannot
            be read safely, or a model whose output on the blank image does not fit the contract
            (each naming the file).
        FileNotFoundError: ``path`` does not exist.

    Example (a medrobust checkpoint round trip):

    >>> import tempfile, torch
    >>> from medrobust.models import build_classifier, save_checkpoint
    >>> model = build_classifier("small-cnn", ["Normal", "Pneumonia", "Pneumothorax"], 32).eval()
    >>> x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     again = load_classifier(save_checkpoint(model, tmp))
    >>> again.classes == model.classes, again.training, torch.equal(again(x), model(x))
    (True, False, True)
    """
    path = Path(path)
    contract = ModelContract.given(contract, options, where=path)  # every value checked before the file is read
    device = resolve_device(device)
    if is_checkpoint(path):
        ignored = [name for name in contract.declared() if name != "trust_pickle"]
        if ignored:
            log.warning("%s: a medrobust checkpoint carries its own contract; ignoring %s", path, ", ".join(ignored))
        return load_checkpoint(path, device=device)
    if path.is_dir():
        raise ValueError(
            f"{path}: is a directory but not a medrobust checkpoint (model.json + model.safetensors); "
            "pass the model file itself (.pt, .pth, .safetensors, .keras, .onnx)"
        )
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found; check the path")
    check_model_archive(path)
    contract.require_declared(path)
    suffix = path.suffix.lower()

    if suffix == ".keras":
        from medrobust.models.keras_model import load_keras_classifier

        model: Classifier = load_keras_classifier(path, contract, device=device)
    elif suffix == ".onnx":
        from medrobust.models.onnx_model import load_onnx_classifier

        model = load_onnx_classifier(path, contract, device=device)
    elif suffix in (".h5", ".hdf5"):
        raise ValueError(
            f"{path}: legacy HDF5 Keras files are not read (they bypass Keras's safe mode); "
            "re-save the model in Keras 3 format with model.save('model.keras')"
        )
    else:
        if contract.outputs is not None:
            log.info("%s: outputs=%r applies to Keras and ONNX models only; ignored", path, contract.outputs)
        model = _load_torch(path, contract, device)
        if model.metadata.get("format") == "torchscript" and contract.channels is None and contract.arch is None:
            model = _torchscript_channels(model, path)
    check_forward(model, path)
    log.info("loaded %s (%s) with classes %s", path, model.metadata.get("format"), ", ".join(model.classes))
    return model


def _load_torch(path: Path, contract: ModelContract, device: torch.device) -> Classifier:
    """A torch file: TorchScript, a state dict of ``contract.arch``, or (trusted only) a pickled module."""
    arch = contract.arch
    spec = get_spec(arch) if arch else None
    if is_torchscript(path):
        fmt = "torchscript"
        try:
            network: nn.Module = torch.jit.load(str(path), map_location=device)
        except Exception as err:  # noqa: BLE001 — reported with the file named
            raise ValueError(
                f"{path}: looks like TorchScript but could not be loaded ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}); re-export it with torch.jit.script or torch.jit.trace"
            ) from None
        if arch:
            log.info("%s: a TorchScript archive carries its own network; arch=%r only sets the defaults "
                     "(channels) and is not recorded on the model", path, arch)
    elif spec is not None:
        fmt = "state_dict"
        kind = OutputKind.parse(contract.output_kind or OutputKind.SOFTMAX)
        network = _state_dict_network(path, spec.name, kind, len(contract.classes or ()), contract.channels or spec.channels)
    elif path.suffix.lower() == ".safetensors":
        raise ValueError(
            f"{path}: a safetensors file holds only weights, not the network; pass the architecture it was "
            "trained with (--arch, e.g. small-cnn or densenet121)"
        )
    elif contract.trust_pickle:
        fmt = "pickle"
        log.warning("%s: unpickling a whole model because trust_pickle is set; this runs any code the file "
                    "contains, so do this only for files whose origin you trust", path)
        obj = torch.load(path, map_location=device, weights_only=False)
        if not isinstance(obj, nn.Module):
            raise ValueError(
                f"{path}: holds a {type(obj).__name__}, not a torch.nn.Module; if it is a state dict, "
                "pass the architecture (--arch) instead of --trust-pickle"
            )
        network = obj
    else:
        raise ValueError(
            f"{path}: is neither a TorchScript archive nor a state dict medrobust can read safely; refusing to "
            "unpickle it because unpickling can run arbitrary code — pass --arch if it is a state dict of a zoo "
            "architecture, export the model to TorchScript or ONNX, or pass --trust-pickle only if you trust "
            "where the file came from"
        )
    try:
        resolved = contract.resolve(channels=spec.channels if spec else None)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    # Only a state dict loaded into a zoo network is that architecture for sure (and can be re-saved
    # as a medrobust checkpoint); a TorchScript network is whatever its archive says.
    recorded_arch = arch if fmt == "state_dict" else None
    model = Classifier(network, resolved, arch=recorded_arch, metadata={"source": str(path), "format": fmt})
    return model.to(device).eval()


def _state_dict_network(path: Path, arch: str, kind: OutputKind, n_classes: int, channels: int) -> nn.Module:
    """A zoo network of ``arch`` with every tensor, the head included, from the file (strict)."""
    network = get_spec(arch).builder(num_outputs(kind, n_classes), channels)
    target = network.state_dict()
    state = read_state_dict(path)  # safetensors or torch.load(weights_only=True); never plain unpickling
    best, best_score = state, -1
    for candidate in _layout_candidates(state, arch):
        fitting = sum(1 for k, v in candidate.items() if k in target and target[k].shape == v.shape)
        if fitting > best_score:
            best, best_score = candidate, fitting
    # Weights saved before BatchNorm counted batches lack num_batches_tracked; it does not affect inference.
    for key, value in target.items():
        if key.endswith("num_batches_tracked") and key not in best:
            best[key] = value
    missing = [k for k in target if k not in best]
    unexpected = [k for k in best if k not in target]
    mismatched = [f"{k} {tuple(best[k].shape)} in the file vs {tuple(target[k].shape)}"
                  for k in target if k in best and best[k].shape != target[k].shape]
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing (first: {', '.join(missing[:3])})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected (first: {', '.join(unexpected[:3])})")
        if mismatched:
            problems.append(f"{len(mismatched)} of another shape (first: {'; '.join(mismatched[:2])})")
        raise WeightsError(
            f"{path}: does not fit {arch} with {num_outputs(kind, n_classes)} outputs and {channels} input "
            f"channel(s): keys {', '.join(problems)}; check that --arch, --classes, --output-kind and "
            "--channels match the trained model"
        )
    network.load_state_dict(best, strict=True)
    log.info("%s: loaded all %d tensors of %s, head included", path, len(target), arch)
    return network


def _layout_candidates(state: dict[str, torch.Tensor], arch: str) -> list[dict[str, torch.Tensor]]:
    """Ways to read the keys: as saved, without a ``network.`` prefix (a whole Classifier's
    state dict), and remapped from torchvision / MONAI layout with the trained head kept."""
    candidates = [dict(state)]
    if state and all(k.startswith("network.") for k in state):
        candidates.append({k[len("network."):]: v for k, v in state.items()})
    heads = {k: v for k, v in state.items() if k.startswith(_LAYOUT_HEADS)}
    body = remap_keys({k: v for k, v in state.items() if k not in heads}, arch)
    if arch == "densenet121":
        # torchvision's one-layer ``classifier`` has no counterpart in the study head: keep its keys
        # so a mismatch reports them instead of remap_keys dropping them silently.
        body.update({k: v for k, v in state.items() if k.startswith("classifier.")})
        body.update(heads)
    else:
        body.update({"head." + k.split(".", 1)[1]: v for k, v in heads.items()})
    candidates.append(body)
    return candidates


def _torchscript_channels(model: Classifier, path: Path) -> Classifier:
    """A TorchScript archive does not say how many channels its network takes: when the default
    (3, an RGB export) fails on a blank image and 1 (a grey radiograph network) works, use 1.
    A network that runs but returns the wrong shape, on either, is reported as that."""
    try:
        check_forward(model, path)
        return model
    except ModelOutputError:
        raise  # it ran on 3 channels: what is wrong is its output
    except ValueError as three_failed:
        grey = Classifier(model.network, replace(model.contract, network_channels=1), arch=model.arch,
                          metadata=model.metadata).to(model.device).eval()
        try:
            check_forward(grey, path)
        except ModelOutputError:
            raise  # it runs on 1 channel: what is wrong is its output, not the input
        except ValueError:
            raise three_failed from None
        log.info("%s: the TorchScript network takes 1 channel (it failed on 3); reading it as a grey network", path)
        return grey


class ModelOutputError(ValueError):
    """The model ran on the blank image, but its output does not fit the contract (a wrong shape,
    not a tensor): ``str(err)`` names the file, what it returned and what was expected."""


def check_forward(model: Classifier, path: str | Path) -> None:
    """Run one blank image (a volume model: one blank volume) through ``model`` and check the
    logits' shape against its contract."""
    volume = getattr(model, "spatial_dims", 2) == 3
    default = (DRY_RUN_DEPTH, DRY_RUN_SIZE, DRY_RUN_SIZE) if volume else (DRY_RUN_SIZE, DRY_RUN_SIZE)
    sides = tuple(model.input_size or default)
    x = torch.zeros(1, model.input_channels, *sides, device=model.device)
    try:
        with eval_mode(model), torch.no_grad():
            logits = model(x)
    except Exception as err:  # noqa: BLE001 — a foreign model may raise anything
        shown = ", ".join(str(n) for n in (1, model.input_channels, *sides))
        hint = "" if volume else "; a volume model takes input_size [depth, height, width]"
        raise ValueError(
            f"{path}: the model failed on a blank ({shown}) {'volume' if volume else 'image'} "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); check that input_size, "
            f"network_channels and channels_last match how it was trained{hint}"
        ) from None
    if not isinstance(logits, torch.Tensor):
        raise ModelOutputError(
            f"{path}: the model returned a {type(logits).__name__}, not a tensor of logits; "
            "export a model whose forward returns one (B, K) tensor"
        )
    try:
        model.output_kind.check_logits(logits, len(model.classes))
    except ValueError as err:
        raise ModelOutputError(f"{path}: {err}") from None
