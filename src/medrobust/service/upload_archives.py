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
* at most ``limits.max_images`` images (the work of a job grows with them, not with the
  upload's size) and ``limits.max_archive_members`` members, at most ``limits.max_expanded_bytes`` in all
  as declared, and a compression ratio (expanded / compressed, of the whole archive and of each
  zip member) of at most ``limits.max_ratio`` once over ``limits.ratio_checked_above_bytes``:
  images barely compress, so a high ratio is a bomb. A zip's members are counted by walking its
  central directory before :mod:`zipfile` builds anything; a tar's headers are read one at a
  time through a byte budget (listing a ``.tar.gz`` decompresses it), so the listing stops as
  soon as a cap is passed, and an outsized header (pax or GNU long name) is refused too.

Only images are extracted, as a folder lists them (:func:`~medrobust.layer.image_folders.is_image_file`:
an image suffix, or for any other name the DICOM marker in the member's first bytes, so that
suffix-less clinical exports are kept), each by a streaming copy
that counts its bytes against the size declared and the total against the cap, into a new file
whose resolved folder must lie under ``dest``; a refusal removes everything this call wrote.
Other files are listed as ignored; hidden entries (a name component starting with ``.``) and
macOS ``__MACOSX`` debris are skipped silently, as the folder dataset skips them. The layout is
one folder per class (``Normal/a.png``, sub-folders within a class allowed: a CT series is a
sub-folder of DICOM slices, ``haemorrhage/ct-01/IM0001``, and counts as one image against
``limits.max_images``; NIfTI volumes, ``.nii``/``.nii.gz``, are kept too); a wrapper folder
holding all the class folders (``xrays/Normal/a.png``) is recognised and becomes the root.
One ambiguity follows: an archive of a single class folder with sub-folders reads as a wrapper
of classes named after the sub-folders.

Nothing here imports torch: the web process uses it (a test asserts it).
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from medrobust.layer.image_folders import DICOM_HEAD_BYTES, IMAGE_FILES, is_image_file, is_image_name, is_nifti_name
from medrobust.safety.archive_members import format_size
from medrobust.service.archive_listing import (
    READ_ERRORS,
    ArchiveContext,
    ArchiveMember,
    ArchiveRefused,
    OverBudget,
    check_total,
    list_members,
    tar_headers,
)
from medrobust.service.limits import ServiceLimits

__all__ = ["ArchiveRefused", "ExtractedImages", "extract_checkpoint_archive", "extract_images_archive"]

CHECKPOINT_META = "model.json"
CHECKPOINT_WEIGHTS = "model.safetensors"
"""A medrobust checkpoint folder's two files (``medrobust.models.checkpoint``, which imports torch)."""

CHECKPOINT_SUFFIXES = (".json", ".safetensors")
"""The only members extracted from a checkpoint archive."""

_CHUNK = 2**20
_SHOWN_IGNORED = 5
_IMAGES_FIX = ("pack one folder of images per class from plain files (zip -r images.zip Normal Pneumonia, "
               "or tar czf images.tar.gz Normal Pneumonia)")
_PLAIN_IMAGES_FIX = "pack plain image files (PNG, JPEG, DICOM) into a zip or tar (zip -r images.zip my_images)"
_CHECKPOINT_FIX = "zip the checkpoint folder that holds model.json and model.safetensors (zip -r model.zip my_model)"


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
                           display_name: str | None = None, class_folders: bool = True) -> ExtractedImages:
    """Check the archive at ``archive`` against every rule above, then extract its images under
    ``dest`` (created if missing; best new or empty). ``display_name`` is the upload's file name
    for messages (default: ``archive``'s name). ``class_folders=False`` takes plain images in any
    folder layout (the guard server's uploads: nothing is labelled), extracted at their paths
    under ``dest``, with no classes. Raises :class:`ArchiveRefused`."""
    context = ArchiveContext(display_name or Path(archive).name, limits,
                             _IMAGES_FIX if class_folders else _PLAIN_IMAGES_FIX)
    kind, members = list_members(Path(archive), context)
    files = [m for m in members if not m.is_dir and not m.hidden]
    heads = _member_heads(kind, Path(archive), [m for m in files if not is_image_name(m.path)
                                                and not is_nifti_name(m.path)], context)
    kept = [m for m in files if is_nifti_name(m.path) or is_image_file(m.path, head=lambda m=m: heads[m.index])]
    kept_indices = {m.index for m in kept}
    ignored = list(dict.fromkeys(m.path for m in files if m.index not in kept_indices))
    if not kept:
        raise context.refuse(f"holds no image ({IMAGE_FILES}){_some_of(ignored)}; images are recognised by "
                             "their extension, or as DICOM by the 'DICM' marker at byte 128")
    wrapper, classes = _class_layout(kept, context) if class_folders else ((), _no_duplicates(kept, context))
    images = _image_count(kept, len(wrapper)) if class_folders else len(kept)  # a guard's zip: every file is an image
    if images > limits.max_images:
        raise context.refuse(f"holds {images:,} images, over the {limits.max_images:,} one job may test (the work "
                             "grows with every image); send a sample of them, or split them into several jobs")
    _extract(kind, Path(archive), kept, Path(dest), context)
    return ExtractedImages(Path(dest).joinpath(*wrapper), classes, len(kept), ignored)


