"""The state of a training run after each epoch, saved so that an interrupted training resumes at
the next epoch and ends with exactly the model an uninterrupted one gives (on one thread; with
more, oneDNN's convolutions may round differently from run to run either way).

What is saved (one ``torch.save`` file, written atomically: a run killed while writing leaves
the previous epoch's file): the weights and buffers, the optimiser's state, the learning-rate
schedule's, the early-stopping state (best loss, its epoch, its weights, epochs since), every
random generator the training draws from (torch's global one, CUDA's, the batch order and
augmentation generator, the adversary's), the epochs' history and the seconds spent.

The file is keyed: a digest of the training settings, the model's initial weights (so its
architecture, classes, size and seed) and the training and validation tensors. A file with
another key (the same folder reused for other training, changed images) is not resumed from:
the training starts at epoch 1 and says so. The file lives in a ``training/`` folder beside the
finished checkpoint and is removed once the checkpoint is saved
(:func:`remove_epoch_checkpoint`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import signal
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from medrobust.files.atomic_files import open_atomic

log = logging.getLogger(__name__)

TRAINING_FOLDER = "training"
"""The folder of the epoch checkpoint, inside the folder the finished model is saved to."""
EPOCH_FILE = "epoch.pt"
FORMAT = 1


def epoch_checkpoint_path(model_folder: str | Path) -> Path:
    """Where the epoch checkpoint of a model saved to ``model_folder`` lives."""
    return Path(model_folder) / TRAINING_FOLDER / EPOCH_FILE


def training_key(settings: dict[str, Any], initial_state: dict[str, torch.Tensor],
                 tensors: Iterable[torch.Tensor]) -> str:
    """The digest that ties an epoch checkpoint to one training: its settings (JSON), the
    model's initial weights and buffers, and the data tensors."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for name, value in initial_state.items():
        digest.update(name.encode())
        _update(digest, value)
    for t in tensors:
        _update(digest, t)
    return digest.hexdigest()


def _update(digest, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
    digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def save_epoch_checkpoint(path: Path, key: str, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) under ``key``, atomically; a
    Ctrl-C while it is written takes effect once the file is complete."""
    with interrupt_after(), open_atomic(path) as handle:
        torch.save({"format": FORMAT, "key": key, **state}, handle)


@contextmanager
def interrupt_after() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) that arrives during the block, and raise its KeyboardInterrupt once
    the block is done. torch.save interrupted half-way replaces the KeyboardInterrupt by its own
    error ("unexpected pos ...": the user would read a failure, not an interruption). Only where
    Python's own SIGINT handler is in place, in the main thread; elsewhere the block runs as is."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def load_epoch_checkpoint(path: Path, key: str, who: str) -> dict[str, Any] | None:
    """The state saved at ``path`` when it belongs to the training ``key``; None when there is
    none, or it is unreadable or another training's (logged: the training starts afresh)."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 — a damaged file is not resumed from, whatever the damage
        log.warning("%s: %s is unreadable (%s); training starts at epoch 1", who, path, err)
        return None
    if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("key") != key:
        log.warning("%s: %s was saved by another training (other settings or images); training starts at epoch 1",
                    who, path)
        return None
    return state


def remove_epoch_checkpoint(model_folder: str | Path) -> None:
    """Delete the epoch checkpoint of a model saved to ``model_folder`` (its training is done)."""
    shutil.rmtree(Path(model_folder) / TRAINING_FOLDER, ignore_errors=True)


def rng_states(generators: dict[str, torch.Generator]) -> dict[str, torch.Tensor]:
    """Every random state the training draws from: torch's global generator, CUDA's (when
    present) and ``generators``."""
    states = {"torch": torch.get_rng_state(), **{name: g.get_state() for name, g in generators.items()}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def restore_rng_states(states: dict[str, torch.Tensor], generators: dict[str, torch.Generator]) -> None:
    """Put back what :func:`rng_states` saved."""
    torch.set_rng_state(states["torch"])
    for name, g in generators.items():
        g.set_state(states[name])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])
