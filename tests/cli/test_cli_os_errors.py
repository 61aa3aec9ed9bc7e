"""An output location that is a file, read-only, not permitted or on a full disk ends a command
with one line naming the path and the fix, exit status 2, and no traceback (``--verbose``
still logs it). The tests run as root, where chmod does not make a folder read-only, so
those errors are raised by monkeypatched writers; a file in a folder's place is real."""

from __future__ import annotations

import errno
import os

import pytest
from PIL import Image
from typer.testing import CliRunner

from medrobust.cli import app
from medrobust.cli.os_errors import command_options, os_error_line
from medrobust.evaluation.run_dir import check_output_folder

runner = CliRunner()
GALLERY = ["data", "gallery", "--per-class", "1", "--size", "32"]
TRAIN = ["train", "--data", "phantom", "--per-class", "4", "--size", "32", "--arch", "small-cnn", "--epochs", "1",
         "--device", "cpu"]


def _one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert result.stdout == ""  # errors go to stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def _fail_writes_with(monkeypatch, code: int, path: str) -> None:
    def save(self, *args, **kwargs):
        raise OSError(code, os.strerror(code), path)

    monkeypatch.setattr(Image.Image, "save", save)


def test_a_file_where_the_output_folder_should_be(tmp_path):
    blocker = tmp_path / "runs"
    blocker.write_text("not a folder")
    line = _one_error_line(runner.invoke(app, [*GALLERY, "--out", str(blocker / "x" / "gallery.png")]))
    assert line == f"error: {blocker}: not a folder (a file stands there); remove it or choose another --out"


@pytest.mark.parametrize("out", ["model", "model/sub"])
def test_train_refuses_a_blocked_output_before_training(tmp_path, out):
    (tmp_path / "model").write_text("a file")
    result = runner.invoke(app, [*TRAIN, "--out", str(tmp_path / out)])
    line = _one_error_line(result)  # one line: no epoch was run (training prints one line per epoch)
    assert f"{tmp_path / 'model'}: not a folder (a file stands there)" in line and "--out" in line


@pytest.mark.parametrize(("code", "expected"), [
    (errno.ENOSPC, "no space left on device; free space or choose another --out"),
    (errno.EROFS, "on a read-only file system; choose a writable --out"),
    (errno.EACCES, "permission denied; choose a writable --out or fix its permissions"),
    (errno.EDQUOT, "disk quota exceeded; free space or choose another --out"),
])
def test_write_failures_name_the_path_and_the_fix(tmp_path, monkeypatch, code, expected):
    out = tmp_path / "gallery.png"
    _fail_writes_with(monkeypatch, code, str(out))
    line = _one_error_line(runner.invoke(app, [*GALLERY, "--out", str(out)]))
    assert line == f"error: {out}: {expected}"


def test_a_full_disk_met_by_a_write_without_a_file_name_names_the_output(tmp_path, monkeypatch):
    out = tmp_path / "gallery.png"

    def save(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what handle.write raises: no file name

    monkeypatch.setattr(Image.Image, "save", save)
    line = _one_error_line(runner.invoke(app, [*GALLERY, "--out", str(out)]))
    assert line == f"error: {out}: no space left on device; free space or choose another --out"


def test_verbose_still_logs_the_traceback(tmp_path, monkeypatch):
    out = tmp_path / "gallery.png"
    _fail_writes_with(monkeypatch, errno.ENOSPC, str(out))
    result = runner.invoke(app, ["--verbose", *GALLERY, "--out", str(out)])
    assert result.exit_code == 2
    assert "Traceback" in result.stderr and "OSError" in result.stderr
    assert f"error: {out}: no space left on device" in result.stderr


def test_train_checks_write_permission_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode, **kwargs: False)  # what a non-root user would meet
    line = _one_error_line(runner.invoke(app, [*TRAIN, "--out", str(tmp_path / "model")]))
    assert line == f"error: {tmp_path}: permission denied; choose a writable --out or fix its permissions"


def test_check_output_folder_accepts_new_and_existing_folders(tmp_path):
    check_output_folder(tmp_path)
    check_output_folder(tmp_path / "not" / "yet" / "made")
    assert not (tmp_path / "not").exists()  # the check creates nothing


def test_os_error_line_without_an_option_or_a_file_name():
    assert os_error_line(OSError(errno.ENOSPC, "No space left on device", "a/b")) == (
        "a/b: no space left on device; free space or choose another location")
    assert os_error_line(FileNotFoundError("model.pt: model file not found; check the path")) == (
        "model.pt: model file not found; check the path")  # our own messages pass unchanged
    assert os_error_line(IsADirectoryError(errno.EISDIR, "Is a directory", "out.png"), {"--out": "out.png"}) == (
        "out.png: is a folder where a file is needed; remove or rename it, or choose another --out")


def test_command_options_reads_the_typer_declarations():
    from medrobust.cli.models import train

    options = command_options(train, (), {"out": "runs/m", "per_class": 3, "data": "phantom"})
    assert options == {"--out": "runs/m", "--per-class": 3, "--data": "phantom"}
