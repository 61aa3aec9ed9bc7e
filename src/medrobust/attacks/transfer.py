"""Transfer attacks: craft on a surrogate (or an ensemble of surrogates), evaluate on a target.

A deployed model is often a black box (an ONNX file, a vendor's product). The attacker then
crafts adversarial images with gradients of a model of their own — the *surrogate* — and
hopes they fool the *target* too (Papernot et al. 2016; Liu et al. 2017). SIA's whole point is
this transferability, so medrobust reports the surrogate -> target matrix, not only white-box
numbers: :func:`transfer_matrix` crafts once per surrogate and scores the same adversarial
images on every target.

Success (:func:`attack_success`), per image:

* softmax / binary, untargeted: the target's prediction differs from the true label;
  targeted: it equals the target label;
* multilabel, untargeted: *any* named finding's decision differs from its true value (the
  attack's ``findings``, or all findings when it names none); targeted: every named finding
  has the wanted decision.

Rates are given over all images (an image the target already got wrong counts as a success
if it is still wrong) and over the images the target classified correctly before the attack
(more precisely: those not already "successful" on the clean image — for untargeted attacks,
the correctly classified ones; for targeted ones, those not already at the target).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from medrobust.attacks.engine import Attack
from medrobust.models.classifier import Classifier, InputContract
from medrobust.models.output_kind import OutputKind

log = logging.getLogger(__name__)


class EnsembleClassifier(Classifier):
    """A weighted average of classifiers' **logits**: ``z(x) = sum_i w_i z_i(x)``, ``sum_i w_i = 1``.

    The logit ensemble of Dong et al. (MI-FGSM, CVPR 2018), the usual surrogate for transfer
    attacks. For softmax members it gives the same probabilities as averaging
    log-probabilities (``log softmax(z) = z - logsumexp(z)`` differs per image by a constant);
    for binary and multilabel members it averages log-odds. Each member applies its own input
    contract (size, channels, intensity) to the stored images, so members with different input
    sizes or channel counts mix freely.

    The ensemble takes the first member's contract (classes, output kind, threshold). All
    members must share class names, output kind and stored channels. ``differentiable`` is
    True only if every member is: an ensemble with a black-box member cannot be attacked
    white-box.
    """

    def __init__(self, models: Sequence[nn.Module], weights: Sequence[float] | None = None) -> None:
        models = list(models)
        if not models:
            raise ValueError("an ensemble needs at least one model")
        for i, m in enumerate(models):
            if not (hasattr(m, "classes") and hasattr(m, "output_kind")):
                raise TypeError(f"ensemble member {i} ({type(m).__name__}) is not a Classifier (it has no classes "
                                "or output kind); wrap the network with medrobust.models.build_classifier or "
                                "load_classifier first")
        first = models[0]
        for i, m in enumerate(models[1:], start=1):
            if list(m.classes) != list(first.classes):
                raise ValueError(f"ensemble member {i} has classes {list(m.classes)} but member 0 has "
                                 f"{list(first.classes)}; all members must predict the same classes in the same order")
            if OutputKind.parse(m.output_kind) is not OutputKind.parse(first.output_kind):
                raise ValueError(f"ensemble member {i} is a {OutputKind.parse(m.output_kind).value} model but member 0 "
                                 f"is {OutputKind.parse(first.output_kind).value}; all members must share the output kind")
            if getattr(m, "input_channels", 1) != getattr(first, "input_channels", 1):
                raise ValueError(f"ensemble member {i} takes {m.input_channels}-channel images but member 0 takes "
                                 f"{first.input_channels}; all members must read the same stored images")
        if weights is None:
            w = [1.0 / len(models)] * len(models)
        else:
            w = [float(v) for v in weights]
            if len(w) != len(models):
                raise ValueError(f"{len(w)} ensemble weights for {len(models)} models; give one weight per model")
            if any(v < 0 or not math.isfinite(v) for v in w) or sum(w) <= 0:
                raise ValueError(f"ensemble weights must be non-negative and not all zero, got {w}")
            w = [v / sum(w) for v in w]
        contract = getattr(first, "contract", None) or InputContract(
            classes=tuple(first.classes), output_kind=first.output_kind, stored_channels=first.input_channels)
        super().__init__(nn.ModuleList(models), contract, arch="ensemble",
                         metadata={"members": [getattr(m, "arch", None) or type(m).__name__ for m in models],
                                   "weights": w, "combination": "weighted mean of logits"})
        self.weights = w
        self.differentiable = all(getattr(m, "differentiable", True) for m in models)

    @property
    def members(self) -> list[nn.Module]:
        return list(self.network)

    @property
    def device(self) -> torch.device:
        return getattr(self.network[0], "device", super().device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = None
        for weight, member in zip(self.weights, self.network):
            z = weight * member(x).float()
            out = z if out is None else out + z.to(out.device)
        assert out is not None
        return out


def attack_success(output_kind: OutputKind | str, pred: torch.Tensor, y: torch.Tensor, targeted: bool = False,
                   finding_index: Sequence[int] | None = None) -> torch.Tensor:
    """(B,) bool: did the attack succeed on each image? See the module docstring for the rule.

    ``pred`` and ``y``: (B,) labels (softmax, binary) or (B, K) 0/1 decisions (multilabel);
    ``finding_index`` restricts a multilabel rule to those findings.
    """
    kind = OutputKind.parse(output_kind)
    pred, y = pred.cpu().long(), y.cpu().long()
    if pred.shape != y.shape:
        raise ValueError(f"predictions {tuple(pred.shape)} and labels {tuple(y.shape)} differ in shape")
    if kind is not OutputKind.MULTILABEL:
        return pred == y if targeted else pred != y
    if pred.ndim != 2:
        raise ValueError(f"multilabel predictions must be (B, K) 0/1 decisions, got {tuple(pred.shape)}")
    if finding_index is not None:
        pred, y = pred[:, list(finding_index)], y[:, list(finding_index)]
    return (pred == y).all(dim=1) if targeted else (pred != y).any(dim=1)


def _finding_index(attack: Attack, model: nn.Module) -> list[int] | None:
    findings = getattr(attack, "findings", None)
    if not findings:
        return None
    classes = list(getattr(model, "classes", []))
    unknown = [f for f in findings if f not in classes]
    if unknown:
        raise ValueError(f"the attack's findings {unknown} are not among the target's classes {classes}")
    return [classes.index(f) for f in findings]


def _predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The model's decisions on the CPU (Classifier.predict, or forward + the output kind's rule)."""
    if isinstance(model, Classifier):
        return model.predict(x, batch_size=batch_size).cpu()
    kind = OutputKind.parse(getattr(model, "output_kind", OutputKind.SOFTMAX))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = torch.cat([model(x[i : i + batch_size]).float().cpu() for i in range(0, len(x), batch_size)])
    finally:
        model.train(was_training)
    return kind.decide(logits)


