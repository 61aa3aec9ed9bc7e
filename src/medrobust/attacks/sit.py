"""The Structure Invariant Transformation (SIT), vectorised over images and copies.

Wang, Zhang & Zhang, "Structure Invariant Transformation for better Adversarial
Transferability", ICCV 2023. SIT cuts an image into ``s x s`` blocks at random cut points
and applies to each block one independently chosen random operation; the block structure
(where things are) survives, the local content is diversified. SIA averages the input
gradient over ``N`` such copies (see :mod:`medrobust.attacks.sia`).

For one image ``x`` (C, H, W) with row cuts ``0 = r_0 < r_1 < ... < r_s = H`` and column
cuts ``0 = c_0 < ... < c_s = W``, block ``(i, j)`` is ``x[:, r_i:r_{i+1}, c_j:c_{j+1}]`` and

    SIT(x)[:, r_i:r_{i+1}, c_j:c_{j+1}] = op_ij(x[:, r_i:r_{i+1}, c_j:c_{j+1}]),   op_ij ~ U(ops)

The operations (names as in the authors' code, parameters as there):

- ``vertical_shift`` / ``horizontal_shift``: roll the block's rows / columns by
  ``k ~ U{0, ..., len - 1}``, wrapping inside the block: ``out[a] = in[(a - k) mod len]``;
- ``vertical_flip`` / ``horizontal_flip``: mirror the rows / columns of the block;
- ``rotate180``: both mirrors;
- ``scale``: ``f * block``, ``f ~ U[0, 1)``;
- ``add_noise``: ``clip(block + u, 0, 1)``, ``u ~ U[-16/255, 16/255]`` per pixel and channel;
- ``resize``: bilinear (``align_corners=False``) down to ``int(0.8 len) + 1`` pixels per axis
  and back, clipped to [0, 1]. The reference uses this *fixed* factor 0.8, not a random one;
- ``dct``: orthonormal 2-D DCT-II of the block, the highest ``int(0.4 len)`` frequencies of
  each axis set to zero, inverse DCT (a low-pass keeping the top-left
  ``len - int(0.4 len)`` coefficients per axis); not clipped, as in the reference;
- ``dropout``: as the reference's ``F.dropout2d(p=0.1, training=True)``: each channel of
  the block is zeroed with probability 0.1, the kept ones scaled by ``1 / 0.9`` (for a
  one-channel radiograph the whole block is dropped or brightened); we then clip to [0, 1];
- ``pixel_dropout`` (extra, not in any preset): each pixel and channel zeroed with
  probability 0.1, kept ones scaled by ``1 / 0.9``, clipped;
- ``identity`` (extra, for tests and ablations).

Presets: ``PAPER_OPS`` is the 10-operation list of the authors' code (github.com/xiaosen-wang/SIT,
``attack.py``); ``TRANSFERATTACK_OPS`` the 7 operations of TransferAttack's
``input_transformation/sia.py`` (no resize, DCT or dropout; its ``blur`` is defined there but
not in the list).

Differences from the reference, on purpose:

- The reference draws one set of cut points and one operation per block *per batch* (every
  image in the batch shares them, and a shift amount or scale factor is shared across the
  batch too); here every copy of every image draws its own cut points, operations and
  parameters, so an image's copies do not depend on its batch-mates.
- All randomness comes from one ``torch.Generator`` (the reference uses global NumPy and
  torch state), drawn in a fixed order before any copy is built, so a seed gives bit-identical
  copies on the CPU, however the copies are micro-batched (see :class:`SITPlan`); per-pixel draws
  (noise, pixel dropout) are made only for the blocks that use them.
- ``dct`` on a block shorter than 3 pixels: ``int(0.4 len) = 0`` and the reference's slice
  ``[-0:]`` zeroes the *whole* spectrum (the block turns black); here nothing is removed.
- ``dropout`` output is clipped to [0, 1] (the reference lets kept pixels reach 1/0.9).

How it is built, for speed (no Python loop over images or copies anywhere, none over blocks
for the index-moving operations):

1. *Moves* (shifts, flips, rotation; every other operation moves nothing): one flat source index
   per pixel for the whole ``(n_copies * B)`` batch, and one ``index_select`` moves every pixel.
   A row's source depends on its own row block and on the column block, so it is computed per
   (row, column block) from the block's start, length, operation and roll amount; likewise for
   columns; the two small tables are spread over the pixels and summed by one batched product
   with one-hot block indicators (float64, exact for integers below 2^53).
2. *Per-block factors* (``scale``, ``dropout``): one multiplier per block and channel, spread to
   the pixels by block id, one product, then clipping.
3. *Block-local operations* (``add_noise``, ``pixel_dropout``, ``resize``, ``dct``): the pixels of
   the blocks that chose them are enumerated once (a ragged index built by two
   ``repeat_interleave``), gathered, replaced, and written back by one ``index_put``; noise and
   pixel dropout act on the gathered pixels elementwise, with draws made only for those blocks.
   ``resize`` and ``dct`` are separable linear maps ``M_{L_r} B M_{L_c}^T`` of each block ``B``
   (``M_L`` per block side, cached per process, see :mod:`medrobust.attacks._block_maps`): two
   small matrix products per block, in a loop over these blocks only (about a fifth of all
   blocks with the paper's operations). They move nothing, and per block they cost the exact
   flops, where a batched form would pad every block to the largest one. (Bilinear resampling
   with ``F.interpolate`` per block, as the reference does, was slower here: its backward.)

Every step is differentiable w.r.t. ``x``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from medrobust.attacks._block_maps import dct_lowpass_matrix, resize_matrix

log = logging.getLogger(__name__)

PAPER_OPS: tuple[str, ...] = ("resize", "vertical_shift", "horizontal_shift", "vertical_flip", "horizontal_flip",
                              "rotate180", "scale", "add_noise", "dct", "dropout")
TRANSFERATTACK_OPS: tuple[str, ...] = ("vertical_shift", "horizontal_shift", "vertical_flip", "horizontal_flip",
                                       "rotate180", "scale", "add_noise")
EXTRA_OPS: tuple[str, ...] = ("identity", "pixel_dropout")
ALL_OPS: tuple[str, ...] = PAPER_OPS + EXTRA_OPS
SIT_PRESETS: dict[str, tuple[str, ...]] = {"paper": PAPER_OPS, "transferattack": TRANSFERATTACK_OPS}

NOISE_BOUND = 16 / 255
DROPOUT_P = 0.1
RESIZE_FACTOR = 0.8
DCT_CUT_RATIO = 0.4

_CLIPPED = ("add_noise", "dropout", "pixel_dropout")


def resolve_ops(ops: str | Sequence[str]) -> tuple[str, ...]:
    """A preset name (``"paper"``, ``"transferattack"``), a ``;``-separated list of operation
    names, or a sequence of names -> a tuple of known operation names (duplicates kept: they
    weight the draw)."""
    if isinstance(ops, str):
        text = ops.strip()
        if text.lower() in SIT_PRESETS:
            return SIT_PRESETS[text.lower()]
        names = [t.strip() for t in text.replace("|", ";").replace("+", ";").split(";") if t.strip()]
    else:
        names = [str(t).strip() for t in ops]
    if not names:
        raise ValueError(f"no SIT operations in {ops!r}; use a preset ({', '.join(SIT_PRESETS)}) or names from "
                         f"{', '.join(ALL_OPS)}")
    unknown = [n for n in names if n not in ALL_OPS]
    if unknown:
        raise ValueError(f"unknown SIT operation(s) {unknown}; known: {', '.join(ALL_OPS)} "
                         f"(or a preset: {', '.join(SIT_PRESETS)})")
    return tuple(names)


@dataclass(frozen=True, eq=False)
class SITPlan:
    """Every random choice of ``n_copies`` SIT copies of a batch of ``batch`` images, drawn up
    front; row ``k * batch + i`` belongs to copy ``k`` of image ``i`` (copy-major).

    Drawing the plan once and applying slices of it (:meth:`copies`) lets an attack build the
    copies in micro-batches with exactly the randomness of building them all at once.
    ``row_bounds``/``col_bounds`` (n, s+1): ``0 = b_0 < b_1 < ... < b_s = size``; ``choice``
    (n, s, s): index into ``ops`` per block; ``row_shift``/``col_shift`` (n, s, s): roll
    amounts in ``[0, block length)``; the rest are present only when ``ops`` needs them.
    Per-pixel draws (``noise``, ``keep_pixel``) are made only for the blocks that chose their
    operation: flat, block by block in row-major order of (copy row, block row, block column),
    each block's values in (channel, row, column) order, with the number of values per copy
    row in ``noise_count``/``keep_pixel_count`` (:meth:`per_pixel` spreads them to images).
    """

    ops: tuple[str, ...]
    batch: int
    channels: int
    row_bounds: torch.Tensor
    col_bounds: torch.Tensor
    choice: torch.Tensor
    row_shift: torch.Tensor
    col_shift: torch.Tensor
    scale: torch.Tensor | None = None  # (n, s, s) factors in [0, 1)
    keep_block: torch.Tensor | None = None  # (n, C, s, s) bool, dropout
    keep_pixel: torch.Tensor | None = None  # flat bool, pixel_dropout blocks only
    keep_pixel_count: torch.Tensor | None = None  # (n,)
    noise: torch.Tensor | None = None  # flat, in [-16/255, 16/255], add_noise blocks only
    noise_count: torch.Tensor | None = None  # (n,)

    @property
    def n_copies(self) -> int:
        return self.choice.shape[0] // self.batch

    @property
    def blocks(self) -> int:
        return self.choice.shape[1]

    def codes(self, *names: str) -> list[int]:
        """Indices into ``ops`` of the operations named (several where ``ops`` repeats a name)."""
        return _codes(self.ops, names)

    @classmethod
    def sample(cls, shape: Sequence[int], n_copies: int, blocks: int, ops: Sequence[str],
               generator: torch.Generator, device: torch.device | str | None = None) -> "SITPlan":
        """Draw the plan for ``n_copies`` copies of a batch of ``shape`` (B, C, H, W).

        Draw order (fixed): row cut keys, column cut keys, operation choices, row shifts, column
        shifts, then, when the operation is in ``ops``, scale factors, block dropout, pixel
        dropout, noise (the last two sized by the blocks that chose them). Drawn on the
        generator's device, then moved to ``device``.
        """
        b, c, h, w = (int(v) for v in shape)
        ops = resolve_ops(ops)
        if n_copies < 1:
            raise ValueError(f"n_copies must be at least 1, got {n_copies}")
        if blocks < 1 or blocks > min(h, w):
            raise ValueError(f"blocks must be between 1 and the image side ({min(h, w)}), got {blocks}")
        n, s = n_copies * b, blocks
        gen_device = generator.device
        target = torch.device(device) if device is not None else gen_device

        def uniform(*size: int) -> torch.Tensor:
            return torch.rand(size, generator=generator, device=gen_device)

        row_bounds = _cut_points(uniform(n, h - 1), s, h)
        col_bounds = _cut_points(uniform(n, w - 1), s, w)
        choice = torch.randint(len(ops), (n, s, s), generator=generator, device=gen_device)
        row_len = (row_bounds[:, 1:] - row_bounds[:, :-1]).unsqueeze(2)  # (n, s, 1): block (i, j) has row_len[i]
        col_len = (col_bounds[:, 1:] - col_bounds[:, :-1]).unsqueeze(1)  # (n, 1, s)
        row_shift = torch.minimum((uniform(n, s, s) * row_len).long(), row_len - 1)
        col_shift = torch.minimum((uniform(n, s, s) * col_len).long(), col_len - 1)

        def values_per_row(name: str) -> torch.Tensor:  # (n,): pixels x channels of the blocks choosing name
            chose = _isin(choice, _codes(ops, (name,)))
            return (row_len * col_len * chose).sum(dim=(1, 2)) * c

        scale = uniform(n, s, s) if "scale" in ops else None
        keep_block = uniform(n, c, s, s) >= DROPOUT_P if "dropout" in ops else None
        keep_pixel = keep_pixel_count = noise = noise_count = None
        if "pixel_dropout" in ops:
            keep_pixel_count = values_per_row("pixel_dropout")
            keep_pixel = uniform(int(keep_pixel_count.sum())) >= DROPOUT_P
        if "add_noise" in ops:
            noise_count = values_per_row("add_noise")
            noise = (uniform(int(noise_count.sum())) * 2 - 1) * NOISE_BOUND
        plan = cls(ops, b, c, row_bounds, col_bounds, choice, row_shift, col_shift, scale, keep_block,
                   keep_pixel, keep_pixel_count, noise, noise_count)
        return plan.to(target) if target != gen_device else plan

    def to(self, device: torch.device | str) -> "SITPlan":
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for key, value in moved.items():
            if isinstance(value, torch.Tensor):
                moved[key] = value.to(device)
        return SITPlan(**moved)

    def copies(self, start: int, stop: int) -> "SITPlan":
        """The plan of copies ``start .. stop - 1`` (all images of the batch)."""
        if not 0 <= start < stop <= self.n_copies:
            raise ValueError(f"copy range [{start}, {stop}) is outside 0..{self.n_copies}")
        lo, hi = start * self.batch, stop * self.batch
        sliced = {f.name: getattr(self, f.name) for f in fields(self)}
        for key, value in sliced.items():
            if isinstance(value, torch.Tensor) and key not in ("noise", "keep_pixel"):
                sliced[key] = value[lo:hi]
        for key in ("noise", "keep_pixel"):
            count = getattr(self, f"{key}_count")
            if count is not None:
                first = int(count[:lo].sum())
                sliced[key] = getattr(self, key)[first: first + int(count[lo:hi].sum())]
        return SITPlan(**sliced)

    def per_pixel(self, name: str) -> torch.Tensor:
        """The per-pixel draws as images (n, C, H, W): ``"noise"`` (0 outside add_noise blocks) or
        ``"keep_pixel"`` (True outside pixel_dropout blocks)."""
        if name not in ("noise", "keep_pixel") or getattr(self, name) is None:
            raise ValueError(f"the plan has no {name!r} draws (ops: {', '.join(self.ops)})")
        values = getattr(self, name)
        h, w = int(self.row_bounds[0, -1]), int(self.col_bounds[0, -1])
        n = self.choice.shape[0]
        fill = torch.zeros if name == "noise" else torch.ones
        image = fill(n * self.channels * h * w, dtype=values.dtype, device=values.device)
        op = "add_noise" if name == "noise" else "pixel_dropout"
        index, _ = _block_pixels(_select(self, _isin(self.choice, self.codes(op))), self.channels, h, w)
        return image.index_put((index,), values).view(n, self.channels, h, w)


def _codes(ops: Sequence[str], names: Sequence[str]) -> list[int]:
    return [i for i, name in enumerate(ops) if name in names]


def _cut_points(keys: torch.Tensor, blocks: int, size: int) -> torch.Tensor:
    """(n, size-1) uniform keys -> (n, blocks+1) bounds: ``blocks - 1`` distinct sorted cuts
    drawn uniformly from 1..size-1 (the smallest keys pick a uniform random subset)."""
    n = keys.shape[0]
    cuts = keys.topk(blocks - 1, dim=1, largest=False).indices.add_(1).sort(dim=1).values
    first = torch.zeros(n, 1, dtype=torch.long, device=keys.device)
    return torch.cat([first, cuts, torch.full_like(first, size)], dim=1)


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
        src = torch.where(_isin(axis_op, codes_shift), start + torch.remainder(pos - start - shift, length), src)
    if codes_flip:
        src = torch.where(_isin(axis_op, codes_flip), 2 * start + length - 1 - pos, src)
    return src


def _isin(values: torch.Tensor, codes: list[int]) -> torch.Tensor:
    out = values == codes[0]
    for code in codes[1:]:
        out = out | (values == code)
    return out


@dataclass(frozen=True)
class _Blocks:
    """Selected blocks, in row-major order of (copy row, block row, block column): their copy
    row, first row and column, side lengths and operation code, each (K,)."""

    row: torch.Tensor
    r0: torch.Tensor
    lr: torch.Tensor
    c0: torch.Tensor
    lc: torch.Tensor
    code: torch.Tensor
    block: torch.Tensor  # i * s + j

    def take(self, index: torch.Tensor | slice) -> "_Blocks":
        """The blocks at ``index`` (a permutation or a slice)."""
        return _Blocks(*(getattr(self, f.name)[index] for f in dataclasses.fields(self)))


def _select(plan: SITPlan, mask: torch.Tensor) -> _Blocks:
    """The blocks where ``mask`` (n, s, s) is True."""
    row, i, j = mask.nonzero().unbind(1)
    r0, c0 = plan.row_bounds[row, i], plan.col_bounds[row, j]
    return _Blocks(row, r0, plan.row_bounds[row, i + 1] - r0, c0, plan.col_bounds[row, j + 1] - c0,
                   plan.choice[row, i, j], i * plan.blocks + j)


def _block_pixels(blocks: _Blocks, channels: int, h: int, w: int, batch: int | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices into (n, C, H, W) of every pixel of ``blocks``, block by block, each block in
    (channel, row, column) order: its (channel, row) segments, then each segment's columns. With
    ``batch``, the second tensor holds the same pixels' indices in the input batch (copy row
    ``r`` reads image ``r % batch``); otherwise it is the first."""
    dev = blocks.row.device
    per_block = blocks.lr * channels  # segments of one block
    seg_block = torch.repeat_interleave(torch.arange(len(per_block), device=dev), per_block)
    local = torch.arange(len(seg_block), device=dev) - (torch.cumsum(per_block, 0) - per_block)[seg_block]
    seg_lr = blocks.lr[seg_block]
    channel, row = local // seg_lr, local % seg_lr
    within = (channel * h + blocks.r0[seg_block] + row) * w + blocks.c0[seg_block]
    seg_len = blocks.lc[seg_block]
    total = int(seg_len.sum())
    seg_first = torch.cumsum(seg_len, 0) - seg_len
    copy_row = blocks.row[seg_block]
    starts = [copy_row * (channels * h * w) + within - seg_first]
    if batch is not None:
        starts.append(copy_row.remainder(batch) * (channels * h * w) + within - seg_first)
    itype = torch.int32 if int(blocks.row.max()) < 2**31 // (channels * h * w) else torch.int64
    # the pixel-level work in 32-bit integers: one repeat_interleave for both index sets
    out = torch.repeat_interleave(torch.stack(starts).to(itype), seg_len, dim=1, output_size=total)
    out += torch.arange(total, device=dev, dtype=itype)
    return out[0], out[-1]  # rows: contiguous


