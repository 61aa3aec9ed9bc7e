"""Unpack an uploaded archive of images (or of a checkpoint folder) without trusting it.

An upload is a ``.zip``, ``.tar``, ``.tar.gz`` or ``.tgz`` made by anyone holding a token, so
the web process reads it as hostile: every rule is checked on the list of members before one
byte is written, and the extraction itself is bounded again. The rules (``limits`` is the
service's :class:`~medrobust.service.limits.ServiceLimits`):

* the format is judged from the content (a zip's central directory, the gzip magic, a valid
  tar header), not from the name; anything else is refused with the formats accepted;
* no member may be absolute or climb out with ``..`` (zip slip), be a symbolic or hard link
  (which could point outside the job's folder), a device, FIFO or other special file, be
  encrypted, or have a control character or undecodable byte in its name;
* at most ``limits.max_archive_members`` members, at most ``limits.max_expanded_bytes`` in all
  as declared, and a compression ratio (expanded / compressed, of the whole archive and of each
  zip member) of at most ``limits.max_ratio`` once over ``limits.ratio_checked_above_bytes``:
  images barely compress, so a high ratio is a bomb. A zip's members are counted by walking its
  central directory before :mod:`zipfile` builds anything; a tar's headers are read one at a
  time through a byte budget (listing a ``.tar.gz`` decompresses it), so the listing stops as
  soon as a cap is passed, and an outsized header (pax or GNU long name) is refused too.

Only images (:data:`~medrobust.data.io.IMAGE_SUFFIXES`) are extracted, each by a streaming copy
that counts its bytes against the size declared and the total against the cap, into a new file
whose resolved folder must lie under ``dest``; a refusal removes everything this call wrote.
Other files are listed as ignored; hidden entries (a name component starting with ``.``) and
macOS ``__MACOSX`` debris are skipped silently, as the folder dataset skips them. The layout is
one folder per class (``Normal/a.png``, sub-folders within a class allowed); a wrapper folder
holding all the class folders (``xrays/Normal/a.png``) is recognised and becomes the root.
One ambiguity follows: an archive of a single class folder with sub-folders reads as a wrapper
of classes named after the sub-folders.

Nothing here imports torch: the web process uses it (a test asserts it).
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from medrobust.archive_members import counted_zip_members, escapes, excessive_ratio, format_size
from medrobust.data.io import IMAGE_SUFFIXES
from medrobust.service.limits import ServiceLimits

FORMATS = ".zip, .tar, .tar.gz or .tgz"
"""The archive formats accepted, as the messages name them."""

CHECKPOINT_META = "model.json"
CHECKPOINT_WEIGHTS = "model.safetensors"
"""A medrobust checkpoint folder's two files (``medrobust.models.checkpoint``, which imports torch)."""

CHECKPOINT_SUFFIXES = (".json", ".safetensors")
"""The only members extracted from a checkpoint archive."""

TAR_HEADER_ALLOWANCE = 2**20
"""Most bytes of tar headers (with their pax records or GNU long names) read before one member's
data: a real header is 512 bytes to a few kB, and tarfile holds a pax record in memory whole."""

_CHUNK = 2**20
_STREAM_SLACK = 64 * 1024  # tarfile's stream reads run ahead of its position by up to 10 kB
_MAX_COMPONENT_BYTES = 255  # the longest file name Linux file systems take
_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
_TAR_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
_SHOWN_IGNORED = 5
_READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, EOFError, zlib.error,
                gzip.BadGzipFile, lzma.LZMAError, NotImplementedError, struct.error)
_IMAGES_FIX = ("pack one folder of images per class from plain files (zip -r images.zip Normal Pneumonia, "
               "or tar czf images.tar.gz Normal Pneumonia)")
_CHECKPOINT_FIX = "zip the checkpoint folder that holds model.json and model.safetensors (zip -r model.zip my_model)"
_SPECIAL_MODES = {stat.S_IFLNK: "a symbolic link", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
                  stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFSOCK: "a socket"}
