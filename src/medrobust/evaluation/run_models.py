"""The run's models: the model and each transfer surrogate, loaded from the user's files or trained
in the run (and kept in its folder, so a resumed run reuses them), the image size they decide,
and the engine that runs the units of work with them.

A loaded model fixes the size images are read at (``data.size`` left out); a model trained here
is built for the configured size. Training reads the train and validation splits whole — the
only place a split is read whole — and resumes an interrupted training at its next epoch.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch.nn as nn

from medrobust.data.image_size import read_side
from medrobust.evaluation.class_plan import ClassPlan
from medrobust.evaluation.config import ExperimentConfig, ModelConfig
from medrobust.evaluation.run_data import TRAIN_DATA_SPLIT, SkippedFiles, Split, read_split
from medrobust.execution.progress import Progress

log = logging.getLogger(__name__)


def load_user_model(cfg: ModelConfig, name: str, device) -> nn.Module:
    """A user's model (``cfg.load``), on ``device``; errors name the model (``name``)."""
    from medrobust.models.loading import load_classifier

    lc = cfg.load
    assert lc is not None
    try:
        return load_classifier(lc.path, lc.contract, device=device)
    except (ValueError, FileNotFoundError) as err:
        raise type(err)(f"{name}: {err}") from None


def resolve_size(config: ExperimentConfig, model: nn.Module | None) -> tuple[ExperimentConfig, str | None]:
    """``config`` with ``data.size`` resolved, and a note when it was set against the model's.

    Left out: the model's input size (224 if it takes any size; 64 for a model trained here).
    Set to another size than the model's: said, since the model then resizes every image (an
    upscaled image may be all one class to it)."""
    d = config.data
    fixed = getattr(model, "input_size", None) if model is not None else None
    side = read_side(fixed)  # a volume model's (D, H, W): its in-plane side (volumes are resized in-plane)
    if d.size is None:
        size = (side or 224) if model is not None else 64
        log.info("data.size not set: images are read at %d px (%s)", size,
                 "the model's input size" if side else "a model that takes any size" if model is not None
                 else "the size a model trained here is built for")
        return config.model_copy(update={"data": d.model_copy(update={"size": size})}), None
    if fixed and tuple(fixed[-2:]) != (d.size, d.size):
        note = (f"images were read at {d.size} x {d.size} px (data.size) and resized by the model to its input "
                f"size {' x '.join(str(s) for s in fixed)}: its accuracy here may be lower than on images of its own "
                "size")
        log.warning("%s", note)
        return config, note
    return config, None


def needs_training_data(config: ExperimentConfig, root: Path) -> bool:
    """Whether a model or surrogate still has to be trained on the run's own splits (none saved yet)."""
    from medrobust.models.checkpoint import is_checkpoint

    return any(m.train is not None and m.train.data is None and not is_checkpoint(root / folder)
               for folder, m in [("model", config.model), *((f"surrogates/{s.name}", s) for s in config.surrogates)])