LOCAL_OPS: tuple[str, ...] = ("scale", "dropout", "add_noise", "pixel_dropout", "resize", "dct")
"""The operations that move nothing: computed on their own blocks' pixels only."""


def _exact_float_matmul(limit: int) -> torch.dtype:
    """A float dtype whose matrix products add integers below ``limit`` exactly: float32 when they
    fit its 24-bit significand and float32 products run at full precision (no TF32/bfloat16),
    float64 otherwise."""
    return torch.float32 if limit < 2**24 and torch.get_float32_matmul_precision() == "highest" else torch.float64


def _moved(x: torch.Tensor, plan: SITPlan, rb: torch.Tensor, rs: torch.Tensor, rl: torch.Tensor,
           cb: torch.Tensor, cs: torch.Tensor, cl: torch.Tensor) -> torch.Tensor:
    """The copies with every block's shift, flip or rotation applied and every other block copied,
    flat (n * C * H * W,)."""
    b, c, h, w = x.shape
    n, s = plan.choice.shape[:2]
    rows = _source_along(plan.choice.gather(1, rb.unsqueeze(2).expand(n, h, s)), rs, rl,
                         plan.row_shift.gather(1, rb.unsqueeze(2).expand(n, h, s)),
                         plan.codes("vertical_shift"), plan.codes("vertical_flip", "rotate180"))  # (n, H, s_col)
    cols = _source_along(plan.choice.transpose(1, 2).gather(1, cb.unsqueeze(2).expand(n, w, s)), cs, cl,
                         plan.col_shift.transpose(1, 2).gather(1, cb.unsqueeze(2).expand(n, w, s)),
                         plan.codes("horizontal_shift"), plan.codes("horizontal_flip", "rotate180"))  # (n, W, s_row)
    # source[y, x] = image * C * H * W + rows[y, cb(x)] * W + cols[x, rb(y)], as one batched product
    # of [rows * W, onehot(rb), 1] (n, H, 2s + 1) and [onehot(cb)^T; cols^T; image * C * H * W]
    ft = _exact_float_matmul(x.numel())
    image = torch.arange(n, device=x.device).remainder_(b).to(ft).mul_(c * h * w).view(n, 1, 1)
    left = torch.cat([rows.to(ft) * w, F.one_hot(rb, s).to(ft), torch.ones(n, h, 1, dtype=ft, device=x.device)], 2)
    right = torch.cat([F.one_hot(cb, s).to(ft).transpose(1, 2), cols.to(ft).transpose(1, 2),
                       image.expand(n, 1, w)], 1)
    itype = torch.int32 if x.numel() < 2**31 else torch.int64  # index_select takes int32: half the traffic
    source = torch.bmm(left, right).to(itype).unsqueeze(1)  # (n, 1, H, W)
    if c > 1:
        source = source + torch.arange(0, c * h * w, h * w, dtype=itype, device=x.device).view(1, c, 1, 1)
    # one flat index per value: its gradient is then one flat index_add (a per-slice loop otherwise)
    return x.reshape(-1).index_select(0, source.view(-1))


