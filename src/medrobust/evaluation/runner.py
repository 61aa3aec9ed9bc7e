"""The experiment runner: the whole study, end to end, resumable.

Stages, each persisted in the run directory as it finishes: model (train or load) and
surrogates -> baseline on the test set -> every attack white-box on the model and
transferred from each surrogate, plus epsilon sweeps and the transfer matrix -> every
defense on clean images (its cost), on the attacks' images (non-adaptive) and against an
adaptive attacker (BPDA/EOT) -> detection (reference and squeeze) on clean, benign-changed
and attacked images -> samples (pictures, Grad-CAM) -> ``metrics.json``.

Before anything is computed or written: every component spec is built once, the model is
loaded, the data listed, and the data's classes matched to the model's by name
(:func:`medrobust.data.class_names.match_classes`) — labels are then the model's indices, so a
folder listing in another order never scores a model against the wrong answers.

Streaming: the test split is never read whole. The baseline stage reads it batch by batch; the
attack subset's clean images are read once into stage ``inputs``; every later stage reads its
inputs batch by batch from earlier stages' files, and keeps only per-image summaries in memory,
so peak memory does not grow with the number of test images (``benchmarks/bench_memory.py``).
Each batch of each stage is a unit of work (:mod:`medrobust.evaluation.units`) that an engine
runs here or on Ray actors (:mod:`medrobust.evaluation.engines`, ``execution:`` in the
configuration); the runner alone writes the run directory, so resuming works whichever engine
finished which batches.

Resuming: the same configuration run again finds its finished stages (checkpoints, batch
files, stage JSON) and computes only what is missing. A different configuration in the same
run directory is refused rather than mixed in, unless no stage has finished yet (then the new
configuration takes the folder over, and says so) or only report settings changed (the normal
class, the emergency findings); ``restart=True`` empties the folder first.
"""

from __future__ import annotations

import logging
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from medrobust import __version__
from medrobust.components import eps_label
from medrobust.data.class_names import (
    NO_ANSWER,
    NOT_ASSESSED_NO_NORMAL,
    canonical_class_name,
    find_classes,
    find_normal_class,
    match_classes,
)
from medrobust.evaluation.batches import from_uint8, quantise_8bit, to_uint8
from medrobust.evaluation.config import DEFAULT_SPLIT, ExperimentConfig, ModelConfig
from medrobust.evaluation.progress import Progress, SilentProgress
from medrobust.evaluation.results import (
    AttackOutcome,
    DefenseOutcome,
    DetectorOutcome,
    RobustnessScore,
    RunMetrics,
    write_metrics,
)
from medrobust.evaluation.run_dir import atomic_write_text, load_json, model_file_sha256, save_json
from medrobust.evaluation.run_log import run_log
from medrobust.evaluation.samples import array_key, save_samples
from medrobust.evaluation.scorecard import DEFINITIONS, build_scorecard, write_scorecard
from medrobust.evaluation.stage_attacks import (
    AttackRun,
    attack_eps,
    attack_outcome,
    predict_stage,
    run_attack_stage,
    sweep_points,
    transfer_matrix,
)
from medrobust.per_image_log import per_image_log

log = logging.getLogger(__name__)

class RunFolderConflict(ValueError):
    """The run folder holds finished results that this run cannot resume: another configuration,
    other images, or a folder that is not a run. ``str()`` gives the fix in Python's terms
    (``restart=True``, ``name=``); :attr:`cli_message` in the command line's (``--restart``,
    ``--name``), which the CLI prints instead."""

    def __init__(self, problem: str, fix: str = "restart") -> None:
        self.problem = problem
        if fix == "restart":
            python = "start afresh with restart=True (deleting them), or choose another name= or run_dir="
            cli = "start afresh with --restart (deleting them), or choose another --name or --output-dir"
        else:
            python, cli = "choose another name= or run_dir=", "choose another --name or --output-dir"
        super().__init__(f"{problem}: {python}")
        self.cli_message = f"{problem}: {cli}"