def _device(model: nn.Module, fallback: torch.device) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    for p in model.parameters():
        return p.device
    return fallback


def craft(attack: Attack, surrogate: nn.Module, x: torch.Tensor, y: torch.Tensor,
          batch_size: int | None = None) -> torch.Tensor:
    """Adversarial images crafted on ``surrogate`` (on its device, in chunks of ``batch_size``
    if given: each chunk gets the attack's seeded generator afresh), returned on the CPU."""
    device = _device(surrogate, x.device)
    step = batch_size or max(len(x), 1)
    parts = [attack(surrogate, x[i : i + step].to(device), y[i : i + step].to(device)).cpu()
             for i in range(0, len(x), step)]
    return torch.cat(parts) if parts else x.clone().cpu()


def _attack_of(attack: Attack | str) -> Attack:
    if isinstance(attack, str):
        from medrobust.attacks.registry import build_attack

        return build_attack(attack)
    return attack


def _rate(mask: torch.Tensor) -> float | None:
    return float(mask.float().mean()) if mask.numel() else None


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "__dataclass_fields__"):
        return {k: _jsonable(getattr(value, k)) for k in value.__dataclass_fields__}
    return str(value)


@dataclass
class TransferResult:
    """One surrogate -> target evaluation. Tensors are on the CPU; ``x_adv`` is not in ``to_json``.

    ``clean_success`` (B,): the success rule already holds on the clean image (untargeted: the
    target misclassifies it); ``success`` (B,): it holds on the adversarial image.
    """

    x_adv: torch.Tensor = field(repr=False)
    y: torch.Tensor
    clean_pred: torch.Tensor
    adv_pred: torch.Tensor
    clean_success: torch.Tensor
    success: torch.Tensor
    output_kind: str
    targeted: bool = False
    attack: dict[str, Any] = field(default_factory=dict)

    @property
    def n_images(self) -> int:
        return int(self.success.numel())

    @property
    def n_correct(self) -> int:
        """Images the target got right before the attack (not already successful)."""
        return int((~self.clean_success).sum())

    @property
    def success_rate(self) -> float | None:
        """Share of all images on which the attack succeeds (None for no images)."""
        return _rate(self.success)

    @property
    def success_rate_on_correct(self) -> float | None:
        """Share of the images the target classified correctly before the attack that it now
        gets wrong (None when it got none right)."""
        return _rate(self.success[~self.clean_success])

    @property
    def clean_error_rate(self) -> float | None:
        """Share of images on which the success rule already holds without the attack
        (untargeted: the target's clean error rate) — the baseline a transfer rate must beat."""
        return _rate(self.clean_success)

    def to_json(self) -> dict[str, Any]:
        return {
            "n_images": self.n_images,
            "n_correct": self.n_correct,
            "success_rate": self.success_rate,
            "success_rate_on_correct": self.success_rate_on_correct,
            "clean_error_rate": self.clean_error_rate,
            "output_kind": self.output_kind,
            "targeted": self.targeted,
            "attack": _jsonable(self.attack),
            "y": self.y.tolist(),
            "clean_pred": self.clean_pred.tolist(),
            "adv_pred": self.adv_pred.tolist(),
            "success": self.success.tolist(),
        }


