"""Uploaded archives are hostile until checked: every rule is judged on the member list before a
byte is extracted, a refusal names the upload, the member, the rule and the fix, and nothing is
ever written outside the destination (nor left in it after a refusal).

The archives are built here with zipfile and tarfile; the limits are lowered with
dataclasses.replace so the bombs stay a few megabytes declared and a few kilobytes on disk.
"""

from __future__ import annotations

import dataclasses
import io
import os
import stat
import struct
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from medrobust.service.archive_listing import TAR_HEADER_ALLOWANCE
from medrobust.service.limits import ServiceLimits
from medrobust.service.upload_archives import (
    CHECKPOINT_META,
    CHECKPOINT_WEIGHTS,
    ArchiveRefused,
    ExtractedImages,
    extract_checkpoint_archive,
    extract_images_archive,
)

LIMITS = ServiceLimits()
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4  # incompressible enough; never decoded here
BOMB_BYTES = 4 * 2**20
SMALL_RATIO = dataclasses.replace(LIMITS, ratio_checked_above_bytes=2**20)


def _zip(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w:gz",
         fmt: int = tarfile.GNU_FORMAT) -> Path:
    with tarfile.open(path, mode, format=fmt) as archive:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                archive.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return path


def _special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "job" / "upload" / "images"


def _tree(folder: Path) -> list[str]:
    """Every path under ``folder`` (posix, sorted); [] when it does not exist."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) if folder.exists() else []


def _refused(archive: Path, dest: Path, limits: ServiceLimits = LIMITS, **kwargs) -> str:
    """The refusal's message, after checking that nothing was left in ``dest`` nor written beside it."""
    outside = _tree(archive.parent)
    with pytest.raises(ArchiveRefused) as info:
        extract_images_archive(archive, dest, limits, **kwargs)
    assert _tree(dest) == []
    assert [p for p in _tree(archive.parent) if not p.startswith("job")] == [p for p in outside if not p.startswith("job")]
    message = str(info.value)
    assert message.startswith(f"{kwargs.get('display_name', archive.name)}: ") and "\n" not in message
    return message


# --- happy paths ------------------------------------------------------------------------------


def test_class_folders_are_extracted_and_other_files_listed_as_ignored(tmp_path, dest):
    archive = _zip(tmp_path / "xrays.zip", {
        "Normal/": b"", "Normal/a.png": PNG, "Normal/b.JPG": PNG, "Pneumonia/2019/c.jpeg": PNG,
        "Pneumonia/notes.txt": b"n", "README.md": b"r", ".DS_Store": b"x", "Normal/._a.png": b"x",
        "__MACOSX/Normal/._a.png": b"x", ".hidden/d.png": PNG,
    })
    result = extract_images_archive(archive, dest, LIMITS)
    assert result == ExtractedImages(dest, ["Normal", "Pneumonia"], 3, ["Pneumonia/notes.txt", "README.md"])
    assert _tree(dest) == ["Normal", "Normal/a.png", "Normal/b.JPG", "Pneumonia", "Pneumonia/2019",
                           "Pneumonia/2019/c.jpeg"]
    assert (dest / "Normal" / "a.png").read_bytes() == PNG


def test_one_wrapper_folder_becomes_the_root(tmp_path, dest):
    archive = _zip(tmp_path / "xrays.zip", {"xrays/Normal/a.png": PNG, "xrays/Pneumonia/b.png": PNG,
                                            "xrays/info.txt": b"i"})
    result = extract_images_archive(archive, dest, LIMITS)
    assert result.root == dest / "xrays" and result.classes == ["Normal", "Pneumonia"] and result.kept == 2
    assert result.ignored == ["xrays/info.txt"]
    assert (result.root / "Pneumonia" / "b.png").read_bytes() == PNG


def test_a_single_class_folder_is_a_class_not_a_wrapper(tmp_path, dest):
    result = extract_images_archive(_zip(tmp_path / "one.zip", {"Normal/a.png": PNG, "Normal/b.png": PNG}),
                                    dest, LIMITS)
    assert result.root == dest and result.classes == ["Normal"]


