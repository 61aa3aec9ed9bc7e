"""A classifier behind a preprocessing defense, ready for adaptive attacks.

``DefendedClassifier(defense, classifier)(x) = classifier(defense(x))``. It is itself a
:class:`~medrobust.models.classifier.Classifier` (same contract, classes and output kind), so
every attack, metric and report works on it unchanged, and it tells attacks how to get
gradients through the defense (Athalye, Carlini & Wagner, ICML 2018, "Obfuscated Gradients
Give a False Sense of Security: Circumventing Defenses to Adversarial Examples"):

* ``gradient="exact"``: autograd through the defense (it must be ``differentiable``, e.g.
  ``median`` or ``tv:exact_gradients=true``).
* ``gradient="bpda"``: backward pass differentiable approximation with the identity: the
  forward pass is ``defense(x)``, the backward pass treats the defense as ``g(x) = x``, so the
  input gradient is the classifier's gradient evaluated at ``defense(x)``. Implemented as the
  straight-through ``defense(x).detach() + (x - x.detach())`` (forward value exactly
  ``defense(x)``, Jacobian exactly the identity).
* ``gradient="auto"`` (default): exact for differentiable defenses, BPDA otherwise; in a
  composition member by member (``jpeg+median``: BPDA through JPEG, exact through the median).
* ``gradient="unrolled"``: member by member, exact gradients through every member that has them,
  even one configured without (TV's solver unrolled: :meth:`~medrobust.defenses.base.Defense.exact_variant`),
  BPDA with the identity only where none exists (JPEG, bit depth: the straight-through estimate,
  TVM's random mask). The forward values are the defense's own.
* ``gradient="smooth"``: as ``unrolled``, and a member without gradients that offers a
  ``smooth_approximation`` (JPEG: a differentiable JPEG, Shin & Song 2017) is passed with BPDA
  whose backward is that approximation's Jacobian instead of the identity:
  ``defense(x).detach() + (g(x) - g(x).detach())`` (forward value exactly ``defense(x)``).

For a randomized defense (``tvm``) ``eot_samples`` (default 10; 1 for deterministic defenses)
tells :class:`~medrobust.attacks.engine.IterativeAttack` to average the input gradient over that
many forward/backward passes, each drawing fresh randomness from the defense's generator:
expectation over transformation (EOT).

Limitations: BPDA with the identity is a good approximation only for defenses that keep
``defense(x) ~ x`` (JPEG, TV, squeezers do); EOT with few samples is a noisy estimate; and a
defense that resists these adaptive attacks may still fall to a stronger, better-tuned one.
Report robustness against the adaptive attacker, not only against one that ignores the
defense (Athalye et al. 2018; Carlini et al. 2019, "On Evaluating Adversarial Robustness").
"""

from __future__ import annotations

import torch

from medrobust.defenses.base import Defense
from medrobust.defenses.compose import Compose
from medrobust.defenses.registry import build_defense
from medrobust.models.classifier import Classifier

GRADIENT_MODES = ("auto", "exact", "bpda", "unrolled", "smooth")
DEFAULT_EOT_SAMPLES = 10


