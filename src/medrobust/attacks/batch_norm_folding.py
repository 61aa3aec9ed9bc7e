"""Batch norm folded away while an attack runs: the same function of the input, less work per step.

In eval mode a batch norm is a fixed per-channel affine map,
``BN(z) = a * z + b`` with ``a = gamma / sqrt(running_var + eps)`` and
``b = beta - a * running_mean``. An attack runs the model in eval mode and differentiates it
with respect to the images only, so, for its duration, :func:`folded_batch_norms` rewrites:

- ``Conv2d -> BatchNorm2d``: the batch norm is **folded into the convolution**
  (``W' = a * W`` per output channel, ``c' = a * c + b``): one layer fewer, forward and backward;
- ``BatchNorm2d -> ReLU -> Conv2d`` (pre-activation, as DenseNet's every layer), when ``a > 0``
  in every channel: ``relu(a z + b) = a * relu(z + b / a)``, so the batch norm becomes a **shift**
  ``z + b / a`` (whose backward passes the gradient through unchanged) and ``a`` moves into the
  convolution's weights per input channel (zero padding stays zero: it is exact at the borders);
- every other eval-mode ``BatchNorm2d`` is **frozen**: the same forward (``F.batch_norm``), and
  as backward ``a * grad`` alone, where autograd's batch-norm backward also reads the saved input
  and costs about twice as much on the CPU.

The first two need a certain data flow: consecutive children of an ``nn.Sequential`` that runs
``nn.Sequential``'s own forward, the convolution and the batch norm each registered once in the
model, plain ``nn.Conv2d``/``nn.BatchNorm2d``/``nn.ReLU`` without hooks (and ``groups == 1`` for
the input-side fold).

The user's modules are never changed: the replacements are new modules put in their parents'
slots, and the originals go back in place when the attack ends, even on error (while it runs,
another thread using the same model object sees the rewritten model, computing the same function,
just as it sees the eval mode every attack switches on). The first time a
model (with this structure) is rewritten, its logits on a fixed probe image are compared with and
without the replacements; if they disagree (a module used in a way the rules above cannot see),
the model runs as it is and a warning says so. A model that draws randomness when it runs (a randomised defense) is left
alone, as the probe would consume its draws.

On DenseNet121 all 121 batch norms go: 59 folded into the convolution before them, 61 into the
one after (their ReLUs' shifts stay), the last one (``norm5``, before the head's ReLU) frozen.
The time it saves is measured by ``benchmarks/bench_sia.py``'s ``no_fold`` ablation (dated
figures in ``benchmarks/README.md``). Numerics: the same maths with the floating-point operations
in another order (the folded weights are rounded once), so gradients differ from the unfolded
model's by float rounding.
"""

from __future__ import annotations

import logging
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger(__name__)