_WHY_SPECIAL = "which an upload may not hold (a link could reach outside the job's folder, a device or pipe is no file)"


class ArchiveRefused(ValueError):
    """An uploaded archive refused before (or while) extracting it; ``str(err)`` is one sentence
    naming the upload, the member, the rule broken and the fix. The web process answers it as a 4xx."""


@dataclass(frozen=True)
class ExtractedImages:
    """What :func:`extract_images_archive` wrote."""

    root: Path
    """The folder holding the class folders: ``dest``, or the wrapper folder under it."""
    classes: list[str]
    """The class folders' names holding at least one extracted image, sorted."""
    kept: int
    """Images extracted."""
    ignored: list[str]
    """Files not extracted because they are not images or DICOM, to show the user (hidden files
    and ``__MACOSX`` debris are left out of it)."""


def extract_images_archive(archive: Path, dest: Path, limits: ServiceLimits, *,
                           display_name: str | None = None) -> ExtractedImages:
    """Check the archive at ``archive`` against every rule above, then extract its images under
    ``dest`` (created if missing; best new or empty). ``display_name`` is the upload's file name
    for messages (default: ``archive``'s name). Raises :class:`ArchiveRefused`."""
    context = _Context(display_name or Path(archive).name, limits, _IMAGES_FIX)
    kind, members = _list_members(Path(archive), context)
    files = [m for m in members if not m.is_dir and not m.hidden]
    kept = [m for m in files if m.suffix in IMAGE_SUFFIXES]
    ignored = list(dict.fromkeys(m.path for m in files if m.suffix not in IMAGE_SUFFIXES))
    if not kept:
        raise context.refuse(f"holds no image ({', '.join(IMAGE_SUFFIXES)}){_some_of(ignored)}; images are "
                             "recognised by their extension, so DICOM files need .dcm (PACS exports often have none)")
    wrapper, classes = _class_layout(kept, context)
    _extract(kind, Path(archive), kept, Path(dest), context)
    return ExtractedImages(Path(dest).joinpath(*wrapper), classes, len(kept), ignored)


def extract_checkpoint_archive(archive: Path, dest: Path, limits: ServiceLimits, *,
                               display_name: str | None = None) -> Path:
    """Check the archive of a medrobust checkpoint folder as :func:`extract_images_archive` does,
    then extract the ``.json`` and ``.safetensors`` files of the folder holding its one
    ``model.json`` (and its ``model.safetensors``, which must be there too); returns that folder
    under ``dest``. An archive with no or several ``model.json`` is refused: which one would be
    the model is not for the service to guess."""
    context = _Context(display_name or Path(archive).name, limits, _CHECKPOINT_FIX)
    kind, members = _list_members(Path(archive), context)
    files = [m for m in members if not m.is_dir and not m.hidden]
    metas = [m for m in files if m.parts[-1] == CHECKPOINT_META]
    if not metas:
        raise context.refuse(f"holds no {CHECKPOINT_META}, so it is not a medrobust checkpoint folder")
    if len(metas) > 1:
        names = ", ".join(repr(m.path) for m in metas[:3])
        raise context.refuse(f"holds {len(metas)} {CHECKPOINT_META} files ({names}) where a checkpoint folder has one")
    folder = metas[0].parts[:-1]
    kept = [m for m in files if m.parts[:-1] == folder and m.suffix in CHECKPOINT_SUFFIXES]
    if not any(m.parts[-1] == CHECKPOINT_WEIGHTS for m in kept):
        raise context.refuse(f"has no {CHECKPOINT_WEIGHTS} beside {metas[0].path!r}, so the model has no weights")
    _extract(kind, Path(archive), kept, Path(dest), context)
    return Path(dest).joinpath(*folder)


@dataclass(frozen=True)
class _Context:
    label: str
    limits: ServiceLimits
    fix: str

    def refuse(self, what: str, member: str | None = None) -> ArchiveRefused:
        subject = f"member {member!r} " if member is not None else ""
        return ArchiveRefused(f"{self.label}: {subject}{what}; {self.fix}")


