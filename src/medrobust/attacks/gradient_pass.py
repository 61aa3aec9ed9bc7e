"""How the attack engine runs a model for an input gradient: fast, and computing the same thing.

An iterative attack needs, at every step, ``d J(f(c), y) / d x`` summed over its (transformed)
copies ``c`` of the images: gradients to the *images* only. Done plainly
(``torch.autograd.grad(J(model(copies)), x)`` on the whole stack of copies at once) the model
runs as it would for training. :class:`GradientExecution` runs the same computation in a cheaper
way, by default:

1. **Channels-last activations where they are faster** (the CPU with oneDNN:
   :func:`medrobust.models.device.channels_last_is_faster`): the Classifier hands its network a
   channels-last input (:func:`medrobust.models.classifier.network_memory_format`), and the
   convolutions carry that layout through the network. Nothing in the user's model changes:
   ``model.to(memory_format=...)`` would rewrite its parameters in place, and the network runs as
   fast with its weights in their own layout (``benchmarks/bench_sia.py``'s ``channels_last``
   variant: no faster).
2. **Passes of bounded size**: on the CPU the copies go through the model in passes of about
   :data:`PIXELS_PER_PASS` network-input pixels (128 images at 64 px, 16 at 224 px), and the
   gradients of the passes are gathered before one backward pass through the copies'
   construction (e.g. SIA's structure-invariant transform). One pass of SIA's 20 copies of 4
   images at 224 px is 80 images, gigabytes of activations that glibc's malloc maps fresh from
   the kernel (and zero-fills) at every layer and that no cache holds; passes of 16 images are
   faster with either allocator setting, and peak memory stays bounded whatever the batch. Each
   image's gradient depends only on its own copy (eval mode), so a pass boundary changes no
   value, only the order of floating-point sums. A model that draws randomness when it runs (a
   randomised defense, EOT) always runs on the whole stack, so its draws are the ones of a plain
   run.
3. **Batch norms folded** (on the CPU): in eval mode a batch norm is a fixed affine map, so
   for the attack's duration one next to a convolution is folded into it (before it, or after
   it with a ReLU between, leaving a shift) and the others get a backward of one multiplication
   (:mod:`medrobust.attacks.batch_norm_folding`; new modules in the parents' slots, checked on a
   probe image, the originals put back afterwards).
4. **No parameter gradients**: the engine asks autograd for the input gradient only
   (``torch.autograd.grad(loss, x)``), so autograd computes no weight gradient, and the folded
   layers' parameters are frozen copies. Switching the user's parameters to
   ``requires_grad=False`` for the attack as well (``freeze_parameters=True``, restored
   afterwards) measured no faster, so it is off by default (the bench's ``with_freeze`` ablation).

What it does not do: ``torch.compile`` (on the CPU its first call compiles DenseNet121's forward
and backward for minutes with a cold cache, for a modest steady-state gain over channels-last: it
would pay only over hours of attacks, and tests and short runs must never pay it); bfloat16
(it changes the adversarial images: opt-in elsewhere, never here); repeating the grey channel
and normalising once per image rather than once per copy (impossible for SIA, whose copies are
built on the stored image and clipped to [0, 1], and under 0.5% of a step anyway).

Numerics: the adversarial images keep their meaning (same algorithm, same random plan), but the
layouts and pass sizes change the order of floating-point sums inside the kernels, so input
gradients differ from the plain path by float rounding (relative differences around 1e-6 per
element for a trained model; larger, up to ~1e-2 of the largest element, on an untrained
DenseNet121 whose gradients are noise), and a pixel whose accumulated gradient is near zero may
take the other sign in a step. :meth:`GradientExecution.plain` is the plain path, for
comparisons.

How much each part saves, and the whole attack's speed-up, is measured by
``benchmarks/bench_sia.py`` (its ablations switch each part off); the dated figures are in
``benchmarks/README.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn

from medrobust.attacks.batch_norm_folding import folded_batch_norms
from medrobust.models.classifier import network_memory_format
from medrobust.models.device import channels_last_is_faster

PIXELS_PER_PASS = 2**19
"""Network-input pixels per forward/backward pass on the CPU when the pass size is automatic
(128 images at 64 px), but never fewer than :data:`MIN_IMAGES_PER_PASS` images (16 at 224 px).
Chosen from DenseNet121's timings at several pass sizes, with either allocator setting
(``benchmarks/bench_sia.py``; the figures are in ``benchmarks/README.md``, "Pass size")."""

MIN_IMAGES_PER_PASS = 16
"""Below 16 images, PyTorch runs a 1 x 1 convolution on one CPU thread with its native kernel
instead of oneDNN's (a heuristic for NCHW tensors), which also copies channels-last inputs to
NCHW: passes at least this large keep every convolution on oneDNN."""


@dataclass(frozen=True)
class GradientExecution:
    """How :class:`~medrobust.attacks.engine.IterativeAttack` runs the model for its input gradients
    (see the module docstring); speed only, the same maths. Set it on an attack with
    ``attack.execution = GradientExecution(...)``.

    Args:
        channels_last: give the network channels-last inputs. Default None: where
            :func:`~medrobust.models.device.channels_last_is_faster`, i.e. on the CPU.
        freeze_parameters: turn the parameters' ``requires_grad`` off during the attack
            (restored after). Default False: measured no faster.
        images_per_pass: images per forward/backward pass of the model; 0: all at once. Default
            None: automatic, about :data:`PIXELS_PER_PASS` network pixels and at least
            :data:`MIN_IMAGES_PER_PASS` images per pass on the CPU, all at once elsewhere.
        fold_batch_norm: fold batch norms into the convolutions next to them and freeze the
            others for the attack's duration (:mod:`medrobust.attacks.batch_norm_folding`).
            Default None: on the CPU.

    Raises:
        ValueError: ``images_per_pass`` is negative.

    Example:

    >>> GradientExecution().images_per_pass is None, GradientExecution.plain().images_per_pass
    (True, 0)
    """

    channels_last: bool | None = None
    freeze_parameters: bool = False
    images_per_pass: int | None = None
    fold_batch_norm: bool | None = None

    def __post_init__(self) -> None:
        if self.images_per_pass is not None and self.images_per_pass < 0:
            raise ValueError(f"images_per_pass must be 0 (all at once), a positive count or None (automatic), "
                             f"got {self.images_per_pass}")

    @classmethod
    def plain(cls) -> "GradientExecution":
        """The plain path: the model as it is, in its own layout, all copies in one pass."""
        return cls(channels_last=False, freeze_parameters=False, images_per_pass=0, fold_batch_norm=False)

    def memory_format(self, device: torch.device) -> torch.memory_format | None:
        """The layout to ask of the network on ``device`` (None: leave it as computed)."""
        wanted = channels_last_is_faster(device) if self.channels_last is None else self.channels_last
        return torch.channels_last if wanted else None

    def pass_size(self, model: nn.Module, images: torch.Tensor) -> int:
        """Images per pass for running ``model`` on ``images`` (N, C, H, W) (or volumes (N, C, D, H, W),
        whose voxels count as pixels): N (one pass) unless
        splitting is asked for or automatic and useful; passes are made as even as possible."""
        n = images.shape[0]
        if self.images_per_pass == 0 or draws_randomness(model):
            return n
        if self.images_per_pass is not None:
            per = self.images_per_pass
        elif images.device.type != "cpu":
            return n
        else:
            size = getattr(model, "input_size", None)  # (H, W), or a volume model's (D, H, W): voxels count as pixels
            pixels = math.prod(size) if size else math.prod(images.shape[2:])
            per = max(MIN_IMAGES_PER_PASS, PIXELS_PER_PASS // pixels)
        if n <= per:
            return n
        even = math.ceil(n / math.ceil(n / per))  # as even as possible: 320 in passes of 107, not 128 + 128 + 64
        return even if self.images_per_pass is not None else max(even, MIN_IMAGES_PER_PASS)

    def folds_batch_norm(self, model: nn.Module, device: torch.device) -> bool:
        """Whether to fold ``model``'s batch norms on ``device`` (None: on the CPU; never for a
        model that draws randomness, whose draws the fold's probe would consume)."""
        wanted = device.type == "cpu" if self.fold_batch_norm is None else self.fold_batch_norm
        return wanted and not draws_randomness(model)

    @contextmanager
    def running(self, model: nn.Module, x: torch.Tensor) -> Iterator[None]:
        """The context an attack on images like ``x`` (B, C, H, W) runs in: the memory format asked
        for, the parameters frozen, the batch norms folded, as this execution says; everything
        restored on leaving, even on error."""
        with ExitStack() as stack:
            memory_format = self.memory_format(x.device)
            if memory_format is not None:
                stack.enter_context(network_memory_format(memory_format))
            if self.freeze_parameters:
                stack.enter_context(frozen_parameters(model))
            if self.folds_batch_norm(model, x.device):
                stack.enter_context(folded_batch_norms(model, x))
            yield


