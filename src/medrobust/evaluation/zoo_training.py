"""Train a zoo model with the study's recipe: the one implementation behind the runner's
training stage and ``mr.train`` (and so ``medrobust train``).

Build the architecture for the given classes and size, optionally adversarial training
(Madry et al., ICLR 2018: each batch replaced by the attack's examples against the current
weights), train with :func:`medrobust.models.training.train_classifier` (Adam, plateau
schedule, early stopping on validation loss, best weights kept), report one step per epoch
through the progress protocol and one log line per epoch, and save a checkpoint whose
``model.json`` records every setting, the history and the metrics. Given the folder the model
will be saved to, an interrupted training resumes after its last finished epoch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from medrobust.execution.progress import Progress, SilentProgress, report_resumed
from medrobust.models.checkpoint import save_checkpoint
from medrobust.models.classifier import Classifier
from medrobust.models.epoch_checkpoint import epoch_checkpoint_path, remove_epoch_checkpoint
from medrobust.models.training import TrainConfig, TrainResult, train_classifier
from medrobust.models.zoo import build_classifier

log = logging.getLogger("medrobust.training")

Tensors = tuple[torch.Tensor, torch.Tensor]


def train_zoo_model(arch: str, classes: Sequence[str], size: int | tuple[int, int, int], train: Tensors, val: Tensors,
                    config: TrainConfig, *, weights: str = "none", adversarial: str | None = None,
                    device: torch.device | str = "cpu", download: bool = False, progress: Progress | None = None,
                    name: str = "model", folder: str | Path | None = None,
                    intensity: str | None = None) -> tuple[Classifier, TrainResult]:
    """A trained ``arch`` Classifier (the best epoch's weights, on ``device``, eval mode) and its
    history. ``train``/``val``: (images (N, 1, H, W) in [0, 1], labels (N,)) in ``classes`` order
    (volumes: (N, 1, D, H, W), ``size`` then (D, H, W)). ``intensity``: the network's input
    convention (CT windows: ``hu_windows:40,80``), default the architecture's.

    ``folder``: where the model will be saved (:func:`save_trained_model`); the state after each
    epoch is kept in its ``training/`` folder, and an interrupted training of the same model on
    the same data resumes there after its last finished epoch."""
    torch.manual_seed(config.seed)
    model = build_classifier(arch, list(classes), size, weights=weights, download=download, intensity=intensity)
    adversary = None
    if adversarial:
        from medrobust.attacks.registry import build_attack

        adversary = build_attack(adversarial)
        log.info("%s: adversarial training on %s examples (Madry et al. 2018)", name, adversarial)

    def on_epoch(record: dict[str, float]) -> None:
        bar.advance(1)
        log.info("%s epoch %3d  loss %.4f  acc %.3f  val_loss %.4f  val_acc %.3f  lr %.1e  %.1fs", name,
                 record["epoch"], record["train_loss"], record["train_accuracy"], record["val_loss"],
                 record["val_accuracy"], record["lr"], record["seconds"])

    def on_resume(history: list[dict[str, float]]) -> None:
        report_resumed(bar.advance, len(history))
        log.info("%s: resuming training after epoch %d of %d, finished by an earlier run", name, len(history),
                 config.epochs)

    with (progress or SilentProgress()).stage(f"train {name}", config.epochs) as bar:
        result = train_classifier(model, train, val, config, device=device, pretrained=weights not in ("none", ""),
                                  adversary=adversary, on_epoch=on_epoch, on_resume=on_resume,
                                  checkpoint=epoch_checkpoint_path(folder) if folder is not None else None)
    return model.eval(), result


def save_trained_model(model: Classifier, folder: str | Path, config: TrainConfig, result: TrainResult, *,
                       weights: str, adversarial: str | None, data: str, size: int | None = None,
                       metrics: dict[str, Any] | None = None) -> Path:
    """The checkpoint (``model.safetensors`` + ``model.json`` with settings, history, metrics);
    the epoch checkpoint of the training (in ``folder/training/``) is removed once it is saved."""
    training = {**config.to_json(), "lr": result.lr, "weights": weights, "adversarial": adversarial, "data": data}
    if size is not None:
        training["size"] = size
    saved = save_checkpoint(model.cpu(), folder, extra={
        "training": training, "history": result.history,
        "metrics": {"best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
                    "train_seconds": round(result.seconds, 1), "epochs_run": len(result.history), **(metrics or {})},
    })
    remove_epoch_checkpoint(folder)
    return saved
