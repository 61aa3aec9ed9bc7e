"""The autograd kernel of the Structure Invariant Transformation (SIT): the copies a plan
describes, and their gradient, vectorised over images and copies.

Wang, Zhang & Zhang, ICCV 2023. With the cut points ``r``, ``c``, operations ``op_ij`` and their
parameters drawn in a :class:`~medrobust.attacks.sit_plan.SITPlan` (the operations are defined
in :mod:`medrobust.attacks.sit_plan`), copy ``k`` of image ``x`` is

    SIT(x)[:, r_i:r_{i+1}, c_j:c_{j+1}] = op_ij(x[:, r_i:r_{i+1}, c_j:c_{j+1}])

and :func:`apply_structure_invariant_plan` builds all ``n_copies * B`` copies at once,
differentiable w.r.t. ``x``.

Two differences from the reference's operations, on purpose:

- ``dct`` on a block shorter than 3 pixels: ``int(0.4 len) = 0`` and the reference's slice
  ``[-0:]`` zeroes the *whole* spectrum (the block turns black); here nothing is removed.
- ``dropout`` output is clipped to [0, 1] (the reference lets kept pixels reach 1/0.9).

How it is built, for speed (no Python loop over images or copies anywhere, none over blocks
for the index-moving operations). Images are taken to be in [0, 1], as everywhere in medrobust:

1. *Moves* (shifts, flips, rotation; every other operation moves nothing): one flat source index
   per pixel for the whole ``(n_copies * B)`` batch, and one ``index_select`` moves every pixel.
   A row's source depends on its own row block and on the column block, so it is computed per
   (row, column block) from the block's start, length, operation and roll amount; likewise for
   columns; the two small tables are spread over the pixels and summed by one batched product
   with one-hot block indicators (exact: float32 below 2^24 at full matmul precision, else float64).
2. *Per-block factors* (``scale``, ``dropout``): one multiplier per block and channel, spread to
   the pixels by the same kind of product, one in-place multiplication, then clipping at 1 (on
   images in [0, 1] only kept ``dropout`` blocks can exceed it).
3. *Linear maps* (``resize``, ``dct``): separable ``M_{L_r} B M_{L_c}^T`` of each block ``B``
   (``M_L`` per block side, cached per process, see :mod:`medrobust.attacks._block_maps`), two small
   matrix products per block read straight from the input batch and written into the copies, in a
   loop over these blocks only (about a fifth of all blocks with the paper's operations): per
   block they cost the exact flops, where one batched product would pad every block to the
   largest. (Bilinear resampling with ``F.interpolate`` per block, as the reference does, was
   slower here: its backward.)
4. *Per-pixel draws* (``add_noise``, ``pixel_dropout``): the pixels of the blocks that chose them
   are enumerated once (a ragged index built by ``repeat_interleave``), gathered, changed
   elementwise and written back by one ``index_put``, with draws made only for those blocks.

The gradient is written by hand (:class:`_CopiesFunction`): the upstream gradient times the
factors and clipping masks, the per-pixel operations' derivatives written at their pixels, one
``index_add`` along the source index, and the linear maps' adjoints ``M_{L_r}^T G M_{L_c}`` added
per block. Autograd through the forward steps would keep a graph node per block and per
intermediate and add an ``index_put`` and its gather to the backward. Tests compare values and
gradients with a block-by-block reference built from torch ops.

Every step is differentiable w.r.t. ``x``. On a GPU nothing here waits for the device: every
data-dependent size (the mapped blocks' table, the per-pixel blocks and their pixel counts) comes
from the plan's host copy of its cut points and choices (:class:`~medrobust.attacks.sit_plan.HostLayout`,
read once when the plan was drawn), and the few small tables built from it are copied to the device
without blocking.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from medrobust.attacks._block_maps import dct_lowpass_matrix, resize_matrix
from medrobust.attacks.sit_plan import (
    DCT_CUT_RATIO,
    DROPOUT_P,
    FACTOR_OPS,
    MAPPED_OPS,
    PIXEL_OPS,
    RESIZE_FACTOR,
    HostLayout,
    PlanBlocks,
    SITPlan,
    block_pixels,
    in_codes,
    select_blocks,
)

__all__ = ["FACTOR_OPS", "MAPPED_OPS", "PIXEL_OPS", "apply_structure_invariant_plan"]


def _axis_layout(bounds: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per position along an axis: (block index, block start, block length), each (n, size)."""
    pos = torch.arange(size, device=bounds.device)
    block = (pos.view(1, -1, 1) >= bounds[:, None, 1:-1]).sum(dim=2)  # number of inner cuts <= pos
    start = bounds.gather(1, block)
    length = bounds.gather(1, block + 1) - start
    return block, start, length