def _local_values(v: torch.Tensor, name: str, blocks: _Blocks, plan: SITPlan, channels: int,
                  draws: torch.Tensor | None) -> torch.Tensor:
    """The new values of the pixels ``v`` (flat, block by block) of ``blocks``, which all chose
    operation ``name``; ``draws``: this operation's per-pixel draws of the plan, if any."""
    if name in ("resize", "dct"):
        lr, lc = blocks.lr.tolist(), blocks.lc.tolist()
        mapped = torch.cat([_map_block(piece, name, channels, a, b)
                            for piece, a, b in zip(v.split([channels * a * b for a, b in zip(lr, lc)]), lr, lc)])
        return mapped.clamp(0.0, 1.0) if name == "resize" else mapped  # the reference clips resize only
    if name == "add_noise":
        assert draws is not None
        return (v + draws.to(v.dtype)).clamp(0.0, 1.0)
    if name == "pixel_dropout":
        assert draws is not None
        return (v * (draws.to(v.dtype) / (1 - DROPOUT_P))).clamp(0.0, 1.0)
    area = blocks.lr * blocks.lc
    i, j = blocks.block // plan.blocks, blocks.block % plan.blocks
    if name == "scale":  # one factor in [0, 1) per block: stays in [0, 1]
        assert plan.scale is not None
        factor = torch.repeat_interleave(plan.scale[blocks.row, i, j].to(v.dtype), area * channels,
                                         output_size=v.numel())
        return v * factor
    assert name == "dropout" and plan.keep_block is not None  # per block and channel: 0 or 1 / 0.9, clipped
    keep = plan.keep_block[blocks.row, :, i, j].to(v.dtype) / (1 - DROPOUT_P)  # (K, C)
    factor = torch.repeat_interleave(keep.flatten(), area.repeat_interleave(channels), output_size=v.numel())
    return (v * factor).clamp(0.0, 1.0)


