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
  torch state), drawn in a fixed order with shapes that do not depend on earlier draws, so a
  seed gives bit-identical copies on the CPU (see :class:`SITPlan`).
- ``dct`` on a block shorter than 3 pixels: ``int(0.4 len) = 0`` and the reference's slice
  ``[-0:]`` zeroes the *whole* spectrum (the block turns black); here nothing is removed.
- ``dropout`` output is clipped to [0, 1] (the reference lets kept pixels reach 1/0.9).

How it is vectorised (no Python loop over images, copies or blocks): the index-moving
operations (shifts, flips, rotation; every other operation moves nothing) become one flat
source index per pixel for the whole ``(n_copies * B)`` batch. A row's source depends on its
own row block and on the column block, so it is computed per (row, column block) from the
block's start, length, operation and roll amount, and spread over the columns by one gather;
likewise for columns; the sum is the flat source and one ``index_select`` moves every pixel.
Intensity operations are per-block multipliers and per-pixel noise/dropout, spread to pixels
by block id. ``resize`` and ``dct`` act on blocks of varying sizes through a per-length map
``M_L`` applied along each axis (see :mod:`medrobust.attacks._block_maps`): resize has at
most 4 non-zeros per row (4 gathers per axis), the DCT low-pass is a dense block-diagonal
product ``A_h @ x @ A_w^T``; both are looked up in a table of the distinct block lengths (a
loop over lengths, each matrix computed once per process) and restricted to the images with
at least one such block. Every step is differentiable w.r.t. ``x``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch

from medrobust.attacks._block_maps import dct_lowpass_matrix, dense_along, resize_matrix, sparse_along

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
    """

    ops: tuple[str, ...]
    batch: int
    row_bounds: torch.Tensor
    col_bounds: torch.Tensor
    choice: torch.Tensor
    row_shift: torch.Tensor
    col_shift: torch.Tensor
    scale: torch.Tensor | None = None  # (n, s, s) factors in [0, 1)
    keep_block: torch.Tensor | None = None  # (n, C, s, s) bool, dropout
    keep_pixel: torch.Tensor | None = None  # (n, C, H, W) bool, pixel_dropout
    noise: torch.Tensor | None = None  # (n, C, H, W) in [-16/255, 16/255]

    @property
    def n_copies(self) -> int:
        return self.choice.shape[0] // self.batch

    @property
    def blocks(self) -> int:
        return self.choice.shape[1]

    @classmethod
    def sample(cls, shape: Sequence[int], n_copies: int, blocks: int, ops: Sequence[str],
               generator: torch.Generator, device: torch.device | str | None = None) -> "SITPlan":
        """Draw the plan for ``n_copies`` copies of a batch of ``shape`` (B, C, H, W).

        Draw order (fixed; shapes depend only on the arguments): row cut keys, column cut keys,
        operation choices, row shifts, column shifts, then, when the operation is in ``ops``,
        scale factors, block dropout, pixel dropout, noise. Drawn on the generator's device,
        then moved to ``device``.
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
        scale = uniform(n, s, s) if "scale" in ops else None
        keep_block = uniform(n, c, s, s) >= DROPOUT_P if "dropout" in ops else None
        keep_pixel = uniform(n, c, h, w) >= DROPOUT_P if "pixel_dropout" in ops else None
        noise = (uniform(n, c, h, w) * 2 - 1) * NOISE_BOUND if "add_noise" in ops else None
        plan = cls(ops, b, row_bounds, col_bounds, choice, row_shift, col_shift, scale, keep_block, keep_pixel, noise)
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
        sliced = {f.name: getattr(self, f.name) for f in fields(self)}
        for key, value in sliced.items():
            if isinstance(value, torch.Tensor):
                sliced[key] = value[start * self.batch: stop * self.batch]
        return SITPlan(**sliced)


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


def _resize_map(length: int) -> torch.Tensor:
    return resize_matrix(length, RESIZE_FACTOR)


def _dct_map(length: int) -> torch.Tensor:
    return dct_lowpass_matrix(length, DCT_CUT_RATIO)


def _per_pixel(values: torch.Tensor, block_id: torch.Tensor) -> torch.Tensor:
    """values (n, K, s, s) per block -> (n, K, H, W) per pixel, via block_id (n, H, W)."""
    n, h, w = block_id.shape
    k = values.shape[1]
    return values.flatten(2).gather(2, block_id.view(n, 1, h * w).expand(n, k, h * w)).view(n, k, h, w)


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


