"""The study's training recipe, reproducible on the CPU.

Adam; cross-entropy (optionally class-weighted) plus the head's L2 penalty;
ReduceLROnPlateau(val_loss, factor 0.5, patience 3, min_lr 1e-7); EarlyStopping(val_loss,
patience 5, restore best weights); the study's augmentation on training batches only;
optional two phases (head first, then unfreeze by the trainable policy), as the study did.
Learning rate: 1e-5 (the study's) when fine-tuning pre-trained weights, 1e-3 from scratch,
unless given. Optional, not the study's: a linear warm-up and a cosine schedule
(:mod:`medrobust.models.lr_schedule`).

A run is a fixed amount of work: its epochs (or fewer, by early stopping on the validation
loss), never a wall-clock budget, so the same seed, data and machine give the same final
weights however fast the machine is. Given a checkpoint file, the state after each epoch is
saved there and an interrupted run resumes after its last finished epoch, to the same final
weights (:mod:`medrobust.models.epoch_checkpoint`).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from medrobust.models.augment import AugmentConfig, random_affine
from medrobust.models.classifier import Classifier
from medrobust.models.lr_schedule import SCHEDULES, LearningRateSchedule
from medrobust.models.output_kind import OutputKind
from medrobust.models.trainable import apply_trainable, freeze_frozen_batchnorm

log = logging.getLogger(__name__)

FINE_TUNE_LR = 1e-5
SCRATCH_LR = 1e-3
VAL_NOISE_SEED_OFFSET = 2  # the validation noise's generator: seed + 2 (batches take seed, the adversary seed + 1)


@dataclass
class TrainConfig:
    """Every setting of a training run (written into model.json).

    Args:
        epochs: the most epochs, over both phases (early stopping may end sooner). Default 30.
        batch_size: images per update. Default 32.
        lr: the learning rate. Default None: 1e-5 (the study's) when fine-tuning pre-trained
            weights, 1e-3 from scratch.
        trainable: which layers train (:mod:`medrobust.models.trainable`): ``head``,
            ``last-block``, ``last:N`` or ``all`` (the default).
        two_phase: train the head alone first (``head_epochs`` at ``head_lr``), then by
            ``trainable``, as the study did. Default False.
        head_epochs: the first phase's epochs. Default 3.
        head_lr: the first phase's learning rate. Default 1e-3.
        class_weighted: weight the loss by inverse class frequency (multi-label: a positive
            weight per finding). Default False.
        plateau_factor: ReduceLROnPlateau's factor. Default 0.5.
        plateau_patience: ReduceLROnPlateau's patience, in epochs. Default 3.
        min_lr: the learning rate's floor (the cosine schedule's end). Default 1e-7.
        early_stopping_patience: epochs without a better validation loss before stopping (the
            best epoch's weights are restored). Default 5.
        augment: the augmentation of training batches. Default: the study's
            (:class:`~medrobust.models.augment.AugmentConfig`).
        seed: seeds the global torch generator (dropout), the batch order and the augmentation
            (the adversary's generator takes ``seed + 1``). Default 0.
        lr_schedule: ``plateau`` (the study's, the default) or ``cosine`` (to ``min_lr`` at the
            last step).
        warmup_epochs: epochs of linear warm-up of the learning rate (fractions allowed).
            Default 0.
        channels_last: train in the channels-last memory format (faster convolutions); the model
            is put back in the default format afterwards. Default True.
        noise_sigma: Gaussian data augmentation (Cohen et al. 2019, the base classifiers of
            randomized smoothing): noise N(0, noise_sigma^2) added to every pixel of each training
            batch in [0, 1] image units, after the augmentation, not clipped; drawn from the
            training's generator. The validation images get one fixed draw of the same noise
            (seeded by ``seed``, the same every epoch), so the best epoch is the one whose base
            classifier is best under the noise the smoothed classifier adds: validated on clean
            images, a model trained under sigma 0.25 was chosen by a loss it never trained for
            (its batch-norm statistics are the noisy images'; the demo's read 33% on clean
            images at every epoch while learning under noise). Default 0: none.

    Raises:
        ValueError: an unknown ``lr_schedule``, a negative ``warmup_epochs`` or ``noise_sigma``.
    """

    epochs: int = 30
    batch_size: int = 32
    lr: float | None = None  # None: 1e-5 when fine-tuning pre-trained weights, 1e-3 from scratch
    trainable: str = "all"
    two_phase: bool = False  # train the head alone first, then by `trainable`
    head_epochs: int = 3
    head_lr: float = 1e-3
    class_weighted: bool = False
    plateau_factor: float = 0.5
    plateau_patience: int = 3
    min_lr: float = 1e-7
    early_stopping_patience: int = 5
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0
    lr_schedule: str = "plateau"  # plateau (the study's) | cosine (to min_lr at the last step)
    warmup_epochs: float = 0.0  # linear warm-up of the learning rate over this many epochs
    channels_last: bool = True  # memory format: faster convolutions on CPU and GPU, same results
    noise_sigma: float = 0.0  # Gaussian noise on each training batch, [0, 1] units, not clipped (Cohen et al. 2019)

    def __post_init__(self) -> None:
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"unknown learning-rate schedule {self.lr_schedule!r}; use {' or '.join(SCHEDULES)}")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be at least 0, got {self.warmup_epochs}")
        if not 0 <= self.noise_sigma < float("inf"):
            raise ValueError(f"noise_sigma must be 0 (no noise) or a positive number such as 0.25, got {self.noise_sigma}")

    def to_json(self) -> dict[str, object]:
        """Every setting, as model.json records it; ``noise_sigma`` only when noise was added, so a
        model trained without it is recorded (and its epoch checkpoint keyed) as before it existed."""
        out = asdict(self)
        if not self.noise_sigma:
            out.pop("noise_sigma")
        return out


@dataclass
class TrainResult:
    """What a training run did.

    Args:
        history: one record per epoch: ``epoch`` (from 1), ``phase``, ``train_loss``,
            ``train_accuracy``, ``val_loss``, ``val_accuracy``, ``lr``, ``seconds``.
        best_epoch: the epoch of the lowest validation loss, whose weights the model holds.
        best_val_loss: that loss.
        stopped_early: whether early stopping ended the run.
        seconds: the training's time, an interrupted run's earlier epochs included.
        lr: the learning rate of the main phase (the default one, when none was given).
    """

    history: list[dict[str, float]]
    best_epoch: int
    best_val_loss: float
    stopped_early: bool
    seconds: float
    lr: float


EpochCallback = Callable[[dict[str, float]], None]
BatchCallback = Callable[[int, int], None]
ResumeCallback = Callable[[list[dict[str, float]]], None]


def _accuracy(kind: OutputKind, logits: torch.Tensor, y: torch.Tensor) -> float:
    pred = kind.decide(logits)
    return float((pred == y).float().mean())


def _class_weights(y: torch.Tensor, kind: OutputKind, n_classes: int) -> torch.Tensor | None:
    if kind is OutputKind.MULTILABEL:
        pos = y.float().mean(0).clamp(min=1e-3)
        return (1.0 - pos) / pos  # pos_weight per finding
    counts = torch.bincount(y.long(), minlength=2 if kind is OutputKind.BINARY else n_classes).float().clamp(min=1)
    return counts.sum() / (len(counts) * counts)


@torch.no_grad()
def evaluate_loss(model: Classifier, x: torch.Tensor, y: torch.Tensor, batch_size: int = 128) -> tuple[float, float]:
    """(mean loss, accuracy) of ``model`` in eval mode on tensors ``x``, ``y``."""
    logits = model.logits(x, batch_size)
    loss = float(model.loss(logits, y))
    return loss, _accuracy(model.output_kind, logits, y)


def train_classifier(
    model: Classifier,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    config: TrainConfig | None = None,
    device: str | torch.device = "cpu",
    pretrained: bool = False,
    on_epoch: EpochCallback | None = None,
    on_batch: BatchCallback | None = None,
    adversary: Callable[..., torch.Tensor] | None = None,
    checkpoint: str | Path | None = None,
    on_resume: ResumeCallback | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``train = (images, labels)``, validating on ``val``.

    Args:
        model: the Classifier to train (moved to ``device``; in eval mode on return).
        train: ``(images (N, C, H, W) in [0, 1], labels)``: class indices (N,), or (N, K) 0/1
            findings for a multi-label model.
        val: the validation images and labels, likewise; their loss decides the best epoch,
            the plateau rule and early stopping.
        config: every setting. Default None: ``TrainConfig()``.
        device: where to train. Default ``"cpu"``.
        pretrained: the weights are pre-trained, so the default learning rate is the
            fine-tuning one (1e-5) instead of 1e-3. Default False.
        on_epoch: called with each epoch's history record. Default None.
        on_batch: called as ``on_batch(batch, batches)`` after each update. Default None.
        adversary: for adversarial training, an attack called as
            ``adversary(model, x, y, generator=...)``; its adversarial examples, crafted against
            the current weights, replace the clean batch in the update (Madry et al. 2018).
            Default None.
        checkpoint: a file where the training's state is saved after every epoch
            (:mod:`medrobust.models.epoch_checkpoint`); when it holds this training's state
            (same settings, initial weights and data), the training resumes after its last
            epoch and ends with the weights an uninterrupted run gives. The caller removes the
            file once the model is saved. Default None.
        on_resume: called with the history of the epochs finished earlier when a run resumes.
            Default None.

    Returns:
        The history and the best epoch, whose weights the model holds on return.
    """
    from medrobust.models.epoch_checkpoint import (
        load_epoch_checkpoint,
        restore_rng_states,
        rng_states,
        save_epoch_checkpoint,
        training_key,
    )

    config = config or TrainConfig()
    device = torch.device(device)
    lr = config.lr if config.lr is not None else (FINE_TUNE_LR if pretrained else SCRATCH_LR)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    adversary_generator = torch.Generator(device=device).manual_seed(config.seed + 1)
    generators = {"batches": generator, "adversary": adversary_generator}
    model.to(device)
    x_train, y_train = train
    memory_format = torch.channels_last_3d if x_train.ndim == 5 else torch.channels_last  # volumes: NDHWC
    if config.channels_last and device.type in ("cpu", "cuda"):
        model.to(memory_format=memory_format)
    x_val, y_val = val
    if config.noise_sigma > 0:  # one fixed draw: the validation loss compares epochs on the same noisy images
        val_noise = torch.Generator().manual_seed(config.seed + VAL_NOISE_SEED_OFFSET)
        x_val = x_val + config.noise_sigma * torch.randn(x_val.shape, generator=val_noise).to(x_val.device, x_val.dtype)
    kind = model.output_kind
    weights = _class_weights(y_train, kind, len(model.classes)) if config.class_weighted else None
    if weights is not None:
        weights = weights.to(device)
    network = model.network
    phases: list[tuple[str, int, float]] = []
    if config.two_phase:
        phases.append(("head", min(config.head_epochs, config.epochs), config.head_lr))
    phases.append((config.trainable, config.epochs - (phases[0][1] if phases else 0), lr))

    history: list[dict[str, float]] = []
    best_loss, best_epoch, best_state, since_best = math.inf, -1, None, 0
    stopped_early = False
    seconds_before = 0.0
    epoch = 0
    key, saved = "", None
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        describe = getattr(adversary, "describe", None)
        settings = {"config": config.to_json(), "lr": lr, "pretrained": pretrained, "device": device.type,
                    "adversary": describe() if callable(describe) else (type(adversary).__name__ if adversary else None)}
        key = training_key(settings, model.state_dict(), [x_train, y_train, x_val, y_val])
        saved = load_epoch_checkpoint(checkpoint, key, model.arch or "model")
    if saved is not None:
        epoch, history, stopped_early = int(saved["epoch"]), list(saved["history"]), bool(saved["stopped_early"])
        best_loss, best_epoch, best_state = float(saved["best_loss"]), int(saved["best_epoch"]), saved["best_state"]
        if best_epoch == epoch:  # saved once, as the model's weights
            best_state = copy.deepcopy(saved["model"])
        seconds_before = float(saved["seconds"])
        model.load_state_dict(saved["model"])
        restore_rng_states(saved["rng"], generators)
        log.debug("%s: resuming training after epoch %d of %d (saved in %s)", model.arch, epoch, config.epochs, checkpoint)
        if on_resume is not None:
            on_resume(list(history))
    start = time.perf_counter()
    phase_end = 0  # epochs (over all phases) up to the end of the phase
    for policy, n_epochs, phase_lr in phases:
        first, phase_end = phase_end, phase_end + max(0, n_epochs)
        if n_epochs <= 0 or stopped_early or epoch >= first + n_epochs:
            continue  # empty, stopped, or finished before an interruption
        n_trainable, n_total = apply_trainable(network, policy)
        log.info("training %s: %d of %d parameters trainable (%s), lr %.1e", model.arch, n_trainable, n_total, policy, phase_lr)
        params = [p for p in network.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=phase_lr)
        n_batches = math.ceil(len(x_train) / config.batch_size)
        schedule = LearningRateSchedule(optimizer, config.lr_schedule, phase_lr, n_epochs * n_batches,
                                        warmup_steps=round(config.warmup_epochs * n_batches), min_lr=config.min_lr,
                                        plateau_factor=config.plateau_factor, plateau_patience=config.plateau_patience)
        since_best = 0
        if saved is not None and epoch > first:  # interrupted inside this phase: continue it
            optimizer.load_state_dict(saved["optimizer"])
            schedule.load_state_dict(saved["schedule"])
            since_best = int(saved["since_best"])
        for _ in range(epoch - first, n_epochs):
            t0 = time.perf_counter()
            model.train()
            freeze_frozen_batchnorm(network)
            order = torch.randperm(len(x_train), generator=generator)
            total_loss, total_correct, seen = 0.0, 0.0, 0
            for b in range(n_batches):
                idx = order[b * config.batch_size : (b + 1) * config.batch_size]
                xb = x_train[idx].to(device)
                yb = y_train[idx].to(device)
                xb = random_affine(xb, config.augment, generator)
                if config.noise_sigma > 0:  # drawn on the CPU generator, like the augmentation: device-independent
                    xb = xb + config.noise_sigma * torch.randn(xb.shape, generator=generator).to(xb.device, xb.dtype)
                if adversary is not None:
                    xb = adversary(model, xb, yb, generator=adversary_generator)
                    model.train()
                    freeze_frozen_batchnorm(network)
                if config.channels_last:
                    xb = xb.contiguous(memory_format=memory_format)
                logits = model(xb)
                loss = kind.loss(logits, yb, weight=weights)
                if hasattr(network, "regularization"):
                    loss = loss + network.regularization()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                schedule.before_step()
                optimizer.step()
                total_loss += float(loss.detach()) * len(idx)
                total_correct += _accuracy(kind, logits.detach(), yb) * len(idx)
                seen += len(idx)
                if on_batch is not None:
                    on_batch(b + 1, n_batches)
            val_loss, val_acc = evaluate_loss(model, x_val, y_val)
            current_lr = optimizer.param_groups[0]["lr"]
            schedule.after_epoch(val_loss)
            record = {
                "epoch": epoch + 1, "phase": policy, "train_loss": total_loss / seen, "train_accuracy": total_correct / seen,
                "val_loss": val_loss, "val_accuracy": val_acc, "lr": current_lr, "seconds": time.perf_counter() - t0,
            }
            history.append(record)
            epoch += 1
            if val_loss < best_loss - 1e-6:
                best_loss, best_epoch, since_best = val_loss, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                since_best += 1
            stop = since_best >= config.early_stopping_patience
            if checkpoint is not None:
                save_epoch_checkpoint(checkpoint, key, {
                    "epoch": epoch, "history": history, "stopped_early": stop, "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "since_best": since_best,
                    "best_loss": best_loss, "best_epoch": best_epoch,  # the best weights: the model's, if this epoch's
                    "best_state": best_state if best_epoch != epoch else None,
                    "rng": rng_states(generators), "seconds": seconds_before + time.perf_counter() - start})
            if on_epoch is not None:
                on_epoch(record)
            if stop:
                log.info("early stopping after epoch %d (best %d, val loss %.4f)", epoch, best_epoch, best_loss)
                stopped_early = True
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    for p in network.parameters():
        p.requires_grad_(True)
    model.eval()
    if config.channels_last:
        model.to(memory_format=torch.contiguous_format)
    return TrainResult(history, best_epoch, best_loss, stopped_early, seconds_before + time.perf_counter() - start, lr)