def _evaluate(attack: Attack, target: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor,
              batch_size: int, clean_pred: torch.Tensor | None = None) -> TransferResult:
    kind = OutputKind.parse(getattr(target, "output_kind", OutputKind.SOFTMAX))
    targeted = bool(getattr(attack, "targeted", False))
    index = _finding_index(attack, target) if kind is OutputKind.MULTILABEL else None
    clean_pred = _predict(target, x, batch_size) if clean_pred is None else clean_pred
    adv_pred = _predict(target, x_adv, batch_size)
    y_cpu = y.cpu()
    return TransferResult(
        x_adv=x_adv, y=y_cpu, clean_pred=clean_pred, adv_pred=adv_pred,
        clean_success=attack_success(kind, clean_pred, y_cpu, targeted, index),
        success=attack_success(kind, adv_pred, y_cpu, targeted, index),
        output_kind=kind.value, targeted=targeted, attack=attack.describe(),
    )


def transfer_attack(attack: Attack | str, surrogate: nn.Module, target: nn.Module, x: torch.Tensor,
                    y: torch.Tensor, batch_size: int | None = None, eval_batch_size: int = 64) -> TransferResult:
    """Craft ``attack`` on ``surrogate`` (a model or an :class:`EnsembleClassifier`) and evaluate
    the adversarial images on ``target`` (any Classifier, black boxes included).

    ``y``: true labels (untargeted) or target labels (targeted). The surrogate must allow the
    attack (white-box attacks need a differentiable surrogate); the target is only queried for
    predictions. With ``surrogate is target`` this is the plain white-box evaluation.
    """
    attack = _attack_of(attack)
    x_adv = craft(attack, surrogate, x, y, batch_size)
    result = _evaluate(attack, target, x.cpu(), x_adv, y, eval_batch_size)
    log.info("transfer %s: success %.1f%% of %d images (%.1f%% of the %d the target got right; clean error %.1f%%)",
             attack.name, 100 * (result.success_rate or 0.0), result.n_images,
             100 * (result.success_rate_on_correct or 0.0), result.n_correct, 100 * (result.clean_error_rate or 0.0))
    return result


