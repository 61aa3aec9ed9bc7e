"""Atomic writes: complete files or none, and no temporary file left behind by a failed write."""

from __future__ import annotations

import os

import pytest

from medrobust.files import atomic_files
from medrobust.files.atomic_files import atomic_write_bytes, atomic_write_text, open_atomic


def test_writes_create_folders_and_replace_the_old_file(tmp_path) -> None:
    path = tmp_path / "a" / "b" / "file.txt"
    assert atomic_write_text(path, "first\r\n") == path
    assert path.read_bytes() == b"first\r\n"
    atomic_write_bytes(path, b"second")
    assert path.read_bytes() == b"second"
    assert os.listdir(path.parent) == ["file.txt"]


def test_an_error_inside_the_block_keeps_the_old_file_and_leaves_no_temporary(tmp_path) -> None:
    path = tmp_path / "stage.npz"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="serialisation failed"):
        with open_atomic(path) as handle:
            handle.write(b"half of the new")
            raise RuntimeError("serialisation failed")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["stage.npz"]


def test_a_failed_rename_leaves_no_temporary(tmp_path, monkeypatch) -> None:
    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic_files.os, "replace", full_disk)
    with pytest.raises(OSError, match="No space"):
        atomic_write_bytes(tmp_path / "metrics.json", b"{}")
    assert os.listdir(tmp_path) == []


def test_a_failed_checkpoint_write_leaves_no_temporary(tmp_path, monkeypatch) -> None:
    from medrobust.models.checkpoint import save_checkpoint
    from medrobust.models.zoo import build_classifier

    model = build_classifier("small-cnn", ["Normal", "Pneumonia"], 16)
    real_replace = os.replace
    calls = []

    def fail_on_the_second(src, dst):  # the weights land, then the disk fills up before model.json
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(atomic_files.os, "replace", fail_on_the_second)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(model, tmp_path / "model")
    assert sorted(os.listdir(tmp_path / "model")) == ["model.safetensors"]