def _map_block(piece: torch.Tensor, kind: str, channels: int, rows: int, cols: int) -> torch.Tensor:
    """``M_rows @ block @ M_cols^T`` of one block's flat values (channel, row, column order)."""
    m_r, _ = _block_map(kind, rows, piece.device, piece.dtype)
    _, m_c_t = _block_map(kind, cols, piece.device, piece.dtype)
    block = piece.view(rows, cols) if channels == 1 else piece.view(channels, rows, cols)
    return (m_r @ block @ m_c_t).reshape(-1)


def _replace_local(x: torch.Tensor, moved: torch.Tensor, plan: SITPlan) -> torch.Tensor:
    """``moved`` (flat) with every block of an operation in :data:`LOCAL_OPS` replaced: the pixels
    of all those blocks are enumerated once, grouped by operation, read from ``x`` (they move
    nothing; the gradient of the read lands on the small input batch), transformed per group,
    and written back by one ``index_put_``."""
    _, c, h, w = x.shape
    names = [name for name in LOCAL_OPS if plan.codes(name)]
    if not names:
        return moved
    rank = torch.full((len(plan.ops),), len(LOCAL_OPS), dtype=torch.long, device=plan.choice.device)
    for k, name in enumerate(names):
        rank[plan.codes(name)] = k
    chosen = rank[plan.choice]  # (n, s, s): the group of each block, len(LOCAL_OPS) for moves
    blocks = _select(plan, chosen < len(LOCAL_OPS))
    if blocks.row.numel() == 0:
        return moved
    group = rank[blocks.code]
    order = torch.sort(group, stable=True).indices  # by operation, row-major within each
    blocks = blocks.take(order)
    group = group[order]
    where, read = _block_pixels(blocks, c, h, w, plan.batch)
    values = x.reshape(-1).index_select(0, read)
    per_group = torch.zeros(len(names), dtype=torch.long, device=group.device).index_add_(
        0, group, blocks.lr * blocks.lc * c).tolist()
    counts = torch.bincount(group, minlength=len(names)).tolist()
    start, parts = 0, []
    for name, size, v in zip(names, counts, values.split(per_group)):
        if size == 0:
            continue
        sub = blocks.take(slice(start, start + size))
        start += size
        draws = plan.noise if name == "add_noise" else plan.keep_pixel if name == "pixel_dropout" else None
        parts.append(_local_values(v, name, sub, plan, c, draws))
    return moved.index_put_((where,), torch.cat(parts))


