"""The Structure Invariant Transformation: one operation per block, exact moves inside blocks,
intensity ranges, the resize/DCT maps against direct computations, seeds, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from medrobust.attacks.sit import (
    ALL_OPS,
    NOISE_BOUND,
    PAPER_OPS,
    SIT_PRESETS,
    TRANSFERATTACK_OPS,
    SITPlan,
    apply_structure_invariant_plan,
    resolve_ops,
    structure_invariant_copies,
    structure_invariant_transform,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def distinct_images(b: int = 3, c: int = 1, h: int = 17, w: int = 19) -> torch.Tensor:
    """Every pixel of the batch has its own value, so any move is visible and traceable."""
    return torch.arange(b * c * h * w, dtype=torch.float32).view(b, c, h, w) / (b * c * h * w)


def planned(x: torch.Tensor, ops: str | list[str], n_copies: int = 1, blocks: int = 3,
            seed: int = 0) -> tuple[torch.Tensor, SITPlan]:
    plan = SITPlan.sample(x.shape, n_copies, blocks, resolve_ops(ops), gen(seed))
    return apply_structure_invariant_plan(x, plan), plan


def blocks_of(plan: SITPlan, row: int):
    """Yield (i, j, row slice, col slice) of every block of plan row ``row``."""
    rb, cb = plan.row_bounds[row].tolist(), plan.col_bounds[row].tolist()
    for i in range(plan.blocks):
        for j in range(plan.blocks):
            yield i, j, slice(rb[i], rb[i + 1]), slice(cb[j], cb[j + 1])


def test_presets_follow_the_reference_code() -> None:
    assert len(PAPER_OPS) == 10 and "identity" not in PAPER_OPS
    assert set(TRANSFERATTACK_OPS) == {"vertical_shift", "horizontal_shift", "vertical_flip", "horizontal_flip",
                                       "rotate180", "scale", "add_noise"}
    assert set(TRANSFERATTACK_OPS) < set(PAPER_OPS) and set(PAPER_OPS) - set(TRANSFERATTACK_OPS) == {
        "resize", "dct", "dropout"}
    assert SIT_PRESETS == {"paper": PAPER_OPS, "transferattack": TRANSFERATTACK_OPS}
    assert resolve_ops("Paper") == PAPER_OPS
    assert resolve_ops("vertical_flip; scale") == ("vertical_flip", "scale")
    assert resolve_ops(["identity"]) == ("identity",)
    with pytest.raises(ValueError, match="unknown SIT operation"):
        resolve_ops("vertical_flip;swirl")
    with pytest.raises(ValueError, match="no SIT operations"):
        resolve_ops(" ; ")


def test_shape_dtype_device_and_copy_layout_are_kept() -> None:
    x = torch.rand(2, 3, 20, 24, dtype=torch.float64)
    out = structure_invariant_transform(x, generator=gen())
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    copies = structure_invariant_copies(x.float(), 4, generator=gen())
    assert copies.shape == (8, 3, 20, 24) and copies.dtype == torch.float32
    # copy-major: with moves only, copy k of image i holds exactly image i's values
    b = 3
    x = distinct_images(b)
    copies = structure_invariant_copies(x, 5, 3, ["vertical_flip", "rotate180", "horizontal_shift"], gen())
    for k in range(5):
        for i in range(b):
            assert torch.equal(copies[k * b + i].flatten().sort().values, x[i].flatten().sort().values)


def test_each_block_receives_exactly_one_operation() -> None:
    x = torch.ones(4, 1, 21, 23)
    out, plan = planned(x, ["identity", "scale"], n_copies=2)
    for row in range(out.shape[0]):
        for i, j, rs, cs in blocks_of(plan, row):
            block = out[row, :, rs, cs]
            expected = 1.0 if plan.choice[row, i, j] == 0 else plan.scale[row, i, j].item()
            assert torch.equal(block, torch.full_like(block, expected))
    # without the plan: the output is a grid of at most s x s constant blocks
    for img in structure_invariant_copies(x, 3, 3, ["identity", "scale"], gen(5)):
        row_changes = (img[0, 1:] != img[0, :-1]).any(dim=1).sum()
        col_changes = (img[0, :, 1:] != img[0, :, :-1]).any(dim=0).sum()
        assert row_changes <= 2 and col_changes <= 2 and img.unique().numel() <= 9


def test_the_generator_call_equals_applying_its_plan() -> None:
    x = torch.rand(2, 1, 16, 16)
    direct = structure_invariant_copies(x, 3, 3, "paper", gen(7))
    via_plan, _ = planned(x, "paper", n_copies=3, seed=7)
    assert torch.equal(direct, via_plan)


@pytest.mark.parametrize("op, axis", [("vertical_shift", -2), ("horizontal_shift", -1)])
def test_shifts_roll_inside_the_block_and_nothing_leaks(op: str, axis: int) -> None:
    x = distinct_images(3, 2)
    out, plan = planned(x, [op], n_copies=2)
    shifts = plan.row_shift if axis == -2 else plan.col_shift
    for row in range(out.shape[0]):
        src = x[row % 3]
        for i, j, rs, cs in blocks_of(plan, row):
            original, moved = src[:, rs, cs], out[row, :, rs, cs]
            k = int(shifts[row, i, j])
            assert 0 <= k < original.shape[axis]
            assert torch.equal(moved, original.roll(k, dims=axis))
            assert torch.equal(moved.flatten().sort().values, original.flatten().sort().values)


@pytest.mark.parametrize("op, move", [
    ("vertical_flip", lambda b: b.flip(-2)),
    ("horizontal_flip", lambda b: b.flip(-1)),
    ("rotate180", lambda b: b.rot90(2, dims=(-2, -1))),
    ("identity", lambda b: b),
])
def test_flips_and_rotation_are_exact_per_block(op: str, move) -> None:
    x = distinct_images(2, 3)
    out, plan = planned(x, [op], n_copies=2)
    for row in range(out.shape[0]):
        for _, _, rs, cs in blocks_of(plan, row):
            assert torch.equal(out[row, :, rs, cs], move(x[row % 2, :, rs, cs]))


def moved_block(op: str, blk: torch.Tensor, row_shift: int, col_shift: int) -> torch.Tensor:
    return {
        "vertical_flip": lambda: blk.flip(-2),
        "horizontal_flip": lambda: blk.flip(-1),
        "rotate180": lambda: blk.rot90(2, dims=(-2, -1)),
        "identity": lambda: blk,
        "vertical_shift": lambda: blk.roll(row_shift, dims=-2),
        "horizontal_shift": lambda: blk.roll(col_shift, dims=-1),
    }[op]()


def test_mixed_moves_each_block_is_its_own_operation() -> None:
    ops = ["vertical_flip", "horizontal_flip", "rotate180", "identity", "vertical_shift", "horizontal_shift"]
    x = distinct_images(3, 1, 30, 30)
    out, plan = planned(x, ops, n_copies=3, blocks=4)
    for row in range(out.shape[0]):
        for i, j, rs, cs in blocks_of(plan, row):
            expected = moved_block(ops[int(plan.choice[row, i, j])], x[row % 3, :, rs, cs],
                                   int(plan.row_shift[row, i, j]), int(plan.col_shift[row, i, j]))
            assert torch.equal(out[row, :, rs, cs], expected)


def test_intensity_operations_stay_in_range_and_follow_their_definitions() -> None:
    x = torch.rand(4, 2, 18, 18, generator=gen(1))
    x[:, :, :3] = 1.0
    x[:, :, -3:] = 0.0
    for op in ("scale", "add_noise", "dropout", "pixel_dropout", "resize"):
        out, plan = planned(x, [op], n_copies=3)
        assert out.min() >= 0 and out.max() <= 1, op
        ref = x.repeat(3, 1, 1, 1)
        if op == "add_noise":
            assert (out - ref).abs().max() <= NOISE_BOUND + 1e-6
            assert torch.equal(out, (ref + plan.per_pixel("noise")).clamp(0, 1))
        if op == "dropout":  # each (block, channel): all zero, or x / 0.9 clipped
            for row in range(out.shape[0]):
                for i, j, rs, cs in blocks_of(plan, row):
                    for ch in range(2):
                        blk, src = out[row, ch, rs, cs], ref[row, ch, rs, cs]
                        kept = bool(plan.keep_block[row, ch, i, j])
                        assert torch.allclose(blk, (src / 0.9).clamp(0, 1) if kept else torch.zeros_like(src))
        if op == "pixel_dropout":
            assert torch.allclose(out, torch.where(plan.per_pixel("keep_pixel"), (ref / 0.9).clamp(0, 1), 0.0))


def test_per_pixel_draws_are_made_only_for_the_blocks_that_use_them() -> None:
    x = torch.rand(3, 2, 20, 22, generator=gen(8))
    out, plan = planned(x, ["identity", "add_noise", "pixel_dropout"], n_copies=2)
    noise, keep = plan.per_pixel("noise"), plan.per_pixel("keep_pixel")
    ref = x.repeat(2, 1, 1, 1)
    for row in range(out.shape[0]):
        for i, j, rs, cs in blocks_of(plan, row):
            op = ["identity", "add_noise", "pixel_dropout"][int(plan.choice[row, i, j])]
            blk_noise, blk_keep = noise[row, :, rs, cs], keep[row, :, rs, cs]
            assert (blk_noise != 0).any() == (op == "add_noise")
            assert (~blk_keep).any() == (op == "pixel_dropout") or op == "pixel_dropout"
            expected = {"identity": ref[row, :, rs, cs],
                        "add_noise": (ref[row, :, rs, cs] + blk_noise).clamp(0, 1),
                        "pixel_dropout": torch.where(blk_keep, (ref[row, :, rs, cs] / 0.9).clamp(0, 1), 0.0)}[op]
            assert torch.allclose(out[row, :, rs, cs], expected, atol=1e-6)
    assert plan.noise.numel() == int((noise != 0).sum()) and plan.noise.numel() == int(plan.noise_count.sum())
    with pytest.raises(ValueError, match="no 'noise'"):
        planned(x, ["identity"])[1].per_pixel("noise")


def test_resize_and_dct_match_direct_computation_on_each_block() -> None:
    x = torch.rand(2, 1, 26, 29, dtype=torch.float64, generator=gen(3))
    for op in ("resize", "dct"):
        out, plan = planned(x, [op], n_copies=2, blocks=4)
        for row in range(out.shape[0]):
            for _, _, rs, cs in blocks_of(plan, row):
                blk = x[row % 2, :, rs, cs]
                hh, ww = blk.shape[-2:]
                if op == "resize":
                    small = (int(hh * 0.8) + 1, int(ww * 0.8) + 1)
                    ref = F.interpolate(F.interpolate(blk[None], size=small, mode="bilinear", align_corners=False),
                                        size=(hh, ww), mode="bilinear", align_corners=False)[0].clamp(0, 1)
                else:
                    coef = scipy.fft.dctn(blk[0].numpy(), norm="ortho")
                    coef[hh - int(hh * 0.4):, :] = 0
                    coef[:, ww - int(ww * 0.4):] = 0
                    ref = torch.from_numpy(scipy.fft.idctn(coef, norm="ortho"))[None]
                assert torch.allclose(out[row, :, rs, cs], ref, atol=1e-10), (op, hh, ww)


def test_dct_keeps_tiny_blocks_instead_of_zeroing_them() -> None:
    x = torch.rand(1, 1, 6, 6, generator=gen())
    plan = SITPlan.sample(x.shape, 1, 3, ["dct"], gen())
    plan = SITPlan(**{**plan.__dict__, "row_bounds": torch.tensor([[0, 1, 3, 6]]),
                      "col_bounds": torch.tensor([[0, 2, 4, 6]])})
    out = apply_structure_invariant_plan(x, plan)
    assert torch.allclose(out[:, :, :3, :], x[:, :, :3, :], atol=1e-6)  # lengths 1 and 2: nothing removed
    assert not torch.allclose(out[:, :, 3:, :], x[:, :, 3:, :])  # length 3: one frequency removed


def test_same_seed_is_bit_identical_and_other_seeds_differ() -> None:
    x = torch.rand(3, 1, 24, 24, generator=gen(2))
    a = structure_invariant_copies(x, 4, generator=gen(11))
    b = structure_invariant_copies(x, 4, generator=gen(11))
    c = structure_invariant_copies(x, 4, generator=gen(12))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(structure_invariant_transform(x), structure_invariant_transform(x))  # default seed 0


def test_images_and_copies_get_their_own_cut_points() -> None:
    x = torch.ones(8, 1, 32, 32)
    out, plan = planned(x, ["identity", "scale"], n_copies=2)
    assert plan.row_bounds.unique(dim=0).shape[0] > 1 and plan.col_bounds.unique(dim=0).shape[0] > 1
    # visible in the output too: the row positions where the block grid changes differ
    edges = {tuple(((img[0, 1:] != img[0, :-1]).any(dim=1)).nonzero().flatten().tolist()) for img in out}
    assert len(edges) > 1
    assert (plan.row_bounds[:, 1:] > plan.row_bounds[:, :-1]).all()  # blocks are never empty


def test_a_plan_sliced_by_copies_builds_the_same_copies() -> None:
    x = torch.rand(2, 1, 20, 20, generator=gen(4))
    plan = SITPlan.sample(x.shape, 5, 3, PAPER_OPS, gen(9))
    whole = apply_structure_invariant_plan(x, plan)
    parts = torch.cat([apply_structure_invariant_plan(x, plan.copies(0, 2)),
                       apply_structure_invariant_plan(x, plan.copies(2, 5))])
    assert torch.allclose(whole, parts, atol=1e-6, rtol=0)
    with pytest.raises(ValueError):
        plan.copies(3, 7)


def test_gradients_flow_through_every_operation() -> None:
    x = (0.3 + 0.4 * torch.rand(2, 1, 12, 12, dtype=torch.float64, generator=gen(5))).requires_grad_(True)
    for op in ALL_OPS:
        out, _ = planned(x, [op], n_copies=2)
        (grad,) = torch.autograd.grad((out * torch.linspace(0, 1, out.numel(), dtype=out.dtype).view_as(out)).sum(), x)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, op
    small = x.detach()[:1, :, :7, :7].clone().requires_grad_(True)
    plan = SITPlan.sample(small.shape, 2, 3, PAPER_OPS, gen(6))
    assert torch.autograd.gradcheck(lambda t: apply_structure_invariant_plan(t, plan), (small,), eps=1e-6,
                                    atol=1e-5, fast_mode=True)


def dct_matrix(length: int) -> torch.Tensor:
    """The orthonormal DCT-II matrix, from scipy (rows: frequencies)."""
    return torch.from_numpy(scipy.fft.dct(np.eye(length), norm="ortho", axis=0))


def direct_block(op: str, blk: torch.Tensor, plan: SITPlan, row: int, i: int, j: int,
                 noise: torch.Tensor | None, keep: torch.Tensor | None) -> torch.Tensor:
    """One block's operation straight from its definition, with torch's own autograd."""
    hh, ww = blk.shape[-2:]
    if op in ("vertical_shift", "horizontal_shift", "vertical_flip", "horizontal_flip", "rotate180", "identity"):
        return moved_block(op, blk, int(plan.row_shift[row, i, j]), int(plan.col_shift[row, i, j]))
    if op == "scale":
        return blk * plan.scale[row, i, j]
    if op == "dropout":
        return (blk * plan.keep_block[row, :, i, j].to(blk.dtype).view(-1, 1, 1) / 0.9).clamp(0, 1)
    if op == "add_noise":
        return (blk + noise).clamp(0, 1)
    if op == "pixel_dropout":
        return (blk * keep.to(blk.dtype) / 0.9).clamp(0, 1)
    if op == "resize":
        small = F.interpolate(blk[None], size=(int(hh * 0.8) + 1, int(ww * 0.8) + 1), mode="bilinear",
                              align_corners=False)
        return F.interpolate(small, size=(hh, ww), mode="bilinear", align_corners=False)[0].clamp(0, 1)
    assert op == "dct"
    d_h, d_w = dct_matrix(hh).to(blk.dtype), dct_matrix(ww).to(blk.dtype)
    coef = d_h @ blk @ d_w.T
    mask = torch.ones(hh, ww, dtype=blk.dtype)
    mask[hh - int(hh * 0.4):, :] = 0
    mask[:, ww - int(ww * 0.4):] = 0
    return d_h.T @ (coef * mask) @ d_w


def direct_copies(x: torch.Tensor, plan: SITPlan) -> torch.Tensor:
    """The plan's copies built block by block and assembled with ``cat`` (an independent reference
    for the values and, through autograd, for the gradient)."""
    noise = plan.per_pixel("noise") if plan.noise is not None else None
    keep = plan.per_pixel("keep_pixel") if plan.keep_pixel is not None else None
    images = []
    for row in range(plan.choice.shape[0]):
        rb, cb = plan.row_bounds[row].tolist(), plan.col_bounds[row].tolist()
        strips = []
        for i in range(plan.blocks):
            pieces = []
            for j in range(plan.blocks):
                rs, cs = slice(rb[i], rb[i + 1]), slice(cb[j], cb[j + 1])
                pieces.append(direct_block(plan.ops[int(plan.choice[row, i, j])], x[row % plan.batch, :, rs, cs],
                                           plan, row, i, j, None if noise is None else noise[row, :, rs, cs],
                                           None if keep is None else keep[row, :, rs, cs]))
            strips.append(torch.cat(pieces, dim=-1))
        images.append(torch.cat(strips, dim=-2))
    return torch.stack(images)


def edgy_images(b: int, c: int, h: int, w: int, seed: int) -> torch.Tensor:
    """float64 images in [0, 1] with exact 0s and 1s (where clipping decides the gradient)."""
    x = torch.rand(b, c, h, w, dtype=torch.float64, generator=gen(seed))
    x[..., ::5, :] = 1.0
    x[..., 1::7, :] = 0.0
    return x


def gradient_matching_the_reference(x: torch.Tensor, plan: SITPlan, upstream: torch.Tensor) -> torch.Tensor:
    """Assert our copies and their gradient (for ``upstream``) equal the block-by-block
    reference's; return our gradient."""
    ours_x, ref_x = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ours, ref = apply_structure_invariant_plan(ours_x, plan), direct_copies(ref_x, plan)
    assert torch.allclose(ours, ref, atol=1e-12, rtol=0)
    (grad_ours,) = torch.autograd.grad(ours, ours_x, upstream)
    (grad_ref,) = torch.autograd.grad(ref, ref_x, upstream)
    assert torch.allclose(grad_ours, grad_ref, atol=1e-10, rtol=0)
    return grad_ours


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("ops", [PAPER_OPS, ("identity", "pixel_dropout", "dropout", "resize"), ("dct",)])
def test_values_and_gradient_equal_a_block_by_block_reference(c: int, ops: tuple[str, ...]) -> None:
    x = edgy_images(2, c, 23, 26, seed=c)
    plan = SITPlan.sample(x.shape, 4, 3, ops, gen(len(ops)))
    upstream = torch.randn(8, c, 23, 26, dtype=torch.float64, generator=gen(1))
    assert gradient_matching_the_reference(x, plan, upstream).abs().sum() > 0


