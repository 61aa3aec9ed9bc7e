"""List an uploaded archive's members and check every rule on the list, before one byte is
extracted (:mod:`medrobust.service.upload_archives` extracts; its docstring states the rules).

The format is judged from the content; a zip's members are counted by walking its central
directory before :mod:`zipfile` builds anything; a tar's headers are read one at a time through
a byte budget, so listing a bomb stops as soon as a cap is passed. Imports no torch.
"""

from __future__ import annotations

import gzip
import lzma
import os
import stat
import struct
import tarfile
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from medrobust.safety.archive_members import counted_zip_members, escapes, excessive_ratio, format_size
from medrobust.service.limits import ServiceLimits

FORMATS = ".zip, .tar, .tar.gz or .tgz"
"""The archive formats accepted, as the messages name them."""

TAR_HEADER_ALLOWANCE = 2**20
"""Most bytes of tar headers (with their pax records or GNU long names) read before one member's
data: a real header is 512 bytes to a few kB, and tarfile holds a pax record in memory whole."""

_MAX_COMPONENT_BYTES = 255  # the longest file name Linux file systems take
_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
_TAR_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
STREAM_SLACK = 64 * 1024  # tarfile's stream reads run ahead of its position by up to 10 kB
READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, EOFError, zlib.error,
               gzip.BadGzipFile, lzma.LZMAError, NotImplementedError, struct.error)
_SPECIAL_MODES = {stat.S_IFLNK: "a symbolic link", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
                  stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFSOCK: "a socket"}
_WHY_SPECIAL = "which an upload may not hold (a link could reach outside the job's folder, a device or pipe is no file)"


class ArchiveRefused(ValueError):
    """An uploaded archive refused before (or while) extracting it; ``str(err)`` is one sentence
    naming the upload, the member, the rule broken and the fix. The web process answers it as a 4xx."""


@dataclass(frozen=True)
class ArchiveContext:
    """The upload's name for messages, the caps, and the fix each refusal ends with."""

    label: str
    limits: ServiceLimits
    fix: str

    def refuse(self, what: str, member: str | None = None) -> ArchiveRefused:
        subject = f"member {member!r} " if member is not None else ""
        return ArchiveRefused(f"{self.label}: {subject}{what}; {self.fix}")


@dataclass(frozen=True)
class ArchiveMember:
    """One member of the archive, as listed and checked."""

    index: int
    """Position in the archive (a tar is read again in order to extract)."""
    name: str
    """As the archive spells it."""
    parts: tuple[str, ...]
    """The relative path: backslashes as separators, no empty or ``.`` components."""
    is_dir: bool
    size: int
    """Declared expanded size (0 for a folder)."""
    info: zipfile.ZipInfo | None = field(default=None, compare=False, repr=False)

    @property
    def path(self) -> str:
        return "/".join(self.parts)

    @property
    def suffix(self) -> str:
        return os.path.splitext(self.parts[-1])[1].lower() if self.parts else ""

    @property
    def hidden(self) -> bool:
        return any(p.startswith(".") or p == "__MACOSX" for p in self.parts)


def archive_kind(archive: Path) -> str | None:
    """``zip``, ``tar`` or ``tgz`` as judged from the file's content (never its name), or None for
    any other file (an image)."""
    with archive.open("rb") as handle:
        head = handle.read(tarfile.BLOCKSIZE)
    if head.startswith(_GZIP_MAGIC):
        return "tgz"
    # A tar header first: a tar whose last member is a zip passes zipfile.is_zipfile, which only
    # looks for a zip's end record in the last 64 kB; a zip never starts with a valid tar header.
    tar_header = _tar_header(head)
    if tar_header == "header":
        return "tar"
    if zipfile.is_zipfile(archive):
        return "zip"
    return "tar" if tar_header == "end" else None  # an empty tar: refused later for holding no image


def list_members(archive: Path, context: ArchiveContext) -> tuple[str, list[ArchiveMember]]:
    """The archive's kind (``zip``, ``tar``, ``tgz``) and its members, every rule checked."""
    kind = archive_kind(archive)
    if kind is None:
        raise context.refuse(f"is not a zip or tar archive (the formats accepted are {FORMATS})")
    return kind, (_list_zip(archive, context) if kind == "zip" else _list_tar(archive, kind, context))