def apply_structure_invariant_plan(x: torch.Tensor, plan: SITPlan) -> torch.Tensor:
    """The copies of ``x`` (B, C, H, W) described by ``plan``: (plan.n_copies * B, C, H, W),
    differentiable w.r.t. ``x``."""
    b, c, h, w = x.shape
    if b != plan.batch:
        raise ValueError(f"the SIT plan was drawn for batches of {plan.batch}, got {b} images")
    plan = plan.to(x.device) if plan.choice.device != x.device else plan
    n, s = plan.choice.shape[:2]
    dev = x.device
    rb, rs, rl = _axis_layout(plan.row_bounds, h)  # (n, H)
    cb, cs, cl = _axis_layout(plan.col_bounds, w)  # (n, W)

    def codes(*names: str) -> list[int]:
        return [i for i, name in enumerate(plan.ops) if name in names]

    # 1. Index moves. A row's source depends on its own row block and on the column block, so
    # it is computed per (row, column block), (n, H, s), and spread over the columns by one
    # gather; likewise for columns. Then one index_select moves the pixels of the whole batch.
    itype = torch.int32 if b * h * w < 2**31 else torch.int64  # index_select takes int32: half the traffic
    image = torch.arange(n, device=dev).remainder_(b).view(n, 1, 1)  # copy k of image i is row k*B + i
    rows = _source_along(plan.choice.gather(1, rb.unsqueeze(2).expand(n, h, s)), rs, rl,
                         plan.row_shift.gather(1, rb.unsqueeze(2).expand(n, h, s)),
                         codes("vertical_shift"), codes("vertical_flip", "rotate180"))
    rows = ((image * h + rows) * w).to(itype)  # (n, H, s): flat offset of the source row
    by_col = plan.choice.transpose(1, 2)  # (n, s_col, s_row)
    cols = _source_along(by_col.gather(1, cb.unsqueeze(2).expand(n, w, s)), cs, cl,
                         plan.col_shift.transpose(1, 2).gather(1, cb.unsqueeze(2).expand(n, w, s)),
                         codes("horizontal_shift"), codes("horizontal_flip", "rotate180"))  # (n, W, s)
    cols = cols.to(itype).transpose(1, 2).contiguous()  # (n, s_row, W)
    source = rows.gather(2, cb.unsqueeze(1).expand(n, h, w))  # (n, H, W), per pixel via its column block
    source += cols.gather(1, rb.unsqueeze(2).expand(n, h, w))  # ... and its row block
    flat = x.transpose(0, 1).reshape(c, b * h * w)
    moved = flat.index_select(1, source.view(-1)).view(c, n, h, w).transpose(0, 1)
    out = moved

    # 2. Intensity operations: a per-block multiplier (scale, dropout), per-pixel dropout and
    # noise, and clipping where the reference clips; all spread to pixels by block id.
    block_id = rb.unsqueeze(2) * s + cb.unsqueeze(1)  # (n, H, W)
    choice = plan.choice.unsqueeze(1)  # (n, 1, s, s)
    mult = None
    if code := codes("scale"):
        assert plan.scale is not None
        mult = torch.where(_isin(choice, code), plan.scale.to(x.dtype).unsqueeze(1), 1.0)
    if code := codes("dropout"):
        assert plan.keep_block is not None
        keep = plan.keep_block.to(x.dtype) / (1 - DROPOUT_P)
        mult = torch.where(_isin(choice, code), keep, 1.0 if mult is None else mult)
    if mult is not None:
        out = out * _per_pixel(mult, block_id)
    if code := codes("pixel_dropout"):
        assert plan.keep_pixel is not None
        keep = plan.keep_pixel.to(x.dtype) / (1 - DROPOUT_P)
        out = torch.where(_per_pixel(_isin(choice, code), block_id), out * keep, out)
    if code := codes("add_noise"):
        assert plan.noise is not None
        out = out + plan.noise.to(x.dtype) * _per_pixel(_isin(choice, code).to(x.dtype), block_id)
    if code := codes(*_CLIPPED):
        out = torch.where(_per_pixel(_isin(choice, code), block_id), out.clamp(0.0, 1.0), out)

    # 3. Block-local linear maps on the images that chose them: resize (4 taps per axis, then
    # clipped as the reference does) and dct (block-diagonal products A_h @ x @ A_w^T).
    for name in ("resize", "dct"):
        if not (code := codes(name)):
            continue
        chose = _isin(plan.choice, code)  # (n, s, s)
        sub = chose.flatten(1).any(dim=1).nonzero().squeeze(1)
        if sub.numel() == 0:
            continue
        if name == "resize":
            mapped = sparse_along(moved[sub], rs[sub], rl[sub], 2, _resize_map)
            mapped = sparse_along(mapped, cs[sub], cl[sub], 3, _resize_map).clamp(0.0, 1.0)
        else:
            a_h = dense_along(rs[sub], rl[sub], h, _dct_map, x.dtype).unsqueeze(1)
            a_w = dense_along(cs[sub], cl[sub], w, _dct_map, x.dtype).unsqueeze(1)
            mapped = a_h @ moved[sub] @ a_w.transpose(-1, -2)
        mask = _per_pixel(chose[sub].unsqueeze(1), block_id[sub])
        out = out.index_copy(0, sub, torch.where(mask, mapped, out[sub]))
    return out.contiguous()


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
