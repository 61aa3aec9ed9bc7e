"""Class-per-folder trees with awkward entries: file names that are not UTF-8 become ids that
survive strict JSON (and the file is still read); broken and looping symbolic links are
listed as skipped, not dropped silently."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from medrobust.data.folders import folder_dataset
from medrobust.data.io import read_image, write_png
from medrobust.data.record_ids import printable_path, printable_text

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file names and symbolic links")

IMAGE = np.random.default_rng(5).random((8, 8))
LINK_REASON = "broken or looping symbolic link; remove it or point it at an image"


def _tree(root):
    for name in ("Normal", "Pneumonia"):
        write_png(root / name / "ok.png", IMAGE)


def _write_bytes_name(folder, raw_name: bytes) -> None:
    """Copy a valid PNG to a file whose name is the given bytes (not valid UTF-8)."""
    data = (folder / "ok.png").read_bytes()
    fd = os.open(os.path.join(os.fsencode(folder), raw_name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _strict_json_round_trip(value):
    return json.loads(json.dumps(value, ensure_ascii=False).encode("utf-8").decode("utf-8"))


def test_non_utf8_file_name_gives_a_json_safe_id_and_is_still_read(tmp_path):
    _tree(tmp_path)
    _write_bytes_name(tmp_path / "Normal", b"bad\xff.png")
    dataset = folder_dataset(tmp_path, size=8)

    ids = [r.id for r in dataset.records]
    assert "Normal/bad\\xff.png" in ids  # the undecodable byte shown as \xff, readable
    for record_id in ids:
        record_id.encode("utf-8")  # raises UnicodeEncodeError for a lone surrogate
    assert _strict_json_round_trip(ids) == ids
    assert len(set(ids)) == len(ids)

    record = next(r for r in dataset.records if r.id == "Normal/bad\\xff.png")
    assert os.fsencode(record.path).endswith(b"bad\xff.png")  # the real path is kept
    x, _, loaded_ids = dataset.load()
    assert "Normal/bad\\xff.png" in loaded_ids and len(x) == 3
    assert not dataset.skipped


def test_escaped_name_that_collides_with_a_real_one_is_skipped_not_duplicated(tmp_path):
    _tree(tmp_path)
    _write_bytes_name(tmp_path / "Normal", b"bad\xff.png")
    write_png(tmp_path / "Normal" / "bad\\xff.png", IMAGE)  # a real backslash in the name
    dataset = folder_dataset(tmp_path)
    ids = [r.id for r in dataset.records]
    assert len(set(ids)) == len(ids) and ids.count("Normal/bad\\xff.png") == 1
    assert len(dataset.skipped) == 1 and "rename one of them" in dataset.skipped[0].reason


def test_printable_path_leaves_valid_names_alone():
    assert printable_path("Pneumonia/é 1.png") == "Pneumonia/é 1.png"
    assert printable_path(os.fsdecode(b"a/\xff\xfe.png")) == "a/\\xff\\xfe.png"
    assert printable_text("x \udcff y") == "x \\xff y"


def test_broken_self_and_looping_links_are_listed_as_skipped(tmp_path):
    _tree(tmp_path)
    normal = tmp_path / "Normal"
    os.symlink("self.png", normal / "self.png")  # ln -s self.png self.png
    os.symlink("gone.png", normal / "broken.png")
    os.symlink("loop-b.png", normal / "loop-a.png")
    os.symlink("loop-a.png", normal / "loop-b.png")
    os.symlink("ok.png", normal / "good-link.png")  # a working link is an image like any other
    os.symlink("gone.txt", normal / "notes.txt")  # not image-named: ignored as before

    dataset = folder_dataset(tmp_path)
    assert sorted(r.id for r in dataset.records) == ["Normal/good-link.png", "Normal/ok.png", "Pneumonia/ok.png"]
    skipped = {os.path.basename(s.path): s.reason for s in dataset.skipped}
    assert skipped == {name: LINK_REASON for name in ("broken.png", "loop-a.png", "loop-b.png", "self.png")}
    assert all(str(normal) in s.path for s in dataset.skipped)

    list(dataset.iter_valid())  # reading the rest records nothing more and keeps the listing skips
    assert len(dataset.skipped) == 4
    assert "4 file(s) skipped" in dataset.skipped_summary()


def test_read_image_names_a_broken_link_as_such(tmp_path):
    os.symlink("self.png", tmp_path / "self.png")
    with pytest.raises(ValueError, match="broken or looping symbolic link"):
        read_image(tmp_path / "self.png")