def _tar_header(block: bytes) -> str | None:
    """``header`` when ``block`` is a valid tar header, ``end`` when it is a tar's end (zeros), else None."""
    if len(block) < tarfile.BLOCKSIZE:
        return None
    try:
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.EOFHeaderError:
        return "end"
    except tarfile.HeaderError:
        return None
    return "header"


def _list_zip(archive: Path, context: ArchiveContext) -> list[ArchiveMember]:
    limits = context.limits
    archive_size = archive.stat().st_size
    with archive.open("rb") as handle:
        counted = counted_zip_members(handle, archive_size, stop_after=limits.max_archive_members)
    if counted is not None and counted > limits.max_archive_members:
        raise _too_many(context)
    try:
        with zipfile.ZipFile(archive) as opened:
            infos = opened.infolist()
    except (*READ_ERRORS, OSError, ValueError) as err:
        raise context.refuse(f"is a zip archive whose table of contents cannot be read ({err}): damaged or truncated") from None
    if len(infos) > limits.max_archive_members:
        raise _too_many(context)
    members, total = [], 0
    for index, info in enumerate(infos):
        mode = info.external_attr >> 16
        is_dir = info.is_dir() or stat.S_ISDIR(mode)
        parts = _checked_parts(info.orig_filename, is_dir, context)
        special = stat.S_IFMT(mode)
        if special and special not in (stat.S_IFREG, stat.S_IFDIR):
            what = _SPECIAL_MODES.get(special, f"a special file (mode {mode:o})")
            raise context.refuse(f"is {what}, {_WHY_SPECIAL}", info.filename)
        if info.flag_bits & 0x1:
            raise context.refuse("is encrypted, which the service cannot read", info.filename)
        if info.compress_type not in _ZIP_METHODS:
            raise context.refuse(f"uses compression method {info.compress_type}, which the service cannot read "
                                 "(stored, deflate, bzip2 and LZMA can be)", info.filename)
        _check_ratio(context, info.file_size, info.compress_size, info.filename)
        total += info.file_size
        check_total(context, total)
        members.append(ArchiveMember(index, info.filename, parts, is_dir, 0 if is_dir else info.file_size, info))
    _check_ratio(context, total, archive_size, None)
    return members


def _list_tar(archive: Path, kind: str, context: ArchiveContext) -> list[ArchiveMember]:
    limits = context.limits
    archive_size = archive.stat().st_size
    members, total = [], 0
    for index, info, _ in tar_headers(archive, kind, context):
        if index >= limits.max_archive_members:
            raise _too_many(context)
        is_dir = info.isdir()
        parts = _checked_parts(info.name, is_dir, context)
        special = _tar_special(info)
        if special:
            raise context.refuse(f"is {special}, {_WHY_SPECIAL}", info.name)
        size = 0 if is_dir else info.size
        total += size
        check_total(context, total)
        _check_ratio(context, total, archive_size, None)  # only grows: refuse before decompressing further
        members.append(ArchiveMember(index, info.name, parts, is_dir, size))
    return members


