"""Properties of every defense (hypothesis): shape, dtype, device and range are kept."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medrobust.defenses.registry import build_defense

SPECS = ["jpeg:quality=30", "tv:weight=0.3", "tvm:max_iter=20", "bits:bits=3", "median:size=3", "none",
         "jpeg+tv", "jpeg+tvm:max_iter=10"]


@st.composite
def image_batches(draw):
    batch = draw(st.integers(1, 3))
    channels = draw(st.sampled_from([1, 3]))
    height, width = draw(st.integers(3, 20)), draw(st.integers(3, 20))
    seed = draw(st.integers(0, 2**31 - 1))
    kind = draw(st.sampled_from(["uniform", "binary", "flat"]))
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, channels, height, width, generator=g)
    if kind == "binary":
        x = (x > 0.5).float()
    elif kind == "flat":
        x = torch.full_like(x, float(x[0, 0, 0, 0]))
    return x


@pytest.mark.parametrize("spec", SPECS)
@settings(max_examples=10, deadline=None)
@given(x=image_batches(), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_shape_dtype_and_range_are_kept(spec, x, dtype) -> None:
    x = x.to(dtype)
    out = build_defense(spec)(x)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("spec", ["tv", "tvm", "bits", "median"])
@settings(max_examples=10, deadline=None)
@given(x=image_batches())
def test_deterministic_defenses_and_seeded_randomized_ones_repeat(spec, x) -> None:
    assert torch.equal(build_defense(spec)(x), build_defense(spec)(x))


@pytest.mark.parametrize("bad", [torch.rand(2, 1, 8), torch.full((1, 1, 4, 4), 1.5), torch.zeros(1, 1, 4, 4, dtype=torch.uint8)])
def test_bad_inputs_are_refused_clearly(bad) -> None:
    with pytest.raises((ValueError, TypeError), match="defense 'tv'"):
        build_defense("tv")(bad)


def test_empty_batch_passes_through() -> None:
    x = torch.zeros(0, 1, 8, 8)
    for spec in SPECS:
        assert build_defense(spec)(x).shape == x.shape
