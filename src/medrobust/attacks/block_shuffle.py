"""The study's "structural" manipulation: cut the image into blocks and shuffle, rotate or warp them.

The study ("Assessing CNN Robustness in Medical Imaging Systems", 2025) describes, besides
the Structure Invariant Attack, a variant that rearranges the *image itself*: it is cut into
``blocks x blocks`` tiles which are shuffled, rotated and reordered. That is not SIA — in SIA
(Wang et al., ICCV 2023) the block transforms only shape the gradient and the result is a
bounded additive perturbation (see :mod:`medrobust.attacks.sia`). Here the rearranged image is
the output, so it lives in the tool under its own, honest name: ``block-shuffle``.

**This is not a bounded adversarial perturbation.** There is no epsilon ball, no gradient and
no model query: the change is a large, plainly visible rearrangement of the anatomy that any
radiologist would notice. It measures whether a model still answers confidently on a
scrambled radiograph (it should not), and it is reported with its visibility: after each call
:attr:`BlockShuffle.last_ssim` holds the SSIM (Wang et al. 2004) of every output to its
original, computed by :func:`medrobust.data.similarity.ssim` (scikit-image's, ``data_range=1``),
the measure the study's detector (``SSIM < 0.85``) looks at.

Per image, independently and from one ``torch.Generator``:

1. the top-left ``(H // b) * b`` x ``(W // b) * b`` pixels are cut into ``b x b`` equal blocks
   (equal, so any block fits any place); the few remaining rows/columns (fewer than ``b``) at
   the bottom and right are left in place;
2. ``shuffle``: the blocks are put back in a uniformly random order (a random permutation);
3. each block is rotated with probability ``rotate_prob`` — by 90, 180 or 270 degrees (equally
   likely) when blocks are square, by 180 degrees otherwise, so the block keeps its shape;
4. each block is warped with probability ``distort_prob`` by a small random affine map
   ``[[1 + a, b, t_x], [c, 1 + d, t_y]]`` with ``a, b, c, d, t_x, t_y ~ U(-s, s)`` in the
   block's normalised coordinates (``s = distort_strength``), bilinear, border-padded;
5. ``quantize_bits``: rounded to the storage grid (shuffles and rotations of an on-grid image
   are already on it; warps are not).
"""

from __future__ import annotations

import logging

import torch
import torch.nn as nn
import torch.nn.functional as F

from medrobust.attacks.engine import Attack
from medrobust.attacks.registry import register_attack
from medrobust.data.similarity import ssim

log = logging.getLogger(__name__)


def structural_similarity_batch(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) float32 SSIM of each image pair of two batches (B, C, H, W):
    :func:`medrobust.data.similarity.ssim` with ``colour="channels"`` (grayscale images compared
    as 2-D arrays, colour ones channel by channel, as scikit-image's ``channel_axis``)."""
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"SSIM needs two batches of the same shape (B, C, H, W), got {tuple(x.shape)} and {tuple(y.shape)}")
    a = x.detach().to("cpu", torch.float64).numpy()
    b = y.detach().to("cpu", torch.float64).numpy()
    return torch.from_numpy(ssim(a, b, colour="channels")).to(torch.float32)


def _rotate_blocks(tiles: torch.Tensor, quarter_turns: torch.Tensor) -> torch.Tensor:
    """Rotate each tile of (B, N, C, h, w) by ``quarter_turns`` (B, N) x 90 degrees (0..3)."""
    k = quarter_turns[:, :, None, None, None]
    out = torch.where(k == 2, tiles.flip(-2, -1), tiles)
    if tiles.shape[-1] == tiles.shape[-2]:
        out = torch.where(k == 1, tiles.rot90(1, dims=(-2, -1)), out)
        out = torch.where(k == 3, tiles.rot90(3, dims=(-2, -1)), out)
    return out