@dataclass(frozen=True)
class _Member:
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


def _list_members(archive: Path, context: _Context) -> tuple[str, list[_Member]]:
    """The archive's kind (``zip``, ``tar``, ``tgz``) and its members, every rule checked."""
    with archive.open("rb") as handle:
        head = handle.read(tarfile.BLOCKSIZE)
    if head.startswith(_GZIP_MAGIC):
        return "tgz", _list_tar(archive, "tgz", context)
    # A tar header first: a tar whose last member is a zip passes zipfile.is_zipfile, which only
    # looks for a zip's end record in the last 64 kB; a zip never starts with a valid tar header.
    tar_header = _tar_header(head)
    if tar_header == "header":
        return "tar", _list_tar(archive, "tar", context)
    if zipfile.is_zipfile(archive):
        return "zip", _list_zip(archive, context)
    if tar_header == "end":
        return "tar", _list_tar(archive, "tar", context)  # an empty tar: refused for holding no image
    raise context.refuse(f"is not a zip or tar archive (the formats accepted are {FORMATS})")


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


def _list_zip(archive: Path, context: _Context) -> list[_Member]:
    limits = context.limits
    archive_size = archive.stat().st_size
    with archive.open("rb") as handle:
        counted = counted_zip_members(handle, archive_size, stop_after=limits.max_archive_members)
    if counted is not None and counted > limits.max_archive_members:
        raise _too_many(context)
    try:
        with zipfile.ZipFile(archive) as opened:
            infos = opened.infolist()
    except (*_READ_ERRORS, OSError, ValueError) as err:
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
        _check_total(context, total)
        members.append(_Member(index, info.filename, parts, is_dir, 0 if is_dir else info.file_size, info))
    _check_ratio(context, total, archive_size, None)
    return members


def _list_tar(archive: Path, kind: str, context: _Context) -> list[_Member]:
    limits = context.limits
    archive_size = archive.stat().st_size
    members, total = [], 0
    for index, info, _ in _tar_headers(archive, kind, context):
        if index >= limits.max_archive_members:
            raise _too_many(context)
        is_dir = info.isdir()
        parts = _checked_parts(info.name, is_dir, context)
        special = _tar_special(info)
        if special:
            raise context.refuse(f"is {special}, {_WHY_SPECIAL}", info.name)
        size = 0 if is_dir else info.size
        total += size
        _check_total(context, total)
        _check_ratio(context, total, archive_size, None)  # only grows: refuse before decompressing further
        members.append(_Member(index, info.name, parts, is_dir, size))
    return members


def _tar_headers(archive: Path, kind: str,
                 context: _Context) -> Iterator[tuple[int, tarfile.TarInfo, tarfile.TarFile]]:
    """The tar's headers in order (with the open stream, to extract the member just yielded),
    read through a byte budget: before each header only the previous member's data and
    :data:`TAR_HEADER_ALLOWANCE` may be read (for a ``.tar.gz``, decompressed). The caller checks
    each header before the next is read, so a cap passed while listing stops the decompression
    there. Read errors become refusals."""
    with archive.open("rb") as raw:
        stream: BinaryIO = gzip.GzipFile(fileobj=raw, mode="rb") if kind == "tgz" else raw  # type: ignore[assignment]
        budget = _Budget(stream, TAR_HEADER_ALLOWANCE + _STREAM_SLACK)
        index = 0
        try:
            with tarfile.open(fileobj=budget, mode="r|", tarinfo=_StrictTarInfo) as tar:  # type: ignore[call-overload]
                while True:
                    info = tar.next()
                    if info is None:
                        return
                    tar.members.clear()  # tarfile keeps every header it read; the caller keeps what it needs
                    yield index, info, tar
                    index += 1
                    data = tarfile.BLOCKSIZE * -(-info.size // tarfile.BLOCKSIZE) if info.isreg() else 0
                    budget.limit = info.offset_data + data + TAR_HEADER_ALLOWANCE + _STREAM_SLACK
        except _OverBudget:
            raise context.refuse(f"has a tar header (pax record or long name) over {format_size(TAR_HEADER_ALLOWANCE)}, "
                                 "which no archiver writes for an image") from None
        except (*_READ_ERRORS, OSError, _DamagedHeader) as err:
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


class _OverBudget(Exception):
    pass


class _DamagedHeader(Exception):
    pass


class _StrictTarInfo(tarfile.TarInfo):
    """A tar header that reports a damaged or truncated header after the first: :meth:`TarFile.next`
    takes one for the end of the archive, which would drop every member after it silently."""

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tar)
        except (tarfile.InvalidHeaderError, tarfile.TruncatedHeaderError) as err:
            if tar.offset == 0:
                raise
            raise _DamagedHeader(str(err)) from None


