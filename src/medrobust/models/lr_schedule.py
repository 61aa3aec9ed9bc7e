"""Learning-rate schedules of a training run, set once per optimiser step.

- ``plateau`` (the study's): the rate stays at ``lr`` and is multiplied by ``factor`` when the
  validation loss has not improved for ``patience`` epochs, down to ``min_lr``
  (Keras ``ReduceLROnPlateau``; here :class:`torch.optim.lr_scheduler.ReduceLROnPlateau`).
- ``cosine``: a fixed amount of work with a known end, so the rate reaches ``min_lr`` exactly
  at the last step (Loshchilov & Hutter, "SGDR", ICLR 2017, one cycle without restarts)::

      lr_t = min_lr + (lr - min_lr) * (1 + cos(pi * (t - W) / (S - W))) / 2,   W <= t < S

  with ``S`` the run's optimiser steps and ``W`` the warm-up steps.

Both can start with a linear warm-up over ``W = round(warmup_epochs * steps_per_epoch)``
steps (Goyal et al., "Accurate, Large Minibatch SGD", 2017): ``lr_t = lr * (t + 1) / W`` for
``t < W``. From scratch, a network with batch normalisation and Adam at 1e-3 otherwise takes
its largest steps while its statistics are still random.
"""

from __future__ import annotations

import math

import torch

SCHEDULES = ("plateau", "cosine")


class LearningRateSchedule:
    """Sets the learning rate of ``optimizer`` before every step (:meth:`before_step`) and
    after every epoch (:meth:`after_epoch`, which the plateau rule needs)."""

    def __init__(self, optimizer: torch.optim.Optimizer, kind: str, lr: float, total_steps: int, warmup_steps: int = 0,
                 min_lr: float = 0.0, plateau_factor: float = 0.5, plateau_patience: int = 3) -> None:
        if kind not in SCHEDULES:
            raise ValueError(f"unknown learning-rate schedule {kind!r}; use {' or '.join(SCHEDULES)}")
        self.optimizer = optimizer
        self.kind = kind
        self.lr = lr
        self.total_steps = max(1, total_steps)
        self.warmup_steps = max(0, min(warmup_steps, self.total_steps))
        self.min_lr = min(min_lr, lr)
        self.step_index = 0
        self.plateau = None
        if kind == "plateau":
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="min", factor=plateau_factor, patience=plateau_patience, min_lr=min_lr)

    def rate(self, step: int) -> float:
        """The rate at optimiser step ``step`` (0-based) of warm-up and cosine; the plateau
        rule's rate after warm-up depends on the validation losses and is not given here."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.kind == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            progress = min(1.0, (step - self.warmup_steps) / span)
            return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.lr

    def before_step(self) -> None:
        if self.kind == "cosine" or self.step_index <= self.warmup_steps:
            # the plateau rule takes over from the full rate once warm-up is done
            for group in self.optimizer.param_groups:
                group["lr"] = self.rate(self.step_index)
        self.step_index += 1

    def after_epoch(self, val_loss: float) -> None:
        if self.plateau is not None and self.step_index >= self.warmup_steps:
            self.plateau.step(val_loss)

    def state_dict(self) -> dict[str, object]:
        """What continues the schedule after an interruption (the optimiser's rates are in its own state)."""
        return {"step_index": self.step_index, "plateau": self.plateau.state_dict() if self.plateau is not None else None}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.step_index = int(state["step_index"])  # type: ignore[arg-type]
        if self.plateau is not None and state.get("plateau") is not None:
            self.plateau.load_state_dict(state["plateau"])  # type: ignore[arg-type]
