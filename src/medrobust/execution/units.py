"""The runner's units of work: one batch of one stage, described by plain data.

A unit names the models it needs (:class:`ModelRef`), carries its images as 8-bit arrays and
the seed of its batch, and returns a dict of numpy arrays — the content of one batch file. It
holds no model and no open file, so an engine may run it in this process or ship it to a Ray
actor (:mod:`medrobust.execution.engines`); a :class:`Workbench` (the models, loaded once, and
the device) executes it.

Randomness is a function of the unit alone: before a unit runs, the global torch generator is
seeded with ``seed + start`` (``start``: the batch's first image in its stream), and attacks draw
from their own generator seeded the same way (:func:`~medrobust.execution.crafting.craft_batch`),
so a batch gives the same result whichever process ran it and in whatever order.

Per-image log lines a unit writes (the detectors' lines) are captured and returned under
``log``; the driver writes them to the run's log, so ``log.txt`` is the same for every engine.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from medrobust.execution.pixels import from_stored, stored_grid_of, to_stored
from medrobust.logs.per_image_log import per_image_log

LOG_KEY = "log"
"""The key under which a unit returns the per-image log lines it wrote (a str array)."""


def params_on_grid(attack: str, params: Mapping[str, Any], grid) -> dict[str, Any]:
    """An attack's parameters with its rounding grid set to the run's stored grid.

    Args:
        attack: the attack's registry name.
        params: its parameters from the spec.
        grid: the run's stored grid.

    Returns:
        ``params``, plus ``quantize_bits: 12`` on the CT grid (integer HU: the 12-bit grid's points)
        when the attack rounds its result and the spec does not set it; 8-bit runs unchanged.
    """
    from medrobust.attacks.registry import attack_parameters

    out = dict(params)
    if grid.levels != 255 and "quantize_bits" not in out and "quantize_bits" in attack_parameters(attack):
        out["quantize_bits"] = grid.levels.bit_length()
    return out


@dataclass(frozen=True)
class ModelRef:
    """A model a unit needs, named, bare or seen through a defense (plain data: it can be shipped).

    Args:
        name: ``"model"`` (the default) or a surrogate's name.
        defense: a defense spec: the model is then a
            :class:`~medrobust.defenses.defended.DefendedClassifier` of it. Default None: bare.
        eot_samples: draws of a randomised defense averaged per gradient (EOT). Default None:
            the defended classifier's (10 for a randomised defense, 1 otherwise).
        gradient: how gradients go through the defense, one of the defended classifier's modes
            (``auto``, the default; ``exact``, ``bpda``, ``unrolled``, ``smooth``).
        from_probabilities: ``"softmax"`` or ``"sigmoid"`` when the model returns probabilities:
            an attack then sees the logits recovered. Without a defense, ``eot_samples`` > 1 says
            the model's own forward pass is random (:class:`~medrobust.models.attack_view.AttackView`).
    """

    name: str = "model"
    defense: str | None = None
    eot_samples: int | None = None
    gradient: str = "auto"
    from_probabilities: str | None = None


class Workbench:
    """What executes units: the models by name, loaded once, and the device.

    A defended model a unit names (:class:`ModelRef` with a defense) is built on first use and
    kept; a randomised defense's stream restarts at every unit from its seed and the unit's
    ``start``, so its draws depend on the batch, not on the units run before.

    Args:
        models: ``"model"`` and each surrogate, by name, on ``device``.
        device: where the units' tensors go.
    """

    def __init__(self, models: Mapping[str, nn.Module], device: torch.device) -> None:
        self.models = dict(models)
        self.device = device
        self._defended: dict[ModelRef, nn.Module] = {}
        self._views: dict[ModelRef, nn.Module] = {}
        self._defense_seeds: dict[ModelRef, int | None] = {}
        self._start = 0

    def model(self, ref: ModelRef) -> nn.Module:
        """The model ``ref`` names, bare or defended (built once per ``ref``); KeyError naming the
        models held for an unknown name."""
        if ref.name not in self.models:
            raise KeyError(f"unit asks for model {ref.name!r}; this worker holds {sorted(self.models)}")
        base = self.models[ref.name]
        if ref.from_probabilities or (ref.defense is None and (ref.eot_samples or 1) > 1):
            from medrobust.models.attack_view import AttackView

            if ref not in self._views:
                self._views[ref] = AttackView(base, ref.eot_samples or 1 if ref.defense is None else 1,
                                              ref.from_probabilities)  # type: ignore[arg-type]
            base = self._views[ref]
        if ref.defense is None:
            return base
        if ref not in self._defended:
            from medrobust.defenses.base import stream_seed
            from medrobust.defenses.defended import DefendedClassifier
            from medrobust.defenses.registry import build_defense

            defense = build_defense(ref.defense)
            seed = defense.seed
            if seed is not None and ref.gradient != "auto":  # an attacker's own draws, not the evaluation's
                seed = stream_seed(int(seed), ref.gradient)
            self._defense_seeds[ref] = seed
            self._defended[ref] = DefendedClassifier(defense, base, gradient=ref.gradient,
                                                     eot_samples=ref.eot_samples)
            self._reseed(ref, self._start)
        return self._defended[ref]

    def _reseed(self, ref: ModelRef, start: int) -> None:
        """A randomised defense's stream restarts at every unit from its own seed mixed with the
        batch's ``start``: its draws depend on the batch, not on which units ran before here."""
        seed = self._defense_seeds[ref]
        defense = self._defended[ref].defense
        if defense.randomized and seed is not None:
            defense.manual_seed((int(seed) * 1_000_003 + start) % 2**62)

    def execute(self, unit: "Unit") -> dict[str, np.ndarray]:
        """Run ``unit`` with the global torch generator seeded by its batch (``seed + start``).

        Args:
            unit: the unit of work.

        Returns:
            The unit's arrays, plus :data:`LOG_KEY`: the per-image log lines it wrote (INFO and
            above), captured instead of written, for the driver to write (:func:`replay_log`).
        """
        torch.manual_seed(unit.seed + unit.start)
        self._start = unit.start
        for ref in self._defended:
            self._reseed(ref, unit.start)
        lines: list[str] = []
        handler = _ListHandler(lines)
        per_image_log.addHandler(handler)
        previous = per_image_log.propagate
        per_image_log.propagate = False
        try:
            out = unit.run(self)
        finally:
            per_image_log.removeHandler(handler)
            per_image_log.propagate = previous
        out[LOG_KEY] = np.array(lines, dtype=str)
        return out


class _ListHandler(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.INFO:
            self.lines.append(f"{record.levelname}\t{record.getMessage()}")


def replay_log(lines: np.ndarray) -> None:
    """Write a unit's captured per-image lines to :data:`per_image_log` (on the driver).

    Args:
        lines: the unit's :data:`LOG_KEY` array: ``LEVEL<TAB>message`` per line.
    """
    for line in lines.tolist():
        level, _, message = str(line).partition("\t")
        per_image_log.log(logging.getLevelName(level) if level in ("INFO", "WARNING", "ERROR") else logging.INFO,
                          "%s", message)


@dataclass
class Unit(ABC):
    """Base of the units of work: plain data describing one batch of one stage.

    Args:
        seed: the stage's seed.
        start: the batch's first item in its stream; ``seed + start`` seeds the unit's
            randomness, so a batch's result does not depend on where or when it runs.
    """

    seed: int
    start: int

    @abstractmethod
    def run(self, bench: Workbench) -> dict[str, np.ndarray]:
        """Compute the batch.

        Args:
            bench: the models (by name) and the device.

        Returns:
            The batch's arrays by name: the content of its batch file.
        """


@dataclass
class CraftUnit(Unit):
    """Adversarial images of one batch: crafted on ``crafter``, predicted by ``target`` — the one
    way a batch is attacked, by the runner's stages and by ``mr.attack`` alike
    (:func:`~medrobust.execution.crafting.craft_batch`).

    :meth:`run` returns ``x_adv``, ``pred``, and per image the perturbation's ``linf`` and ``l2``
    norms, ``ssim`` and ``psnr`` against the clean image, and ``seconds`` (the batch's time);
    with ``confidence``, also the target's ``confidence`` in its decision on each adversarial
    image.

    Args:
        seed: the stage's seed (the attack's generator takes ``seed + start``).
        start: the batch's first image in its stream.
        attack: a registry name (with ``params``), or an Attack object (a unit run in this
            process only: an object is not shipped to a cluster).
        params: the attack's parameters, for a name. Default: none.
        allow_large_eps: allow a budget above the registry's limit. Default False.
        crafter: the model the images are crafted on. Default: the model, bare.
        target: the model that predicts them. Default: the model, bare.
        clean: the clean images as stored bytes.
        labels: their labels, as model class indices (or 0/1 findings).
        confidence: also return the target's confidence. Default False.

    Shape:
        - clean: (B, H, W) uint8 (8-bit) or uint16 (CT; volumes (B, D, H, W)); labels: (B,) int64
          (or (B, K) 0/1).
        - x_adv: clean's shape and type; pred, linf, l2, ssim, psnr, confidence: (B,); seconds: (1,).
    """

    attack: Any = ""
    params: dict[str, Any] = field(default_factory=dict)
    allow_large_eps: bool = False
    crafter: ModelRef = ModelRef()
    target: ModelRef = ModelRef()
    clean: np.ndarray = field(default_factory=lambda: np.zeros((0, 1, 1), np.uint8))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    confidence: bool = False

    def run(self, bench: Workbench) -> dict[str, np.ndarray]:
        from medrobust.attacks.registry import build_attack
        from medrobust.data.similarity import l2_distance, linf_distance, psnr, ssim
        from medrobust.execution.crafting import craft_batch

        t0 = time.perf_counter()
        grid = stored_grid_of(self.clean)
        attack = (build_attack(self.attack, allow_large_eps=self.allow_large_eps,
                               **params_on_grid(self.attack, self.params, grid))
                  if isinstance(self.attack, str) else self.attack)
        x = from_stored(self.clean).to(bench.device)
        y = torch.from_numpy(self.labels).to(bench.device)
        x_adv, outputs = craft_batch(attack, bench.model(self.crafter), bench.model(self.target), x, y, self.seed,
                                     self.start, grid)
        seconds = time.perf_counter() - t0
        xn, an = x.cpu().numpy(), x_adv.numpy()
        out = {"x_adv": to_stored(x_adv, grid), "pred": outputs.labels.numpy(), "linf": linf_distance(xn, an),
               "l2": l2_distance(xn, an), "ssim": ssim(xn, an), "psnr": psnr(xn, an), "seconds": np.array([seconds])}
        if self.confidence:
            out["confidence"] = outputs.confidence.numpy()
        broken_by = getattr(attack, "broken_by", None)  # an ensemble says which member broke each image
        if broken_by is not None:
            out["broken_by"] = np.asarray(broken_by, dtype=str)
        return out


@dataclass
class PredictUnit(Unit):
    """The decisions of ``model`` on one batch of images; with ``model.defense`` the defense is
    applied first (as the defended model sees them). :meth:`run` returns ``pred`` and
    ``seconds`` (the defense's own time, 0 without one).

    Args:
        seed: the stage's seed.
        start: the batch's first image in its stream.
        model: the model, bare or defended. Default: the model, bare.
        images: the images as stored bytes (none: a batch whose files were all unreadable).

    Shape:
        - images: (B, H, W) uint8.
        - pred: (B,) ((B, K) 0/1 multi-label); seconds: (1,).
    """

    model: ModelRef = ModelRef()
    images: np.ndarray = field(default_factory=lambda: np.zeros((0, 1, 1), np.uint8))

    def run(self, bench: Workbench) -> dict[str, np.ndarray]:
        if not len(self.images):  # a batch whose files were all unreadable
            return {"pred": np.zeros(0, dtype=np.int64), "seconds": np.zeros(1)}
        x = from_stored(self.images).to(bench.device)
        seconds = 0.0
        if self.model.defense is not None:
            defended = bench.model(self.model)
            t0 = time.perf_counter()
            with torch.no_grad():
                x = defended.defend(x)
            seconds = time.perf_counter() - t0
        base = bench.model(ModelRef(self.model.name))
        return {"pred": base.predict(x).cpu().numpy(), "seconds": np.array([seconds])}


@dataclass
class FloatAttackUnit(Unit):
    """One batch attacked in RobustBench's terms (Croce et al. 2021): the attack's images kept
    as floats, never rounded to a storage grid, so only the decisions come back (a float image is
    not a batch file's uint8). The figure it gives is comparable with published ones, not with
    the rest of a run, whose adversarial images are the stored (8-bit) ones.

    :meth:`run` returns ``clean_pred`` and ``pred`` (the model's decisions on the clean and the
    adversarial images), ``linf`` (each perturbation's largest change), ``broken_by`` (an
    ensemble's member that broke each image, or empty) and ``seconds``.

    Args:
        seed: the stage's seed (the attack's generator takes ``seed + start``).
        start: the batch's first image in its stream.
        attack: a registry name; built with ``quantize_bits=None``.
        params: the attack's parameters.
        crafter: the model attacked and scored. Default: the model, bare.
        clean: the clean images as stored bytes.
        labels: their labels, as model class indices.

    Shape:
        - clean: (B, H, W) uint8; labels: (B,) int64.
        - clean_pred, pred, linf, broken_by: (B,); seconds: (1,).
    """

    attack: str = "autoattack"
    params: dict[str, Any] = field(default_factory=dict)
    crafter: ModelRef = ModelRef()
    clean: np.ndarray = field(default_factory=lambda: np.zeros((0, 1, 1), np.uint8))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def run(self, bench: Workbench) -> dict[str, np.ndarray]:
        from medrobust.attacks.registry import build_attack

        t0 = time.perf_counter()
        attack = build_attack(self.attack, **{**self.params, "quantize_bits": None})
        model = bench.model(self.crafter)
        x = from_stored(self.clean).to(bench.device)
        y = torch.from_numpy(self.labels).to(bench.device)
        x_adv = attack(model, x, y, generator=attack.make_generator(x.device, self.seed + self.start))
        base = bench.model(ModelRef(self.crafter.name))
        with torch.no_grad():
            clean_pred, pred = base.predict(x).cpu().numpy(), base.predict(x_adv).cpu().numpy()
        broken_by = getattr(attack, "broken_by", None)
        return {"clean_pred": clean_pred, "pred": pred,
                "linf": (x_adv - x).abs().flatten(1).amax(1).cpu().numpy(),
                "broken_by": np.asarray(broken_by if broken_by is not None else [""] * len(pred), dtype=str),
                "seconds": np.array([time.perf_counter() - t0])}


@dataclass
class CertifyUnit(Unit):
    """Randomized smoothing on one batch (Cohen et al. 2019,
    :mod:`medrobust.defenses.randomized_smoothing`): CERTIFY and PREDICT per image, each image's
    noise drawn from its own generator seeded by ``seed`` and its position ``start + i``, so its
    certificate is the same whatever batch it is in and wherever the batch runs.

    :meth:`run` returns the arrays of
    :meth:`~medrobust.defenses.randomized_smoothing.SmoothedClassifier.certify_batch`
    (``prediction``, ``radius``, ``p_a_lower``, ``counts``, ``selection_counts``,
    ``smoothed_prediction``, ``p_value``, ``base_prediction``) and ``seconds``.

    Args:
        seed: the stage's seed.
        start: the batch's first image in its stream.
        sigma: the noise's standard deviation in [0, 1] image units.
        n0: selection draws per image.
        n: estimation draws per image.
        alpha: the error level of the certificate and of PREDICT's test.
        batch: noisy copies per forward pass.
        images: the images as stored bytes.

    Shape:
        - images: (B, H, W) uint8.
        - counts, selection_counts: (B, K); the others (B,); seconds: (1,).
    """

    sigma: float = 0.25
    n0: int = 100
    n: int = 1000
    alpha: float = 0.001
    batch: int = 400
    images: np.ndarray = field(default_factory=lambda: np.zeros((0, 1, 1), np.uint8))

    def run(self, bench: Workbench) -> dict[str, np.ndarray]:
        from medrobust.defenses.randomized_smoothing import SmoothedClassifier

        t0 = time.perf_counter()
        smoothed = SmoothedClassifier(bench.model(ModelRef()), self.sigma, batch=self.batch)
        out = smoothed.certify_batch(from_stored(self.images).to(bench.device), n0=self.n0, n=self.n, alpha=self.alpha,
                                     seed=self.seed, start=self.start)
        out["seconds"] = np.array([time.perf_counter() - t0])
        return out
