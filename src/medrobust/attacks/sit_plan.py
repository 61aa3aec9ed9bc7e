"""The random plan of the Structure Invariant Transformation (SIT): cut points, operations, parameters.

Wang, Zhang & Zhang, "Structure Invariant Transformation for better Adversarial
Transferability", ICCV 2023. SIT cuts an image into ``s x s`` blocks at random cut points
and applies to each block one independently chosen random operation; the block structure
(where things are) survives, the local content is diversified. SIA averages the input
gradient over ``N`` such copies (see :mod:`medrobust.attacks.sia`).

For one image ``x`` (C, H, W) with row cuts ``0 = r_0 < r_1 < ... < r_s = H`` and column
cuts ``0 = c_0 < ... < c_s = W``, block ``(i, j)`` is ``x[:, r_i:r_{i+1}, c_j:c_{j+1}]`` and

    SIT(x)[:, r_i:r_{i+1}, c_j:c_{j+1}] = op_ij(x[:, r_i:r_{i+1}, c_j:c_{j+1}]),   op_ij ~ U(ops)

This module draws every random choice of that formula — the cut points ``r``, ``c`` (a uniform
random subset of ``s - 1`` distinct positions per axis), the operation ``op_ij`` of each block and
its parameters — into a :class:`SITPlan`; :mod:`medrobust.attacks.sit_kernel` builds the copies
a plan describes, and :mod:`medrobust.attacks.sit` holds the entry points.

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

Randomness, different from the reference on purpose:

- The reference draws one set of cut points and one operation per block *per batch* (every
  image in the batch shares them, and a shift amount or scale factor is shared across the
  batch too); here every copy of every image draws its own cut points, operations and
  parameters, so an image's copies do not depend on its batch-mates.
- All randomness comes from one ``torch.Generator`` (the reference uses global NumPy and
  torch state), drawn in a fixed order before any copy is built, so a seed gives bit-identical
  copies on the CPU, however the copies are micro-batched (see :class:`SITPlan`); per-pixel draws
  (noise, pixel dropout) are made only for the blocks that use them.

On a GPU, a plan reads its cut points and operation choices back to the host once, when it is
drawn (:class:`HostLayout`): the number of per-pixel draws, the slicing of a plan into
micro-batches and the block tables of :mod:`medrobust.attacks.sit_kernel` are computed from that
copy, so building the copies never waits for the device again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace

import torch

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

FACTOR_OPS: tuple[str, ...] = ("scale", "dropout")
"""The operations that multiply a whole block (and channel) by one factor."""
MAPPED_OPS: tuple[str, ...] = ("resize", "dct")
"""The operations that are a linear map of each block, ``M_rows @ block @ M_cols^T``."""
PIXEL_OPS: tuple[str, ...] = ("add_noise", "pixel_dropout")
"""The operations with a draw per pixel: computed on their own blocks' pixels only."""
HOST_OPS: tuple[str, ...] = MAPPED_OPS + PIXEL_OPS
"""The operations whose blocks are listed on the host (:class:`HostLayout`): the mapped blocks are
computed one by one, and the per-pixel ones have a data-dependent number of draws."""


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
class HostLayout:
    """A plan's cut points and operation choices on the host (CPU): ``row_bounds``/``col_bounds``
    (n, s+1) and ``choice`` (n, s, s), int64, copies of ``of`` = the plan's own tensors.

    Everything with a data-dependent size (how many per-pixel values to draw, which blocks a
    mapped or per-pixel operation covers) is computed from this copy, so a plan on a GPU is read
    back once, when it is drawn, instead of at every such step. :meth:`SITPlan.layout` checks with
    :meth:`describes` that the copy still belongs to the plan (a plan rebuilt with other tensors
    is read again).
    """

    row_bounds: torch.Tensor
    col_bounds: torch.Tensor
    choice: torch.Tensor
    of: tuple[torch.Tensor, torch.Tensor, torch.Tensor]

    @classmethod
    def read(cls, row_bounds: torch.Tensor, col_bounds: torch.Tensor, choice: torch.Tensor) -> "HostLayout":
        """The host copy of these tensors: themselves on the CPU, else one transfer of all three."""
        of = (row_bounds, col_bounds, choice)
        if all(t.device.type == "cpu" for t in of):
            return cls(row_bounds.long(), col_bounds.long(), choice.long(), of)
        flat = torch.cat([row_bounds.long().flatten(), col_bounds.long().flatten(), choice.long().flatten()]).cpu()
        rb, cb, ch = flat.split([row_bounds.numel(), col_bounds.numel(), choice.numel()])
        return cls(rb.view(row_bounds.shape), cb.view(col_bounds.shape), ch.view(choice.shape), of)

    def describes(self, plan: "SITPlan") -> bool:
        """Whether this is the copy of ``plan``'s own cut points and choices (the same tensors)."""
        return self.of[0] is plan.row_bounds and self.of[1] is plan.col_bounds and self.of[2] is plan.choice

    def rows(self, lo: int, hi: int, of: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> "HostLayout":
        """Copy rows ``lo .. hi - 1``, now mirroring ``of``."""
        return HostLayout(self.row_bounds[lo:hi], self.col_bounds[lo:hi], self.choice[lo:hi], of)

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the images the plan was drawn for."""
        return int(self.row_bounds[0, -1]), int(self.col_bounds[0, -1])


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
    row in ``noise_count``/``keep_pixel_count`` (:meth:`per_pixel` spreads them to images), kept
    on the host (they say how to slice the flat draws, see :meth:`copies`). ``host``: the
    :class:`HostLayout` read when the plan was drawn (None for a plan built by hand: read when
    needed).
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
    host: HostLayout | None = field(default=None, repr=False)

    @property
    def n_copies(self) -> int:
        return self.choice.shape[0] // self.batch

    @property
    def blocks(self) -> int:
        return self.choice.shape[1]

    def codes(self, *names: str) -> list[int]:
        """Indices into ``ops`` of the operations named (several where ``ops`` repeats a name)."""
        return codes_of(self.ops, names)

    @classmethod
    def sample(cls, shape: Sequence[int], n_copies: int, blocks: int, ops: Sequence[str],
               generator: torch.Generator, device: torch.device | str | None = None) -> "SITPlan":
        """Draw the plan for ``n_copies`` copies of a batch of ``shape`` (B, C, H, W).

        Draw order (fixed): row cut keys, column cut keys, operation choices, row shifts, column
        shifts, then, when the operation is in ``ops``, scale factors, block dropout, pixel
        dropout, noise (the last two sized by the blocks that chose them). Drawn on the
        generator's device, then moved to ``device``. When ``ops`` has a mapped or per-pixel
        operation (:data:`HOST_OPS`), the cut points and choices are read to the host once
        (:class:`HostLayout`; no transfer on the CPU) and the per-pixel draws are sized from them.
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
        host = HostLayout.read(row_bounds, col_bounds, choice) if any(op in HOST_OPS for op in ops) else None

        def values_per_row(name: str) -> torch.Tensor:  # (n,), on the host: pixels x channels of the blocks choosing name
            assert host is not None
            lengths = host.row_bounds.diff(dim=1).unsqueeze(2) * host.col_bounds.diff(dim=1).unsqueeze(1)
            return (lengths * in_codes(host.choice, codes_of(ops, (name,)))).sum(dim=(1, 2)) * c

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
                   keep_pixel, keep_pixel_count, noise, noise_count, host)
        return plan.to(target) if target != gen_device else plan

    def layout(self) -> HostLayout:
        """The cut points and choices on the host: the copy read when the plan was drawn, or (for a
        plan built by hand) one read now."""
        if self.host is not None and self.host.describes(self):
            return self.host
        return HostLayout.read(self.row_bounds, self.col_bounds, self.choice)

    def to(self, device: torch.device | str) -> "SITPlan":
        """The plan on ``device`` (the per-row counts and the host layout stay on the host)."""
        device = torch.device(device)
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for key, value in moved.items():
            if isinstance(value, torch.Tensor) and key not in _HOST_FIELDS:
                # from the host: queued without waiting for the device (pageable memory is staged at once)
                moved[key] = value.to(device, non_blocking=value.device.type == "cpu")
        moved["host"] = self._host_for(moved)
        return SITPlan(**moved)

    def _host_for(self, tensors: dict[str, object]) -> HostLayout | None:
        """This plan's host layout, now mirroring the cut points and choices in ``tensors`` (None
        when the plan has none that is its own)."""
        if self.host is None or not self.host.describes(self):
            return None
        return replace(self.host, of=(tensors["row_bounds"], tensors["col_bounds"], tensors["choice"]))

    def copies(self, start: int, stop: int) -> "SITPlan":
        """The plan of copies ``start .. stop - 1`` (all images of the batch)."""
        if not 0 <= start < stop <= self.n_copies:
            raise ValueError(f"copy range [{start}, {stop}) is outside 0..{self.n_copies}")
        if (start, stop) == (0, self.n_copies):
            return self
        lo, hi = start * self.batch, stop * self.batch
        sliced = {f.name: getattr(self, f.name) for f in fields(self)}
        for key, value in sliced.items():
            if isinstance(value, torch.Tensor) and key not in ("noise", "keep_pixel"):
                sliced[key] = value[lo:hi]
        for key in ("noise", "keep_pixel"):
            count = getattr(self, f"{key}_count")  # on the host for a drawn plan: no device read
            if count is not None:
                first = int(count[:lo].sum())
                sliced[key] = getattr(self, key)[first: first + int(count[lo:hi].sum())]
        host = self._host_for(sliced)
        sliced["host"] = None if host is None else host.rows(lo, hi, host.of)
        return SITPlan(**sliced)

    def per_pixel(self, name: str) -> torch.Tensor:
        """The per-pixel draws as images (n, C, H, W): ``"noise"`` (0 outside add_noise blocks) or
        ``"keep_pixel"`` (True outside pixel_dropout blocks)."""
        if name not in ("noise", "keep_pixel") or getattr(self, name) is None:
            raise ValueError(f"the plan has no {name!r} draws (ops: {', '.join(self.ops)})")
        values = getattr(self, name)
        layout = self.layout()
        h, w = layout.size
        n = self.choice.shape[0]
        fill = torch.zeros if name == "noise" else torch.ones
        image = fill(n * self.channels * h * w, dtype=values.dtype, device=values.device)
        op = "add_noise" if name == "noise" else "pixel_dropout"
        blocks = select_blocks(layout, in_codes(layout.choice, self.codes(op)))
        index = block_pixels(blocks, self.channels, h, w, values.device)
        return image.index_put((index,), values).view(n, self.channels, h, w)


