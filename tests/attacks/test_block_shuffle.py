"""The study's structural block attack: a rearrangement of the image's own blocks, reported with
its SSIM (checked against scikit-image), never mistaken for a bounded perturbation."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.metrics import structural_similarity

from medrobust.attacks.block_shuffle import BlockShuffle, structural_similarity_batch
from medrobust.attacks.registry import build_attack, list_attacks


def stored_images(n: int, h: int, w: int | None = None, seed: int = 0, channels: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.round(torch.rand(n, channels, h, w or h, generator=g) * 255) / 255


def blocks_of(x: torch.Tensor, nb: int) -> torch.Tensor:
    """(B, N, C, bh, bw) row-major blocks of the top-left divisible region."""
    b, c, h, w = x.shape
    bh, bw = h // nb, w // nb
    core = x[..., : bh * nb, : bw * nb]
    return core.reshape(b, c, nb, bh, nb, bw).permute(0, 2, 4, 1, 3, 5).reshape(b, nb * nb, c, bh, bw)


MODEL = nn.Identity()  # the attack never consults the model
Y = torch.zeros(4, dtype=torch.long)


def test_registered_not_a_gradient_attack_and_checked() -> None:
    assert "block-shuffle" in list_attacks()
    attack = build_attack("block-shuffle:blocks=4,rotate_prob=0.25,distort_prob=0.1")
    assert isinstance(attack, BlockShuffle) and not attack.needs_gradients
    assert (attack.blocks, attack.rotate_prob, attack.distort_prob) == (4, 0.25, 0.1)
    assert "bounded adversarial perturbation" in (BlockShuffle.__doc__ or "")
    with pytest.raises(ValueError, match="rotate_prob"):
        BlockShuffle(rotate_prob=1.5)
    with pytest.raises(ValueError, match="blocks"):
        BlockShuffle(blocks=0)
    with pytest.raises(ValueError, match="cannot be cut"):
        BlockShuffle(blocks=5)(MODEL, torch.rand(1, 1, 4, 4), Y[:1])


def test_shuffling_only_permutes_the_blocks() -> None:
    x = stored_images(4, 30, seed=1)
    attack = BlockShuffle(blocks=3, shuffle=True, rotate_prob=0.0)
    out = attack(MODEL, x, Y)
    before, after = blocks_of(x, 3), blocks_of(out, 3)
    perm = attack.last_permutation
    assert perm.shape == (4, 9)
    for i in range(4):
        assert sorted(perm[i].tolist()) == list(range(9))
        assert torch.equal(after[i], before[i][perm[i]])
        # the multiset of block contents is preserved, whatever the recorded permutation says
        key = lambda t: sorted(tuple(b.flatten().tolist()) for b in t)  # noqa: E731
        assert key(after[i]) == key(before[i])
    assert (attack.last_rotation == 0).all() and not attack.last_distorted.any()
    assert (perm != torch.arange(9)).any()  # something moved
    assert (attack.last_ssim < 1).all()


def test_rotation_only_turns_each_block_in_place() -> None:
    x = stored_images(3, 24, seed=2)
    attack = BlockShuffle(blocks=3, shuffle=False, rotate_prob=1.0)
    out = attack(MODEL, x, Y[:3])
    before, after = blocks_of(x, 3), blocks_of(out, 3)
    turns = attack.last_rotation
    assert set(turns.unique().tolist()) <= {1, 2, 3}
    for i in range(3):
        for j in range(9):
            assert torch.equal(after[i, j], before[i, j].rot90(int(turns[i, j]), dims=(-2, -1)))


def test_non_square_blocks_turn_by_180_and_the_remainder_stays() -> None:
    x = stored_images(2, 23, 31, seed=3)  # blocks of 7 x 10; 2 rows and 1 column left over
    attack = BlockShuffle(blocks=3, shuffle=True, rotate_prob=1.0)
    out = attack(MODEL, x, Y[:2])
    assert (attack.last_rotation == 2).all()
    assert torch.equal(out[..., 21:, :], x[..., 21:, :]) and torch.equal(out[..., :, 30:], x[..., :, 30:])
    before, after = blocks_of(x, 3), blocks_of(out, 3)
    for i in range(2):
        assert torch.equal(after[i], before[i][attack.last_permutation[i]].flip(-2, -1))


def test_nothing_enabled_is_the_identity_with_ssim_one() -> None:
    x = stored_images(2, 16, seed=4)
    attack = BlockShuffle(shuffle=False, rotate_prob=0.0, distort_prob=0.0)
    assert torch.equal(attack(MODEL, x, Y[:2]), x)
    assert torch.allclose(attack.last_ssim, torch.ones(2))


def test_ssim_equals_scikit_image() -> None:
    x = stored_images(3, 32, seed=5)
    attack = BlockShuffle(blocks=4, rotate_prob=0.5, distort_prob=0.5)
    out = attack(MODEL, x, Y[:3])
    for i in range(3):
        expected = structural_similarity(x[i, 0].double().numpy(), out[i, 0].double().numpy(), data_range=1.0)
        assert attack.last_ssim[i].item() == pytest.approx(expected, abs=1e-6)
    assert (attack.last_ssim < 1).all()
    rgb = stored_images(2, 12, seed=6, channels=3)
    noisy = (rgb + 0.05 * torch.rand(rgb.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    got = structural_similarity_batch(rgb, noisy)
    want = structural_similarity(rgb[0].double().numpy(), noisy[0].double().numpy(), data_range=1.0, channel_axis=0)
    assert got[0].item() == pytest.approx(want, abs=1e-6)


def test_distortion_warps_inside_the_block_and_stays_on_the_grid() -> None:
    x = stored_images(2, 30, seed=7)
    attack = BlockShuffle(blocks=3, shuffle=False, rotate_prob=0.0, distort_prob=1.0, distort_strength=0.2)
    out = attack(MODEL, x, Y[:2])
    assert attack.last_distorted.all()
    assert not torch.equal(out, x)
    assert out.min() >= 0 and out.max() <= 1
    assert torch.allclose(out * 255, torch.round(out * 255), atol=1e-4)
    floats = BlockShuffle(blocks=3, shuffle=False, rotate_prob=0.0, distort_prob=1.0, quantize_bits=None)(MODEL, x, Y[:2])
    assert not torch.allclose(floats * 255, torch.round(floats * 255), atol=1e-4)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), blocks=st.integers(1, 5), h=st.integers(10, 24), w=st.integers(10, 24),
       rotate_prob=st.sampled_from([0.0, 0.5, 1.0]), channels=st.sampled_from([1, 3]))
def test_shape_range_pixel_multiset_and_determinism(seed, blocks, h, w, rotate_prob, channels) -> None:
    x = stored_images(2, h, w, seed=seed, channels=channels)
    make = lambda: BlockShuffle(blocks=blocks, rotate_prob=rotate_prob, seed=seed)  # noqa: E731
    out = make()(MODEL, x, Y[:2])
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1
    # shuffles and rotations move pixels, they never change them: each image's histogram is kept
    assert torch.equal(out.flatten(1).sort(dim=1).values, x.flatten(1).sort(dim=1).values)
    assert torch.equal(out, make()(MODEL, x, Y[:2]))
