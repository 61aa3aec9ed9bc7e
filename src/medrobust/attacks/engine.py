"""One iterative gradient engine; every gradient attack is a thin configuration of it.

The loop (after TransferAttack's structure, Wang et al.)::

    x_0 = x, or a random point of the eps-ball (random start)
    g_0 = 0
    for t in 0..T-1:
        grad  = mean over transformed copies c of  d J(f(c(x_t)), y) / d x_t      # gradient()
        g     = mu * g + grad / ||grad||_1   (mu > 0: MI-FGSM momentum)  or grad  # accumulate()
        x_t+1 = Clip_{[0,1] and eps-ball around x}(x_t + alpha * sign(g))         # budget.step/project
    x_adv = quantise(x_T) to the storage bit depth, staying in the ball

Each step is a method an attack may override: ``init``, ``transformed_batches`` (input
diversity: SIA's structure-invariant copies), ``loss``, ``gradient``, ``accumulate``. The
model is run in eval mode with gradients to the input only (``torch.autograd.grad``, no
parameter gradients), and its mode is restored afterwards. How it is run is
:mod:`medrobust.attacks.gradient_pass`'s: by default on the CPU with channels-last activations,
in passes of bounded size and with its batch norms folded for the attack (the user's modules put
back afterwards): the same gradients up to the order of floating-point operations, in less time.
Images in a batch are independent: the loss is summed per image, so an image's perturbation does
not depend on its batch-mates.
All randomness comes from one ``torch.Generator`` seeded per call, so the same seed gives
bit-identical results on the CPU.

On a GPU the engine's loop never waits for the device: it reads no value back to the host inside
a step (the multi-label findings mask is built once per device), so the next kernels queue while
the current ones run; SIA adds one small read per step (its plan's layout, see
:mod:`medrobust.attacks.sit_plan`), and the model's forward pass is the model's own. Attacks run
in the model's own precision: nothing here turns on autocast or reduced-precision modes.
"""

from __future__ import annotations

import functools
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence

import torch
import torch.nn as nn

