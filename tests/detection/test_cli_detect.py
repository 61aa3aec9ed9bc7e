"""`medrobust detect` on small folders: the reference detector against originals, the
squeeze detector calibrated on clean images, JSON lines, and bad or unpaired files."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from medrobust.attacks.registry import build_attack
from medrobust.cli.app import app
from medrobust.data.io import write_png
from medrobust.models.checkpoint import save_checkpoint

runner = CliRunner()


@pytest.fixture(scope="module")
def detect_app() -> typer.Typer:
    import medrobust.cli.detect  # noqa: F401  (registers the command on the shared app)

    return app


@pytest.fixture(scope="module")
def folders(tmp_path_factory, trained_small_cnn, phantom32):
    """model/, original/<Class>/*.png (12 test phantoms), attacked/ (PGD 8/255, same names)
    and clean/ (24 validation phantoms, for calibration)."""
    root = tmp_path_factory.mktemp("detect")
    save_checkpoint(trained_small_cnn, root / "model")
    splits, classes = phantom32
    x, y = splits["test"][0][:12], splits["test"][1][:12]
    x_adv = build_attack("pgd", eps=8 / 255)(trained_small_cnn, x, y)
    for i in range(len(x)):
        name = f"{classes[int(y[i])]}/img{i:02d}.png"
        write_png(root / "original" / name, x[i])
        write_png(root / "attacked" / name, x_adv[i])
    for i, image in enumerate(splits["val"][0][:24]):
        write_png(root / "clean" / f"c{i:02d}.png", image)
    return root


def test_reference_detector_prints_the_studys_lines(detect_app, folders) -> None:
    result = runner.invoke(detect_app, ["detect", "--model", str(folders / "model"), "--input",
                                        str(folders / "attacked"), "--reference", str(folders / "original")])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if " | SSIM: " in line]
    assert len(lines) == 12
    assert all(" | Orig: " in line and " -> Adv: " in line and line.endswith("%") for line in lines)
    first = sorted(p.relative_to(folders / "attacked").as_posix() for p in (folders / "attacked").rglob("*.png"))[0]
    assert lines[0].startswith(f"{first}: ")
    assert "flagged" in result.stdout and "of 12 images" in result.stdout
    # PGD at 8/255 flips most predictions of this small CNN: the label-change condition fires
    assert "label_change" in result.stdout


def test_identical_folders_flag_nothing(detect_app, folders) -> None:
    result = runner.invoke(detect_app, ["detect", "--model", str(folders / "model"), "--input",
                                        str(folders / "original"), "--reference", str(folders / "original")])
    assert result.exit_code == 0, result.output
    assert "flagged 0 of 12 images" in result.stdout
    assert result.stdout.count("No Attack | SSIM: 1.00") == 12


def test_json_lines(detect_app, folders) -> None:
    result = runner.invoke(detect_app, ["detect", "--model", str(folders / "model"), "--input",
                                        str(folders / "attacked"), "--reference", str(folders / "original"),
                                        "--json"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    images, summary = records[:-1], records[-1]["summary"]
    assert len(images) == 12 and summary["n_images"] == 12
    assert summary["n_flagged"] == sum(r["flagged"] for r in images)
    assert {"name", "score", "reasons", "ssim", "label_original", "label_candidate", "line"} <= set(images[0])
    assert all(r["flagged"] == (r["score"] > 1.0) for r in images)


def test_unreadable_and_unpaired_files_are_listed_and_skipped(detect_app, folders, tmp_path) -> None:
    import shutil

    attacked = tmp_path / "attacked"
    shutil.copytree(folders / "attacked", attacked)
    (attacked / "Normal" / "broken.png").write_bytes(b"not a png")
    shutil.copy(next(attacked.rglob("img*.png")), attacked / "Normal" / "orphan.png")
    result = runner.invoke(detect_app, ["detect", "--model", str(folders / "model"), "--input", str(attacked),
                                        "--reference", str(folders / "original")])
    assert result.exit_code == 3, result.output
    assert "of 12 images" in result.stdout
    assert "2 file(s) skipped" in result.stdout
    assert "orphan.png: unpaired" in result.stdout and "broken.png" in result.stdout


def test_reference_detector_without_reference_points_at_squeeze(detect_app, folders) -> None:
    result = runner.invoke(detect_app, ["detect", "--model", str(folders / "model"), "--input",
                                        str(folders / "attacked")])
    assert result.exit_code == 2
    assert "--reference" in result.stderr and "--detector squeeze" in result.stderr


def test_squeeze_needs_calibration_images(detect_app, folders) -> None:
    result = runner.invoke(detect_app, ["detect", "--model", str(folders / "model"), "--input",
                                        str(folders / "attacked"), "--detector", "squeeze"])
    assert result.exit_code == 2 and "--calibrate" in result.stderr


def test_squeeze_detector_calibrated_on_clean_images(detect_app, folders) -> None:
    result = runner.invoke(detect_app, ["detect", "--model", str(folders / "model"), "--input",
                                        str(folders / "attacked"), "--detector", "squeeze", "--calibrate",
                                        str(folders / "clean"), "--fpr", "0.1"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if " | Score: " in line]
    assert len(lines) == 12
    assert "calibrated on 24 clean images" in result.stdout
    # k = floor(0.1 * 24) = 2 clean images may lie above the threshold
    assert "FPR there 8.3%" in result.stdout
    flagged = [line for line in lines if "Attack Detected" in line]
    assert all("Squeezers: " in line for line in flagged)

    as_json = runner.invoke(detect_app, ["detect", "--model", str(folders / "model"), "--input",
                                         str(folders / "attacked"), "--detector", "squeeze", "--calibrate",
                                         str(folders / "clean"), "--fpr", "0.1", "--json"])
    assert as_json.exit_code == 0, as_json.output
    summary = json.loads(as_json.stdout.splitlines()[-1])["summary"]
    assert summary["detector"]["calibration"]["n_clean"] == 24
    assert summary["detector"]["calibration"]["realised_fpr"] <= 0.1
