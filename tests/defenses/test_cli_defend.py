"""`medrobust defend`: a folder tree in, defended 8-bit PNGs out, bad files skipped (exit 3)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from typer.testing import CliRunner

import medrobust.cli.defend  # noqa: F401  (registers the command)
from medrobust.cli.app import app
from medrobust.data.io import read_image
from medrobust.defenses.registry import build_defense

runner = CliRunner()


def _write(path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _tree(root) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    images = {
        "a/one.png": rng.integers(0, 256, (32, 32), dtype=np.uint8),
        "a/two.png": rng.integers(0, 256, (32, 32), dtype=np.uint8),
        "a/deeper/three.png": rng.integers(0, 256, (32, 32), dtype=np.uint8),
        "b/wide.png": rng.integers(0, 256, (24, 40), dtype=np.uint8),
        "c/photo.jpg": rng.integers(0, 256, (32, 32), dtype=np.uint8),
    }
    for rel, array in images.items():
        _write(root / rel, array)
    (root / "notes.txt").write_text("not an image")
    return images


def test_defends_a_tree_and_skips_a_broken_file(tmp_path) -> None:
    source, out = tmp_path / "in", tmp_path / "out"
    images = _tree(source)
    (source / "a" / "broken.png").write_bytes(b"this is not a png")
    spec = "jpeg:quality=50+tv:weight=0.2"
    result = runner.invoke(app, ["defend", "--input", str(source), "--out", str(out), "--defense", spec,
                                 "--batch-size", "2", "--device", "cpu"])
    assert result.exit_code == 3, result.output
    assert "broken.png" in result.output and "defended 5 images" in result.output and "images/s" in result.output
    defense = build_defense(spec)
    for rel in images:
        written = out / rel.replace(".jpg", ".png")
        assert written.exists(), written
        original = torch.from_numpy(read_image(source / rel))[None, None]
        expected = np.rint(defense(original)[0, 0].numpy() * 255).astype(np.uint8)
        np.testing.assert_array_equal(np.asarray(Image.open(written)), expected)
    assert not (out / "a" / "broken.png").exists() and not (out / "notes.txt").exists()


def test_clean_tree_exits_zero_and_refuses_to_overwrite_the_input(tmp_path) -> None:
    source = tmp_path / "in"
    _tree(source)
    result = runner.invoke(app, ["defend", "--input", str(source), "--out", str(tmp_path / "out"),
                                 "--defense", "bits:bits=3", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    levels = np.unique(np.asarray(Image.open(tmp_path / "out" / "a" / "one.png")))
    assert set(levels.tolist()) <= {round(k * 255 / 7) for k in range(8)}
    same = runner.invoke(app, ["defend", "--input", str(source), "--out", str(source)])
    assert same.exit_code == 2 and "originals" in same.output


def test_unknown_defense_is_a_clear_error(tmp_path) -> None:
    source = tmp_path / "in"
    _tree(source)
    result = runner.invoke(app, ["defend", "--input", str(source), "--out", str(tmp_path / "o"), "--defense", "blur"])
    assert result.exit_code == 2 and "unknown defense 'blur'" in result.output


def test_randomized_defense_is_reproducible_with_a_seed(tmp_path) -> None:
    source = tmp_path / "in"
    _tree(source)
    outs = []
    for name in ("o1", "o2"):
        result = runner.invoke(app, ["defend", "--input", str(source), "--out", str(tmp_path / name),
                                     "--defense", "tvm", "--seed", "4", "--device", "cpu"])
        assert result.exit_code == 0, result.output
        outs.append(np.asarray(Image.open(tmp_path / name / "b" / "wide.png")))
    np.testing.assert_array_equal(outs[0], outs[1])
