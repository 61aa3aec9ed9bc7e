"""Pre-trained backbone weights: ImageNet from the local torch hub cache, or a user's file in
torchvision or MONAI key layout. Nothing is downloaded unless asked (``download=True``).

Keys are remapped to our networks (torchvision DenseNet ``denselayerN.norm.1`` / ``norm1`` ->
MONAI ``denselayerN.layers.norm1``; ResNet/EfficientNet keys gain the ``body.`` prefix), the
ImageNet classifier is dropped (our head is new), and every missing or unexpected key is
logged. A load that would leave any backbone layer at its random initialisation is refused.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

log = logging.getLogger(__name__)

IMAGENET_WEIGHTS: dict[str, tuple[str, str]] = {
    # arch: (file name in the torch hub cache, where torchvision / the EfficientNet authors publish it)
    "densenet121": ("densenet121-a639ec97.pth", "https://download.pytorch.org/models/densenet121-a639ec97.pth"),
    "resnet18": ("resnet18-f37072fd.pth", "https://download.pytorch.org/models/resnet18-f37072fd.pth"),
    "resnet50": ("resnet50-0676ba61.pth", "https://download.pytorch.org/models/resnet50-0676ba61.pth"),
    "efficientnet-b0": (
        "efficientnet-b0-355c32eb.pth",
        "https://github.com/lukemelas/EfficientNet-PyTorch/releases/download/1.0/efficientnet-b0-355c32eb.pth",
    ),
}

_DENSE_LAYER = re.compile(r"^(features\.denseblock\d+\.denselayer\d+)\.(?:layers\.)?(norm|relu|conv)\.?([12])\.(.+)$")
_IMAGENET_HEADS = ("classifier.", "class_layers.", "fc.", "_fc.")


class WeightsError(ValueError):
    """Weights could not be found or would not fit the network."""


@dataclass
class LoadReport:
    loaded: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    source: str = ""


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def imagenet_file(arch: str, download: bool = False) -> Path:
    """The local ImageNet weights file of ``arch``; downloaded into the hub cache only if asked."""
    if arch not in IMAGENET_WEIGHTS:
        raise WeightsError(f"no ImageNet weights are known for {arch!r}; known: {', '.join(IMAGENET_WEIGHTS)}")
    name, url = IMAGENET_WEIGHTS[arch]
    cache = hub_checkpoint_dir()
    path = cache / name
    if path.is_file():
        return path
    stem = name.split("-")[0]
    candidates = sorted(cache.glob(f"{stem}-*.pth")) if cache.is_dir() else []
    if candidates:
        return candidates[0]
    if not download:
        raise WeightsError(
            f"ImageNet weights for {arch} are not in the local cache ({path}); copy {name} there, "
            f"pass a weights file path instead, or allow the download (--download) on a machine with internet"
        )
    cache.mkdir(parents=True, exist_ok=True)
    log.info("downloading ImageNet weights for %s to %s", arch, path)
    torch.hub.download_url_to_file(url, str(path), progress=True)
    return path


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors or torch file, never unpickling arbitrary objects
    (``torch.load(weights_only=True)``); unwraps ``{"state_dict": ...}`` and ``module.`` prefixes."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found; check the path")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        from medrobust.safety.model_archive import check_model_archive

        check_model_archive(path)  # a torch file is a zip: refuse a zip bomb before torch.load expands it
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # pickle errors, unsupported globals, corrupt files
            raise WeightsError(
                f"{path}: could not be read as a weights file with weights_only=True ({type(err).__name__}: "
                f"{str(err).splitlines()[0]}); save a state dict (model.state_dict()) or a safetensors file"
            ) from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: does not hold a state dict of tensors; save model.state_dict()")
    return {re.sub(r"^(module\.)+", "", k): v for k, v in state.items()}


def remap_keys(state: dict[str, torch.Tensor], arch: str) -> dict[str, torch.Tensor]:
    """Rename torchvision / MONAI keys to those of our network for ``arch``; drop ImageNet heads."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(_IMAGENET_HEADS):
            continue
        if arch == "densenet121":
            m = _DENSE_LAYER.match(key)
            if m:
                key = f"{m.group(1)}.layers.{m.group(2)}{m.group(3)}.{m.group(4)}"
        elif not key.startswith(("body.", "head.")):
            key = "body." + key
        out[key] = value
    return out


def load_backbone_weights(network: nn.Module, arch: str, weights: str | Path, download: bool = False) -> LoadReport:
    """Load ImageNet (``weights="imagenet"``) or a file into ``network``'s backbone; the head stays fresh."""
    path = imagenet_file(arch, download) if str(weights) == "imagenet" else Path(weights)
    state = remap_keys(read_state_dict(path), arch)
    target = network.state_dict()
    backbone = [k for k in target if not k.startswith("head.") and not k.endswith("num_batches_tracked")]
    fitting = {k: v for k, v in state.items() if k in target and target[k].shape == v.shape}
    mismatched = [k for k, v in state.items() if k in target and target[k].shape != v.shape]
    missing = [k for k in backbone if k not in fitting]
    unexpected = [k for k in state if k not in target]
    if missing:
        raise WeightsError(
            f"{path}: {len(missing)} of {len(backbone)} backbone tensors of {arch} are missing or do not fit "
            f"(first: {', '.join(missing[:5])}{'; shape mismatches: ' + ', '.join(mismatched[:3]) if mismatched else ''}); "
            "refusing a load that would leave layers random — check the architecture (--arch) matches the file"
        )
    network.load_state_dict(fitting, strict=False)
    if unexpected:
        log.warning("%s: %d unexpected keys ignored (first: %s)", path, len(unexpected), ", ".join(unexpected[:5]))
    log.info("loaded %d backbone tensors of %s from %s; head initialised fresh", len(fitting), arch, path)
    return LoadReport(loaded=len(fitting), missing=missing, unexpected=unexpected, source=str(path))