def test_tar_gz_with_dicom_is_extracted_whatever_its_name(tmp_path, dest):
    archive = _tar(tmp_path / "upload.bin", [("Normal/a.dcm", b"D" * 300), ("Pneumonia/b.DICOM", b"E" * 200),
                                              ("Pneumonia/c.png", PNG), ("Normal/a.json", b"{}")])
    result = extract_images_archive(archive, dest, LIMITS, display_name="studies.tgz")
    assert result == ExtractedImages(dest, ["Normal", "Pneumonia"], 3, ["Normal/a.json"])
    assert (dest / "Normal" / "a.dcm").read_bytes() == b"D" * 300


def test_plain_tar_with_folder_members_is_extracted(tmp_path, dest):
    folder = _special("data/Normal", tarfile.DIRTYPE)
    archive = _tar(tmp_path / "images.tar", [folder, ("data/Normal/a.png", PNG), ("data/Other/b.png", PNG)], "w")
    result = extract_images_archive(archive, dest, LIMITS)
    assert result.root == dest / "data" and result.classes == ["Normal", "Other"]


def test_tar_ending_with_a_zip_member_is_read_as_a_tar(tmp_path, dest):
    inner = _zip(tmp_path / "inner.zip", {"Other/x.png": PNG}).read_bytes()
    archive = _tar(tmp_path / "images.tar", [("Normal/a.png", PNG), ("Normal/extra.zip", inner)], "w")
    assert zipfile.is_zipfile(archive)  # zipfile finds the inner zip's end record near the end
    result = extract_images_archive(archive, dest, LIMITS)
    assert result.classes == ["Normal"] and result.ignored == ["Normal/extra.zip"]


def test_checkpoint_zip_with_and_without_a_wrapper_folder(tmp_path):
    files = {CHECKPOINT_META: b'{"format": "medrobust-checkpoint/1"}', CHECKPOINT_WEIGHTS: b"W" * 100}
    flat = _zip(tmp_path / "flat.zip", {**files, "notes.txt": b"n", "run.py": b"x"})
    assert extract_checkpoint_archive(flat, tmp_path / "a", LIMITS) == tmp_path / "a"
    assert _tree(tmp_path / "a") == [CHECKPOINT_META, CHECKPOINT_WEIGHTS]
    wrapped = _zip(tmp_path / "wrapped.zip", {f"my_model/{k}": v for k, v in files.items()} | {"other/x.json": b"{}"})
    folder = extract_checkpoint_archive(wrapped, tmp_path / "b", LIMITS)
    assert folder == tmp_path / "b" / "my_model"
    assert (folder / CHECKPOINT_WEIGHTS).read_bytes() == b"W" * 100
    assert _tree(tmp_path / "b") == ["my_model", f"my_model/{CHECKPOINT_META}", f"my_model/{CHECKPOINT_WEIGHTS}"]


def test_checkpoint_file_names_are_those_of_the_checkpoint_module():
    from medrobust.models import checkpoint

    assert (CHECKPOINT_META, CHECKPOINT_WEIGHTS) == (checkpoint.META_FILE, checkpoint.WEIGHTS_FILE)


def test_checkpoint_without_one_model_json_is_refused(tmp_path):
    none = _zip(tmp_path / "model.zip", {CHECKPOINT_WEIGHTS: b"W"})
    with pytest.raises(ArchiveRefused, match=r"^model\.zip: holds no model\.json, so it is not a medrobust checkpoint "
                                             r"folder; zip the checkpoint folder"):
        extract_checkpoint_archive(none, tmp_path / "a", LIMITS)
    two = _zip(tmp_path / "two.zip", {"a/model.json": b"{}", "b/model.json": b"{}", "a/model.safetensors": b"W"})
    with pytest.raises(ArchiveRefused, match=r"holds 2 model\.json files \('a/model\.json', 'b/model\.json'\)"):
        extract_checkpoint_archive(two, tmp_path / "b", LIMITS)
    no_weights = _zip(tmp_path / "w.zip", {"m/model.json": b"{}"})
    with pytest.raises(ArchiveRefused, match=r"has no model\.safetensors beside 'm/model\.json'"):
        extract_checkpoint_archive(no_weights, tmp_path / "c", LIMITS, display_name="upload.zip")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


# --- layout -----------------------------------------------------------------------------------


def test_images_outside_class_folders_are_refused_with_the_layout_expected(tmp_path, dest):
    message = _refused(_zip(tmp_path / "flat.zip", {"a.png": PNG, "b.png": PNG}), dest)
    assert "member 'a.png' is an image at the top of the archive, outside any class folder" in message
    assert "(Normal/a.png, Pneumonia/b.png)" in message and "zip -r images.zip Normal Pneumonia" in message
    message = _refused(_zip(tmp_path / "mixed.zip", {"x/Normal/a.png": PNG, "x/b.png": PNG}), dest)
    assert "member 'x/b.png' is an image in 'x', outside any class folder" in message