def differing_fields(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted paths of the fields whose values differ between two configuration dicts."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        where = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += differing_fields(a, b, where + ".")
        elif a != b:
            out.append(where)
    return out


SKIPPED_FILE = "skipped.txt"
DATA_FILE = "data.json"
"""The run folder's record of the images its stages were computed on (their fingerprint)."""
NON_FINITE_EARLY_STOP = 32
"""Images after which a model whose outputs are mostly not finite stops the run (or all, if fewer)."""
TRAIN_DATA_SPLIT = (0.8, 0.2, 0.0)
"""How a model's own training folder (``train.data``) is split: train and validation only."""

Split = tuple[torch.Tensor, torch.Tensor, list[str]]


def stratified_subset(y: np.ndarray, n: int) -> np.ndarray:
    """Indices of up to ``n`` items taking classes in turn (in their original order)."""
    per_class = [list(np.flatnonzero(y == k)) for k in np.unique(y)]
    out: list[int] = []
    while len(out) < n and any(per_class):
        for items in per_class:
            if items and len(out) < n:
                out.append(items.pop(0))
    return np.array(sorted(out), dtype=np.int64)


class Runner:
    """Run the experiment described by ``config``; ``run()`` returns the metrics."""

    def __init__(self, config: ExperimentConfig, progress: Progress | None = None, restart: bool = False,
                 model: nn.Module | None = None, dataset=None) -> None:
        """``model``/``dataset``: a model and an ImageDataset already in memory, used instead of
        ``config.model.load`` and ``config.data.source`` (which then only name them)."""
        from medrobust.models.device import resolve_device

        self.given_model = model
        self.given_dataset = dataset
        self.config = config
        self.restart = restart
        self.skipped: list[str] = []
        self.notes: list[str] = []
        self.dir = config.run_dir
        self.stages = self.dir / "stages"
        self.progress = progress or SilentProgress()
        self.device = resolve_device(config.device)
        self.timings: dict[str, float] = {}

    # --- run directory ----------------------------------------------------------------------
    def has_finished_stage(self) -> bool:
        """Whether the run folder holds any result worth keeping (a stage file, a trained model, metrics)."""
        finished = [self.dir / "metrics.json", self.dir / "model" / "model.json"]
        if any(p.is_file() for p in finished):
            return True
        return any(p.is_file() for folder in (self.stages, self.dir / "surrogates")
                   if folder.is_dir() for p in folder.rglob("*"))

    def prepare(self, data_fingerprint: str) -> None:
        """Claim the run folder: write config.yaml and the data's fingerprint (``data.json``), or
        check the ones there (see the module docstring); ``data_fingerprint``: the images this run
        reads (:func:`~medrobust.data.fingerprint.dataset_fingerprint`)."""
        import yaml

        path = self.dir / "config.yaml"
        if self.restart and self.dir.exists():
            if self.dir.is_dir() and not path.is_file() and any(self.dir.iterdir()):
                raise RunFolderConflict(f"{self.dir}: starting afresh empties a run folder, and this one holds no "
                                        "config.yaml; it may not be a medrobust run", fix="another")
            if self.dir.is_dir():
                log.warning("%s: starting the run afresh (restart): its previous results are deleted", self.dir)
                shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        text = self.config.resolved_yaml()
        taken_over = False
        if path.is_file() and path.read_text() != text:
            try:
                old = ExperimentConfig.model_validate(yaml.safe_load(path.read_text()))
                differing = differing_fields(old.without_report_only(), self.config.without_report_only())
            except Exception:  # noqa: BLE001 — an old or hand-edited config.yaml is just "different"
                old, differing = None, ["config.yaml (unreadable by this version)"]
            if not differing:
                assert old is not None
                if old.execution != self.config.execution:
                    log.info("%s: resuming on another engine (%s); finished batches are kept", path,
                             self.config.execution.engine)
                if (old.data.normal_class, old.data.emergency_findings) != (self.config.data.normal_class,
                                                                             self.config.data.emergency_findings):
                    self.notes.append("report settings changed since the last run (normal class, emergency findings); "
                                      "the results were re-read with the new ones")
                    log.info("%s: only report settings changed; re-reading the finished stages with them", path)
            elif not self.has_finished_stage():
                self.notes.append("the run folder held an unfinished run with another configuration; "
                                  "this configuration took it over")
                log.warning("%s: no stage of the earlier configuration had finished; this configuration takes "
                            "the folder over", self.dir)
                for leftover in (self.stages, self.dir / "samples"):
                    shutil.rmtree(leftover, ignore_errors=True)
                taken_over = True
            else:
                shown = ", ".join(differing[:3]) + (f" and {len(differing) - 3} more" if len(differing) > 3 else "")
                raise RunFolderConflict(f"{self.dir}: this run folder holds finished results of another configuration "
                                        f"({shown} differ)")
        self._check_data(data_fingerprint, taken_over)
        atomic_write_text(path, text)

    def _check_data(self, fingerprint: str, taken_over: bool) -> None:
        """Resume only on the images the finished stages were computed on (``data.json``)."""
        path = self.dir / DATA_FILE
        if path.is_file() and not taken_over and self.has_finished_stage():
            try:
                recorded = load_json(path).get("fingerprint")
            except (ValueError, AttributeError):
                recorded = None
            if recorded != fingerprint:
                raise RunFolderConflict(f"{self.dir}: the images changed since this run folder was written "
                                        f"({self.config.data.source}: files added, removed, replaced or edited)")
        elif not path.is_file() and self.has_finished_stage():
            log.info("%s: no data.json (written by an older medrobust); the images cannot be checked against the "
                     "finished stages", self.dir)
        save_json(path, {"source": self.config.data.source, "fingerprint": fingerprint})

    def _stage_json(self, name: str, compute):
        path = self.stages / f"{name}.json"
        if path.is_file():
            return load_json(path)
        value = compute()
        save_json(path, value)
        return value

    # --- data and models --------------------------------------------------------------------
    def open_data(self):
        """The dataset, listed but not read (no pixels yet); ``split: test`` puts every image in the test split."""
        from medrobust.data.sources import open_dataset

        d = self.config.data
        if self.given_dataset is not None:
            self.skipped += [str(s) for s in getattr(self.given_dataset, "skipped", [])]
            return self.given_dataset.all_in_split("test") if d.evaluate_only else self.given_dataset
        # with split: test every record is relabelled below; NIH still needs fractions to build its table
        fractions = d.split if isinstance(d.split, tuple) else (DEFAULT_SPLIT if d.source.startswith("nih:") else None)
        dataset = open_dataset(d.source, size=d.size, fractions=fractions, split_seed=d.split_seed,
                               per_class=d.per_class, seed=d.phantom_seed, classes=d.classes)
        self.skipped += [str(s) for s in getattr(dataset, "skipped", [])]
        if d.evaluate_only:
            _warn_split_folders(d.source)
            return dataset.all_in_split("test")
        return dataset

    def resolve_size(self, model: nn.Module | None) -> None:
        """``data.size`` left out: the model's input size (224 if it takes any size; 64 for a
        model trained here). Set to another size than the model's: said, since the model then
        resizes every image (an upscaled image may be all one class to it)."""
        d = self.config.data
        fixed = getattr(model, "input_size", None) if model is not None else None
        side = fixed[0] if fixed and fixed[0] == fixed[1] else None
        if d.size is None:
            size = (side or 224) if model is not None else 64
            self.config = self.config.model_copy(update={"data": d.model_copy(update={"size": size})})
            log.info("data.size not set: images are read at %d px (%s)", size,
                     "the model's input size" if side else "a model that takes any size" if model is not None
                     else "the size a model trained here is built for")
        elif fixed and tuple(fixed) != (d.size, d.size):
            note = (f"images were read at {d.size} x {d.size} px (data.size) and resized by the model to its input "
                    f"size {fixed[0]} x {fixed[1]}: its accuracy here may be lower than on images of its own size")
            self.notes.append(note)
            log.warning("%s", note)

    def load_model(self, cfg: ModelConfig, name: str) -> nn.Module:
        """A user's model (``cfg.load``), on the run's device."""
        from medrobust.models.loading import load_classifier

        lc = cfg.load
        assert lc is not None
        try:
            return load_classifier(lc.path, lc.contract, device=self.device)
        except (ValueError, FileNotFoundError) as err:
            raise type(err)(f"{name}: {err}") from None

    def resolve_classes(self, dataset, model: nn.Module | None) -> None:
        """The run's classes (the model's, in its output order) and the data -> model label map."""
        d = self.config.data
        self.data_classes = list(dataset.classes)
        if model is not None:
            self.classes = list(model.classes)
            self.label_map = match_classes(self.data_classes, self.classes, d.class_map)
        else:
            if d.class_map:
                raise ValueError("data.class_map pairs the data's classes with a loaded model's classes; a model "
                                 "trained here takes the data's classes: remove class_map")
            self.classes = list(self.data_classes)
            self.label_map = np.arange(len(self.classes))
        override = d.class_map.get(d.normal_class, d.normal_class) if d.normal_class else None
        self.normal = find_normal_class(self.classes, override)
        self.emergency = find_classes(d.emergency_findings, self.classes)
        self.untested_classes = [c for j, c in enumerate(self.classes) if j not in set(self.label_map.tolist())]
        if self.untested_classes:
            log.warning("model classes %s have no images in %s: their sensitivity is not assessed",
                        self.untested_classes, d.source)

    def check_surrogate(self, name: str, surrogate: nn.Module) -> None:
        """A loaded surrogate must answer in the model's classes, in the model's order."""
        theirs = [canonical_class_name(c) for c in surrogate.classes]
        if theirs != [canonical_class_name(c) for c in self.classes]:
            raise ValueError(f"surrogate {name}: its classes {list(surrogate.classes)} are not the model's "
                             f"{self.classes} in the same order; use a surrogate with the model's classes")

    def _read(self, part, label_map: np.ndarray) -> Split:
        """One training split's images (8-bit grid) and labels as the model's class indices."""
        x, y, ids = part.load(self.config.batch_size)
        self.skipped += [str(s) for s in part.skipped]
        return quantise_8bit(x), torch.from_numpy(label_map[y.numpy()]), ids

    def check_splits(self, dataset) -> dict:
        """The dataset's splits, checked to hold what the run needs (nothing is read yet)."""
        parts = dataset.splits()
        needed = {"test"} | ({"train", "val"} if self.trains_here() else set())
        missing = needed - set(parts)
        if missing:
            raise ValueError(f"{self.config.data.source}: no {', '.join(sorted(missing))} split in the data "
                             f"(it has {', '.join(parts) or 'none'}); add images or change data.split")
        return parts

    def trains_here(self) -> bool:
        """Whether a model or surrogate is trained on the run's own train/val splits."""
        return any(m.train is not None and m.train.data is None for m in [self.config.model, *self.config.surrogates])

    def load_training_data(self, parts: dict) -> dict[str, Split]:
        """The train and val splits, read whole (training needs them; only when a model is trained
        here and not yet saved). The test split is never read whole: it is streamed."""
        missing = [m for folder, m in [("model", self.config.model),
                                       *((f"surrogates/{s.name}", s) for s in self.config.surrogates)]
                   if m.train is not None and m.train.data is None and not self._has_checkpoint(folder)]
        if not missing:
            return {}
        out = {}
        with self.progress.stage("data", sum(len(parts[k]) for k in ("train", "val"))) as bar:
            for name in ("train", "val"):
                out[name] = self._read(parts[name], self.label_map)
                bar.advance(len(parts[name]))
        return out

    def _has_checkpoint(self, folder: str) -> bool:
        from medrobust.models.checkpoint import is_checkpoint

        return is_checkpoint(self.dir / folder)

    def read_images(self, part, indices) -> tuple[np.ndarray, np.ndarray, list[str], list[int]]:
        """Items ``indices`` of a split, read now: 8-bit images (B, H, W), labels as the model's
        class indices, ids and the indices that were readable (the rest are skipped, and logged)."""
        x, y, ids, kept = part.read_batch(indices)
        self._note_skipped(part)
        return to_uint8(quantise_8bit(x)), self.label_map[y.numpy()], ids, kept

    def training_data(self, t, data: dict[str, Split], who: str) -> tuple[Split, Split]:
        """(train, val) for a model to train: the run's splits, or ``train.data``'s own."""
        if t.data is None:
            return data["train"], data["val"]
        from medrobust.data.sources import open_dataset

        own = open_dataset(t.data, size=self.config.data.size, fractions=TRAIN_DATA_SPLIT,
                           split_seed=self.config.data.split_seed, per_class=self.config.data.per_class,
                           seed=self.config.data.phantom_seed + 1)
        label_map = match_classes(own.classes, self.classes, self.config.data.class_map, data_what=f"{who} train.data")
        parts = own.splits()
        if not {"train", "val"} <= set(parts):
            raise ValueError(f"{t.data}: too few images to split into training and validation for {who}")
        return self._read(parts["train"], label_map), self._read(parts["val"], label_map)

    def model(self, folder: str, cfg: ModelConfig, data, name: str) -> nn.Module:
        from medrobust.evaluation.zoo_training import save_trained_model, train_zoo_model
        from medrobust.models.augment import NO_AUGMENTATION, AugmentConfig
        from medrobust.models.checkpoint import is_checkpoint, load_checkpoint
        from medrobust.models.training import TrainConfig

        target = self.dir / folder
        if cfg.load is not None:
            return self.load_model(cfg, name)
        if is_checkpoint(target):
            log.info("%s: reusing the trained model in %s", name, target)
            return load_checkpoint(target, self.device)
        t = cfg.train
        assert t is not None
        train, val = self.training_data(t, data, name)
        train_cfg = TrainConfig(epochs=t.epochs, batch_size=t.batch_size, lr=t.lr, trainable=t.trainable,
                                two_phase=t.two_phase, seed=self.config.seed, lr_schedule=t.lr_schedule,
                                warmup_epochs=t.warmup_epochs, augment=AugmentConfig() if t.augment else NO_AUGMENTATION)
        start = time.perf_counter()
        model, result = train_zoo_model(t.arch, self.classes, self.config.data.size, train[:2], val[:2], train_cfg,
                                        weights=t.weights, adversarial=t.adversarial, device=self.device,
                                        progress=self.progress, name=name, folder=target)
        self.timings[f"train {name}"] = (time.perf_counter() - start) / max(1, len(train[0]))
        save_trained_model(model, target, train_cfg, result, weights=t.weights, adversarial=t.adversarial,
                           data=t.data or self.config.data.source)
        return model.to(self.device).eval()

    # --- the run ----------------------------------------------------------------------------
    def run(self) -> RunMetrics:
        start = time.perf_counter()
        cfg = self.config
        cfg.check_components()
        loaded = self.given_model.to(self.device).eval() if self.given_model is not None else (
            self.load_model(cfg.model, "model") if cfg.model.load is not None else None)
        self.resolve_size(loaded)
        dataset = self.open_data()
        self.resolve_classes(dataset, loaded)
        loaded_surrogates = {s.name: self.load_model(s, f"surrogate {s.name}") for s in cfg.surrogates
                             if s.load is not None}
        for name, sur in loaded_surrogates.items():
            self.check_surrogate(name, sur)
        from medrobust.data.fingerprint import dataset_fingerprint

        self.prepare(dataset_fingerprint(dataset))
        with run_log(self.dir):
            for line in self.skipped:  # found while listing, before the log was open
                per_image_log.warning("skipping %s", line)
            metrics = self._run(start, dataset, loaded, loaded_surrogates)
        return metrics

    def _run(self, start: float, dataset, loaded, loaded_surrogates) -> RunMetrics:
        cfg = self.config
        parts = self.check_splits(dataset)
        data = self.load_training_data(parts)
        model = loaded if loaded is not None else self.model("model", cfg.model, data, "model")
        surrogates = {s.name: loaded_surrogates.get(s.name) or self.model(f"surrogates/{s.name}", s, data, s.name)
                      for s in cfg.surrogates}
        del data  # training is done: only the test split is used from here on, batch by batch
        self.engine = self.make_engine(model, surrogates)
        try:
            return self._evaluate(start, parts, model, surrogates)
        finally:
            self.engine.close()

    def make_engine(self, model: nn.Module, surrogates: dict[str, nn.Module]):
        """The configured engine; for Ray, every model is shipped to the workers (the user's file
        or the run's checkpoint, or the in-memory model)."""
        from medrobust.evaluation.engines import make_engine
        from medrobust.evaluation.model_shipping import ModelSource
        from medrobust.evaluation.units import Workbench

        models = {"model": model, **surrogates}
        bench = Workbench(models, self.device)
        if self.config.execution.engine == "local":
            return make_engine(self.config.execution, bench, None, str(self.device))
        sources = []
        for name, cfg, folder in [("model", self.config.model, "model"),
                                  *((s.name, s, f"surrogates/{s.name}") for s in self.config.surrogates)]:
            if cfg.load is not None and Path(cfg.load.path).exists():  # the user's file: shipped as bytes
                load = cfg.load.model_dump(exclude={"path"})
                sources.append(ModelSource.from_path(name, cfg.load.path, load))
            elif name == "model" and self.given_model is not None:  # held in memory only
                sources.append(ModelSource.from_module(name, models[name]))
            else:  # trained in this run
                sources.append(ModelSource.from_path(name, self.dir / folder))
        return make_engine(self.config.execution, bench, sources, self.config.device)

    def _note_skipped(self, dataset) -> None:
        """Record the files ``dataset`` could not read (each once)."""
        self.skipped += [str(s) for s in dataset.skipped if str(s) not in self.skipped]

    def _baseline(self, test) -> dict[str, np.ndarray]:
        """The model's decisions on every test image, streamed batch by batch (stage ``baseline``):
        per image its decision, label, id and index in the split; unreadable files are skipped."""
        from medrobust.evaluation.batches import run_stage
        from medrobust.evaluation.units import PredictUnit

        read: dict[int, dict[str, np.ndarray]] = {}

        def unit(b: int, sl: slice):
            images, labels, ids, kept = self.read_images(test, range(sl.start, sl.stop))
            read[b] = {"label": labels.astype(np.int64), "ids": np.array(ids, dtype=str),
                       "position": np.array(kept, dtype=np.int64)}
            return PredictUnit(seed=self.config.seed, start=sl.start, images=images)

        seen = {"answered": 0, "broken": 0}

        def finish(b: int, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            broken = int((arrays["pred"] == NO_ANSWER).sum())
            seen["broken"] += broken
            seen["answered"] += len(arrays["pred"]) - broken
            if seen["answered"] + seen["broken"] >= min(len(test), NON_FINITE_EARLY_STOP):
                self._check_finite_outputs(seen["broken"], seen["answered"] + seen["broken"])
            return {**arrays, **read.pop(b)}

        with self.progress.stage("baseline", len(test)) as bar:
            stage = run_stage(self.engine, self.stages / "baseline", len(test), self.config.batch_size, unit,
                              bar.advance, frozenset({"pred", "label", "ids", "position"}), finish)
        summary = stage.summary
        if not len(summary.get("pred", [])):
            raise ValueError(f"{self.config.data.source}: no readable test images among {len(test)} "
                             f"({len(self.skipped)} skipped)")
        listed = set(range(len(test)))
        for i in sorted(listed - set(summary["position"].tolist())):  # skipped in an earlier, resumed run
            record = test.records[i]
            line = f"{record.path or record.id}: unreadable (skipped in an earlier part of this run)"
            if not any(str(record.path or record.id) in s for s in self.skipped):
                self.skipped.append(line)
        broken = summary["pred"] == NO_ANSWER
        self._check_finite_outputs(int(broken.sum()), len(broken))
        for name in summary["ids"][broken]:
            self.skipped.append(f"{name}: not tested: the model's output for this image is not finite (NaN or infinite)")
        return {k: v[~broken] if k in ("pred", "label", "ids", "position") else v for k, v in summary.items()}

    def _check_finite_outputs(self, broken: int, seen: int) -> None:
        """Stop the run when the model's output is not finite for most images: it cannot be evaluated."""
        if broken * 2 > seen:
            load = self.config.model.load
            who = load.path if load is not None else "the model"
            raise ValueError(f"{who}: its output is not a finite number (NaN or infinite) for {broken} of the first "
                             f"{seen} test images, so it cannot be evaluated; check the model on a known image "
                             "(its weights, its input size and intensity)")

    def _inputs(self, test, positions: np.ndarray):
        """The attack subset's clean images, read once from the data into stage ``inputs``
        (8-bit, with labels and ids); every later stage reads them from there batch by batch."""
        from medrobust.evaluation.batches import DRIVER, run_stage

        def unit(b: int, sl: slice) -> dict[str, np.ndarray]:
            images, labels, ids, kept = self.read_images(test, positions[sl].tolist())
            if len(kept) != sl.stop - sl.start:
                raise ValueError(f"{self.config.data.source}: a test image became unreadable during the run; "
                                 "run again to resume")
            return {"clean": images, "labels": labels.astype(np.int64), "ids": np.array(ids, dtype=str)}

        return run_stage(DRIVER, self.stages / "inputs", len(positions), self.config.batch_size, unit,
                         required=frozenset({"clean", "labels", "ids"}))

    def _evaluate(self, start: float, parts: dict, model, surrogates) -> RunMetrics:
        from medrobust.evaluation.classification import classification_report

        cfg = self.config
        test = parts["test"]
        t0 = time.perf_counter()
        baseline = self._baseline(test)
        y_test, base_pred = baseline["label"], baseline["pred"]
        self.timings["baseline"] = (time.perf_counter() - t0) / max(1, len(y_test))
        baseline_report = classification_report(y_test, base_pred, self.classes)

        idx = stratified_subset(y_test, cfg.attack_images)
        inputs = self._inputs(test, baseline["position"][idx])
        y_np = inputs.summary["labels"]
        clean_pred = base_pred[idx]

        white, transferred, outcomes, sweeps = self._attacks(inputs, surrogates, y_np, clean_pred)
        transfer = self._transfer(white, transferred, surrogates, inputs, y_np, clean_pred)
        defenses = self._defenses(inputs, y_np, clean_pred, white, bool(getattr(model, "differentiable", True)))
        detectors = self._detection(model, parts, inputs, white)
        self._samples(model, inputs, y_np, white)
        self._per_image_table(inputs, clean_pred, [*white, *self.sweep_runs, *transferred],
                              [d.name for d in detectors], [r.key for r in white])

        skipped = sorted(set(self.skipped))
        atomic_write_text(self.dir / SKIPPED_FILE, "".join(f"{line}\n" for line in skipped))
        d = cfg.data
        counts = {k: len(v) for k, v in parts.items() if k != "test"}
        metrics = RunMetrics(
            name=cfg.name, medrobust_version=__version__,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            config=cfg.model_dump(mode="json"),
            data={"source": d.source, "size": d.size, "classes": self.classes, "data_classes": self.data_classes,
                  "class_map": {dc: self.classes[j] for dc, j in zip(self.data_classes, self.label_map.tolist())},
                  "classes_without_images": self.untested_classes,
                  "split": "test" if d.evaluate_only else list(d.split),
                  "n": {**counts, "test": int(len(y_test))}, "tested": int(len(y_test)),
                  "attack_images": int(len(y_np)),
                  "normal_class": self.classes[self.normal] if self.normal is not None else None,
                  "dangerous_flips": ("assessed" if self.normal is not None else NOT_ASSESSED_NO_NORMAL),
                  "emergency_findings": [self.classes[i] for i in self.emergency],
                  "skipped": skipped, "notes": self.notes},
            model=self._model_summary(model),
            baseline=baseline_report, attacks=outcomes, eps_sweep=sweeps, transfer=transfer,
            defenses=defenses, detectors=detectors,
            robustness_score=RobustnessScore(value=None, definition=DEFINITIONS["overall"]),
            seconds_per_image=self.timings, seconds_total=time.perf_counter() - start,
        )
        scorecard = build_scorecard(metrics)
        metrics.robustness_score = RobustnessScore(
            value=None if scorecard.overall is None else round(scorecard.overall, 1),
            definition=f"{DEFINITIONS['overall']} {DEFINITIONS['score']}")
        write_metrics(metrics, self.dir)
        write_scorecard(scorecard, self.dir)
        return metrics

    def _model_summary(self, model: nn.Module) -> dict:
        from medrobust.models.classifier import count_parameters

        meta_path = self.dir / "model" / "model.json"
        meta = load_json(meta_path) if meta_path.is_file() else {}
        load = self.config.model.load
        source = Path(load.path) if load is not None else self.dir / "model"
        return {"file": str(source) if load is not None else "model/ (trained in this run)",
                "sha256": model_file_sha256(source), "differentiable": bool(getattr(model, "differentiable", True)),
                "arch": getattr(model, "arch", None), "parameters": count_parameters(model),
                "contract": model.contract.to_json() if hasattr(model, "contract") else {},
                "training": meta.get("training"), "metrics": meta.get("metrics"),
                "surrogates": [s.name for s in self.config.surrogates]}

    def _attack(self, key: str, name: str, params: dict, inputs, label: str, crafter: str = "model",
                allow_large_eps: bool = False):
        from medrobust.evaluation.units import ModelRef

        cfg = self.config
        with self.progress.stage(label, len(inputs.summary["labels"])) as bar:
            return run_attack_stage(self.engine, self.stages / "attacks", key, name, params, ModelRef(crafter),
                                    ModelRef("model"), inputs, cfg.batch_size, cfg.seed, bar.advance, allow_large_eps,
                                    source="white-box" if crafter == "model" else crafter)

    def _attacks(self, inputs, surrogates, y_np, clean_pred):
        cfg = self.config
        white: list[AttackRun] = []
        transferred: list[AttackRun] = []
        outcomes: list[AttackOutcome] = []
        sweeps: dict[str, list] = {}
        self.sweep_runs: list[AttackRun] = []  # the sweeps' other budgets (the defenses score their images too)
        n = len(y_np)
        for acfg in cfg.attacks:
            params = {**acfg.params, "seed": acfg.params.get("seed", cfg.seed)}
            eps = attack_eps(acfg.name, params)
            key = f"{acfg.name}@{eps_label(eps)}" if eps else acfg.name
            run = None
            if acfg.white_box:
                t0 = time.perf_counter()
                run = self._attack(key, acfg.name, params, inputs, f"{key} white-box",
                                   allow_large_eps=acfg.allow_large_eps)
                self.timings[f"attack {key}"] = (time.perf_counter() - t0) / n
                white.append(run)
                outcomes.append(attack_outcome(run, y_np, clean_pred, self.classes, self.normal, self.emergency))
            if acfg.transfer:
                for name in surrogates:
                    tkey = f"{key} from {name}"
                    trun = self._attack(tkey, acfg.name, params, inputs, tkey, crafter=name,
                                        allow_large_eps=acfg.allow_large_eps)
                    transferred.append(trun)
                    outcomes.append(attack_outcome(trun, y_np, clean_pred, self.classes, self.normal, self.emergency))
            if acfg.eps_sweep and run is not None:
                runs = []
                for e in acfg.eps_sweep:
                    skey = f"{acfg.name}@{eps_label(e)}"
                    if abs(e - eps) < 1e-9:
                        runs.append(run)
                        continue
                    runs.append(self._attack(skey, acfg.name, {**params, "eps": e}, inputs, f"{skey} sweep",
                                             allow_large_eps=acfg.allow_large_eps))
                    self.sweep_runs.append(runs[-1])
                sweeps[acfg.name] = sweep_points(runs, y_np)
        return white, transferred, outcomes, sweeps

    def _transfer(self, white, transferred, surrogates, inputs, y_np, clean_pred):
        """The transfer matrix of the first white-box attack: its images crafted on the model and
        on each surrogate, each scored on every model (surrogates' decisions: resumable stages)."""
        from medrobust.evaluation.units import ModelRef

        if not surrogates or not white:
            return None
        cfg = self.config
        first = white[0]
        runs = {"model": first, **{r.source: r for r in transferred if r.name == first.name and r.eps == first.eps}}
        targets = ["model", *surrogates]
        n = len(y_np)
        clean = {"model": clean_pred}
        adv = {(s, "model"): run.pred for s, run in runs.items()}
        folder = self.stages / "transfer" / array_key(first.key)
        for t in surrogates:
            clean[t] = predict_stage(self.engine, folder / t / "clean", ModelRef(t), inputs, "clean", cfg.batch_size,
                                     cfg.seed, n).summary["pred"]
            for s, run in runs.items():
                adv[(s, t)] = predict_stage(self.engine, folder / t / s, ModelRef(t), run.stage, "x_adv",
                                            cfg.batch_size, cfg.seed, n).summary["pred"]
        return transfer_matrix(first.key, list(runs), targets, clean, adv, y_np)

    def _defenses(self, inputs, y_np, clean_pred, white, differentiable: bool):
        from medrobust.evaluation.stage_adaptive import AdaptiveSettings
        from medrobust.evaluation.stage_defenses import defense_outcome

        cfg = self.config
        if not cfg.defenses or not cfg.adaptive.enabled:
            return []
        eps = white[0].eps if white else 8 / 255
        params = {**cfg.adaptive.params, "seed": cfg.seed}
        adaptive_key = f"{cfg.adaptive.attack}@{eps_label(eps)}"
        plain = next((r for r in white if r.key == adaptive_key), None)
        if plain is None:
            plain = self._attack(adaptive_key, cfg.adaptive.attack, {**params, "eps": eps}, inputs,
                                 f"{adaptive_key} (undefended reference)", allow_large_eps=True)
        adaptive = cfg.adaptive
        queries = int(adaptive.params.get("queries", adaptive.square_queries)) if adaptive.attack == "square" \
            else adaptive.square_queries
        settings = AdaptiveSettings(
            attack=adaptive.attack, params=dict(adaptive.params), eps=eps, portfolio=tuple(adaptive.portfolio),
            restarts=adaptive.restarts, max_steps=adaptive.max_steps, eot_samples=adaptive.eot_samples,
            max_eot_samples=adaptive.max_eot_samples, square_queries=queries, masking_eps=adaptive.masking_eps,
            differentiable_model=differentiable, eps_sweep=tuple(adaptive.eps_sweep))
        outcomes: list[DefenseOutcome] = []
        for spec in cfg.defenses:
            t0 = time.perf_counter()
            outcome = defense_outcome(self.engine, spec, y_np, clean_pred, inputs, white + self.sweep_runs, settings,
                                      plain, self.stages / "defenses", cfg.batch_size, cfg.seed, self.classes,
                                      self.progress)  # a progress stage per attack run: counts never overflow
            self.timings[f"defense {spec} (incl. adaptive attack)"] = (time.perf_counter() - t0) / len(y_np)
            outcomes.append(outcome)
        return outcomes

    def _detection(self, model, parts, inputs, white) -> list[DetectorOutcome]:
        from medrobust.evaluation.stage_detection import detection_stage, detector_outcome

        cfg = self.config.detectors
        if not white or not (cfg.runs_reference or cfg.runs_squeeze):
            return []
        out = []
        bs, seed = self.config.batch_size, self.config.seed
        if cfg.runs_reference:
            assert cfg.reference is not None

            def compute_reference():
                from medrobust.detection.reference import ReferenceDetector

                det = ReferenceDetector(cfg.reference.ssim_threshold, cfg.reference.confidence_drop,
                                        cfg.reference.mean_abs_threshold)
                with self.progress.stage("detector reference", len(inputs.summary["ids"])) as bar:
                    stage = detection_stage(self.engine, self.stages / "detection" / "reference", det, True, inputs,
                                            white, bs, seed, advance=bar.advance)
                return detector_outcome("reference", det, stage, white).model_dump()

            out.append(DetectorOutcome.model_validate(self._stage_json("detection-reference", compute_reference)))
        if cfg.runs_squeeze:
            assert cfg.squeeze is not None

            def compute_squeeze():
                from medrobust.detection.squeeze import SqueezeDetector
                from medrobust.evaluation.stage_detection import (
                    clean_scores_stage,
                    cross_fit_folds,
                    fold_thresholds,
                )

                det = SqueezeDetector(cfg.squeeze.squeezers, target_fpr=cfg.squeeze.target_fpr)
                n_cal = cfg.squeeze.calibration_images
                thresholds, per_fold = None, None
                n = len(inputs.summary["ids"])
                if cfg.squeeze.calibration or "val" in parts:
                    from medrobust.data.sources import clean_image_folder

                    source = (clean_image_folder(cfg.squeeze.calibration, size=self.config.data.size)
                              if cfg.squeeze.calibration else parts["val"])
                    clean = self._first_readable(source, n_cal)
                    det.fit(model, clean)
                    note = (f"{len(clean)} clean images in {cfg.squeeze.calibration} (none of them tested)"
                            if cfg.squeeze.calibration else f"{len(clean)} clean validation images (none of them tested)")
                else:
                    scores = clean_scores_stage(self.engine, self.stages / "detection" / "squeeze-clean-scores", det,
                                                inputs, bs, seed)
                    folds = cross_fit_folds(n, cfg.squeeze.folds, seed)
                    thresholds, per_fold = fold_thresholds(
                        scores, folds, lambda s: float(det.calibrate(s, quiet=True).threshold))
                    note = (f"{len(folds)}-fold cross-fitting over the {n} clean test images: each image is judged "
                            "with a threshold calibrated on the other folds, never on itself")
                    log.info("squeeze detector: no images besides the test set, so %s", note)
                    if n - max(map(len, folds)) < 1.0 / cfg.squeeze.target_fpr:
                        log.warning("squeeze detector: about %d clean images per calibration are few for a %.1f%% "
                                    "false-alarm target; each threshold is the largest clean score of its folds",
                                    n - max(map(len, folds)), 100 * cfg.squeeze.target_fpr)
                with self.progress.stage("detector squeeze", n) as bar:
                    stage = detection_stage(self.engine, self.stages / "detection" / "squeeze", det, False, inputs,
                                            white, bs, seed, thresholds, bar.advance)
                return detector_outcome("squeeze", det, stage, white, per_fold, note).model_dump()

            out.append(DetectorOutcome.model_validate(self._stage_json("detection-squeeze", compute_squeeze)))
        return out

    def _per_image_table(self, inputs, clean_pred: np.ndarray, runs: list[AttackRun], detectors: list[str],
                         judged: list[str]) -> None:
        """``per_image.csv`` from the stored stages (:mod:`medrobust.evaluation.per_image_table`);
        ``judged``: the attack keys the detectors judged, in their stage's order."""
        from medrobust.detection.benign import BENIGN_CHANGES
        from medrobust.evaluation.batches import finished_summary
        from medrobust.evaluation.per_image_table import PER_IMAGE_FILE, AttackColumns, per_image_csv

        flags = {name: finished_summary(self.stages / "detection" / name) for name in detectors}
        columns = []
        for run in runs:
            defended = {spec: summary["pred"] for spec in self.config.defenses if (summary := finished_summary(
                self.stages / "defenses" / array_key(spec) / array_key(run.key))) is not None}
            flagged = {}
            if run.key in judged:
                i = 1 + len(BENIGN_CHANGES) + judged.index(run.key)
                flagged = {name: f[f"s{i}__flags"] for name, f in flags.items() if f is not None and f"s{i}__flags" in f}
            columns.append(AttackColumns(key=run.key, source=run.source, eps=run.eps, pred=run.pred, defended=defended,
                                         flagged=flagged))
        text = per_image_csv(inputs.summary["ids"], inputs.summary["labels"], clean_pred, self.classes, columns,
                             list(self.config.defenses), detectors)
        atomic_write_text(self.dir / PER_IMAGE_FILE, text)

    def _first_readable(self, dataset, limit: int) -> torch.Tensor:
        """Up to ``limit`` readable images of ``dataset`` (8-bit grid), read batch by batch."""
        out: list[torch.Tensor] = []
        got = 0
        for start in range(0, len(dataset), self.config.batch_size):
            if got >= limit:
                break
            x, _, _, _ = dataset.read_batch(range(start, min(len(dataset), start + self.config.batch_size)))
            out.append(x[: limit - got])
            got += len(out[-1])
        self._note_skipped(dataset)
        if not got:
            raise ValueError(f"no readable images to calibrate the squeeze detector on ({len(dataset)} listed)")
        return quantise_8bit(torch.cat(out))

    def _samples(self, model, inputs, y, white) -> None:
        from medrobust.defenses.registry import build_defense
        from medrobust.evaluation.gradcam import gradcam

        path = self.dir / "samples" / "examples.npz"
        if path.is_file():
            return
        bs = self.config.batch_size
        k = min(self.config.sample_images, len(y))
        pick = stratified_subset(y, k)
        x = from_uint8(inputs.take(pick, bs, "clean"))
        ids = inputs.summary["ids"]
        arrays: dict[str, np.ndarray] = {
            "ids": np.array([str(ids[i]) for i in pick]), "labels": y[pick], "classes": np.array(self.classes),
            "original": x[:, 0].numpy(), "pred__original": model.predict(x.to(self.device)).cpu().numpy(),
        }
        cam = gradcam(model, x.to(self.device))
        if cam is not None:
            arrays["cam__original"] = cam
        adversarial = {}
        for run in white:
            a = array_key(run.key)
            adversarial[run.key] = from_uint8(run.stage.take(pick, bs))
            arrays[f"adv__{a}"] = adversarial[run.key][:, 0].numpy()
            arrays[f"pred__adv__{a}"] = run.pred[pick]
            cam = gradcam(model, adversarial[run.key].to(self.device))
            if cam is not None:
                arrays[f"cam__adv__{a}"] = cam
        torch.manual_seed(self.config.seed)
        for spec in self.config.defenses:
            defense = build_defense(spec)
            for which, images in {"clean": x, **adversarial}.items():
                with torch.no_grad():
                    defended = defense(images.to(self.device)).cpu()
                key = f"def__{array_key(spec)}__{array_key(which)}"
                arrays[key] = defended[:, 0].numpy()
                arrays[f"pred__{key}"] = model.predict(defended.to(self.device)).cpu().numpy()
        save_samples(self.dir, arrays)



def _warn_split_folders(source: str) -> None:
    """With ``split: test`` every image is tested: say so when a folder also has train/ or val/ folders."""
    root = Path(source)
    if not root.is_dir():
        return
    names = {p.name.lower() for p in root.iterdir() if p.is_dir()}
    if names & {"train", "val", "valid", "validation"}:
        log.warning("%s has train/val folders, and with data.split: test every image in them is tested too; "
                    "point data.source at %s to test only the test folder", root, root / "test")
