"""The guard stage's units (:mod:`medrobust.evaluation.stages.guard`): the guard's judgement of
one batch of images (:class:`GuardJudgeUnit`: clean images, or an attack's stored images), and
one batch attacked by the guard-aware attacker, then judged (:class:`GuardAttackUnit`).

The judgement is the served guard's (:class:`~medrobust.layer.guard.Guard`): each detector scores
the image as received on the bare model, the label is the model's on the defended image, and the
rule of :mod:`medrobust.detection.guard_decision` turns scores and thresholds into decisions.
Thresholds come per image (the detection stage's calibration, cross-fitted or not). Plain data
like every unit (:mod:`medrobust.execution.units`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from medrobust.detection.guard_decision import accepts
from medrobust.execution.pixels import from_stored, stored_grid_of, to_stored
from medrobust.execution.units import ModelRef, Unit, Workbench

JUDGE_KEYS = frozenset({"pred", "flagged", "failed", "seconds"})
"""What every guard unit returns (besides ``score__NAME`` per detector)."""


def detector_penalty(detectors: dict[str, Any], model: torch.nn.Module, thresholds: dict[str, torch.Tensor],
                     margin: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """The detectors' term of the guard-aware attacker (Carlini & Wagner 2017), per image::

        P(x) = sum_d relu(s_d(x) - (1 - margin) t_d) / t_d

    zero once every detector's score is ``margin`` (a fraction of its threshold) below its
    threshold ``t_d``, and measured in thresholds above that, so detectors on different scales
    weigh alike. ``s_d`` is the detector's :meth:`differentiable_score` on the bare model.

    Args:
        detectors: name -> a detector with ``differentiable_score(model, x)``.
        model: the bare classifier.
        thresholds: name -> (B,) the batch's thresholds, on the images' device.
        margin: in [0, 1).

    Returns:
        ``penalty(x) -> (B,)``.
    """

    def penalty(x: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(len(x), device=x.device)
        for name, det in detectors.items():
            t = thresholds[name].clamp_min(1e-12)
            total = total + torch.relu(det.differentiable_score(model, x) - (1.0 - margin) * t) / t
        return total

    return penalty


def judge(bench: Workbench, defense: str | None, detectors: dict[str, Any], thresholds: dict[str, np.ndarray],
          x: torch.Tensor) -> dict[str, np.ndarray]:
    """The guard on images ``x`` (module docstring).

    Args:
        bench: the models and the device.
        defense: the guard's defense spec (None: none).
        detectors: name -> the guard's detector.
        thresholds: name -> (B,) each image's threshold.
        x: (B, C, H, W) images in [0, 1] on the bench's device.

    Returns:
        ``pred`` (the defended model's decisions), ``flagged``, ``failed`` (a score or an output
        that is not finite: the guard abstains, fail closed), ``score__NAME`` and
        ``threshold__NAME`` (what the score was compared with) per detector.
    """
    base = bench.model(ModelRef("model"))
    scores = {name: np.asarray(det.score(base, x), dtype=np.float64) for name, det in detectors.items()}
    with torch.no_grad():
        defended = bench.model(ModelRef("model", defense=defense)).defend(x) if defense else x
    logits = base.logits(defended)
    failed = ~torch.isfinite(logits.reshape(len(x), -1)).all(1).numpy()
    for s in scores.values():
        failed |= ~np.isfinite(s)
    pred = base.output_kind.decide(logits, float(base.contract.threshold)).numpy()
    out = {"pred": pred, "flagged": ~accepts(scores, thresholds) if detectors else np.zeros(len(x), dtype=bool),
           "failed": failed}
    out.update({f"score__{name}": s for name, s in scores.items()})
    out.update({f"threshold__{name}": np.broadcast_to(np.asarray(thresholds[name], np.float64), (len(x),)).copy()
                for name in detectors})
    return out


@dataclass
class GuardJudgeUnit(Unit):
    """The guard's judgement of one batch of stored images. :meth:`run` returns
    :data:`JUDGE_KEYS` and ``score__NAME`` per detector.

    Args:
        seed: the stage's seed.
        start: the batch's first image in its stream.
        defense: the guard's defense spec (None: none).
        detectors: name -> the guard's detector.
        thresholds: name -> (B,) each image's threshold.
        images: the images as stored bytes.

    Shape:
        - images: (B, H, W) uint8; thresholds' values: (B,).
        - pred, flagged, failed, score__NAME: (B,); seconds: (1,).
    """

    defense: str | None = None
    detectors: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, np.ndarray] = field(default_factory=dict)
    images: np.ndarray = field(default_factory=lambda: np.zeros((0, 1, 1), np.uint8))

    def run(self, bench: Workbench) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        out = judge(bench, self.defense, self.detectors, self.thresholds, from_stored(self.images).to(bench.device))
        return {**out, "seconds": np.array([time.perf_counter() - t0])}


@dataclass
class GuardAttackUnit(Unit):
    """One batch attacked by the guard-aware attacker
    (:class:`~medrobust.attacks.detector_aware.DetectorAwarePGD` with :func:`detector_penalty`),
    through the defense's gradient route, then judged by the guard. :meth:`run` returns
    ``x_adv``, :data:`JUDGE_KEYS` and ``score__NAME`` per detector.

    Args:
        seed: the stage's seed (the attack's generator takes ``seed + start``).
        start: the batch's first image in its stream.
        defense: the guard's defense spec (None: none).
        gradient: the defense's gradient route (``unrolled``, ``bpda``, ...). Default ``unrolled``.
        eot_samples: EOT draws of a randomised defense. Default None: the defense's default.
        detectors: name -> the guard's detector (with ``differentiable_score``).
        thresholds: name -> (B,) each image's threshold.
        lam: the detectors' weight. Default 1.
        margin: the penalty's margin, a fraction of the threshold. Default 0.1.
        eps: the L-inf budget. Default 8/255.
        steps: PGD steps. Default 20.
        clean: the clean images as stored bytes.
        labels: their labels.

    Shape:
        - clean: (B, H, W) uint8; labels: (B,) int64.
        - x_adv: (B, H, W) uint8; pred, flagged, failed, score__NAME: (B,); seconds: (1,).
    """

    defense: str | None = None
    gradient: str = "unrolled"
    eot_samples: int | None = None
    detectors: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, np.ndarray] = field(default_factory=dict)
    lam: float = 1.0
    margin: float = 0.1
    eps: float = 8 / 255
    steps: int = 20
    clean: np.ndarray = field(default_factory=lambda: np.zeros((0, 1, 1), np.uint8))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def run(self, bench: Workbench) -> dict[str, np.ndarray]:
        from medrobust.attacks.decisions import gets_wrong
        from medrobust.attacks.detector_aware import DetectorAwarePGD

        t0 = time.perf_counter()
        x = from_stored(self.clean).to(bench.device)
        y = torch.from_numpy(self.labels).to(bench.device)
        base = bench.model(ModelRef("model"))
        crafter = bench.model(ModelRef("model", defense=self.defense, eot_samples=self.eot_samples,
                                       gradient=self.gradient)) if self.defense else base
        target = bench.model(ModelRef("model", defense=self.defense)) if self.defense else base
        limits = {name: torch.as_tensor(t, dtype=torch.float32, device=x.device) for name, t in self.thresholds.items()}

        def evades(stored: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            scores = {name: det.score(base, stored) for name, det in self.detectors.items()}
            accepted = torch.from_numpy(accepts(scores, self.thresholds) if scores else np.ones(len(stored), bool))
            return accepted.to(stored.device) & gets_wrong(target, target(stored), labels)

        attack = DetectorAwarePGD(eps=self.eps, steps=self.steps, lam=self.lam, evades=evades,
                                  penalty=detector_penalty(self.detectors, base, limits, self.margin),
                                  quantize_bits=stored_grid_of(self.clean).levels.bit_length())  # 8 bits, or 12 on CT
        x_adv = attack(crafter, x, y, generator=attack.make_generator(x.device, self.seed + self.start)).cpu()
        out = judge(bench, self.defense, self.detectors, self.thresholds, x_adv.to(bench.device))
        return {"x_adv": to_stored(x_adv, stored_grid_of(self.clean)), **out, "seconds": np.array([time.perf_counter() - t0])}