def _affine_of(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``(a, b)`` with ``bn(z) = a * z + b`` per channel, in eval mode."""
    assert bn.running_mean is not None and bn.running_var is not None
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.detach()
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias.detach()
    return scale, shift


class _FrozenBatchNormFunction(torch.autograd.Function):
    """``F.batch_norm`` in eval mode forward; ``scale * grad`` backward (no statistics' terms)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, bn: nn.BatchNorm2d, scale: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(scale)
        return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        (scale,) = ctx.saved_tensors
        return grad * scale, None, None


class FrozenBatchNorm2d(nn.Module):
    """An eval-mode ``BatchNorm2d`` whose backward is ``a * grad`` (gradients to the input only)."""

    def __init__(self, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        self.bn = bn
        self.scale = _affine_of(bn)[0].view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _FrozenBatchNormFunction.apply(x, self.bn, self.scale)


class ChannelShift(nn.Module):
    """``x + shift`` per channel: what is left of a batch norm whose scale moved into the
    convolution after the ReLU that follows it (its backward passes the gradient through)."""

    def __init__(self, shift: torch.Tensor) -> None:
        super().__init__()
        self.shift = shift.view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.shift


class FoldedConv2d(nn.Module):
    """A convolution with the hyper-parameters of ``conv`` and the given (folded) ``weight`` and
    ``bias``, kept as plain tensors (nothing to train, nothing for autograd to record)."""

    def __init__(self, conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.weight, self.bias = weight, bias
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def folded_convolution(conv: nn.Conv2d, after: nn.BatchNorm2d | None = None,
                       input_scale: torch.Tensor | None = None) -> FoldedConv2d:
    """A convolution computing ``after(conv(input_scale * z))`` in eval mode, ``input_scale`` per
    input channel (None: 1; needs ``groups == 1``), ``after`` a batch norm on the output (None:
    none); ``conv`` pads with zeros."""
    weight = conv.weight.detach()
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(weight[:, 0, 0, 0])
    if input_scale is not None:
        weight = weight * input_scale.view(1, -1, 1, 1).to(weight.dtype)
    if after is not None:
        scale, shift = _affine_of(after)
        weight = weight * scale.view(-1, 1, 1, 1).to(weight.dtype)
        bias = (shift + scale * bias).to(weight.dtype)
    return FoldedConv2d(conv, weight.contiguous(), bias.contiguous())


def _plain(module: nn.Module | None, kind: type[nn.Module]) -> bool:
    """Exactly a ``kind`` (no subclass with its own behaviour), without hooks."""
    return (type(module) is kind and not module._forward_hooks and not module._forward_pre_hooks  # type: ignore[union-attr]
            and not module._backward_hooks)  # type: ignore[union-attr]


def _foldable_conv(module: nn.Module | None, once: Callable[[nn.Module], bool]) -> bool:
    return _plain(module, nn.Conv2d) and module.padding_mode == "zeros" and once(module)  # type: ignore[union-attr]


def _eval_batch_norm(module: nn.Module | None) -> bool:
    return (_plain(module, nn.BatchNorm2d) and not module.training  # type: ignore[union-attr]
            and module.running_mean is not None and module.running_var is not None)  # type: ignore[union-attr]


def _chained_replacements(parent: nn.Sequential, once: Callable[[nn.Module], bool]) -> dict[str, nn.Module]:
    """The new modules for the slots of ``parent``, a Sequential running its own forward: the two
    folds of the module docstring (into the convolution before; into the one after a ReLU)."""
    names = list(parent._modules)
    slot = [parent._modules[n] for n in names]
    out: dict[str, nn.Module] = {}
    before: dict[int, nn.BatchNorm2d] = {}  # conv index -> the batch norm that follows it
    into: dict[int, torch.Tensor] = {}  # conv index -> the input-channel scale it takes over
    for i, bn in enumerate(slot):
        if not (_eval_batch_norm(bn) and once(bn)):
            continue
        conv = slot[i - 1] if i > 0 else None
        if _foldable_conv(conv, once) and conv.out_channels == bn.num_features:  # type: ignore[union-attr]
            before[i - 1] = bn  # type: ignore[assignment]
            out[names[i]] = nn.Identity()
            continue
        conv = slot[i + 2] if i + 2 < len(slot) else None
        scale, shift = _affine_of(bn)  # type: ignore[arg-type]
        if (_plain(slot[i + 1] if i + 1 < len(slot) else None, nn.ReLU) and _foldable_conv(conv, once)
                and conv.groups == 1 and conv.in_channels == bn.num_features  # type: ignore[union-attr]
                and bool((scale > 0).all())):
            # relu(a z + b) = a relu(z + b / a) for a > 0: the shift stays, the scale goes into the convolution
            into[i + 2] = scale
            out[names[i]] = ChannelShift(shift / scale)
    for i in sorted(set(before) | set(into)):
        out[names[i]] = folded_convolution(slot[i], before.get(i), into.get(i))  # type: ignore[arg-type]
    return out


def _replacements(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """``(parent, name, new module)`` for every slot to change (see the module docstring)."""
    registered = Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))

    def once(module: nn.Module) -> bool:
        return registered[id(module)] == 1

    out: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in model.modules():
        if isinstance(parent, torch.jit.ScriptModule):
            continue
        chained = isinstance(parent, nn.Sequential) and type(parent).forward is nn.Sequential.forward
        new = _chained_replacements(parent, once) if chained else {}  # type: ignore[arg-type]
        for name, module in parent._modules.items():
            if name in new:
                out.append((parent, name, new[name]))
            elif _eval_batch_norm(module):
                out.append((parent, name, FrozenBatchNorm2d(module)))  # type: ignore[arg-type]
    return out


def _probe(model: nn.Module, like: torch.Tensor) -> torch.Tensor:
    """The model's logits on a fixed, smooth probe image shaped like one image of ``like``."""
    _, c, h, w = like.shape
    ramp = torch.linspace(0.1, 0.9, h * w, device=like.device, dtype=like.dtype).view(1, 1, h, w)
    with torch.no_grad():
        return model(ramp.expand(1, c, h, w).contiguous()).float()


_VERIFIED: weakref.WeakKeyDictionary[nn.Module, tuple[object, ...]] = weakref.WeakKeyDictionary()
"""Per model, the structure whose rewrite passed the probe: its modules and the slots changed.
The data flow the rules rely on does not change with the weights, so it is checked once per model
and structure, not at every attack."""


def _structure(model: nn.Module, changes: list[tuple[nn.Module, str, nn.Module]]) -> tuple[object, ...]:
    return (tuple(id(m) for m in model.modules()),
            tuple((id(parent), name, type(new).__name__) for parent, name, new in changes))


@contextmanager
def folded_batch_norms(model: nn.Module, like: torch.Tensor) -> Iterator[int]:
    """Inside the block, ``model``'s eval-mode batch norms are folded or frozen (see the module
    docstring), checked on a probe image shaped like one of ``like`` (B, C, H, W) the first time
    for a model and structure; yields how many slots changed (0 when nothing applied or the check
    failed). The originals are back in place on leaving."""
    changes = _replacements(model)
    if not changes:
        yield 0
        return
    structure = _structure(model, changes)
    verified = _VERIFIED.get(model) == structure
    before = None if verified else _probe(model, like)
    originals = [(parent, name, parent._modules[name]) for parent, name, _ in changes]
    for parent, name, new in changes:
        parent._modules[name] = new
    try:
        if before is not None:
            after = _probe(model, like)
            tolerance = 1e-3 * max(1.0, float(before.abs().max()))
            if torch.allclose(after, before, rtol=1e-3, atol=tolerance):
                _VERIFIED[model] = structure
            else:
                for parent, name, original in reversed(originals):
                    parent._modules[name] = original
                log.warning("batch norm folding changed the model's output on a probe image (by up to %.3g); "
                            "running the model as it is", float((after - before).abs().max()))
                changes = []
        yield len(changes)
    finally:
        for parent, name, original in reversed(originals):
            parent._modules[name] = original