def extract_checkpoint_archive(archive: Path, dest: Path, limits: ServiceLimits, *,
                               display_name: str | None = None) -> Path:
    """Check the archive of a medrobust checkpoint folder as :func:`extract_images_archive` does,
    then extract the ``.json`` and ``.safetensors`` files of the folder holding its one
    ``model.json`` (and its ``model.safetensors``, which must be there too); returns that folder
    under ``dest``. An archive with no or several ``model.json`` is refused: which one would be
    the model is not for the service to guess."""
    context = ArchiveContext(display_name or Path(archive).name, limits, _CHECKPOINT_FIX)
    kind, members = list_members(Path(archive), context)
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


def _member_heads(kind: str, archive: Path, members: list[ArchiveMember],
                  context: ArchiveContext) -> dict[int, bytes]:
    """The first :data:`DICOM_HEAD_BYTES` bytes of each of ``members`` (by index), read in one pass
    over the archive: enough to tell a DICOM file whose name has no image suffix."""
    heads: dict[int, bytes] = {}
    if members:
        for member, source in _member_streams(kind, archive, members, context):
            head = b""
            while len(head) < DICOM_HEAD_BYTES and (chunk := _read(source, context, member, DICOM_HEAD_BYTES - len(head))):
                head += chunk
            heads[member.index] = head
    return heads


def _image_count(kept: list[ArchiveMember], wrapper_depth: int) -> int:
    """The images a job would test: a folder below a class folder that holds several DICOM slices
    is one series (one volume), every other kept member one image or volume."""
    items: set[tuple[str, ...]] = set()
    slices: dict[tuple[str, ...], int] = {}
    for m in kept:
        if len(m.parts) - wrapper_depth >= 3 and not is_nifti_name(m.path):
            slices[m.parts[:-1]] = slices.get(m.parts[:-1], 0) + 1
    for m in kept:
        folder = m.parts[:-1]
        items.add(folder if slices.get(folder, 0) >= 2 and not is_nifti_name(m.path) else m.parts)
    return len(items)


def _some_of(names: list[str]) -> str:
    if not names:
        return ", only folders or hidden files"
    shown = ", ".join(repr(n) for n in names[:_SHOWN_IGNORED])
    more = f" and {len(names) - _SHOWN_IGNORED:,} more" if len(names) > _SHOWN_IGNORED else ""
    return f", only other files ({shown}{more})"


def _no_duplicates(kept: list[ArchiveMember], context: ArchiveContext) -> list[str]:
    """Refuse a member path that appears twice, or as both a file and a folder; no classes."""
    seen: set[tuple[str, ...]] = set()
    folders = {m.parts[:i] for m in kept for i in range(1, len(m.parts))}
    for member in kept:
        if member.parts in seen or member.parts in folders:
            raise context.refuse("appears twice in the archive (or as both a file and a folder)", member.name)
        seen.add(member.parts)
    return []


def _class_layout(kept: list[ArchiveMember], context: ArchiveContext) -> tuple[tuple[str, ...], list[str]]:
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
    _no_duplicates(kept, context)
    return wrapper, sorted({m.parts[len(wrapper)] for m in kept})


def _extract(kind: str, archive: Path, kept: list[ArchiveMember], dest: Path, context: ArchiveContext) -> None:
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
                    check_total(context, total)
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


def _read(source: BinaryIO, context: ArchiveContext, member: ArchiveMember, size: int = _CHUNK) -> bytes:
    try:
        return source.read(size)
    except (*READ_ERRORS, OSError, OverBudget) as err:
        raise context.refuse(f"cannot be read ({err}): the archive is damaged or truncated", member.name) from None


def _member_streams(kind: str, archive: Path, kept: list[ArchiveMember],
                    context: ArchiveContext) -> Iterator[tuple[ArchiveMember, BinaryIO]]:
    """Each kept member with a stream of its bytes, in archive order; a stream is valid until the next."""
    if kind == "zip":
        yield from _zip_streams(archive, kept, context)
        return
    wanted = {m.index: m for m in kept}
    last = max(wanted)
    for index, info, tar in tar_headers(archive, kind, context):
        member = wanted.get(index)
        if member is not None:
            if info.name != member.name or info.size != member.size or not info.isreg():
                raise context.refuse("changed between the listing and the extraction", member.name)
            yield member, _opened(tar.extractfile, info, context, member)
        if index >= last:
            return


def _zip_streams(archive: Path, kept: list[ArchiveMember], context: ArchiveContext) -> Iterator[tuple[ArchiveMember, BinaryIO]]:
    with zipfile.ZipFile(archive) as opened:
        for member in sorted(kept, key=lambda m: m.index):
            info = member.info
            assert info is not None
            with _opened(opened.open, info, context, member) as source:
                yield member, source


def _opened(open_member: Callable[[Any], Any], info: Any, context: ArchiveContext, member: ArchiveMember) -> BinaryIO:
    """``open_member(info)``: a zip member's or the current tar member's stream; errors become refusals."""
    try:
        source = open_member(info)
    except (*READ_ERRORS, OSError, RuntimeError) as err:
        raise context.refuse(f"cannot be opened ({err}): the archive is damaged", member.name) from None
    if source is None:
        raise context.refuse("is not a regular file after all", member.name)
    return source