@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 2), c=st.sampled_from([1, 2]), h=st.integers(3, 13), w=st.integers(3, 13),
       blocks=st.integers(1, 3), n=st.integers(1, 2), seed=st.integers(0, 2**16),
       ops=st.lists(st.sampled_from(ALL_OPS), min_size=1, max_size=5))
def test_gradient_equals_the_reference_on_random_plans(b: int, c: int, h: int, w: int, blocks: int, n: int,
                                                        seed: int, ops: list[str]) -> None:
    x = edgy_images(b, c, h, w, seed)
    plan = SITPlan.sample(x.shape, n, blocks, ops, gen(seed))
    upstream = torch.randn(n * b, c, h, w, dtype=torch.float64, generator=gen(seed + 1))
    gradient_matching_the_reference(x, plan, upstream)


def test_backward_twice_with_a_retained_graph_gives_the_same_gradient() -> None:
    x = torch.rand(2, 1, 16, 16, dtype=torch.float64, generator=gen(3)).requires_grad_(True)
    out = apply_structure_invariant_plan(x, SITPlan.sample(x.shape, 3, 3, PAPER_OPS, gen(4)))
    loss = (out * out).sum()
    (first,) = torch.autograd.grad(loss, x, retain_graph=True)
    (second,) = torch.autograd.grad(loss, x)
    assert torch.equal(first, second)


