"""The synthetic radiograph generator: determinism, range, and that each finding carries
its visual sign (checked by rendering the same patient with and without the finding)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from medrobust.data.phantom import (
    PHANTOM_CLASSES,
    generate_phantom,
    render_phantom,
    sample_params,
)
from medrobust.data.phantom.params import Consolidation, Pneumothorax
from medrobust.data.phantom.render import SIDE_SIGN, _anatomical_grid, _Geometry


def test_same_seed_gives_byte_identical_images() -> None:
    for label in range(3):
        a, pa = generate_phantom(label, 96, seed=123)
        b, pb = generate_phantom(label, 96, seed=123)
        assert pa == pb
        assert a.tobytes() == b.tobytes()


def test_different_seeds_differ() -> None:
    a, _ = generate_phantom(0, 96, seed=1)
    b, _ = generate_phantom(0, 96, seed=2)
    assert np.abs(a - b).mean() > 0.01


@given(seed=st.integers(0, 2**31 - 1), label=st.integers(0, 2), size=st.sampled_from([32, 48, 64, 100, 128]))
def test_image_is_float32_in_unit_range(seed: int, label: int, size: int) -> None:
    image, params = generate_phantom(label, size, seed=seed)
    assert image.shape == (size, size)
    assert image.dtype == np.float32
    assert np.isfinite(image).all()
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert params.label == label and params.class_name == PHANTOM_CLASSES[label]
    # a radiograph, not a blank: air outside the body is dark, the mediastinum bright
    assert image.std() > 0.1


@pytest.mark.parametrize("size", [31, 513])
def test_size_out_of_range_is_refused(size: int) -> None:
    params = sample_params(np.random.default_rng(0), 0)
    with pytest.raises(ValueError, match="32..512"):
        render_phantom(params, size)


def test_unknown_label_is_refused() -> None:
    with pytest.raises(ValueError, match="label must be"):
        sample_params(np.random.default_rng(0), 3)


def test_largest_size_renders_the_same_anatomy() -> None:
    params = sample_params(np.random.default_rng(5), 2)
    small = render_phantom(params, 64)
    large = render_phantom(params, 512)
    # downsample 512 -> 64 by block averaging: the same picture up to noise and blur
    pooled = large.reshape(64, 8, 64, 8).mean(axis=(1, 3))
    assert np.corrcoef(small.ravel(), pooled.ravel())[0, 1] > 0.95


def _lung_masks(params, size):
    u, v = _anatomical_grid(params, size)
    g = _Geometry(params)
    return {side: g.lung_signed_distance(u, v, side) > 0.03 for side in SIDE_SIGN}, u, v


def _patient(seed: int):
    params = sample_params(np.random.default_rng(seed), 0)
    quiet = dataclasses.replace(params.patient, noise=0.0, skin_fold=False, gamma=1.0, heel=0.0)
    return dataclasses.replace(params, patient=quiet)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_consolidation_makes_the_lung_denser_where_it_sits(seed: int) -> None:
    normal = _patient(seed)
    focus = Consolidation(
        side="right", zone="middle", center_u=0.0, center_v=0.5, radius=0.15, elongation=1.0,
        angle=0.0, density=0.8, lobar=False, irregularity=0.2,
    )
    sick = dataclasses.replace(normal, label=1, consolidations=(focus,))
    size = 128
    diff = render_phantom(sick, size) - render_phantom(normal, size)
    lungs, _, _ = _lung_masks(normal, size)
    right, left = diff[lungs["right"]], diff[lungs["left"]]
    assert right.max() > 0.15  # a clear opacity
    assert right.mean() > 0.02
    assert np.abs(left).max() < 0.02  # the other lung is untouched


@pytest.mark.parametrize("kind", ["apical", "lateral"])
def test_pneumothorax_gives_a_lucent_rim_without_markings_and_a_pleural_line(kind: str) -> None:
    normal = _patient(3)
    sick = dataclasses.replace(normal, label=2, pneumothorax=Pneumothorax(side="left", kind=kind, fraction=0.35))
    size = 256
    a, b = render_phantom(normal, size), render_phantom(sick, size)
    diff = b - a
    lungs, _, _ = _lung_masks(normal, size)
    left = lungs["left"]
    # hyperlucent: a sizeable part of the left lung got darker, the right lung is untouched
    darker = (diff < -0.03) & left
    assert darker.sum() > 0.08 * left.sum()
    assert np.abs(diff[lungs["right"]]).max() < 0.02
    # devoid of markings: in the rim a different vessel tree changes nothing, while in the
    # aerated lung it does
    other = dataclasses.replace(sick, patient=dataclasses.replace(sick.patient, vessel_seed=sick.patient.vessel_seed + 1))
    change = np.abs(render_phantom(other, size) - b)
    rim = darker & (diff < -0.06)
    aerated = left & ~darker
    assert rim.sum() > 200
    assert change[rim].mean() < 0.1 * change[aerated].mean()
    # the visceral pleural line: pixels inside the left lung that got brighter
    assert ((diff > 0.02) & left).sum() > 20