_HOST_FIELDS = ("noise_count", "keep_pixel_count")
"""Plan fields kept on the host when a plan moves (bookkeeping of the flat per-pixel draws)."""


def codes_of(ops: Sequence[str], names: Sequence[str]) -> list[int]:
    """Indices into ``ops`` of the operations ``names`` (several where ``ops`` repeats a name)."""
    return [i for i, name in enumerate(ops) if name in names]


def _cut_points(keys: torch.Tensor, blocks: int, size: int) -> torch.Tensor:
    """(n, size-1) uniform keys -> (n, blocks+1) bounds: ``blocks - 1`` distinct sorted cuts
    drawn uniformly from 1..size-1 (the smallest keys pick a uniform random subset)."""
    n = keys.shape[0]
    cuts = keys.topk(blocks - 1, dim=1, largest=False).indices.add_(1).sort(dim=1).values
    first = torch.zeros(n, 1, dtype=torch.long, device=keys.device)
    return torch.cat([first, cuts, torch.full_like(first, size)], dim=1)


def in_codes(values: torch.Tensor, codes: list[int]) -> torch.Tensor:
    """Where ``values`` (operation codes) is one of ``codes`` (a short chain of ``==``, no tensor built)."""
    out = values == codes[0]
    for code in codes[1:]:
        out = out | (values == code)
    return out