class _Budget:
    """A read-only stream that raises :class:`_OverBudget` once more than ``limit`` bytes have
    been read from it in all; the limit is raised as the listing goes."""

    def __init__(self, stream: BinaryIO, limit: int) -> None:
        self.stream, self.limit, self.given = stream, limit, 0

    def read(self, size: int = -1) -> bytes:
        allowed = self.limit - self.given + 1
        data = self.stream.read(allowed if size is None or size < 0 else min(size, allowed))
        self.given += len(data)
        if self.given > self.limit:
            raise _OverBudget
        return data


def _checked_parts(name: str, is_dir: bool, context: _Context) -> tuple[str, ...]:
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


def _check_ratio(context: _Context, expanded: int, stored: int, member: str | None) -> None:
    limits = context.limits
    ratio = excessive_ratio(expanded, stored, max_ratio=limits.max_ratio,
                            checked_above_bytes=limits.ratio_checked_above_bytes)
    if ratio is not None:
        what = "" if member is not None else "the archive "
        raise context.refuse(
            f"{what}expands to {format_size(expanded)} from {format_size(stored)} (ratio {ratio:,.0f}, over the "
            f"{limits.max_ratio:g} accepted, where images compress under 5x), so it is refused as a likely "
            "archive bomb", member)


def _check_total(context: _Context, total: int) -> None:
    cap = context.limits.max_expanded_bytes
    if total > cap:
        raise context.refuse(f"expands to over {format_size(cap)}, the most an upload may expand to; "
                             "split the images into several jobs")


def _too_many(context: _Context) -> ArchiveRefused:
    return context.refuse(f"has over {context.limits.max_archive_members:,} members, the most an upload may "
                          "hold; split the images into several jobs")


def _some_of(names: list[str]) -> str:
    if not names:
        return ", only folders or hidden files"
    shown = ", ".join(repr(n) for n in names[:_SHOWN_IGNORED])
    more = f" and {len(names) - _SHOWN_IGNORED:,} more" if len(names) > _SHOWN_IGNORED else ""
    return f", only other files ({shown}{more})"


def _class_layout(kept: list[_Member], context: _Context) -> tuple[tuple[str, ...], list[str]]:
    """The wrapper folders above the class folders, and the classes. Wrappers are stripped while
    every image shares the first folder and some image lies deeper than ``class/image``."""
    wrapper: tuple[str, ...] = ()
    while True:
        rests = [m.parts[len(wrapper):] for m in kept]
        firsts = {r[0] for r in rests}
        if len(firsts) == 1 and len(rests[0]) > 1 and any(len(r) > 2 for r in rests):
            wrapper += (rests[0][0],)
        else:
            break
    loose = [m for m in kept if len(m.parts) - len(wrapper) < 2]
    if loose:
        where = f"in {'/'.join(wrapper)!r}" if wrapper else "at the top of the archive"
        raise context.refuse(f"is an image {where}, outside any class folder, where one folder per class is "
                             "expected (Normal/a.png, Pneumonia/b.png)", loose[0].name)
    seen: dict[tuple[str, ...], _Member] = {}
    folders = {m.parts[:i] for m in kept for i in range(1, len(m.parts))}
    for member in kept:
        if member.parts in seen or member.parts in folders:
            raise context.refuse("appears twice in the archive (or as both a file and a folder)", member.name)
        seen[member.parts] = member
    return wrapper, sorted({m.parts[len(wrapper)] for m in kept})


