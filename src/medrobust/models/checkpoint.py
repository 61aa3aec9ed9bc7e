"""Checkpoints: weights in safetensors plus ``model.json`` (architecture, input contract,
training configuration and history, final metrics). ``load_checkpoint`` rebuilds the exact
Classifier; nothing is unpickled.

A checkpoint folder may come from anyone (the service accepts it as an upload), so every way
it can be broken is one ``ValueError`` naming the file and what is wrong: a model.json that is
not JSON, too large, or lacks or mistypes a field; a contract that declares an impossible
input (a side of 0, or one past the readers' pixel limit, which would otherwise end in a
failed allocation of tens of gigabytes); a safetensors file whose header is damaged or
oversized; weights of another architecture or shape."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from medrobust._version import __version__
from medrobust.files.atomic_files import atomic_write_bytes
from medrobust.models.classifier import Classifier, InputContract

FORMAT = "medrobust-checkpoint/1"
WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
MAX_META_BYTES = 16 * 2**20
"""Largest model.json read: a real one (contract, training history) is a few kilobytes."""


def save_checkpoint(model: Classifier, directory: str | Path, extra: dict[str, object] | None = None) -> Path:
    """Write ``directory/model.safetensors`` and ``directory/model.json``, each atomically.

    Args:
        model: a zoo Classifier (one with an ``arch``).
        directory: the checkpoint folder (created if missing).
        extra: more fields for model.json (training configuration, history, metrics), after the
            model's own metadata. Default None.

    Returns:
        ``directory``, as a Path.

    Raises:
        ValueError: the model has no zoo architecture (a foreign model cannot be rebuilt).
    """
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
    """Rebuild the Classifier saved by :func:`save_checkpoint`; nothing is unpickled.

    Args:
        path: the checkpoint folder, or its model.json.
        device: where the model goes. Default ``"cpu"``.

    Returns:
        The Classifier in eval mode on ``device``, with model.json's fields (training, metrics...)
        as its ``metadata``.

    Shape:
        - Input: (B, stored_channels, H, W) float in [0, 1], as its contract says.
        - Output: logits (B, K) ((B, 1) binary).

    Raises:
        ValueError: naming model.json or model.safetensors and what is wrong with it.
    """
    from medrobust.models.registry import get_spec
    from medrobust.models.zoo import num_outputs

    path = Path(path)
    directory = path if path.is_dir() else path.parent
    meta_path, weights_path = directory / META_FILE, directory / WEIGHTS_FILE
    meta = _read_meta(meta_path)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path}: unknown checkpoint format {meta.get('format')!r}; expected {FORMAT}")
    try:
        if not isinstance(meta.get("contract"), dict):
            raise ValueError("has no contract (classes, input size, intensity...)")
        contract = InputContract.from_json(meta["contract"])
        if not isinstance(meta.get("arch"), str):
            raise ValueError("names no architecture (arch)")
        spec = get_spec(meta["arch"])
    except (ValueError, TypeError) as err:
        raise ValueError(f"{meta_path}: {_one_line(err)}; re-save the checkpoint with medrobust") from None
    network = spec.builder(num_outputs(contract.output_kind, len(contract.classes)), contract.network_channels)
    state = _read_weights(weights_path)
    model = Classifier(network, contract, arch=meta["arch"])
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a tensor of another shape: torch's message runs over many lines
        raise ValueError(f"{weights_path}: does not fit {meta['arch']} with the contract of {META_FILE} "
                         f"({_one_line(err)}); the weights and model.json come from different models") from None
    if missing or unexpected:
        raise ValueError(
            f"{weights_path}: does not match {meta['arch']} (missing {missing[:3]}, unexpected {unexpected[:3]}); "
            "the weights and model.json come from different models"
        )
    model.metadata = {k: v for k, v in meta.items() if k not in ("format", "arch", "contract")}
    return model.to(device).eval()


def _read_meta(meta_path: Path) -> dict[str, object]:
    try:
        size = meta_path.stat().st_size
        if size > MAX_META_BYTES:
            raise ValueError(f"{meta_path}: is {size:,} bytes, over the {MAX_META_BYTES:,} a model.json may be "
                             "(a real one is a few kilobytes); re-save the checkpoint with medrobust")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise ValueError(f"{meta_path}: not a readable medrobust model.json ({_one_line(err)}); "
                         "re-save the checkpoint") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_path}: holds a JSON {type(meta).__name__}, not a medrobust model description; "
                         "re-save the checkpoint")
    return meta


def _read_weights(weights_path: Path) -> dict[str, torch.Tensor]:
    """The tensors of model.safetensors; a damaged or oversized header, or a file that is not
    safetensors at all, is one line naming the file (safetensors raises its own exception type)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{weights_path}: not a readable safetensors file ({_one_line(err)}); the checkpoint is "
                         "damaged or truncated: copy it again, or re-save it with medrobust") from None


def _one_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = " ".join(lines) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."