def test_an_archive_without_images_lists_some_of_its_files(tmp_path, dest):
    archive = _zip(tmp_path / "docs.zip", {f"Normal/{i}.txt": b"t" for i in range(7)} | {".DS_Store": b"x"})
    message = _refused(archive, dest)
    assert message.startswith("docs.zip: holds no image (.png, .jpg, .jpeg, .dcm, .dicom, or DICOM files of any name), "
                              "only other files ('Normal/0.txt', 'Normal/1.txt', 'Normal/2.txt', 'Normal/3.txt', "
                              "'Normal/4.txt' and 2 more)")
    assert "or as DICOM by the 'DICM' marker at byte 128" in message


DICOM_HEAD = b"\0" * 128 + b"DICM"


@pytest.mark.parametrize("kind", ["zip", "tgz", "tar"])
def test_dicom_without_a_suffix_is_recognised_by_its_marker(tmp_path, dest, kind):
    """Clinical exports often name DICOM files IM000123 or by their UID: kept by the 'DICM' marker
    at byte 128 (read from the member, only for names without an image suffix); other files of such
    names (text, an empty file, a short one) are ignored and listed, hidden ones skipped silently."""
    members = {"Normal/IM000001": DICOM_HEAD + b"rest of a dataset", "Normal/1.2.840.113619.2.55.320": DICOM_HEAD,
               "Normal/notes.txt": b"a note", "Normal/empty": b"", "Normal/short": b"DICM",
               "Normal/.DS_Store": b"\0\0\0\1Bud1" + b"\0" * 200, "Pneumonia/a.png": PNG,
               "Pneumonia/garbage": b"\0" * 128 + b"DICM" + bytes(range(256))}
    if kind == "zip":
        archive = _zip(tmp_path / "xrays", members)  # no suffix on the archive either
    else:
        archive = _tar(tmp_path / "xrays", list(members.items()), mode="w:gz" if kind == "tgz" else "w")
    extracted = extract_images_archive(archive, dest, LIMITS, display_name="xrays")
    assert extracted.kept == 4 and extracted.classes == ["Normal", "Pneumonia"]
    assert _tree(dest) == ["Normal", "Normal/1.2.840.113619.2.55.320", "Normal/IM000001", "Pneumonia",
                           "Pneumonia/a.png", "Pneumonia/garbage"]
    assert (dest / "Normal" / "IM000001").read_bytes() == DICOM_HEAD + b"rest of a dataset"
    assert sorted(extracted.ignored) == ["Normal/empty", "Normal/notes.txt", "Normal/short"]


def test_not_an_archive_is_refused_with_the_formats_accepted(tmp_path, dest):
    text = tmp_path / "images.zip"
    text.write_bytes(b"just some text, " * 100)
    assert "is not a zip or tar archive (the formats accepted are .zip, .tar, .tar.gz or .tgz)" in _refused(text, dest)
    gz = tmp_path / "images.tar.gz"
    import gzip

    gz.write_bytes(gzip.compress(b"not a tar " * 100))
    assert "is gzip-compressed but not a tar archive" in _refused(gz, dest)
    xz = tmp_path / "images.tar.xz"
    with tarfile.open(xz, "w:xz") as archive:
        archive.addfile(tarfile.TarInfo("Normal/a.png"), io.BytesIO(b""))
    assert "is not a zip or tar archive" in _refused(xz, dest)


# --- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../evil.png", "Normal/../../evil.png", "/tmp/evil.png", "C:\\evil.png",
                                  "Normal\\..\\..\\evil.png"])
def test_zip_slip_and_absolute_names_are_refused(tmp_path, dest, name):
    archive = _zip(tmp_path / "xrays.zip", {"Normal/a.png": PNG, name: PNG})
    message = _refused(archive, dest)
    assert f"member {name!r} has an absolute path or climbs out with '..'" in message
    assert not (tmp_path / "evil.png").exists() and not (tmp_path / "job" / "upload" / "evil.png").exists()


@pytest.mark.parametrize("name", ["../evil.png", "/abs/evil.png"])
def test_zip_slip_in_a_tar_is_refused(tmp_path, dest, name):
    assert "climbs out with '..'" in _refused(_tar(tmp_path / "x.tgz", [("Normal/a.png", PNG), (name, PNG)]), dest)


