"""``mr.guard``: a defense and calibrated detectors in front of a model, answering per image
with a decision (accept, abstain or warn) that fails closed.

The pipeline is the one the evaluation measures (DESIGN.md, "Guarded inference"):

* each detector judges the image **as received**, before the defense, on the bare model, as
  the run's detection stage does (:mod:`medrobust.evaluation.stages.detection`): a detector that
  needs a threshold is calibrated on clean images to a target false positive rate, and no
  detector may need the original image (in production there is none);
* the label is the model's on the defended image, :class:`~medrobust.defenses.defended.DefendedClassifier`
  with its gradient routes, so :class:`Guard` is also a differentiable module that medrobust's
  own attacks can attack (Athalye, Carlini & Wagner 2018);
* any failure (an unreadable file, a non-finite value, an exception from the model, the
  defense or a detector) is an abstention with its reason, never the raw label
  (:mod:`medrobust.layer.guard_answers`).

Limitation: the detectors' false positive rate is the calibration images' (a different
scanner or population moves it), and an attacker who knows the detectors can aim below their
thresholds (Carlini & Wagner 2017, "Adversarial examples are not easily detected"); what the
guard withstands is what the run's guard-aware attack measured, not more.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medrobust._version import __version__
from medrobust.data.image_size import read_side
from medrobust.detection.guard_decision import ON_FLAG, check_on_flag, decisions, detectors_fired, flagged
from medrobust.detection.squeeze import SqueezeDetector
from medrobust.layer.detect import with_model_channels
from medrobust.layer.guard_answers import GuardAnswer, GuardResult, failed_answer
from medrobust.layer.guard_detectors import calibrate_guard_detectors, guard_detectors
from medrobust.layer.guard_inputs import guard_inputs
from medrobust.layer.guard_steps import Screen, StepFailed, step, timed, untrusted_values
from medrobust.layer.models import load_model
from medrobust.models.contract import ModelContract

log = logging.getLogger(__name__)

__all__ = ["ON_FLAG", "Guard", "guard"]


VOLUME_MODEL_GOT_IMAGE = ("the model takes volumes and this is a 2-D image: send a CT series as one volume (its "
                          "folder, or a zip of it, or a NIfTI file), not its slices one by one")


class Guard(nn.Module):
    """A model behind a defense and calibrated detectors (module docstring); built by :func:`guard`.

    ``guard(x)`` is the defended model's logits (``model(defense(x))`` with the defense's
    gradient routes), so attacks run on it as on any classifier; :meth:`scores` gives each
    detector's scores and :meth:`predict` the decisions.

    Args:
        model: the :class:`~medrobust.models.classifier.Classifier`.
        defense: the :class:`~medrobust.defenses.base.Defense` (or its spec), or None for none.
        detectors: name -> a reference-free Detector, calibrated.
        on_flag: ``"abstain"`` or ``"warn"``.
        calibration: name -> ``{"n_images", "source", "skipped"}`` of what each detector was
            calibrated on (empty for a threshold given in its spec). Default None.
        model_file: the file the model was read from. Default None: held in memory.
        batch_size: images per batch in :meth:`predict`. Default 32.

    Shape:
        - x: (B, C, H, W) float images in [0, 1].
        - forward: logits (B, K) of the defended images (binary: (B, 1)).
        - scores: name -> (B,) float64 numpy.
    """

    def __init__(self, model: Any, defense: Any, detectors: dict[str, Any], on_flag: str,
                 calibration: dict[str, dict[str, Any]] | None = None, model_file: str | None = None,
                 batch_size: int = 32) -> None:
        from medrobust.defenses.defended import DefendedClassifier

        super().__init__()
        self.model = model
        self.defended = DefendedClassifier(defense, model) if defense is not None else model
        self.defense_spec = self.defended.defense.spec() if defense is not None else None
        self.detectors = dict(detectors)
        # a squeezer that is the defense itself (the same spec: both deterministic) shares its copy
        self._shared = {name: frozenset(j for j, q in enumerate(det.squeezers)
                                        if self.defense_spec and getattr(q, "spec", None) and q.spec() == self.defense_spec)
                        for name, det in self.detectors.items() if isinstance(det, SqueezeDetector)}
        self.on_flag = on_flag
        self.calibration = dict(calibration or {})
        self.model_file = model_file
        self.run_figures: dict[str, Any] | None = None  # what the run it came from measured (guard.from_run)
        self.batch_size = int(batch_size)

    # --- what attacks read of a classifier
    @property
    def classes(self) -> list[str]:
        return list(self.model.classes)

    @property
    def output_kind(self) -> Any:
        return self.model.output_kind

    @property
    def contract(self) -> Any:
        return self.model.contract

    @property
    def input_size(self) -> tuple[int, int] | None:
        return self.model.input_size

    @property
    def input_channels(self) -> int:
        return self.model.input_channels

    @property
    def differentiable(self) -> bool:
        return bool(getattr(self.model, "differentiable", True))

    @property
    def guarded_classifier(self) -> Any:
        """The defended model as a :class:`~medrobust.models.classifier.Classifier`: what
        ``mr.load_model`` (and so ``mr.attack``, ``mr.predict``, ``mr.evaluate``) takes a guard for;
        the detectors judge, they do not classify."""
        return self.defended

    @property
    def eot_samples(self) -> int:
        return int(getattr(self.defended, "eot_samples", 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The defended model's logits: ``model(defense(x))``, differentiable through the defense's
        gradient routes (exact, smooth or BPDA).

        Args:
            x: (B, C, H, W) float images in [0, 1], on the model's device.

        Returns:
            (B, K) logits ((B, 1) binary).
        """
        return self.defended(x)

    def scores(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        """Each detector's suspicion scores on the images as received, on the bare model.

        Args:
            x: (B, C, H, W) float images in [0, 1].

        Returns:
            detector -> (B,) float64 numpy scores (higher = more suspicious).
        """
        x = with_model_channels(x, self.model)
        return {name: np.asarray(det.score(self.model, x), dtype=np.float64) for name, det in self.detectors.items()}

    def describe(self) -> dict[str, Any]:
        """What this guard runs, JSON-ready.

        Returns:
            ``{"model": {"file", "sha256"}, "classes", "defense", "gradient", "detectors": [{"name",
            "threshold", "target_fpr", "calibration": {"n_images", "source", ...}}], "on_flag",
            "medrobust", "evaluated"}``; ``evaluated``: the figures of the run it came from
            (:func:`~medrobust.layer.guard_definition.run_figures`), None for a guard built here.
        """
        from medrobust.evaluation.run_dir import model_file_sha256

        sha = model_file_sha256(self.model_file) if self.model_file else None
        detectors = []
        for name, det in self.detectors.items():
            threshold = getattr(det, "threshold", None)
            detectors.append({"name": name, "settings": _json_ready(det.describe()),
                              "threshold": None if threshold is None else float(threshold),
                              "target_fpr": (self.calibration.get(name) or {}).get("target_fpr"),
                              "calibration": self.calibration.get(name)})
        return {"model": {"file": self.model_file, "sha256": sha}, "classes": self.classes,
                "output_kind": str(getattr(self.output_kind, "value", self.output_kind)),
                "defense": self.defense_spec, "gradient": getattr(self.defended, "gradient", None),
                "detectors": detectors, "on_flag": self.on_flag, "medrobust": __version__,
                "evaluated": self.run_figures}

    def predict(self, images: Any, batch_size: int | None = None, *, timings: dict[str, float] | None = None,
                screen: Screen | None = None) -> GuardResult:
        """The guard's decision on each image (see :mod:`medrobust.layer.guard_answers`).

        Args:
            images: files, folders (plain images; class folders ignored), DICOM, a data source,
                :class:`~medrobust.layer.images.Images`, or arrays / tensors (N, C, H, W) in
                [0, 1]; files are resized to the model's input size as ``mr.predict`` does.
            batch_size: images per batch. Default None: the guard's.
            timings: a dict the call adds each step's seconds to (:data:`~medrobust.layer.guard_steps.STEPS`), for a server's
                latency figures. Default None: not timed.
            screen: a :data:`Screen` run on each batch as read; an image it gives a reason for is
                flagged as a detector would flag it (``on_flag`` decides; the reason is added).
                Default None.

        Returns:
            The :class:`GuardResult`: one answer per image given, in order, unreadable and bad
            images included (each an abstention with its reason).

        Shape:
            - Arrays and tensors in: (N, C, H, W) float in [0, 1].

        Raises:
            ValueError: a source the readers refuse as a whole (no such folder, a tensor that is
                not a batch of images).
        """
        started = time.perf_counter()
        fixed = read_side(self.input_size)
        with timed(timings, "read"):
            inputs = guard_inputs(images, fixed)
        answers: dict[str, GuardAnswer] = dict(inputs.early)
        if inputs.images is not None:
            batches = inputs.images.batches(batch_size or self.batch_size)
            while True:
                with timed(timings, "read"):
                    batch = next(batches, None)
                if batch is None:
                    break
                x, ids = batch[0], list(batch[2])
                try:
                    reasons = screen(x, ids, inputs.images.grid) if screen is not None else [""] * len(ids)
                except Exception as caught:  # fail closed: a screen that cannot judge the batch answers nothing
                    failed = StepFailed("the query screen", caught)
                    log.warning("guard: %s", failed)
                    answers.update({i: failed_answer(i, str(failed), thresholds=self._thresholds()) for i in ids})
                    continue
                for answer, reason in zip(self._answer_batch(x, ids, timings), reasons):
                    answers[answer.id] = self._screened(answer, reason) if reason else answer
        for answer in inputs.unread(set(answers)):
            answers[answer.id] = answer
        for answer in answers.values():  # every answer names every detector (None: not scored)
            answer.thresholds = answer.thresholds or self._thresholds()
            answer.scores = {name: answer.scores.get(name) for name in self.detectors}
        if timings is not None:
            timings["total"] = timings.get("total", 0.0) + time.perf_counter() - started
        return GuardResult([answers[i] for i in inputs.order if i in answers])

    def _screened(self, answer: GuardAnswer, reason: str) -> GuardAnswer:
        """``answer`` with a screen's flag: ``on_flag`` decides (an abstention drops the labels), the
        reason is added; an abstention for a failed step keeps its own reason first."""
        answer.reason = f"{answer.reason}; {reason}" if answer.reason else reason
        if answer.decision == "abstain" and not answer.flagged:
            return answer  # a failed step: no label to withhold
        answer.flagged = True
        answer.decision = self.on_flag
        if self.on_flag == "abstain":
            answer.label = answer.undefended_label = answer.probabilities = None
        return answer

    # --- the pipeline
    def _answer_batch(self, x: torch.Tensor, ids: list[str], timings: dict[str, float] | None = None
                      ) -> list[GuardAnswer]:
        """The batch's answers; when a step raises, the batch again image by image, so only the
        images it fails on abstain."""
        try:
            return self._answer(x, ids, timings)
        except Exception as caught:  # fail closed: even an error of the guard's own is an abstention
            err = caught if isinstance(caught, StepFailed) else StepFailed("the guard", caught)
            if len(ids) == 1:
                log.warning("guard: %s: %s", ids[0], err)
                return [failed_answer(ids[0], str(err), thresholds=self._thresholds())]
            log.warning("guard: a batch of %d images failed (%s); answering it image by image", len(ids), err)
            return [a for i in range(len(ids)) for a in self._answer_batch(x[i : i + 1], ids[i : i + 1], timings)]

    def _thresholds(self) -> dict[str, float | None]:
        return {name: (None if getattr(det, "threshold", None) is None else float(det.threshold))
                for name, det in self.detectors.items()}

    def _answer(self, x: torch.Tensor, ids: list[str], timings: dict[str, float] | None = None) -> list[GuardAnswer]:
        finite = torch.isfinite(x.reshape(len(x), -1)).all(1)
        if not bool(finite.all()):  # files are checked by their readers; this is the last line
            good = torch.nonzero(finite).flatten().tolist()
            bad = {i for i in range(len(ids)) if i not in good}
            out = {ids[i]: failed_answer(ids[i], "the image holds a non-finite value (NaN or infinite); it was not "
                                                  "shown to the model") for i in bad}
            if good:
                out.update({a.id: a for a in self._answer(x[good], [ids[i] for i in good], timings)})
            return [out[i] for i in ids]
        dims = int(getattr(self.model, "spatial_dims", 2) or 2)
        if x.dim() - 2 != dims:  # before any copy is made: the reason names what was sent, not the batch
            why = (VOLUME_MODEL_GOT_IMAGE if dims == 3 else
                   "the model takes 2-D images and this is a volume; send its slices as images")
            return [failed_answer(i, why, thresholds=self._thresholds()) for i in ids]
        x = with_model_channels(x, self.model)
        thresholds = self._thresholds()
        device = getattr(self.model, "device", x.device)
        received = x.to(device)
        with timed(timings, "detectors"):  # the squeeze detectors' copies of the image as received
            copies = {name: step(f"the {name} detector", det.squeezed, received, self._shared[name])
                      for name, det in self.detectors.items() if isinstance(det, SqueezeDetector)}
        with torch.no_grad(), timed(timings, "defense"):
            defended = step("the defense", self.defended.defend, received) if self.defense_spec else received
        defended_ok = torch.isfinite(defended.reshape(len(x), -1)).all(1).cpu()
        # one forward pass over the image, its squeezed copies and its defended copy (chunks of the
        # guard's batch size): the undefended answer is the squeeze detectors' p(x)
        shown = [received, *(c for squeezed in copies.values() for c in squeezed if c is not None)]
        if self.defense_spec:
            per_image = (-1,) + (1,) * (defended.dim() - 1)
            shown.append(torch.where(defended_ok.view(per_image).to(defended.device), defended,
                                     torch.zeros((), device=defended.device)))
        with timed(timings, "model"):
            outputs = step("the model", self.model.logits, torch.cat(shown), max(len(x), self.batch_size))
        parts = iter(outputs.split(len(x)))
        raw = next(parts)
        kind = self.model.output_kind
        plain = kind.probabilities(raw)
        squeezed_p = {name: [None if c is None else kind.probabilities(next(parts)) for c in squeezed]
                      for name, squeezed in copies.items()}
        logits = next(parts) if self.defense_spec else raw
        probabilities = kind.probabilities(logits)  # also a squeezer's that is the defense itself
        with timed(timings, "detectors"):
            judged = {}
            for name, det in self.detectors.items():
                if name in copies:
                    judged[name] = step(f"the {name} detector", det.detect_from, plain,
                                        [probabilities if p is None else p for p in squeezed_p[name]], ids)
                else:
                    judged[name] = step(f"the {name} detector", det.detect, self.model, x, None, ids)
        threshold = float(getattr(self.model.contract, "threshold", 0.5))
        labels, raw_labels = kind.decide(logits, threshold), kind.decide(raw, threshold)
        # the decision rule the run's guard stage measures (medrobust.detection.guard_decision)
        fired_by = detectors_fired({name: r.scores for name, r in judged.items()}, thresholds)
        failures = [untrusted_values({name: float(r.scores[i]) for name, r in judged.items()}, raw[i], bool(defended_ok[i]),
                             logits[i], probabilities[i]) for i in range(len(ids))]
        decided = decisions(flagged(fired_by, len(ids)), self.on_flag, np.array([bool(f) for f in failures]))
        answers = []
        for i, image_id in enumerate(ids):
            scores = {name: float(r.scores[i]) for name, r in judged.items()}
            if failures[i]:
                answers.append(failed_answer(image_id, failures[i], scores, thresholds))
                continue
            fired = [name for name in judged if bool(fired_by[name][i])]
            decision = str(decided[i])
            reason = ("flagged by " + "; ".join(f"the {name} detector (score {scores[name]:.4g} > threshold "
                                                 f"{_threshold_text(thresholds[name])})" for name in fired)) if fired else ""
            answer = GuardAnswer(id=image_id, decision=decision, reason=reason, scores=scores, thresholds=thresholds,
                                 flagged=bool(fired))
            if decision != "abstain":  # an abstention carries no label (module guard_answers)
                answer.label = self._label(labels[i])
                answer.undefended_label = self._label(raw_labels[i])
                answer.probabilities = {c: float(p) for c, p in zip(self.classes, probabilities[i].tolist())}
            answers.append(answer)
        return answers

    def _label(self, decided: torch.Tensor) -> str:
        if decided.dim() == 0:
            return self.classes[int(decided)]
        return "|".join(c for c, flag in zip(self.classes, decided.tolist()) if flag) or "none"


def _threshold_text(value: float | None) -> str:
    return "none" if value is None else f"{value:.4g}"


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def guard(model: Any, *, defense: Any = "jpeg:quality=75+tv", detectors: Sequence[Any] | str | None = ("squeeze",),
          fpr: float = 0.05, calibration: Any = None, on_flag: str = "abstain", contract: ModelContract | None = None,
          batch_size: int = 32, device: str = "cpu") -> Guard:
    """A :class:`Guard`: ``defense`` and ``detectors`` in front of ``model`` (module docstring).

    Every argument is checked before the model is loaded (a load can take minutes).

    Args:
        model: a path or module (see :func:`mr.load_model`).
        defense: a defense spec (``"jpeg:quality=75+tv"``, the default: the study's hybrid) or
            :class:`~medrobust.defenses.base.Defense`, or None for no defense.
        detectors: reference-free detector specs or Detectors (``("squeeze",)``, the default), or
            None for none. A detector that needs the original image is refused: in production
            there is none.
        fpr: the false positive rate each calibrated detector's threshold aims at on the
            ``calibration`` images, in [0, 1). Default 0.05.
        calibration: clean images like the ones the guard will see (anything
            :func:`mr.open_images` takes; paths are read as plain images), required by a
            detector that sets its threshold on them. Default None.
        on_flag: what a flag decides, ``"abstain"`` (the default) or ``"warn"``.
        contract: the :class:`~medrobust.models.contract.ModelContract` of a model file that is
            not a medrobust checkpoint. Default None.
        batch_size: images per batch, at least 1. Default 32.
        device: where the model runs (``cpu``, the default; ``cuda``, ``auto``).

    Returns:
        The :class:`Guard`, its detectors calibrated.

    Shape:
        - Tensors in (``calibration``): (N, C, H, W) float in [0, 1].

    Raises:
        ValueError: a bad ``on_flag``, ``fpr``, ``batch_size``, defense or detector spec, a
            detector that needs the original image, calibration images missing or none of them
            readable, or a model that does not load.

    >>> import torch, medrobust as mr
    >>> from medrobust.models import build_classifier
    >>> model = build_classifier("small-cnn", ["Normal", "Pneumonia", "Pneumothorax"], 32).eval()
    >>> clean = torch.rand(20, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> g = mr.guard(model, calibration=clean)
    >>> g.describe()["detectors"][0]["calibration"]["n_images"], g(clean[:2]).shape
    (20, torch.Size([2, 3]))
    >>> sorted(g.predict(clean[:3]).counts())
    ['abstain', 'accept', 'warn']
    """
    from medrobust.defenses.registry import build_defense

    check_on_flag(on_flag)
    if not 0.0 <= float(fpr) < 1.0:
        raise ValueError(f"fpr must be in [0, 1) (5% is 0.05), got {fpr}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    no_defense = defense is None or (isinstance(defense, str) and not defense.strip())
    built_defense = None if no_defense else build_defense(defense)
    built = guard_detectors(detectors, calibration)
    model_file = os.fspath(model) if isinstance(model, (str, os.PathLike)) else None
    loaded = load_model(model, contract, device=device)
    source = loaded.metadata.get("source")
    if model_file is None and isinstance(source, str) and Path(source).exists():
        model_file = source
    notes = calibrate_guard_detectors(built, loaded, calibration, float(fpr), int(batch_size))
    return Guard(loaded, built_defense, built, on_flag, notes, model_file, int(batch_size))