class ModelMaker:
    """Loads or trains the run's models into its folder; ``timings`` gets each training's seconds per image."""

    def __init__(self, config: ExperimentConfig, root: Path, plan: ClassPlan, device, progress: Progress,
                 skipped: SkippedFiles) -> None:
        self.config, self.root, self.plan, self.device = config, root, plan, device
        self.progress, self.skipped = progress, skipped
        self.timings: dict[str, float] = {}

    def model(self, folder: str, cfg: ModelConfig, data: dict[str, Split], name: str) -> nn.Module:
        """The model of ``cfg``: loaded, read back from the run folder, or trained now and saved there."""
        from medrobust.evaluation.zoo_training import save_trained_model, train_zoo_model
        from medrobust.models.augment import NO_AUGMENTATION, AugmentConfig
        from medrobust.models.checkpoint import is_checkpoint, load_checkpoint
        from medrobust.models.training import TrainConfig

        target = self.root / folder
        if cfg.load is not None:
            return load_user_model(cfg, name, self.device)
        if is_checkpoint(target):
            log.info("%s: reusing the trained model in %s", name, target)
            return load_checkpoint(target, self.device)
        t = cfg.train
        assert t is not None
        train, val = self._training_data(t, data, name)
        train_cfg = TrainConfig(epochs=t.epochs, batch_size=t.batch_size, lr=t.lr, trainable=t.trainable,
                                two_phase=t.two_phase, seed=self.config.seed, lr_schedule=t.lr_schedule,
                                warmup_epochs=t.warmup_epochs, augment=AugmentConfig() if t.augment else NO_AUGMENTATION,
                                noise_sigma=t.noise_sigma, early_stopping_patience=t.early_stopping_patience)
        start = time.perf_counter()
        volumes = train[0].ndim == 5  # (N, 1, D, H, W): the network takes the volumes' own (D, H, W)
        size = tuple(int(v) for v in train[0].shape[-3:]) if volumes else self.config.data.size
        model, result = train_zoo_model(t.arch, self.plan.classes, size, train[:2], val[:2],  # type: ignore[arg-type]
                                        train_cfg, weights=t.weights, adversarial=t.adversarial, device=self.device,
                                        progress=self.progress, name=name, folder=target, intensity=t.intensity)
        self.timings[f"train {name}"] = (time.perf_counter() - start) / max(1, len(train[0]))
        save_trained_model(model, target, train_cfg, result, weights=t.weights, adversarial=t.adversarial,
                           data=t.data or self.config.data.source)
        return model.to(self.device).eval()

    def _training_data(self, t, data: dict[str, Split], who: str) -> tuple[Split, Split]:
        """(train, val) for a model to train: the run's splits, or ``train.data``'s own."""
        if t.data is None:
            return data["train"], data["val"]
        from medrobust.data.class_names import match_classes
        from medrobust.data.sources import open_dataset

        d = self.config.data
        own = open_dataset(t.data, size=d.size, fractions=TRAIN_DATA_SPLIT, split_seed=d.split_seed,
                           per_class=d.per_class, seed=d.phantom_seed + 1)
        label_map = match_classes(own.classes, self.plan.classes, d.class_map, data_what=f"{who} train.data")
        parts = own.splits()
        if not {"train", "val"} <= set(parts):
            raise ValueError(f"{t.data}: too few images to split into training and validation for {who}")
        bs = self.config.batch_size
        return (read_split(parts["train"], label_map, bs, self.skipped),
                read_split(parts["val"], label_map, bs, self.skipped))


def read_training_data(config: ExperimentConfig, root: Path, parts: dict, plan: ClassPlan, progress: Progress,
                       skipped: SkippedFiles) -> dict[str, Split]:
    """The train and val splits, read whole — only when a model is trained here and not yet saved."""
    if not needs_training_data(config, root):
        return {}
    out = {}
    with progress.stage("data", sum(len(parts[k]) for k in ("train", "val"))) as bar:
        for name in ("train", "val"):
            out[name] = read_split(parts[name], plan.label_map, config.batch_size, skipped)
            bar.advance(len(parts[name]))
    return out


def make_engine(config: ExperimentConfig, root: Path, models: dict[str, nn.Module], device, given_model: bool):
    """The configured engine over ``models`` (``"model"`` and the surrogates by name); for Ray,
    every model is shipped to the workers: the user's file, the run's checkpoint, or the model
    held in memory (``given_model``)."""
    from medrobust.execution.engines import make_engine as engine_for
    from medrobust.execution.model_shipping import ModelSource

    def ship() -> list[ModelSource]:
        sources = []
        for name, cfg, folder in [("model", config.model, "model"),
                                  *((s.name, s, f"surrogates/{s.name}") for s in config.surrogates)]:
            if cfg.load is not None and Path(cfg.load.path).exists():  # the user's file: shipped as bytes
                sources.append(ModelSource.from_path(name, cfg.load.path, cfg.load.contract))
            elif name == "model" and given_model:  # held in memory only
                sources.append(ModelSource.from_module(name, models[name]))
            else:  # trained in this run
                sources.append(ModelSource.from_path(name, root / folder))
        return sources

    return engine_for(config.execution, models, device, config.device, ship)