def test_operations_listed_but_chosen_by_no_block_change_nothing() -> None:
    x = torch.rand(2, 1, 12, 12, dtype=torch.float64, generator=gen(2)).requires_grad_(True)
    for ops in (["identity", "add_noise", "pixel_dropout"], ["identity", "resize", "dct", "scale", "dropout"]):
        plan = SITPlan.sample(x.shape, 2, 3, ops, gen(1))
        plan = SITPlan(**{**plan.__dict__, "choice": torch.zeros_like(plan.choice)})  # every block: identity
        out = apply_structure_invariant_plan(x, plan)
        assert torch.equal(out, x.repeat(2, 1, 1, 1))
        (grad,) = torch.autograd.grad(out.sum(), x)
        assert torch.equal(grad, torch.full_like(x, 2.0))
    plan = SITPlan.sample(x.shape, 2, 3, ["identity", "add_noise"], gen(1))
    plan = SITPlan(**{**plan.__dict__, "choice": torch.zeros_like(plan.choice), "noise": plan.noise[:0]})
    assert torch.equal(plan.per_pixel("noise"), torch.zeros(4, 1, 12, 12, dtype=plan.noise.dtype))


def test_invalid_arguments_raise_clear_errors() -> None:
    x = torch.rand(1, 1, 4, 4)
    with pytest.raises(ValueError, match="blocks"):
        structure_invariant_transform(x, blocks=5)
    with pytest.raises(ValueError, match="n_copies"):
        structure_invariant_copies(x, 0)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        structure_invariant_transform(torch.rand(4, 4))