@functools.lru_cache(maxsize=8192)
def _block_map(kind: str, length: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``M_L`` of ``resize`` or ``dct`` for a block side of ``length``, and its transpose, both
    contiguous on ``device`` in ``dtype``."""
    m = resize_matrix(length, RESIZE_FACTOR) if kind == "resize" else dct_lowpass_matrix(length, DCT_CUT_RATIO)
    return m.to(device=device, dtype=dtype), m.T.contiguous().to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=64)
def _prepare_block_maps(kind: str, size: int, device: torch.device, dtype: torch.dtype) -> None:
    """Build the maps of every block side up to ``size`` at once (a few milliseconds, once per
    image size), so that no attack step waits for a new length's map."""
    for length in range(1, size + 1):
        _block_map(kind, length, device, dtype)


def _source_along(axis_op: torch.Tensor, pos_start: torch.Tensor, pos_len: torch.Tensor, shift: torch.Tensor,
                  codes_shift: list[int], codes_flip: list[int]) -> torch.Tensor:
    """Source position along one axis for every (position, block of the other axis), (n, size, s).

    ``axis_op``/``shift`` (n, size, s): the operation and roll amount of the block that holds the
    position (row blocks fixed by the position, column blocks by the last index); shift:
    ``start + (pos - start - k) mod len``; flip: ``2 start + len - 1 - pos``; otherwise ``pos``."""
    size = axis_op.shape[1]
    pos = torch.arange(size, device=axis_op.device).view(1, size, 1)
    start, length = pos_start.unsqueeze(2), pos_len.unsqueeze(2)
    src = pos.expand_as(axis_op)
    if codes_shift:
        src = torch.where(in_codes(axis_op, codes_shift), start + torch.remainder(pos - start - shift, length), src)
    if codes_flip:
        src = torch.where(in_codes(axis_op, codes_flip), 2 * start + length - 1 - pos, src)
    return src


def _float32_matmul_is_exact(device: torch.device) -> bool:
    """Whether float32 matrix products on ``device`` run at full IEEE precision: no TF32 (CUDA) or
    bfloat16 (oneDNN on the CPU) reduced-precision mode. Read from torch's per-backend settings
    (``torch.backends.cuda.matmul.fp32_precision``, ``torch.backends.mkldnn.matmul.fp32_precision``,
    which also reflect the legacy switches); ``torch.get_float32_matmul_precision()`` raises once
    a program has used the new settings, so it is only the fallback."""
    backend = {"cuda": torch.backends.cuda.matmul, "cpu": getattr(torch.backends.mkldnn, "matmul", None)}.get(device.type)
    precision = getattr(backend, "fp32_precision", None)
    if precision is not None:
        return precision in ("ieee", "none")
    try:
        return torch.get_float32_matmul_precision() == "highest"
    except RuntimeError:
        return False


def _exact_float_matmul(limit: int, device: torch.device) -> torch.dtype:
    """A float dtype whose matrix products on ``device`` add integers below ``limit`` exactly, and
    products with one-hot matrices pick values exactly: float32 when integers fit its 24-bit
    significand and float32 products run at full precision (no TF32/bfloat16, whatever the
    program's precision settings), float64 otherwise."""
    return torch.float32 if limit < 2**24 and _float32_matmul_is_exact(device) else torch.float64


def _source_index(shape: torch.Size, plan: SITPlan, rb: torch.Tensor, rs: torch.Tensor, rl: torch.Tensor,
                  cb: torch.Tensor, cs: torch.Tensor, cl: torch.Tensor) -> torch.Tensor:
    """Flat index into the input batch (B * C * H * W) of the pixel each copy pixel reads:
    shifted, flipped or rotated inside its block for the moves, itself for every other
    operation; (n * C * H * W,), int32 where it fits."""
    b, c, h, w = shape
    n, s = plan.choice.shape[:2]
    dev = plan.choice.device
    rows = _source_along(plan.choice.gather(1, rb.unsqueeze(2).expand(n, h, s)), rs, rl,
                         plan.row_shift.gather(1, rb.unsqueeze(2).expand(n, h, s)),
                         plan.codes("vertical_shift"), plan.codes("vertical_flip", "rotate180"))  # (n, H, s_col)
    cols = _source_along(plan.choice.transpose(1, 2).gather(1, cb.unsqueeze(2).expand(n, w, s)), cs, cl,
                         plan.col_shift.transpose(1, 2).gather(1, cb.unsqueeze(2).expand(n, w, s)),
                         plan.codes("horizontal_shift"), plan.codes("horizontal_flip", "rotate180"))  # (n, W, s_row)
    # source[y, x] = image * C * H * W + rows[y, cb(x)] * W + cols[x, rb(y)], as one batched product
    # of [rows * W, onehot(rb), 1] (n, H, 2s + 1) and [onehot(cb)^T; cols^T; image * C * H * W]
    numel = b * c * h * w
    ft = _exact_float_matmul(numel, dev)
    image = torch.arange(n, device=dev).remainder_(b).to(ft).mul_(c * h * w).view(n, 1, 1)
    left = torch.cat([rows.to(ft) * w, F.one_hot(rb, s).to(ft), torch.ones(n, h, 1, dtype=ft, device=dev)], 2)
    right = torch.cat([F.one_hot(cb, s).to(ft).transpose(1, 2), cols.to(ft).transpose(1, 2),
                       image.expand(n, 1, w)], 1)
    itype = torch.int32 if numel < 2**31 else torch.int64  # index_select takes int32: half the traffic
    product = torch.bmm(left, right)
    if product.element_size() == itype.itemsize:  # cast in place (element by element): no second buffer
        source = product.view(itype).copy_(product).unsqueeze(1)  # (n, 1, H, W)
    else:
        source = product.to(itype).unsqueeze(1)
    if c > 1:
        source = source + torch.arange(0, c * h * w, h * w, dtype=itype, device=dev).view(1, c, 1, 1)
    return source.view(-1)


def _factor_map(plan: SITPlan, rb: torch.Tensor, cb: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
    """The factor of every copy pixel, (n * C * H * W,): ``scale``'s ``f`` and ``dropout``'s
    ``keep / 0.9`` on their blocks, 0 on the blocks of :data:`MAPPED_OPS` (written afterwards),
    1 elsewhere; None when ``ops`` has none of these. Spread from the (n, C, s, s) block factors
    by two batched products with one-hot block indicators (exact)."""
    if not any(plan.codes(name) for name in FACTOR_OPS + MAPPED_OPS):
        return None
    n, s = plan.choice.shape[:2]
    c = plan.channels
    ft = dtype if dtype == torch.float64 else _exact_float_matmul(0, plan.choice.device)
    block = torch.ones(n, c, s, s, dtype=ft, device=plan.choice.device)
    if plan.codes("scale"):
        assert plan.scale is not None
        block = torch.where(in_codes(plan.choice, plan.codes("scale")).unsqueeze(1), plan.scale.to(ft).unsqueeze(1), block)
    if plan.codes("dropout"):
        assert plan.keep_block is not None
        kept = plan.keep_block.to(ft) / (1 - DROPOUT_P)
        block = torch.where(in_codes(plan.choice, plan.codes("dropout")).unsqueeze(1), kept, block)
    mapped = plan.codes(*MAPPED_OPS)
    if mapped:
        block.masked_fill_(in_codes(plan.choice, mapped).unsqueeze(1), 0.0)
    rows = F.one_hot(rb, s).to(ft).repeat_interleave(c, 0)  # (n * C, H, s)
    cols = F.one_hot(cb, s).to(ft).transpose(1, 2).repeat_interleave(c, 0)  # (n * C, s, W)
    return torch.bmm(torch.bmm(rows, block.view(n * c, s, s)), cols).to(dtype).view(-1)


def _in_unit_range(v: torch.Tensor) -> torch.Tensor:
    """Where ``clamp(v, 0, 1)`` passes the gradient (as torch's clamp: bounds included)."""
    return (v >= 0) & (v <= 1)


class _MappedBlocks:
    """The blocks of :data:`MAPPED_OPS`, each computed on views of the input and the copies:
    ``out[r, :, block] = M_rows @ x[r mod B, :, block] @ M_cols^T`` (clipped to [0, 1] for
    ``resize``; the reference clips resize only), with the maps of :func:`_block_map`; the
    adjoint adds ``M_rows^T @ g[r, :, block] @ M_cols`` to the input's gradient. A loop over
    these blocks only (about a fifth of all blocks with the paper's operations): per block it
    costs the exact flops, where one batched product would pad every block to the largest."""

    def __init__(self, plan: SITPlan, layout: HostLayout) -> None:
        blocks = select_blocks(layout, in_codes(layout.choice, plan.codes(*MAPPED_OPS)))  # on the host
        table = torch.stack([blocks.code, blocks.row, blocks.row.remainder(plan.batch), blocks.r0, blocks.lr,
                             blocks.c0, blocks.lc]).T.tolist()
        self.blocks = [(plan.ops[code], *rest) for code, *rest in table]
        self.inside: list[torch.Tensor] = []  # resize's clipping masks, in block order

    def write(self, x: torch.Tensor, out: torch.Tensor) -> None:
        """Write the blocks' values into ``out`` (n, C, H, W) from ``x`` (B, C, H, W)."""
        x, out = _channel_views(x), _channel_views(out)
        for kind, r, image, r0, lr, c0, lc in self.blocks:
            m_r, _ = _block_map(kind, lr, x.device, x.dtype)
            _, m_c_t = _block_map(kind, lc, x.device, x.dtype)
            value = m_r @ x[image, ..., r0:r0 + lr, c0:c0 + lc] @ m_c_t
            if kind == "resize":
                self.inside.append(_in_unit_range(value))
                value.clamp_(0.0, 1.0)
            out[r, ..., r0:r0 + lr, c0:c0 + lc] = value

    def add_adjoint(self, grad: torch.Tensor, grad_x: torch.Tensor) -> None:
        """Add to ``grad_x`` (B, C, H, W) the gradient of the blocks' inputs, given the gradient
        ``grad`` (n, C, H, W) of the copies."""
        grad, grad_x = _channel_views(grad), _channel_views(grad_x)
        inside = iter(self.inside)
        for kind, r, image, r0, lr, c0, lc in self.blocks:
            _, m_r_t = _block_map(kind, lr, grad.device, grad.dtype)
            m_c, _ = _block_map(kind, lc, grad.device, grad.dtype)
            g = grad[r, ..., r0:r0 + lr, c0:c0 + lc]
            g = g * next(inside) if kind == "resize" else g
            grad_x[image, ..., r0:r0 + lr, c0:c0 + lc] += m_r_t @ g @ m_c


def _channel_views(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, H, W) for one channel (2-D blocks: plain matrix products), else as is."""
    return images[:, 0] if images.shape[1] == 1 else images


class _PixelBlocks:
    """The pixels of the blocks of :data:`PIXEL_OPS`, enumerated once: flat indices into the copies,
    grouped by operation (row-major within each group: the order of the plan's per-pixel draws)."""

    def __init__(self, groups: list[tuple[str, PlanBlocks]], channels: int, h: int, w: int,
                 device: torch.device) -> None:
        self.groups = groups  # blocks on the host: every size below is known without the device
        self.sizes = [int((blocks.lr * blocks.lc).sum()) * channels for _, blocks in groups]
        where = [block_pixels(blocks, channels, h, w, device) for _, blocks in groups]
        self.where = torch.cat(where) if len(where) > 1 else where[0]
        self.factor: torch.Tensor | None = None  # d new / d old per pixel, set by replace

    @classmethod
    def of(cls, plan: SITPlan, layout: HostLayout, h: int, w: int, device: torch.device) -> "_PixelBlocks | None":
        """The pixel blocks of ``plan`` (listed from its host ``layout``), with their pixel indices on
        ``device``; None when no block chose one of these operations."""
        chose = [(name, in_codes(layout.choice, plan.codes(name))) for name in PIXEL_OPS if plan.codes(name)]
        groups = [(name, select_blocks(layout, mask)) for name, mask in chose if bool(mask.any())]
        return cls(groups, plan.channels, h, w, device) if groups else None

    def replace(self, out: torch.Tensor, plan: SITPlan) -> None:
        """Replace these pixels of ``out`` (flat copies) by their operations' values, in place:
        ``clip(v + u)`` for ``add_noise``, ``clip(v * keep / 0.9)`` for ``pixel_dropout``."""
        values = out.index_select(0, self.where)
        self.factor = torch.empty_like(values)
        for (name, _), v, factor in zip(self.groups, values.split(self.sizes), self.factor.split(self.sizes)):
            if name == "add_noise":
                assert plan.noise is not None
                v += plan.noise.to(v.dtype)
                factor.copy_(_in_unit_range(v))
            else:
                assert plan.keep_pixel is not None
                torch.div(plan.keep_pixel.to(v.dtype), 1 - DROPOUT_P, out=factor)
                v *= factor
                factor.mul_(_in_unit_range(v))
        out.index_put_((self.where,), values.clamp_(0.0, 1.0))

    def write_adjoint(self, grad: torch.Tensor, g: torch.Tensor) -> None:
        """Write into ``g`` (flat) at these pixels the gradient of their inputs, given the gradient
        ``grad`` (flat) of the copies."""
        g.index_put_((self.where,), grad.index_select(0, self.where).mul_(self.factor))


class _CopiesFunction(torch.autograd.Function):
    """The copies of ``x`` described by ``plan``, with their gradient computed by hand.

    Forward: ``out = x[source]`` (one flat gather), times the block factors (then clipped at 1,
    which on images in [0, 1] only touches kept ``dropout`` blocks; the factor is 0 on the
    mapped blocks), the mapped blocks written from ``x``, the per-pixel operations applied to
    their pixels in place. Backward, with ``g`` the gradient of the copies:
    ``g * factor * [pre-clip value <= 1]``, the per-pixel operations' derivatives at their pixels,
    one ``index_add`` into ``x``'s gradient along ``source``, plus the mapped blocks' adjoints.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, plan: SITPlan) -> torch.Tensor:  # type: ignore[override]
        b, c, h, w = x.shape
        rb, rs, rl = _axis_layout(plan.row_bounds, h)  # (n, H)
        cb, cs, cl = _axis_layout(plan.col_bounds, w)  # (n, W)
        source = _source_index(x.shape, plan, rb, rs, rl, cb, cs, cl)
        out = x.reshape(-1).index_select(0, source)
        factor = _factor_map(plan, rb, cb, x.dtype)
        if factor is not None:
            out.mul_(factor)
            if plan.codes("dropout"):
                factor.mul_(out <= 1)
                out.clamp_(max=1.0)
        layout = plan.layout() if plan.codes(*MAPPED_OPS, *PIXEL_OPS) else None  # read when drawn: no wait
        mapped = _MappedBlocks(plan, layout) if layout is not None and plan.codes(*MAPPED_OPS) else None
        if mapped is not None:
            mapped.write(x, out.view(-1, c, h, w))
        pixels = _PixelBlocks.of(plan, layout, h, w, x.device) if layout is not None else None
        if pixels is not None:
            pixels.replace(out, plan)
        ctx.source, ctx.factor, ctx.mapped, ctx.pixels, ctx.input_shape = source, factor, mapped, pixels, x.shape
        return out.view(-1, c, h, w)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        grad = grad.reshape(-1)
        g = grad * ctx.factor if ctx.factor is not None else grad
        if ctx.pixels is not None:
            g = g.clone() if g is grad else g
            ctx.pixels.write_adjoint(grad, g)
        shape = ctx.input_shape
        grad_x = torch.zeros(math.prod(shape), dtype=grad.dtype, device=grad.device).index_add_(0, ctx.source, g)
        grad_x = grad_x.view(shape)
        if ctx.mapped is not None:
            ctx.mapped.add_adjoint(grad.view(-1, *shape[1:]), grad_x)
        return grad_x, None


def apply_structure_invariant_plan(x: torch.Tensor, plan: SITPlan) -> torch.Tensor:
    """The copies of ``x`` (B, C, H, W) in [0, 1] described by ``plan``: (plan.n_copies * B, C, H, W),
    differentiable w.r.t. ``x``."""
    b, c, h, w = x.shape
    if b != plan.batch or c != plan.channels:
        raise ValueError(f"the SIT plan was drawn for batches of {plan.batch} images of {plan.channels} channel(s), "
                         f"got {b} of {c}")
    plan = plan.to(x.device) if plan.choice.device != x.device else plan
    for kind in ("resize", "dct"):
        if plan.codes(kind):
            _prepare_block_maps(kind, max(h, w), x.device, x.dtype)
    return _CopiesFunction.apply(x, plan)
