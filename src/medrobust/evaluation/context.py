"""What every stage of a run reads: one frozen :class:`RunContext`.

It is built once the models are ready and the attack subset's clean images are stored: the
configuration (resolved), the run folder's stage root, the engine that runs units of work, the
class plan, the attack subset (``inputs``: a stored stage whose batches hold the clean 8-bit
images, ``labels`` and ``clean_pred``: the model's decisions on them), the surrogates' names,
the progress protocol and where unreadable files are recorded. A stage is a function
``run(ctx, ...) -> Outcome`` (:mod:`medrobust.evaluation.stages`); what one stage needs of another
it receives as that stage's outcome, never through the context, which does not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medrobust.evaluation.class_plan import ClassPlan
from medrobust.evaluation.config import ExperimentConfig
from medrobust.evaluation.run_data import SkippedFiles
from medrobust.execution.progress import Progress
from medrobust.execution.resumable_stage import StageResult


@dataclass(frozen=True)
class RunSetup:
    """What the run knows once its models are ready and before the baseline: enough for the
    baseline stage, which decides the attack subset the full :class:`RunContext` adds.

    Args:
        config: the configuration, resolved (its data size settled).
        root: the run folder (stages keep their files under ``root/stages``).
        engine: where units of work run (:mod:`medrobust.execution.engines`).
        device: the driver's torch device.
        plan: how the data's classes map to the model's
            (:class:`~medrobust.evaluation.class_plan.ClassPlan`).
        models: ``"model"`` and each surrogate by name, on ``device`` (the driver's own copies).
        progress: where the stages report their progress.
        skipped: where unreadable files are recorded.
        parts: the dataset's splits by name (the baseline streams ``test``; a calibration may
            read ``val``).
    """

    config: ExperimentConfig
    root: Path  # the run folder
    engine: object  # :mod:`medrobust.execution.engines`
    device: object  # the driver's torch device
    plan: ClassPlan
    models: dict  # "model" and each surrogate by name, on ``device`` (the driver's own copies)
    progress: Progress
    skipped: SkippedFiles
    parts: dict  # the dataset's splits (the baseline streams "test"; a calibration may read "val")

    @property
    def stages(self) -> Path:
        return self.root / "stages"

    @property
    def batch_size(self) -> int:
        return self.config.batch_size

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def classes(self) -> list[str]:
        return self.plan.classes

    @property
    def model(self):
        return self.models["model"]

    @property
    def surrogates(self) -> tuple[str, ...]:
        """The surrogates' names, as the engine knows them."""
        return tuple(name for name in self.models if name != "model")

    @property
    def differentiable(self) -> bool:
        """Whether the model gives input gradients (a black box does not)."""
        return bool(getattr(self.model, "differentiable", True))


@dataclass(frozen=True)
class RunContext(RunSetup):
    """The frozen context of a run's stages after the baseline (see the module docstring).

    Args:
        config, root, engine, device, plan, models, progress, skipped, parts: as
            :class:`RunSetup`'s.
        inputs: the attack subset, a stored stage: clean images (key ``clean``), ``labels`` and
            ``ids``.
        clean_pred: the model's decisions on the attack subset's clean images.
    """

    inputs: StageResult  # the attack subset: clean images (key ``clean``), ``labels`` and ``ids``
    clean_pred: np.ndarray  # the model's decisions on the attack subset's clean images

    @property
    def labels(self) -> np.ndarray:
        return self.inputs.summary["labels"]

    @property
    def n(self) -> int:
        return len(self.labels)