@pytest.mark.parametrize("name", ["Normal/a\x07.png", "Normal/a\nb.png", "Normal/a\x9bb.png"])
def test_names_with_control_characters_are_refused(tmp_path, dest, name):
    archive = _tar(tmp_path / "x.tar", [("Normal/ok.png", PNG), (name, PNG)], "w", tarfile.PAX_FORMAT)
    message = _refused(archive, dest)
    assert f"member {name!r} has a control character or bytes that are not valid text in its name" in message


def test_name_with_a_nul_is_refused_although_zipfile_cuts_it_there(tmp_path, dest):
    archive = _zip(tmp_path / "x.zip", {"Normal/ok.png": PNG, "Normal/a.png_evil.exe": PNG})
    archive.write_bytes(archive.read_bytes().replace(b"a.png_evil", b"a.png\x00evil"))
    assert "member 'Normal/a.png\\x00evil.exe' has a control character" in _refused(archive, dest)


def test_undecodable_tar_name_is_refused(tmp_path, dest):
    with tarfile.open(tmp_path / "x.tar", "w", format=tarfile.GNU_FORMAT, encoding="latin-1") as archive:
        for name in ("Normal/ok.png", "Normal/a\xff.png"):  # written as the byte 0xff, not UTF-8
            info = tarfile.TarInfo(name)
            info.size = len(PNG)
            archive.addfile(info, io.BytesIO(PNG))
    assert "member 'Normal/a\\udcff.png' has a control character or bytes that are not valid text" in _refused(
        tmp_path / "x.tar", dest)


def test_tar_with_a_damaged_header_is_refused_not_cut_short(tmp_path, dest):
    archive = _tar(tmp_path / "x.tgz", [("Normal/a.png", PNG), ("Normal/b.png", PNG), ("Normal/c.png", PNG)], "w")
    data = bytearray(archive.read_bytes())
    data[data.find(b"Normal/b.png")] ^= 0xFF  # the header's checksum no longer matches
    archive.write_bytes(bytes(data))
    assert "cannot be read as a tar archive (bad checksum): damaged or truncated" in _refused(archive, dest)


# --- member types -----------------------------------------------------------------------------