@settings(max_examples=20, deadline=None)
@given(b=st.integers(1, 3), c=st.sampled_from([1, 3]), h=st.integers(3, 14), w=st.integers(3, 14),
       blocks=st.integers(1, 3), n=st.integers(1, 3), seed=st.integers(0, 2**16),
       ops=st.lists(st.sampled_from(ALL_OPS), min_size=1, max_size=4))
def test_properties_on_random_inputs(b: int, c: int, h: int, w: int, blocks: int, n: int, seed: int,
                                     ops: list[str]) -> None:
    x = torch.rand(b, c, h, w, generator=gen(seed))
    out = structure_invariant_copies(x, n, blocks, ops, gen(seed))
    assert out.shape == (n * b, c, h, w) and out.dtype == x.dtype and torch.isfinite(out).all()
    assert torch.equal(out, structure_invariant_copies(x, n, blocks, ops, gen(seed)))
    if "dct" not in ops:
        assert out.min() >= 0 and out.max() <= 1
    if set(ops) <= {"identity", "vertical_shift", "horizontal_shift", "vertical_flip", "horizontal_flip",
                    "rotate180"}:  # pure moves permute each image's pixels
        ref = x.repeat(n, 1, 1, 1).flatten(1).sort(dim=1).values
        assert torch.equal(out.flatten(1).sort(dim=1).values, ref)


@pytest.mark.gpu
def test_cuda_matches_cpu_for_the_same_plan() -> None:
    x = torch.rand(2, 1, 24, 24, generator=gen())
    plan = SITPlan.sample(x.shape, 3, 3, PAPER_OPS, gen(1))
    cpu = apply_structure_invariant_plan(x, plan)
    cuda = apply_structure_invariant_plan(x.cuda(), plan.to("cuda"))
    assert cuda.device.type == "cuda"
    assert np.allclose(cuda.cpu().numpy(), cpu.numpy(), atol=1e-5)
    g = torch.Generator(device="cuda").manual_seed(0)
    assert structure_invariant_copies(x.cuda(), 2, generator=g).device.type == "cuda"
