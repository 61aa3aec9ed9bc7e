"""Checkpoints: weights in safetensors plus ``model.json`` (architecture, input contract,
training configuration and history, final metrics). ``load_checkpoint`` rebuilds the exact
Classifier; nothing is unpickled."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from medrobust import __version__
from medrobust.atomic_files import atomic_write_bytes
from medrobust.models.classifier import Classifier, InputContract

FORMAT = "medrobust-checkpoint/1"
WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"


def save_checkpoint(model: Classifier, directory: str | Path, extra: dict[str, object] | None = None) -> Path:
    """Write ``directory/model.safetensors`` and ``directory/model.json``; returns the directory."""
    from safetensors.torch import save

    if model.arch is None:
        raise ValueError("only zoo models (with an arch) can be saved as a medrobust checkpoint")
    directory = Path(directory)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(directory / WEIGHTS_FILE, save(state))
    meta = {
        "format": FORMAT,
        "medrobust_version": __version__,
        "arch": model.arch,
        "contract": model.contract.to_json(),
        **model.metadata,
        **(extra or {}),
    }
    atomic_write_bytes(directory / META_FILE, (json.dumps(meta, indent=2, default=str) + "\n").encode())
    return directory


def is_checkpoint(path: str | Path) -> bool:
    path = Path(path)
    if path.is_dir():
        return (path / META_FILE).is_file() and (path / WEIGHTS_FILE).is_file()
    return path.name == META_FILE and (path.parent / WEIGHTS_FILE).is_file()


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Classifier:
    """Rebuild the Classifier saved by :func:`save_checkpoint` (a directory or its model.json)."""
    from safetensors.torch import load_file

    from medrobust.models.registry import get_spec
    from medrobust.models.zoo import num_outputs

    path = Path(path)
    directory = path if path.is_dir() else path.parent
    meta_path = directory / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{meta_path}: not a readable medrobust model.json ({err}); re-save the checkpoint") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path}: unknown checkpoint format {meta.get('format')!r}; expected {FORMAT}")
    contract = InputContract.from_json(meta["contract"])
    spec = get_spec(meta["arch"])
    network = spec.builder(num_outputs(contract.output_kind, len(contract.classes)), contract.network_channels)
    state = load_file(str(directory / WEIGHTS_FILE))
    model = Classifier(network, contract, arch=meta["arch"])
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{directory / WEIGHTS_FILE}: does not match {meta['arch']} (missing {missing[:3]}, unexpected {unexpected[:3]}); "
            "the weights and model.json come from different models"
        )
    model.metadata = {k: v for k, v in meta.items() if k not in ("format", "arch", "contract")}
    return model.to(device).eval()