def apply_structure_invariant_plan(x: torch.Tensor, plan: SITPlan) -> torch.Tensor:
    """The copies of ``x`` (B, C, H, W) described by ``plan``: (plan.n_copies * B, C, H, W),
    differentiable w.r.t. ``x``."""
    b, c, h, w = x.shape
    if b != plan.batch or c != plan.channels:
        raise ValueError(f"the SIT plan was drawn for batches of {plan.batch} images of {plan.channels} channel(s), "
                         f"got {b} of {c}")
    plan = plan.to(x.device) if plan.choice.device != x.device else plan
    for kind in ("resize", "dct"):
        if plan.codes(kind):
            _prepare_block_maps(kind, max(h, w), x.device, x.dtype)
    rb, rs, rl = _axis_layout(plan.row_bounds, h)  # (n, H)
    cb, cs, cl = _axis_layout(plan.col_bounds, w)  # (n, W)
    moved = _moved(x, plan, rb, rs, rl, cb, cs, cl)
    return _replace_local(x, moved, plan).view(plan.choice.shape[0], c, h, w)


def _default_generator(x: torch.Tensor, generator: torch.Generator | None) -> torch.Generator:
    return generator if generator is not None else torch.Generator(device=x.device).manual_seed(0)


def _check_images(x: torch.Tensor) -> None:
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"SIT expects float images of shape (B, C, H, W), got {tuple(x.shape)} {x.dtype}")


