"""Zip-format model files (.keras, TorchScript, torch.save) are checked from their central
directory before anything is decompressed: zip bombs, huge member counts and escaping member
names are refused with the limit named; genuine models still load.

The limits are lowered with monkeypatch so the bombs stay a few megabytes declared and a few
kilobytes on disk; the check is the same arithmetic at any size.
"""

from __future__ import annotations

import zipfile

import pytest
import torch

import medrobust.safety.model_archive as limits
from medrobust.models.contract import ModelContract
from medrobust.models.loading import load_classifier
from medrobust.models.zoo import build_classifier
from medrobust.safety.model_archive import ModelArchiveError, check_model_archive

CLASSES = ["Normal", "Pneumonia", "Pneumothorax"]
BOMB_BYTES = 4 * 2**20  # zeros: deflate to about 4 kB, a ratio near 1000

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.*is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning"),  # Keras
]


@pytest.fixture
def small_limits(monkeypatch):
    """Check ratios from 1 MiB instead of 64 MiB, so a 4 MiB member of zeros is a bomb."""
    monkeypatch.setattr(limits, "RATIO_CHECKED_ABOVE_BYTES", 2**20)


@pytest.fixture
def nothing_is_decompressed(monkeypatch):
    """Fail the test if any member is opened or any loader runs: the refusal must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("a member was read or a loader ran before the archive was checked")

    open_member = zipfile.ZipFile.open

    def open_for_writing_only(self, name, mode="r", *args, **kwargs):
        if mode == "r":
            refuse()
        return open_member(self, name, mode, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", open_for_writing_only)
    monkeypatch.setattr(torch.jit, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)


def _zip(path, members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _keras_bomb(path):
    return _zip(path, {"metadata.json": b"{}", "config.json": b"{}", "model.weights.h5": bytes(BOMB_BYTES)})


def _torchscript_bomb(path):
    return _zip(path, {"m/version": b"3", "m/constants.pkl": b"\x80\x02).", "m/code/__torch__/m.py": b"",
                       "m/data/0": bytes(BOMB_BYTES)})


def test_keras_zip_bomb_is_refused_before_keras_reads_it(tmp_path, small_limits, nothing_is_decompressed):
    path = _keras_bomb(tmp_path / "model.keras")
    with pytest.raises(ModelArchiveError) as info:
        load_classifier(path, classes=CLASSES, intensity="unit")
    message = str(info.value)
    assert message.startswith(f"{path}: archive expands to 4.2 MB from ")
    assert "refusing a likely zip bomb" in message and "re-save the model" in message
    ratio = float(message.split("(ratio ")[1].split(",", 1)[0].split()[0].replace(",", ""))
    assert ratio > limits.MAX_RATIO


def test_keras_loader_called_directly_checks_too(tmp_path, small_limits, nothing_is_decompressed):
    from medrobust.models.keras_model import load_keras_classifier

    with pytest.raises(ModelArchiveError, match="likely zip bomb"):
        load_keras_classifier(_keras_bomb(tmp_path / "model.keras"), ModelContract(classes=CLASSES))


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".zip", ""])
def test_torchscript_looking_bomb_is_refused_whatever_its_suffix(tmp_path, small_limits, nothing_is_decompressed,
                                                                  suffix):
    path = _torchscript_bomb(tmp_path / f"model{suffix}")
    with pytest.raises(ModelArchiveError, match=r"archive expands to 4\.2 MB from .*likely zip bomb"):
        load_classifier(path, classes=CLASSES, intensity="unit")


def test_torch_save_state_dict_bomb_is_refused_with_arch(tmp_path, small_limits, nothing_is_decompressed):
    path = _zip(tmp_path / "weights.pth", {"archive/data.pkl": b"\x80\x02}.", "archive/data/0": bytes(BOMB_BYTES)})
    with pytest.raises(ModelArchiveError, match="likely zip bomb"):
        load_classifier(path, arch="small-cnn", classes=CLASSES, intensity="unit", input_size=32)


def test_one_bomb_member_inside_a_large_honest_archive_is_refused(tmp_path, small_limits):
    honest = torch.randn(2**19).numpy().tobytes()  # 2 MiB of random floats: compresses about 1.1x
    path = _zip(tmp_path / "model.pt", {"m/data/0": honest * 4, "m/data/1": bytes(BOMB_BYTES)})
    # The whole archive's ratio is low (about 2); the zeros member's is not.
    with pytest.raises(ModelArchiveError, match=r"member 'm/data/1' expands to 4\.2 MB"):
        check_model_archive(path)


def test_total_declared_size_over_the_limit_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "MAX_UNCOMPRESSED_BYTES", 1000)
    path = _zip(tmp_path / "model.keras", {"a": b"x" * 800, "b": b"y" * 800}, zipfile.ZIP_STORED)
    with pytest.raises(ModelArchiveError, match=r"archive declares 1\.6 kB uncompressed, over the 1\.0 kB limit"):
        check_model_archive(path)


def test_too_many_members_are_refused_from_the_end_record(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "MAX_MEMBERS", 10)
    path = _zip(tmp_path / "model.keras", {f"m/{i}": b"" for i in range(11)})

    def no_table(*args, **kwargs):
        raise AssertionError("the central directory was parsed although the end record already said too many")

    monkeypatch.setattr(zipfile.ZipFile, "infolist", no_table)
    with pytest.raises(ModelArchiveError, match=r"archive has 11 members, over the limit of 10"):
        check_model_archive(path)


@pytest.mark.parametrize("name", ["../evil.py", "m/../../evil.py", "/etc/evil", "C:\\evil.py", "m\\..\\evil"])
def test_member_names_that_escape_are_refused(tmp_path, name):
    path = _zip(tmp_path / "model.keras", {"config.json": b"{}", name: b"x"})
    with pytest.raises(ModelArchiveError, match=r"has an absolute path or climbs out with '\.\.'"):
        load_classifier(path, classes=CLASSES, intensity="unit")


def test_damaged_zip_is_named_as_such(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"PK\x03\x04" + bytes(100))  # a local header, no central directory
    with pytest.raises(ModelArchiveError, match="looks like a zip archive .* cannot be read"):
        load_classifier(path, classes=CLASSES, intensity="unit")


def test_files_that_are_not_archives_pass(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x07" + bytes(64))
    check_model_archive(path)  # nothing to check: other loaders judge it


def test_genuine_torchscript_passes_even_with_the_ratio_checked_on_every_member(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "RATIO_CHECKED_ABOVE_BYTES", 0)
    torch.manual_seed(0)
    model = build_classifier("small-cnn", CLASSES, input_size=32).eval()
    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(model.network), path)
    loaded = load_classifier(path, classes=CLASSES, intensity="unit", input_size=32, network_channels=1)
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(loaded(x), model(x))


def test_genuine_keras_passes_even_with_the_ratio_checked_on_every_member(tmp_path, monkeypatch):
    keras = pytest.importorskip("keras")
    monkeypatch.setattr(limits, "RATIO_CHECKED_ABOVE_BYTES", 0)
    inputs = keras.Input((32, 32, 1))
    hidden = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    path = tmp_path / "model.keras"
    keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden)).save(path)
    loaded = load_classifier(path, classes=CLASSES, intensity="unit")
    assert loaded.metadata["format"] == "keras" and loaded.predict_proba(torch.rand(1, 1, 32, 32)).shape == (1, 3)
