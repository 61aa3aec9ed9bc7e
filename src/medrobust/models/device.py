"""Device selection: ``auto`` means CUDA when present, else the CPU."""

from __future__ import annotations

import torch


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> ``cuda`` if available else ``cpu``; anything else as given (checked)."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but no CUDA device is available; use --device cpu or auto")
    return device