def _extract(kind: str, archive: Path, kept: list[_Member], dest: Path, context: _Context) -> None:
    """Write each kept member to ``dest/<its path>`` by a counted streaming copy; on any failure
    remove every file and folder this call created, then re-raise (write errors such as a full
    disk are the server's, so they stay OSError)."""
    dest = Path(dest)
    created: list[Path] = []
    if not dest.exists():
        dest.mkdir(parents=True)
        created.append(dest)
    root = dest.resolve()
    try:
        total = 0
        for member, source in _member_streams(kind, archive, kept, context):
            target = root.joinpath(*member.parts)
            for folder in reversed([p for p in target.parents if not p.exists() and p.is_relative_to(root)]):
                folder.mkdir()
                created.append(folder)
            if not target.parent.resolve().is_relative_to(root):
                raise context.refuse("would be written outside the destination folder", member.name)
            with open(target, "xb") as out:
                created.append(target)
                written = 0
                while chunk := _read(source, context, member):
                    written += len(chunk)
                    total += len(chunk)
                    if written > member.size:
                        raise context.refuse(f"yields more bytes than the {format_size(member.size)} it declares",
                                             member.name)
                    _check_total(context, total)
                    out.write(chunk)
            if written != member.size:
                raise context.refuse(f"yields {format_size(written)} where it declares {format_size(member.size)}: "
                                     "the archive is damaged", member.name)
    except BaseException:
        for path in reversed(created):
            try:
                if path.is_dir() and not path.is_symlink():
                    path.rmdir()
                else:
                    path.unlink()
            except OSError:
                pass
        raise


def _read(source: BinaryIO, context: _Context, member: _Member) -> bytes:
    try:
        return source.read(_CHUNK)
    except (*_READ_ERRORS, OSError, _OverBudget) as err:
        raise context.refuse(f"cannot be read ({err}): the archive is damaged or truncated", member.name) from None


def _member_streams(kind: str, archive: Path, kept: list[_Member],
                    context: _Context) -> Iterator[tuple[_Member, BinaryIO]]:
    """Each kept member with a stream of its bytes, in archive order; a stream is valid until the next."""
    if kind == "zip":
        yield from _zip_streams(archive, kept, context)
        return
    wanted = {m.index: m for m in kept}
    last = max(wanted)
    for index, info, tar in _tar_headers(archive, kind, context):
        member = wanted.get(index)
        if member is not None:
            if info.name != member.name or info.size != member.size or not info.isreg():
                raise context.refuse("changed between the listing and the extraction", member.name)
            yield member, _opened(tar.extractfile, info, context, member)
        if index >= last:
            return


def _zip_streams(archive: Path, kept: list[_Member], context: _Context) -> Iterator[tuple[_Member, BinaryIO]]:
    with zipfile.ZipFile(archive) as opened:
        for member in sorted(kept, key=lambda m: m.index):
            info = member.info
            assert info is not None
            with _opened(opened.open, info, context, member) as source:
                yield member, source


def _opened(open_member: Callable[[Any], Any], info: Any, context: _Context, member: _Member) -> BinaryIO:
    """``open_member(info)``: a zip member's or the current tar member's stream; errors become refusals."""
    try:
        source = open_member(info)
    except (*_READ_ERRORS, OSError, RuntimeError) as err:
        raise context.refuse(f"cannot be opened ({err}): the archive is damaged", member.name) from None
    if source is None:
        raise context.refuse("is not a regular file after all", member.name)
    return source