def draws_randomness(model: nn.Module) -> bool:
    """Whether running ``model`` draws random numbers (a randomised defense in front of it, or
    expectation over transformation asked for): then it must run on a whole batch at once for its
    draws to be those of a plain run."""
    defense = getattr(model, "defense", None)
    return bool(getattr(defense, "randomized", False)) or int(getattr(model, "eot_samples", 1)) > 1


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """``requires_grad`` off for every parameter of ``model`` that has it on, inside the block;
    turned back on when leaving (even on error). Parameter objects, values and layouts are not
    touched."""
    thawed = [p for p in model.parameters() if p.requires_grad]
    for p in thawed:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in thawed:
            p.requires_grad_(True)


def input_gradient(loss_of: Callable[[torch.Tensor, slice], torch.Tensor], inputs: torch.Tensor,
                   wrt: torch.Tensor, per_pass: int) -> torch.Tensor:
    """``d L / d wrt`` with ``L`` the sum over passes of ``loss_of(inputs[rows], rows)`` (a scalar per
    pass; ``rows`` the slice of ``inputs`` it covers), ``inputs`` (N, ...) a differentiable function
    of ``wrt`` (or ``wrt`` itself), ``per_pass`` images per pass.

    One pass: a single ``torch.autograd.grad``. Several: each pass runs on a detached slice of
    ``inputs`` and yields its gradient; the gradients are gathered and sent back through the
    construction of ``inputs`` once (``wrt``'s gradient is then exactly the chain rule's, summed in
    another order).
    """
    n = inputs.shape[0]
    if per_pass >= n:
        (grad,) = torch.autograd.grad(loss_of(inputs, slice(0, n)), wrt)
        return grad
    detached = inputs.detach()
    grad_inputs = torch.empty_like(detached)
    for start in range(0, n, per_pass):
        rows = slice(start, min(start + per_pass, n))
        part = detached[rows].requires_grad_(True)
        (grad_inputs[rows],) = torch.autograd.grad(loss_of(part, rows), part)
    if inputs is wrt:
        return grad_inputs
    (grad,) = torch.autograd.grad(inputs, wrt, grad_inputs)
    return grad