def structure_invariant_copies(x: torch.Tensor, n_copies: int = 20, blocks: int = 3,
                               ops: str | Sequence[str] = PAPER_OPS,
                               generator: torch.Generator | None = None) -> torch.Tensor:
    """``n_copies`` independent SIT copies of each image of ``x`` (B, C, H, W) in [0, 1], all built
    at once: (n_copies * B, C, H, W), copy-major (``out[k * B + i]`` is copy ``k`` of image ``i``),
    same dtype and device, differentiable w.r.t. ``x``.

    Each copy of each image draws its own ``blocks x blocks`` cut points, operations and
    parameters (the reference draws cut points and operations once per batch). All randomness
    comes from ``generator`` (None: a fresh one seeded 0 on ``x``'s device); the same seed gives
    bit-identical copies on the CPU.
    """
    _check_images(x)
    generator = _default_generator(x, generator)
    plan = SITPlan.sample(x.shape, n_copies, blocks, ops, generator, device=x.device)
    log.debug("SIT: %d copies of %d images %s, %dx%d blocks, ops %s", n_copies, x.shape[0],
              tuple(x.shape[1:]), blocks, blocks, ",".join(plan.ops))
    return apply_structure_invariant_plan(x, plan)


def structure_invariant_transform(x: torch.Tensor, blocks: int = 3, ops: str | Sequence[str] = PAPER_OPS,
                                  generator: torch.Generator | None = None) -> torch.Tensor:
    """One SIT copy of each image: ``x`` (B, C, H, W) in [0, 1] -> same shape, dtype and device.

    Block ``(i, j)`` of image ``b`` becomes ``op_bij(block)`` with ``op_bij`` drawn uniformly from
    ``ops`` (a preset name, ``;``-separated names, or a sequence; default the paper's 10
    operations) at cut points drawn per image. See the module docstring for the operations.
    """
    return structure_invariant_copies(x, 1, blocks, ops, generator)