def _warp_blocks(tiles: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """A small random affine warp of each tile of (N, C, h, w), inside the tile (border padding)."""
    n = tiles.shape[0]
    jitter = (torch.rand(n, 2, 3, generator=generator, device=tiles.device, dtype=tiles.dtype) * 2 - 1) * strength
    theta = torch.eye(2, 3, device=tiles.device, dtype=tiles.dtype).expand(n, 2, 3) + jitter
    grid = F.affine_grid(theta, list(tiles.shape), align_corners=False)
    return F.grid_sample(tiles, grid, mode="bilinear", padding_mode="border", align_corners=False).clamp(0.0, 1.0)


@register_attack("block-shuffle")
class BlockShuffle(Attack):
    """The study's structural manipulation: blocks of the image shuffled, rotated, warped.

    NOT a bounded adversarial perturbation: a visible rearrangement of the image (no epsilon,
    no gradient, the model is not consulted), reported with its SSIM to the original in
    :attr:`last_ssim`. See the module docstring for the exact procedure. Volumes
    (B, C, D, H, W) are refused with the reason (:attr:`volumes`): its tiles, rotations and
    warps are 2-D.

    Source: the study ("Assessing CNN Robustness in Medical Imaging Systems: Adversarial
    Threats and Defensive Measures", 2025), which describes this block rearrangement beside
    SIA (Wang et al., ICCV 2023). With ``b = blocks`` and the image cut into b x b equal tiles
    ``T_1..T_{b^2}``, output tile ``j`` is ``W_j(R_j(T_{pi(j)}))``: ``pi`` a random permutation
    (``shuffle``), ``R_j`` a random rotation with probability ``rotate_prob``, ``W_j`` a small
    random affine warp with probability ``distort_prob``.

    Args:
        blocks: b, blocks per side (a b x b grid), at least 1 and at most the image's shorter
            side. Default 3 (SIA's s = 3 of the paper and the study).
        shuffle: put the blocks back in a random order. Default True.
        rotate_prob: probability, per block, of a rotation (90, 180 or 270 degrees for square
            blocks, 180 otherwise), in [0, 1]. Default 0.5.
        distort_prob: probability, per block, of a small random affine warp, in [0, 1].
            Default 0.0.
        distort_strength: s, the largest affine coefficient of a warp, in the block's normalised
            coordinates; in [0, 0.5]. Default 0.1.
        seed: seed of the ``torch.Generator`` when the call is given none. Default 0.
        quantize_bits: bit depth the result is rounded to. Default 8; None keeps floats.

    The defaults of ``shuffle``, the probabilities and the strength are medrobust's choices: the
    study gives no numbers.

    Shape:
        - x: (B, C, H, W) float in [0, 1] with H, W >= ``blocks``; ``model`` and ``y`` are
          accepted for the common calling convention and not used.
        - Output: (B, C, H, W), ``x``'s dtype, in [0, 1].
        - After a call (with N = ``blocks**2``): :attr:`last_ssim` (B,) float32 SSIM to the
          original; :attr:`last_permutation` (B, N) int64, the source block of each output block
          (row-major); :attr:`last_rotation` (B, N) int64, quarter turns applied to each output
          block; :attr:`last_distorted` (B, N) bool. All on the CPU.

    Example:

    >>> import torch
    >>> from medrobust.models import build_classifier
    >>> model = build_classifier("small-cnn", ["Normal", "Pneumonia", "Pneumothorax"], 32)
    >>> x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> y = torch.tensor([0, 2])
    >>> attack = BlockShuffle(blocks=4)
    >>> x_adv = attack(model, x, y)
    >>> x_adv.shape, attack.last_ssim.shape, sorted(attack.last_permutation[0].tolist()) == list(range(16))
    (torch.Size([2, 1, 32, 32]), torch.Size([2]), True)
    >>> on_grid = (x * 255).round() / 255  # the same grey values, in other places:
    >>> torch.equal(x_adv.flatten(1).sort(dim=1).values, on_grid.flatten(1).sort(dim=1).values)
    True
    """

    needs_gradients = False
    volumes = ("block-shuffle cuts H x W images into square tiles that it rotates by quarter turns and warps in 2-D, "
               "and its visibility measure (SSIM) is 2-D; it is not defined on volumes")

    def __init__(self, blocks: int = 3, shuffle: bool = True, rotate_prob: float = 0.5, distort_prob: float = 0.0,
                 distort_strength: float = 0.1, seed: int = 0, quantize_bits: int | None = 8) -> None:
        super().__init__(seed=seed, quantize_bits=quantize_bits)
        if blocks < 1:
            raise ValueError(f"block-shuffle: blocks must be at least 1, got {blocks}")
        for pname, value in (("rotate_prob", rotate_prob), ("distort_prob", distort_prob)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"block-shuffle: {pname} must lie in [0, 1], got {value}")
        if not 0.0 <= distort_strength <= 0.5:
            raise ValueError(f"block-shuffle: distort_strength must lie in [0, 0.5], got {distort_strength}")
        self.blocks = int(blocks)
        self.shuffle = bool(shuffle)
        self.rotate_prob = float(rotate_prob)
        self.distort_prob = float(distort_prob)
        self.distort_strength = float(distort_strength)
        self._last_ssim: torch.Tensor | None = None
        self._last_permutation: torch.Tensor | None = None
        self._last_rotation: torch.Tensor | None = None
        self._last_distorted: torch.Tensor | None = None

    @property
    def last_ssim(self) -> torch.Tensor | None:
        """(B,) SSIM of each output of the last call to its original (1: unchanged)."""
        return self._last_ssim

    @property
    def last_permutation(self) -> torch.Tensor | None:
        """(B, N): output block j of image i came from block ``last_permutation[i, j]`` (row-major)."""
        return self._last_permutation

    @property
    def last_rotation(self) -> torch.Tensor | None:
        """(B, N): quarter turns (counter-clockwise) applied to each output block."""
        return self._last_rotation

    @property
    def last_distorted(self) -> torch.Tensor | None:
        """(B, N) bool: which output blocks were warped."""
        return self._last_distorted

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        with torch.no_grad():
            out = self.rearrange(x, generator)
        self._last_ssim = structural_similarity_batch(x, out)
        log.info("block-shuffle (%d x %d blocks): SSIM to the original mean %.3f, min %.3f", self.blocks, self.blocks,
                 float(self._last_ssim.mean()) if len(out) else float("nan"),
                 float(self._last_ssim.min()) if len(out) else float("nan"))
        return out

    def rearrange(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The rearranged batch, without the SSIM report; what :meth:`perturb` calls.

        Args:
            x: (B, C, H, W) images in [0, 1], H and W at least ``blocks``.
            generator: the random stream, on ``x``'s device; every draw comes from it.

        Returns:
            (B, C, H, W) rearranged images, ``x``'s dtype, in [0, 1]; also sets
            :attr:`last_permutation`, :attr:`last_rotation` and :attr:`last_distorted`.
        """
        bsz, c, h, w = x.shape
        nb = self.blocks
        bh, bw = h // nb, w // nb
        if bh == 0 or bw == 0:
            raise ValueError(f"block-shuffle: a {h} x {w} image cannot be cut into {nb} x {nb} blocks; use fewer blocks")
        n = nb * nb
        dev = x.device
        core = x[..., : bh * nb, : bw * nb]
        tiles = core.reshape(bsz, c, nb, bh, nb, bw).permute(0, 2, 4, 1, 3, 5).reshape(bsz, n, c, bh, bw)

        if self.shuffle:
            perm = torch.rand(bsz, n, generator=generator, device=dev).argsort(dim=1)
        else:
            perm = torch.arange(n, device=dev).expand(bsz, n)
        tiles = tiles[torch.arange(bsz, device=dev)[:, None], perm]

        rotate = torch.rand(bsz, n, generator=generator, device=dev) < self.rotate_prob
        if bh == bw:
            turns = torch.randint(1, 4, (bsz, n), generator=generator, device=dev)
        else:
            turns = torch.full((bsz, n), 2, device=dev, dtype=torch.long)
        turns = torch.where(rotate, turns, torch.zeros_like(turns))
        tiles = _rotate_blocks(tiles, turns)

        distort = torch.rand(bsz, n, generator=generator, device=dev) < self.distort_prob
        if distort.any():
            flat = tiles.reshape(bsz * n, c, bh, bw).clone()
            chosen = distort.reshape(-1).nonzero()[:, 0]
            flat[chosen] = _warp_blocks(flat[chosen], self.distort_strength, generator)
            tiles = flat.reshape(bsz, n, c, bh, bw)

        out = x.clone()
        out[..., : bh * nb, : bw * nb] = tiles.reshape(bsz, nb, nb, c, bh, bw).permute(0, 3, 1, 4, 2, 5).reshape(
            bsz, c, bh * nb, bw * nb)
        if self.quantize_bits is not None:
            levels = float(2**self.quantize_bits - 1)
            out = torch.round(out * levels) / levels
        self._last_permutation = perm.cpu().clone()
        self._last_rotation = turns.cpu()
        self._last_distorted = distort.cpu()
        return out.clamp(0.0, 1.0)