def straight_through(defended: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``defended`` in the forward pass, the identity Jacobian with respect to ``x`` in the
    backward pass (BPDA with g(x) = x)."""
    return defended.detach() + (x - x.detach())


def smooth_through(defended: torch.Tensor, approximation: torch.Tensor) -> torch.Tensor:
    """``defended`` in the forward pass, the Jacobian of ``approximation`` (a differentiable
    function of the input close to the defense) in the backward pass: BPDA with a smooth g."""
    return defended.detach() + (approximation - approximation.detach())


ROUTES = ("exact", "smooth", "identity")
"""How one part of a defense is differentiated: autograd through it (or through its exact
variant), BPDA with its smooth approximation's Jacobian, or BPDA with the identity."""


def _route(part: Defense, gradient: str) -> tuple[str, Defense]:
    """``(route, module)`` for one part of a defense under ``gradient``: the module autograd goes
    through for an ``exact`` route (the part itself or its exact variant), else the part."""
    if gradient == "exact" or (gradient == "auto" and part.differentiable):
        return "exact", part
    if gradient in ("unrolled", "smooth"):
        exact = part.exact_variant()
        if exact is not None:
            return "exact", exact
        if gradient == "smooth" and getattr(part, "smooth_approximation", None) is not None:
            return "smooth", part
    return "identity", part


def defense_routes(defense: Defense, gradient: str = "auto") -> list[tuple[Defense, str, Defense]]:
    """``[(part, route, module), ...]`` in order: how ``gradient`` (one of
    :data:`GRADIENT_MODES`) goes through ``defense``. ``auto``, ``unrolled`` and ``smooth`` take a
    composition member by member; ``exact`` and ``bpda`` take the whole defense as one part."""
    if gradient not in GRADIENT_MODES:
        raise ValueError(f"gradient must be one of {', '.join(GRADIENT_MODES)}, got {gradient!r}")
    by_member = gradient in ("auto", "unrolled", "smooth") and isinstance(defense, Compose)
    return [(part, *_route(part, gradient)) for part in (list(defense) if by_member else [defense])]


def follow_routes(routes: list[tuple[Defense, str, Defense]], x: torch.Tensor, check_range: bool = True) -> torch.Tensor:
    """The defended images along ``routes`` (:func:`defense_routes`): each part's own output in the
    forward pass, its route's Jacobian in the backward pass; without autograd, the parts alone."""
    for part, route, module in routes:
        if not (torch.is_grad_enabled() and x.requires_grad):
            x = part(x, check_range=check_range)
        elif route == "exact":
            x = module(x, check_range=check_range)
        else:
            with torch.no_grad():
                defended = part(x.detach(), check_range=check_range)
            x = smooth_through(defended, part.smooth_approximation(x)) if route == "smooth" else straight_through(defended, x)
    return x


def apply_defense(defense: Defense, x: torch.Tensor, gradient: str = "auto", check_range: bool = True) -> torch.Tensor:
    """``defense(x)`` with gradients per ``gradient`` (one of :data:`GRADIENT_MODES`, see the
    module docstring); ``check_range`` as :meth:`Defense.forward` (False: no read from the
    device, for inputs known to be in [0, 1])."""
    return follow_routes(defense_routes(defense, gradient), x, check_range)


def gradient_route(defense: Defense, gradient: str) -> str:
    """How an attacker with ``gradient`` differentiates through each part of ``defense``, in words
    (from :func:`defense_routes`), e.g. "BPDA (identity) through jpeg, exact through tv (unrolled)"."""
    words = {"smooth": "BPDA (smooth approximation) through", "identity": "BPDA (identity) through"}
    return ", ".join(f"exact through {part.name}" + (" (unrolled)" if module is not part else "") if route == "exact"
                     else f"{words[route]} {part.name}" for part, route, module in defense_routes(defense, gradient))


class DefendedClassifier(Classifier):
    """``classifier(defense(x))`` as a Classifier, with exact, BPDA or automatic gradients and
    EOT for randomized defenses (see the module docstring).

    ``.network`` is the inner classifier's network; ``differentiable``, ``classes``, the
    contract and the output kind are the inner classifier's.

    Paper: Athalye, Carlini & Wagner, "Obfuscated Gradients Give a False Sense of Security:
    Circumventing Defenses to Adversarial Examples", ICML 2018. With ``D`` the defense and
    ``f`` the classifier::

        f_D(x) = f(D(x))
        BPDA:  grad_x J(f(D(x)), y)  ~  grad_z J(f(z), y) at z = D(x)         (D treated as identity)
        EOT:   grad_x E_r[J(f(D_r(x)), y)]  ~  (1/n) sum_{k=1..n} grad_x J(f(D_{r_k}(x)), y)

    Args:
        defense: a :class:`~medrobust.defenses.base.Defense` or a spec such as ``"jpeg+tv"``
            (:func:`~medrobust.defenses.registry.build_defense`).
        classifier: the medrobust :class:`~medrobust.models.classifier.Classifier` behind it.
        gradient: how attacks differentiate through the defense, one of ``"auto"``,
            ``"exact"``, ``"bpda"``, ``"unrolled"``, ``"smooth"`` (module docstring). Default
            ``"auto"``: exact where the defense is differentiable, BPDA where it is not, member
            by member.
        eot_samples: gradient draws the attack engine averages (EOT), at least 1. Default None:
            10 for randomized defenses (medrobust's choice: a start, raise it for a tighter
            estimate), 1 otherwise.

    Shape:
        - x: the inner classifier's input, (B, C_stored, H, W) float in [0, 1].
        - Output: logits (B, K) (binary: (B, 1)), as the inner classifier's.

    Raises:
        TypeError: ``classifier`` is not a medrobust ``Classifier``.
        ValueError: an unknown ``gradient``; ``"exact"`` through a defense without exact
            gradients; ``eot_samples`` below 1; or a defense spec that does not build.

    Example (an adaptive attack through the study's hybrid defense):

    >>> import torch
    >>> from medrobust.attacks import PGD
    >>> from medrobust.models import build_classifier
    >>> model = build_classifier("small-cnn", ["Normal", "Pneumonia", "Pneumothorax"], 32).eval()
    >>> x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> defended = DefendedClassifier("jpeg+tv", model)
    >>> defended(x).shape, defended.classes == model.classes, defended.eot_samples
    (torch.Size([2, 3]), True, 1)
    >>> x_adv = PGD(eps=8 / 255, steps=3)(defended, x, torch.tensor([0, 2]))  # BPDA through JPEG and TV
    >>> x_adv.shape, bool((x_adv - x).abs().max() <= 8 / 255 + 1e-6)
    (torch.Size([2, 1, 32, 32]), True)
    >>> DefendedClassifier("tvm", model).eot_samples  # randomized: EOT
    10
    """

    def __init__(self, defense: Defense | str, classifier: Classifier, gradient: str = "auto",
                 eot_samples: int | None = None) -> None:
        if not isinstance(classifier, Classifier):
            raise TypeError(f"DefendedClassifier wraps a medrobust Classifier, got {type(classifier).__name__}")
        defense = build_defense(defense)
        if gradient not in GRADIENT_MODES:
            raise ValueError(f"gradient must be one of {', '.join(GRADIENT_MODES)}, got {gradient!r}")
        if gradient == "exact" and not defense.differentiable:
            raise ValueError(
                f"defense {defense.name!r} has no exact gradients (differentiable=False); use gradient='bpda' or "
                "'auto' (BPDA through it), or a differentiable variant such as tv:exact_gradients=true"
            )
        if eot_samples is not None and int(eot_samples) < 1:
            raise ValueError(f"eot_samples must be at least 1, got {eot_samples}")
        metadata = {**classifier.metadata, "defense": defense.spec()}
        super().__init__(classifier.network, classifier.contract, arch=classifier.arch, metadata=metadata)
        self.classifier = classifier
        self.defense = defense
        self.gradient = gradient
        self.differentiable = classifier.differentiable
        self.routes = defense_routes(defense, gradient)  # resolved once, not at every attack step
        default = DEFAULT_EOT_SAMPLES if defense.randomized else 1
        self.eot_samples = int(eot_samples) if eot_samples is not None else default

    def defend(self, x: torch.Tensor) -> torch.Tensor:
        """The defended images, with this model's gradient rule. Like a Classifier's forward, it
        checks shape and dtype but not the range (that would read from the device at every
        attack step); the defenses assume [0, 1].

        Args:
            x: (B, C, H, W) float images in [0, 1].

        Returns:
            (B, C, H, W) defended images: the defense's own values in the forward pass, the
            routes' Jacobians (exact, smooth or identity) in the backward pass.
        """
        return follow_routes(self.routes, x, check_range=False)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.prepare(self.defend(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the defended images: ``classifier(defense(x))``.

        Args:
            x: (B, C_stored, H, W) float images in [0, 1] (shape and dtype checked).

        Returns:
            The inner classifier's logits for the defended images.
        """
        self.classifier.check_input(x)
        return self.classifier(self.defend(x))

    def describe(self) -> dict[str, object]:
        return {"defense": self.defense.describe(), "gradient": self.gradient, "eot_samples": self.eot_samples}
