"""Resumable batched stages: each batch's result is one .npz in the stage folder, written
atomically; a restarted run loads finished batches and computes only the rest."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from medrobust.evaluation.run_dir import load_arrays, save_arrays

log = logging.getLogger(__name__)

BatchFn = Callable[[int, slice], dict[str, np.ndarray]]


def run_batched(stage_dir: Path, n: int, batch_size: int, fn: BatchFn,
                advance: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Run ``fn(batch_index, slice)`` over ``n`` items in batches, persisting each batch as
    ``stage_dir/batch-NNNN.npz``; returns the concatenated arrays. Finished batches are loaded,
    not recomputed."""
    stage_dir.mkdir(parents=True, exist_ok=True)
    parts: list[dict[str, np.ndarray]] = []
    for b, start in enumerate(range(0, n, batch_size)):
        path = stage_dir / f"batch-{b:04d}.npz"
        sl = slice(start, min(n, start + batch_size))
        if path.is_file():
            parts.append(load_arrays(path))
        else:
            result = fn(b, sl)
            save_arrays(path, **result)
            parts.append(result)
        if advance is not None:
            advance(sl.stop - sl.start)
    if not parts:
        return {}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def quantise_8bit(x: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] rounded to the 8-bit grey-level grid: what a PNG stores, so what is
    scored is what a file written from it holds."""
    return torch.round(x * 255.0) / 255.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, 1, H, W) images in [0, 1] on the 8-bit grid -> (B, H, W) uint8 (exact for 8-bit quantised images)."""
    return np.rint(x[:, 0].detach().cpu().numpy() * 255.0).astype(np.uint8)


def from_uint8(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a.astype(np.float32) / 255.0).unsqueeze(1)