def tar_headers(archive: Path, kind: str,
                 context: ArchiveContext) -> Iterator[tuple[int, tarfile.TarInfo, tarfile.TarFile]]:
    """The tar's headers in order (with the open stream, to extract the member just yielded),
    read through a byte budget: before each header only the previous member's data and
    :data:`TAR_HEADER_ALLOWANCE` may be read (for a ``.tar.gz``, decompressed). The caller checks
    each header before the next is read, so a cap passed while listing stops the decompression
    there. Read errors become refusals."""
    with archive.open("rb") as raw:
        stream: BinaryIO = gzip.GzipFile(fileobj=raw, mode="rb") if kind == "tgz" else raw  # type: ignore[assignment]
        budget = Budget(stream, TAR_HEADER_ALLOWANCE + STREAM_SLACK)
        index = 0
        try:
            with tarfile.open(fileobj=budget, mode="r|", tarinfo=StrictTarInfo) as tar:  # type: ignore[call-overload]
                while True:
                    info = tar.next()
                    if info is None:
                        return
                    tar.members.clear()  # tarfile keeps every header it read; the caller keeps what it needs
                    yield index, info, tar
                    index += 1
                    data = tarfile.BLOCKSIZE * -(-info.size // tarfile.BLOCKSIZE) if info.isreg() else 0
                    budget.limit = info.offset_data + data + TAR_HEADER_ALLOWANCE + STREAM_SLACK
        except OverBudget:
            raise context.refuse(f"has a tar header (pax record or long name) over {format_size(TAR_HEADER_ALLOWANCE)}, "
                                 "which no archiver writes for an image") from None
        except (*READ_ERRORS, OSError, DamagedHeader) as err:
            if kind == "tgz" and index == 0 and isinstance(err, tarfile.ReadError):
                raise context.refuse(f"is gzip-compressed but not a tar archive ({err}; the formats accepted are "
                                     f"{FORMATS})") from None
            raise context.refuse(f"cannot be read as a tar archive ({err}): damaged or truncated") from None


def _tar_special(info: tarfile.TarInfo) -> str | None:
    if info.issym():
        return f"a symbolic link (to {info.linkname!r})"
    if info.islnk():
        return f"a hard link (to {info.linkname!r})"
    if info.ischr():
        return "a character device"
    if info.isblk():
        return "a block device"
    if info.isfifo():
        return "a FIFO (named pipe)"
    if info.isdir() or (info.type in _TAR_FILE_TYPES and info.sparse is None):
        return None
    return f"a special member (tar type {info.type!r})"


class OverBudget(Exception):
    pass


class DamagedHeader(Exception):
    pass


class StrictTarInfo(tarfile.TarInfo):
    """A tar header that reports a damaged or truncated header after the first: :meth:`TarFile.next`
    takes one for the end of the archive, which would drop every member after it silently."""

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tar)
        except (tarfile.InvalidHeaderError, tarfile.TruncatedHeaderError) as err:
            if tar.offset == 0:
                raise
            raise DamagedHeader(str(err)) from None


class Budget:
    """A read-only stream that raises :class:`OverBudget` once more than ``limit`` bytes have
    been read from it in all; the limit is raised as the listing goes."""

    def __init__(self, stream: BinaryIO, limit: int) -> None:
        self.stream, self.limit, self.given = stream, limit, 0

    def read(self, size: int = -1) -> bytes:
        allowed = self.limit - self.given + 1
        data = self.stream.read(allowed if size is None or size < 0 else min(size, allowed))
        self.given += len(data)
        if self.given > self.limit:
            raise OverBudget
        return data


def _checked_parts(name: str, is_dir: bool, context: ArchiveContext) -> tuple[str, ...]:
    """The member's relative path components, after refusing names no archiver writes for images."""
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in name):
        raise context.refuse("has a control character or bytes that are not valid text in its name", name)
    if escapes(name):
        raise context.refuse("has an absolute path or climbs out with '..', which could write outside the "
                             "job's folder", name)
    parts = tuple(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))
    if not parts and not is_dir:
        raise context.refuse("has no file name", name)
    if any(len(p.encode("utf-8", "surrogateescape")) > _MAX_COMPONENT_BYTES for p in parts):
        raise context.refuse(f"has a name component over {_MAX_COMPONENT_BYTES} bytes, which no file system takes", name)
    return parts


def _check_ratio(context: ArchiveContext, expanded: int, stored: int, member: str | None) -> None:
    limits = context.limits
    ratio = excessive_ratio(expanded, stored, max_ratio=limits.max_ratio,
                            checked_above_bytes=limits.ratio_checked_above_bytes)
    if ratio is not None:
        what = "" if member is not None else "the archive "
        raise context.refuse(
            f"{what}expands to {format_size(expanded)} from {format_size(stored)} (ratio {ratio:,.0f}, over the "
            f"{limits.max_ratio:g} accepted, where images compress under 5x), so it is refused as a likely "
            "archive bomb", member)


def check_total(context: ArchiveContext, total: int) -> None:
    cap = context.limits.max_expanded_bytes
    if total > cap:
        raise context.refuse(f"expands to over {format_size(cap)}, the most an upload may expand to; "
                             "split the images into several jobs")


def _too_many(context: ArchiveContext) -> ArchiveRefused:
    return context.refuse(f"has over {context.limits.max_archive_members:,} members, the most an upload may "
                          "hold; split the images into several jobs")