def test_symlink_member_in_a_zip_is_refused(tmp_path, dest):
    link = zipfile.ZipInfo("Normal/a.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(tmp_path / "x.zip", "w") as archive:
        archive.writestr("Normal/b.png", PNG)
        archive.writestr(link, "/etc/passwd")
    message = _refused(tmp_path / "x.zip", dest)
    assert "member 'Normal/a.png' is a symbolic link, which an upload may not hold" in message


@pytest.mark.parametrize(("kind", "what"), [(tarfile.SYMTYPE, "a symbolic link (to '/etc/passwd')"),
                                             (tarfile.LNKTYPE, "a hard link (to '/etc/passwd')"),
                                             (tarfile.CHRTYPE, "a character device"),
                                             (tarfile.BLKTYPE, "a block device"),
                                             (tarfile.FIFOTYPE, "a FIFO (named pipe)")])
def test_links_devices_and_fifos_in_a_tar_are_refused(tmp_path, dest, kind, what):
    archive = _tar(tmp_path / "x.tar.gz", [("Normal/b.png", PNG), _special("Normal/a.png", kind, "/etc/passwd")])
    message = _refused(archive, dest)
    assert f"member 'Normal/a.png' is {what}, which an upload may not hold" in message


def test_a_symlink_is_refused_even_where_it_would_be_ignored(tmp_path, dest):
    archive = _tar(tmp_path / "x.tar", [("Normal/b.png", PNG), _special(".hidden", tarfile.SYMTYPE, "/")], "w")
    assert "member '.hidden' is a symbolic link" in _refused(archive, dest)


# --- sizes ------------------------------------------------------------------------------------


def test_zip_bomb_member_is_refused_before_any_member_is_opened(tmp_path, dest, monkeypatch):
    archive = _zip(tmp_path / "x.zip", {"Normal/a.png": PNG, "Normal/b.png": bytes(BOMB_BYTES)})

    def no_open(*args, **kwargs):
        raise AssertionError("a member was opened before every member was checked")

    monkeypatch.setattr(zipfile.ZipFile, "open", no_open)
    message = _refused(archive, dest, SMALL_RATIO)
    assert "member 'Normal/b.png' expands to 4.2 MB from " in message
    assert "over the 200 accepted" in message and "refused as a likely archive bomb" in message


def test_tar_gz_bomb_is_refused_while_listing(tmp_path, dest):
    archive = _tar(tmp_path / "x.tgz", [("Normal/a.png", bytes(BOMB_BYTES)), ("Normal/b.png", bytes(BOMB_BYTES)),
                                         _special("Normal/c.png", tarfile.SYMTYPE, "/")])
    message = _refused(archive, dest, SMALL_RATIO)
    assert "x.tgz: the archive expands to 4.2 MB from " in message and "likely archive bomb" in message


def test_too_many_members_are_refused(tmp_path, dest):
    few = dataclasses.replace(LIMITS, max_archive_members=10)
    members = {f"Normal/{i}.png": PNG for i in range(11)}
    assert "x.zip: has over 10 members, the most an upload may hold" in _refused(_zip(tmp_path / "x.zip", members), dest,
                                                                                 few)
    tar = _tar(tmp_path / "x.tgz", list(members.items()) * 3)
    assert "x.tgz: has over 10 members" in _refused(tar, dest, few)


def test_zip_whose_end_record_understates_its_members_is_still_counted(tmp_path, dest, monkeypatch):
    archive = _zip(tmp_path / "x.zip", {f"Normal/{i}.png": PNG for i in range(11)})
    data = bytearray(archive.read_bytes())
    end = data.rfind(b"PK\x05\x06")
    data[end + 8:end + 12] = struct.pack("<HH", 1, 1)  # "one entry" in the end record
    archive.write_bytes(bytes(data))

    def no_table(*args, **kwargs):
        raise AssertionError("zipfile read the central directory before the entries were counted")

    monkeypatch.setattr(zipfile.ZipFile, "infolist", no_table)
    assert "has over 10 members" in _refused(archive, dest, dataclasses.replace(LIMITS, max_archive_members=10))


def test_total_expanded_size_over_the_cap_is_refused(tmp_path, dest):
    small = dataclasses.replace(LIMITS, max_expanded_bytes=1500)
    archive = _zip(tmp_path / "x.zip", {"Normal/a.png": b"x" * 800, "Normal/b.png": b"y" * 800}, zipfile.ZIP_STORED)
    assert "x.zip: expands to over 1.5 kB, the most an upload may expand to" in _refused(archive, dest, small)
    tar = _tar(tmp_path / "x.tar", [("Normal/a.png", b"x" * 800), ("Normal/b.png", b"y" * 800)], "w")
    assert "x.tar: expands to over 1.5 kB" in _refused(tar, dest, small)


def test_outsized_tar_header_is_refused_before_it_is_read_whole(tmp_path, dest):
    info = tarfile.TarInfo("Normal/a.png")
    info.pax_headers = {"comment": "x" * (TAR_HEADER_ALLOWANCE + 2**17)}
    archive = _tar(tmp_path / "x.tgz", [("Normal/b.png", PNG), info], fmt=tarfile.PAX_FORMAT)
    assert "has a tar header (pax record or long name) over 1.0 MB" in _refused(archive, dest)


def test_member_longer_than_it_declares_is_refused_and_nothing_is_left(tmp_path, dest):
    archive = _zip(tmp_path / "x.zip", {"Normal/a.png": PNG, "Normal/b.png": PNG}, zipfile.ZIP_STORED)
    data = bytearray(archive.read_bytes())
    entry = data.rfind(b"PK\x01\x02")  # the central directory entry of Normal/b.png
    data[entry + 24:entry + 28] = struct.pack("<I", 100)  # declares 100 bytes; 1032 are stored
    archive.write_bytes(bytes(data))
    message = _refused(archive, dest)
    assert "member 'Normal/b.png' cannot be read (Bad CRC-32" in message and "damaged" in message
    upload = tmp_path / "upload"  # a folder already holding the job's model: only what the call wrote goes
    upload.mkdir()
    (upload / "model.onnx").write_bytes(b"m")
    with pytest.raises(ArchiveRefused, match="Bad CRC-32"):
        extract_images_archive(archive, upload, LIMITS)
    assert _tree(upload) == ["model.onnx"]


def test_torch_is_not_imported():
    code = "import sys, medrobust.service.upload_archives; assert 'torch' not in sys.modules, 'torch imported'"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSTARTUP"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)