@dataclass(frozen=True)
class PlanBlocks:
    """Selected blocks, in row-major order of (copy row, block row, block column): their copy
    row, first row and column, side lengths and operation code, each (K,) int64 (on the host when
    made by :func:`select_blocks`)."""

    row: torch.Tensor
    r0: torch.Tensor
    lr: torch.Tensor
    c0: torch.Tensor
    lc: torch.Tensor
    code: torch.Tensor

    def to(self, device: torch.device) -> "PlanBlocks":
        """The blocks on ``device``: one copy of their table, queued without waiting for the device."""
        if self.row.device == device:
            return self
        table = torch.stack([self.row, self.r0, self.lr, self.c0, self.lc, self.code])
        return PlanBlocks(*table.to(device, non_blocking=True).unbind(0))


def select_blocks(layout: HostLayout, mask: torch.Tensor) -> PlanBlocks:
    """The blocks where ``mask`` (n, s, s; from ``layout.choice``, on the host) is True, on the host."""
    row, i, j = mask.nonzero().unbind(1)
    r0, c0 = layout.row_bounds[row, i], layout.col_bounds[row, j]
    return PlanBlocks(row, r0, layout.row_bounds[row, i + 1] - r0, c0, layout.col_bounds[row, j + 1] - c0,
                      layout.choice[row, i, j])


def block_pixels(blocks: PlanBlocks, channels: int, h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
    """Flat indices into (n, C, H, W) of every pixel of ``blocks`` (on the host), block by block,
    each block in (channel, row, column) order: its (channel, row) segments, then each segment's
    columns. Built on ``device`` (default: the blocks'), with every size taken from the host."""
    segments = int(blocks.lr.sum()) * channels
    total = int((blocks.lr * blocks.lc).sum()) * channels
    last_row = int(blocks.row.max()) if len(blocks.row) else 0
    blocks = blocks.to(torch.device(device)) if device is not None else blocks
    dev = blocks.row.device
    per_block = blocks.lr * channels  # segments of one block
    seg_block = torch.repeat_interleave(torch.arange(len(per_block), device=dev), per_block, output_size=segments)
    local = torch.arange(segments, device=dev) - (torch.cumsum(per_block, 0) - per_block)[seg_block]
    seg_lr = blocks.lr[seg_block]
    channel, row = local // seg_lr, local % seg_lr
    seg_len = blocks.lc[seg_block]
    start = ((blocks.row[seg_block] * channels + channel) * h + blocks.r0[seg_block] + row) * w + blocks.c0[seg_block]
    itype = torch.int32 if last_row < 2**31 // (channels * h * w) else torch.int64
    # the pixel-level work in 32-bit integers (index_select and index_put take them)
    start = (start - (torch.cumsum(seg_len, 0) - seg_len)).to(itype)
    return torch.repeat_interleave(start, seg_len, output_size=total) + torch.arange(total, device=dev, dtype=itype)