from medrobust.attacks.budget import Budget, quantize_within
from medrobust.attacks.gradient_pass import GradientExecution, input_gradient
from medrobust.data.class_names import class_indices
from medrobust.data.image_batch import check_image_batch
from medrobust.models.batched_prediction import eval_mode
from medrobust.models.classifier import require_gradients
from medrobust.models.output_kind import OutputKind

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=64)
def _finding_mask(indices: tuple[int, ...], width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(width,) 1 at ``indices``, 0 elsewhere, on ``device``: built once per device and kept, so
    a step does not copy an index from the host."""
    mask = torch.zeros(width, dtype=dtype).index_fill_(0, torch.tensor(indices, dtype=torch.long), 1.0)
    return mask.to(device)


def _same_device(a: torch.device, b: torch.device) -> bool:
    """Same device type, and the same index where both name one (``cuda`` is the current GPU)."""
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


class Attack(ABC):
    """Base of every attack: ``attack(model, x, y) -> x_adv`` (same shape and dtype, in [0, 1]).

    torchattacks' calling convention (Kim, "Torchattacks: A PyTorch Repository for Adversarial
    Attacks", arXiv 2020): hyper-parameters in the constructor, ``model, x, y`` in the call
    (:meth:`__call__`). The call checks ``x``, refuses a black-box model when the attack
    ``needs_gradients``, runs :meth:`perturb` with the model in eval mode (its mode is restored
    afterwards) and gradients enabled, and returns a detached tensor of ``x``'s dtype.
    Subclasses implement :meth:`perturb`.

    ``y`` holds the true labels for an untargeted attack, the target labels for a targeted
    one. Randomness comes only from a ``torch.Generator``: the one passed to the call (on
    ``x``'s device: every draw is made there), or one seeded with ``seed`` on ``x``'s device, so
    the same seed gives the same result on the same device.

    Args:
        seed: seed of the generator built on ``x``'s device when the call is given none.
            Default 0; a whole number from 0 to 2**32 - 1 when built by name.
        quantize_bits: bit depth of the storage grid the result is rounded to, inside the
            budget (default 8: what an 8-bit PNG or a PACS stores); None keeps floats.

    Volumes: every attack takes volumes (B, C, D, H, W) as it takes images, unless its class says
    why not in :attr:`volumes` (a sentence; SIA and block-shuffle, whose block transforms are 2-D),
    which the call then gives as the refusal.

    Shape:
        - x: (B, C, H, W) float in [0, 1] (C = 1 for radiographs), or (B, C, D, H, W) volumes.
        - y: (B,) int64 class indices, or (B, K) 0/1 findings for a multi-label model.
        - Output: ``x``'s shape, dtype and device, in [0, 1].

    Example (an attack that changes nothing):

    >>> import torch
    >>> from medrobust.models import build_classifier
    >>> class Nothing(Attack):
    ...     needs_gradients = False
    ...     def perturb(self, model, x, y, generator):
    ...         return x.clone()
    >>> model = build_classifier("small-cnn", ["Normal", "Pneumonia", "Pneumothorax"], 32)
    >>> x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> torch.equal(Nothing()(model, x, torch.tensor([0, 2])), x), model.training  # train mode restored
    (True, True)
    """

    name: str = "attack"
    needs_gradients: bool = True
    volumes: bool | str = True
    """True: the attack takes volumes (B, C, D, H, W); a sentence: why it refuses them."""

    def __init__(self, seed: int = 0, quantize_bits: int | None = 8) -> None:
        self.seed = seed
        self.quantize_bits = quantize_bits

    def make_generator(self, device: torch.device, seed: int | None = None) -> torch.Generator:
        """A ``torch.Generator`` on ``device`` seeded with ``seed`` (None: the attack's own ``seed``).

        Args:
            device: where the images are; every random draw of the attack is made there.
            seed: the seed; None takes :attr:`seed`.

        Returns:
            A fresh generator, to pass to :meth:`__call__` (e.g. one per batch).
        """
        return torch.Generator(device=device).manual_seed(self.seed if seed is None else seed)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Craft adversarial images for ``x``.

        Args:
            model: the classifier attacked, an ``nn.Module`` returning logits (a
                :class:`~medrobust.models.classifier.Classifier` or any module). Put in eval
                mode for the call, its mode restored afterwards.
            x: the clean images, float in [0, 1] (checked exactly: no value outside).
            y: the true labels (untargeted) or the target labels (targeted): class indices, or
                0/1 findings for a multi-label model.
            generator: the random stream, on ``x``'s device; None builds one from ``seed``
                (:meth:`make_generator`).

        Returns:
            The adversarial images, detached, with ``x``'s shape, dtype and device, in [0, 1].

        Shape:
            - x: (B, C, H, W) float in [0, 1].
            - y: (B,) int64, or (B, K) 0/1 for a multi-label model.
            - Output: (B, C, H, W), same dtype and device as ``x``.

        Raises:
            ImageBatchError: ``x`` is not a float image batch (B, C, H, W) (or volumes
                (B, C, D, H, W), where the attack takes them) in [0, 1].
            NotDifferentiableError: the model is a black box and the attack needs gradients.
            ValueError: ``generator`` lives on another device than ``x``.
        """
        if self.needs_gradients:
            require_gradients(model, f"the {self.name} attack")
        check_image_batch(x, f"the {self.name} attack", unit_range=True, tolerance=0.0, volumes=self.volumes)
        generator = generator or self.make_generator(x.device)
        if not _same_device(torch.device(generator.device), x.device):
            raise ValueError(f"the {self.name} attack: the generator is on {generator.device} but the images are on "
                             f"{x.device}; every random draw is made on the images' device, so build the generator "
                             f"there: attack.make_generator(x.device, seed)")
        with eval_mode(model), torch.enable_grad():
            x_adv = self.perturb(model, x.detach(), y.detach(), generator)
        return x_adv.to(dtype=x.dtype).detach()

    @abstractmethod
    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Craft the adversarial batch; what a subclass implements. Called by :meth:`__call__`
        in eval mode with gradients enabled, on a checked, detached ``x``.

        Args:
            model: the classifier attacked.
            x: (B, C, H, W) clean images in [0, 1].
            y: (B,) labels or (B, K) findings, as in :meth:`__call__`.
            generator: the random stream, on ``x``'s device; the only source of randomness.

        Returns:
            (B, C, H, W) adversarial images in [0, 1] (cast to ``x``'s dtype by the caller).
        """

    def describe(self) -> dict[str, object]:
        """The attack's settings, for run records.

        Returns:
            ``{"name": ..., setting: value, ...}``: the name and every public attribute.
        """
        return {"name": self.name, **{k: v for k, v in vars(self).items() if not k.startswith("_")}}


class IterativeAttack(Attack):
    """The engine: ``steps`` signed-gradient (or momentum) steps of size ``alpha``, projected onto
    the ``eps``-ball in ``norm`` and [0, 1], then rounded to the storage grid inside the ball.

    The loop is the module docstring's (after TransferAttack's structure, Wang et al.): MI-FGSM
    (Dong et al., CVPR 2018) when ``mu > 0``, I-FGSM / PGD (Kurakin et al., ICLR 2017 workshop;
    Madry et al., ICLR 2018) when ``mu = 0``. Attacks subclass it and override the hooks
    (``init``, ``transformed_batches``, ``loss``, ``gradient``, ``accumulate``); :class:`SIA`
    overrides only ``transformed_batches`` (:class:`~medrobust.attacks.sia.SIA`).

    Args:
        eps: the budget, in units of the stored image ([0, 1]: 8/255 is 8 grey levels of an 8-bit
            image); the radius of the L-inf or L2 ball. Default 8/255; must be >= 0 (above
            64/255 refused by :func:`~medrobust.attacks.registry.build_attack` unless allowed).
        steps: iterations T, at least 1. Default 10.
        alpha: step size in the same units as ``eps``. Default None: ``eps / steps``.
        norm: ``"linf"`` (sign steps, per-pixel clip) or ``"l2"`` (normalised steps, per-image
            projection). Default ``"linf"``.
        mu: momentum decay (Dong et al.); 0 gives plain iterative FGSM / PGD. Default 0.
        random_start: start from a uniform random point of the ball instead of ``x``. Default False.
        targeted: descend the loss towards ``y`` (then the targets) instead of ascending it away
            from the true labels. Default False.
        findings: for a multi-label model, the names of the findings to flip (untargeted: push
            each named finding away from its true value, leave the others alone). Default None:
            every finding, through the model's own loss.
        seed: seed of the generator built when the call is given none (the random start's and a
            subclass's draws, e.g. SIA's copies). Default 0.
        quantize_bits: storage bit depth the result is rounded to, inside the ball (skipped with
            a warning when ``eps`` is below one grey level). Default 8; None keeps floats.

    Shape:
        - x: (B, C, H, W) float in [0, 1], or volumes (B, C, D, H, W) (the loop is shape-blind:
          a budget is per voxel as per pixel; for CT, 1 HU is 1/4095 and ``quantize_bits=12``
          rounds to integer HU, :data:`~medrobust.data.stored_grid.CT_HU`).
        - y: (B,) int64 labels, or (B, K) 0/1 findings for a multi-label model.
        - Output: ``x``'s shape and dtype, in [0, 1] and within ``eps`` of ``x``.

    Example:

    >>> import torch
    >>> from medrobust.models import build_classifier
    >>> model = build_classifier("small-cnn", ["Normal", "Pneumonia", "Pneumothorax"], 32)
    >>> x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> attack = IterativeAttack(eps=4 / 255, steps=3, mu=1.0)
    >>> x_adv = attack(model, x, torch.tensor([0, 2]))
    >>> x_adv.shape, bool(attack.budget.contains(x_adv, x)), round(attack.alpha * 255, 3)
    (torch.Size([2, 1, 32, 32]), True, 1.333)
    """

    def __init__(
        self,
        eps: float = 8 / 255,
        steps: int = 10,
        alpha: float | None = None,
        norm: str = "linf",
        mu: float = 0.0,
        random_start: bool = False,
        targeted: bool = False,
        findings: Sequence[str] | None = None,
        seed: int = 0,
        quantize_bits: int | None = 8,
    ) -> None:
        super().__init__(seed=seed, quantize_bits=quantize_bits)
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        self.eps = float(eps)
        self.steps = int(steps)
        self.alpha = float(alpha) if alpha is not None else self.eps / self.steps
        self.norm = norm
        self.mu = float(mu)
        self.random_start = bool(random_start)
        self.targeted = bool(targeted)
        self.findings = list(findings) if findings else None
        Budget(self.eps, norm)  # validates eps and norm now, not at the first step

    @property
    def budget(self) -> Budget:
        """The ball the attack stays in: ``Budget(eps, norm)``."""
        return Budget(self.eps, self.norm)

    _execution: GradientExecution = GradientExecution()

    @property
    def execution(self) -> GradientExecution:
        """How the model is run for the input gradients (speed only, the same maths; default: the
        fast path of :mod:`medrobust.attacks.gradient_pass`; ``GradientExecution.plain()``: the
        plain one). Not part of the attack's settings in run records."""
        return self._execution

    @execution.setter
    def execution(self, value: GradientExecution) -> None:
        self._execution = value

    # --- hooks -----------------------------------------------------------------------------
    def init(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The starting point: x itself, or a uniform random point of the ball."""
        return self.budget.random_start(x, generator) if self.random_start else x.clone()

    def transformed_batches(self, x_adv: torch.Tensor, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, int]]:
        """Yield ``(copies, k)``: ``k`` transformed copies of the batch stacked as (k*B, C, H, W),
        differentiable functions of ``x_adv``. Default: the image itself, once."""
        yield x_adv, 1

    @property
    def n_copies(self) -> int:
        """Transformed copies per image the gradient is averaged over (1 here; SIA's ``n_copies``)."""
        return 1

    def loss(self, model: nn.Module, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-image loss to *ascend*: J for untargeted, -J towards the target for targeted."""
        kind: OutputKind = getattr(model, "output_kind", OutputKind.SOFTMAX)
        if kind is OutputKind.MULTILABEL and self.findings is not None:
            indices = tuple(class_indices(self.findings, list(getattr(model, "classes", []))))
            mask = _finding_mask(indices, logits.shape[1], logits.device, logits.dtype)
            per = nn.functional.binary_cross_entropy_with_logits(logits, y.float(), reduction="none")
            value = (per * mask).sum(1)
        else:
            value = kind.loss(logits, y, reduction="none")
        return -value if self.targeted else value

    def gradient(self, model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Mean over the transformed copies of the input gradient of the summed per-image loss.

        A model with a randomised preprocessing defense says how many random draws to average
        (``model.eot_samples``, expectation over transformation, Athalye et al. 2018): the
        gradient is then averaged over that many independent forward/backward passes. The model
        runs on the copies in passes of :meth:`GradientExecution.pass_size
        <medrobust.attacks.gradient_pass.GradientExecution.pass_size>` images (the same sum).
        """
        x_var = x_adv.detach().requires_grad_(True)
        total = torch.zeros_like(x_adv)
        draws = max(1, int(getattr(model, "eot_samples", 1)))
        for _ in range(draws):
            for copies, k in self.transformed_batches(x_var, generator):
                target = y.repeat(k, *([1] * (y.ndim - 1))) if k > 1 else y

                def loss_of(images: torch.Tensor, rows: slice, target: torch.Tensor = target) -> torch.Tensor:
                    return self.loss(model, model(images), target[rows]).sum()

                total += input_gradient(loss_of, copies, x_var, self.execution.pass_size(model, copies))
        return total / (self.n_copies * draws)

    def accumulate(self, g: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """Momentum (Dong et al. 2018): ``g = mu * g + grad / ||grad||_1`` per image; plain ``grad`` if mu = 0.

        The L1 norm is taken as the mean absolute value (a constant factor C*H*W off the sum),
        which changes no sign and keeps the numbers in a comfortable float range.
        """
        if self.mu == 0.0:
            return grad
        l1 = grad.abs().mean(dim=tuple(range(1, grad.ndim)), keepdim=True).clamp_min(1e-12)
        return self.mu * g + grad / l1

    # --- the loop ----------------------------------------------------------------------------
    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x_adv = self.init(x, generator)
        g = torch.zeros_like(x)
        with self.execution.running(model, x):
            for _ in range(self.steps):
                grad = self.gradient(model, x_adv, y, generator)
                g = self.accumulate(g, grad)
                x_adv = self.budget.project(self.budget.step(x_adv, g, self.alpha), x).detach()
        if self.quantize_bits is not None:
            if self.eps * (2**self.quantize_bits - 1) < 1.0 - 1e-6:
                log.warning("eps %.4g is below one grey level at %d bits; leaving the image unquantised",
                            self.eps, self.quantize_bits)
            else:
                x_adv = quantize_within(x_adv, x, self.budget, self.quantize_bits)
        return x_adv
