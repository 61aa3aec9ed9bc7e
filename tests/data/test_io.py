"""read_image over every supported Pillow mode, and write_png round trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image, ImageFile

from medrobust.data.io import (
    IMAGE_SUFFIXES,
    is_image_file,
    quantize,
    read_image,
    write_png,
)


def _gradient(h: int = 12, w: int = 16) -> np.ndarray:
    return (np.arange(h * w).reshape(h, w) % 256).astype(np.uint8)


def _mode(path) -> str:
    with Image.open(path) as img:
        return img.mode


def _check(image: np.ndarray, shape: tuple[int, int]) -> None:
    assert image.dtype == np.float32
    assert image.shape == shape
    assert image.flags.c_contiguous
    assert image.min() >= 0.0 and image.max() <= 1.0


def test_png_8bit_gray(tmp_path):
    pixels = _gradient()
    Image.fromarray(pixels).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    _check(image, pixels.shape)
    np.testing.assert_array_equal(image, pixels.astype(np.float32) / 255)


def test_png_16bit_gray(tmp_path):
    pixels = (np.arange(12 * 16).reshape(12, 16) * 341).astype(np.uint16)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    assert _mode(tmp_path / "a.png").startswith("I;16")
    image = read_image(tmp_path / "a.png")
    _check(image, pixels.shape)
    np.testing.assert_allclose(image, pixels / 65535, atol=1e-7)


def test_png_rgb_becomes_luma(tmp_path):
    rgb = np.zeros((4, 6, 3), dtype=np.uint8)
    rgb[..., 0] = 255  # pure red: luma 0.299
    rgb[2:, :, :] = 200  # grey rows stay grey
    Image.fromarray(rgb).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    _check(image, (4, 6))
    assert image[0, 0] == pytest.approx(0.299, abs=1 / 255)
    assert image[3, 0] == pytest.approx(200 / 255, abs=1e-6)


def test_png_rgba_drops_alpha(tmp_path):
    rgb = np.stack([_gradient()] * 3, axis=-1)
    rgba = np.concatenate([rgb, np.zeros_like(rgb[..., :1])], axis=-1)  # fully transparent
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    np.testing.assert_allclose(image, _gradient() / 255, atol=1e-6)


def test_png_gray_alpha_drops_alpha(tmp_path):
    la = np.stack([_gradient(), np.full_like(_gradient(), 7)], axis=-1)
    Image.fromarray(la, mode="LA").save(tmp_path / "a.png")
    assert _mode(tmp_path / "a.png") == "LA"
    np.testing.assert_allclose(read_image(tmp_path / "a.png"), _gradient() / 255, atol=1e-6)


def test_png_palette(tmp_path):
    indices = (np.arange(8 * 8).reshape(8, 8) % 4).astype(np.uint8)
    palette = [0, 0, 0, 85, 85, 85, 170, 170, 170, 255, 255, 255] + [0] * (256 * 3 - 12)
    img = Image.fromarray(indices, mode="P")
    img.putpalette(palette)
    img.save(tmp_path / "a.png")
    assert _mode(tmp_path / "a.png") == "P"
    np.testing.assert_allclose(read_image(tmp_path / "a.png"), indices * 85 / 255, atol=1e-6)


def test_png_palette_with_transparency(tmp_path):
    indices = np.zeros((4, 4), np.uint8)
    indices[0, 0] = 1
    img = Image.fromarray(indices, mode="P")
    img.putpalette([120, 120, 120] + [30, 30, 30] * 255)
    img.save(tmp_path / "a.png", transparency=0)
    np.testing.assert_allclose(read_image(tmp_path / "a.png"), np.where(indices == 0, 120, 30) / 255, atol=1e-6)


def test_bilevel_png(tmp_path):
    bits = np.zeros((8, 8), dtype=bool)
    bits[:, 4:] = True
    Image.fromarray(bits).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    np.testing.assert_array_equal(image, bits.astype(np.float32))


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_jpeg(tmp_path, mode):
    smooth = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (32, 1))
    img = Image.fromarray(smooth)
    if mode == "RGB":
        img = img.convert("RGB")
    img.save(tmp_path / "a.JPG", quality=100)
    image = read_image(tmp_path / "a.JPG")
    _check(image, (32, 32))
    assert np.abs(image - smooth / 255).max() < 3 / 255


def test_multiframe_takes_first_frame(tmp_path):
    frame = np.full((6, 6), 10, np.uint8)
    frame[0, 0] = 0
    first = Image.fromarray(frame)
    second = Image.fromarray(frame + 190)
    first.save(tmp_path / "a.png", save_all=True, append_images=[second])
    with Image.open(tmp_path / "a.png") as img:
        assert img.n_frames == 2
    np.testing.assert_allclose(read_image(tmp_path / "a.png"), frame / 255, atol=1e-6)


def test_int32_mode_within_16bit_range(tmp_path):
    values = np.array([[0, 1000], [40000, 65535]], dtype=np.int32)
    Image.fromarray(values).save(tmp_path / "a.tif")
    assert _mode(tmp_path / "a.tif") == "I"
    np.testing.assert_allclose(read_image(tmp_path / "a.tif"), values / 65535, atol=1e-7)


def test_float_mode_in_unit_range(tmp_path):
    values = np.array([[0.0, 0.25], [0.5, 1.0]], dtype=np.float32)
    Image.fromarray(values).save(tmp_path / "a.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "a.tif"), values)


def test_truncated_images_are_not_loaded_silently():
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_write_png_rounds_not_truncates(tmp_path):
    image = np.array([[0.502, 0.9999, 0.003, 0.5 / 255 + 1e-4]])
    write_png(tmp_path / "a.png", image)
    with Image.open(tmp_path / "a.png") as img:
        stored = np.asarray(img)
    np.testing.assert_array_equal(stored, [[128, 255, 1, 1]])


@pytest.mark.parametrize("bits", [8, 16])
def test_write_png_round_trip(tmp_path, bits):
    rng = np.random.default_rng(0)
    image = rng.random((9, 13))
    path = write_png(tmp_path / "deep" / "er" / "a.png", image, bits=bits)
    assert path.exists()
    back = read_image(path)
    assert _mode(path) == ("L" if bits == 8 else "I;16")
    assert np.abs(back - image).max() <= 0.5 / ((1 << bits) - 1) + 1e-6


def test_write_png_accepts_channel_first_tensor(tmp_path):
    tensor = torch.linspace(0, 1, 20).reshape(1, 4, 5)
    write_png(tmp_path / "a.png", tensor)
    np.testing.assert_allclose(read_image(tmp_path / "a.png"), tensor[0].numpy(), atol=0.5 / 255 + 1e-6)


def test_write_png_replaces_atomically(tmp_path):
    target = tmp_path / "a.png"
    write_png(target, np.zeros((4, 4)))
    write_png(target, np.eye(4))
    np.testing.assert_array_equal(read_image(target), np.eye(4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]  # no temporary left behind


@pytest.mark.parametrize(
    "image, bits",
    [
        (np.full((2, 2), 1.5), 8),
        (np.full((2, 2), np.nan), 8),
        (np.zeros((2, 2, 3)), 8),
        (np.zeros((2, 2)), 12),
    ],
)
def test_write_png_rejects_bad_input(tmp_path, image, bits):
    with pytest.raises(ValueError):
        write_png(tmp_path / "a.png", image, bits=bits)
    assert not list(tmp_path.iterdir())


@settings(max_examples=25, deadline=None)
@given(
    image=arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 6)), elements=st.floats(0, 1)),
    bits=st.sampled_from([8, 16]),
)
def test_round_trip_property(tmp_path_factory, image, bits):
    if image.size > 1:  # a black and a white pixel: an image of one flat value is refused as degenerate
        image = image.copy()
        image.flat[0], image.flat[-1] = 0.0, 1.0
    path = tmp_path_factory.mktemp("rt") / "a.png"
    write_png(path, image, bits=bits)
    back = read_image(path)
    assert back.shape == image.shape
    assert np.abs(back - image).max() <= 0.5 / ((1 << bits) - 1) + 1e-6


@settings(max_examples=50, deadline=None)
@given(image=arrays(np.float64, (3, 3), elements=st.floats(0, 1)), bits=st.integers(1, 16))
def test_quantize_is_nearest_level(image, bits):
    levels = quantize(image, bits)
    top = (1 << bits) - 1
    assert levels.max() <= top
    assert np.abs(levels / top - image).max() <= 0.5 / top + 1e-12


def test_image_suffixes():
    assert IMAGE_SUFFIXES == (".png", ".jpg", ".jpeg", ".dcm", ".dicom")
    assert all(s == s.lower() for s in IMAGE_SUFFIXES)
    for name in ("a.png", "b.PNG", "c.Jpg", "d.jpeg", "e.DCM", "g.dicom", "dir/f.png"):
        assert is_image_file(name)
    for name in ("a.txt", "b.png.txt", "c", "d.gif", ".png"):
        assert not is_image_file(name)