@dataclass
class TransferMatrix:
    """Success rates for every surrogate (rows) x target (columns) pair.

    ``success[s][t]``: over all images; ``success_on_correct[s][t]``: over the images target
    ``t`` classified correctly before the attack (None when there are none); ``clean_error[t]``:
    the target's clean error rate (the rate an attack must beat); ``n_correct[t]``.
    ``adversarial[s]``: the images crafted on surrogate ``s`` (CPU; not in ``to_json``).
    """

    surrogates: list[str]
    targets: list[str]
    success: dict[str, dict[str, float | None]]
    success_on_correct: dict[str, dict[str, float | None]]
    clean_error: dict[str, float | None]
    n_correct: dict[str, int]
    n_images: int
    attack: dict[str, Any] = field(default_factory=dict)
    adversarial: dict[str, torch.Tensor] = field(default_factory=dict, repr=False, compare=False)

    def rates(self, on_correct: bool = False) -> list[list[float | None]]:
        """The matrix as rows (surrogates) of columns (targets)."""
        table = self.success_on_correct if on_correct else self.success
        return [[table[s][t] for t in self.targets] for s in self.surrogates]

    def to_json(self) -> dict[str, Any]:
        return {
            "surrogates": list(self.surrogates),
            "targets": list(self.targets),
            "n_images": self.n_images,
            "success": _jsonable(self.success),
            "success_on_correct": _jsonable(self.success_on_correct),
            "clean_error": dict(self.clean_error),
            "n_correct": dict(self.n_correct),
            "attack": _jsonable(self.attack),
        }


def transfer_matrix(attack: Attack | str, surrogates: Mapping[str, nn.Module], targets: Mapping[str, nn.Module],
                    x: torch.Tensor, y: torch.Tensor, batch_size: int | None = None,
                    eval_batch_size: int = 64) -> TransferMatrix:
    """Craft ``attack`` once per surrogate and score those images on every target.

    The diagonal (the same model as surrogate and target) is the white-box success. Clean
    predictions of each target are computed once. ``batch_size`` chunks the crafting (None:
    the whole batch at once); ``eval_batch_size`` the targets' forward passes.
    """
    if not surrogates or not targets:
        raise ValueError("transfer_matrix needs at least one surrogate and one target")
    attack = _attack_of(attack)
    x_cpu = x.cpu()
    clean = {t: _predict(model, x_cpu, eval_batch_size) for t, model in targets.items()}
    success: dict[str, dict[str, float | None]] = {}
    on_correct: dict[str, dict[str, float | None]] = {}
    clean_error: dict[str, float | None] = {}
    n_correct: dict[str, int] = {}
    adversarial: dict[str, torch.Tensor] = {}
    for s_name, surrogate in surrogates.items():
        x_adv = craft(attack, surrogate, x, y, batch_size)
        adversarial[s_name] = x_adv
        success[s_name], on_correct[s_name] = {}, {}
        for t_name, target in targets.items():
            result = _evaluate(attack, target, x_cpu, x_adv, y, eval_batch_size, clean_pred=clean[t_name])
            success[s_name][t_name] = result.success_rate
            on_correct[s_name][t_name] = result.success_rate_on_correct
            clean_error[t_name] = result.clean_error_rate
            n_correct[t_name] = result.n_correct
            log.info("transfer %s: %s -> %s: success %.1f%% (%.1f%% of the %d correct)", attack.name, s_name, t_name,
                     100 * (result.success_rate or 0.0), 100 * (result.success_rate_on_correct or 0.0),
                     result.n_correct)
    return TransferMatrix(surrogates=list(surrogates), targets=list(targets), success=success,
                          success_on_correct=on_correct, clean_error=clean_error, n_correct=n_correct,
                          n_images=len(x), attack=_jsonable(attack.describe()), adversarial=adversarial)
