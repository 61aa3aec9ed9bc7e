"""The images of one ``POST /v1/predict``, received and laid out so that the guard names each by
what the client sent.

The upload streams in through the platform's :func:`~medrobust.service.upload_stream.receive_multipart`
(every cap checked on the running counts; field ``images``, repeatable). Each file part is then
either an archive (judged from its content: zip, tar, tar.gz), checked member by member and
extracted by :func:`~medrobust.service.upload_archives.extract_images_archive` (plain images, any
folder layout), or one image (PNG, JPEG, DICOM... whatever its name, so that a file the readers
cannot read is answered with an abstention, not dropped).

What the guard calls each image (its answer's ``id``):

* a file sent by itself: the client's file name (its last path component, printable characters
  only: :func:`~medrobust.service.upload_stream.display_filename`); a second file of the same
  name becomes ``name (2).png``;
* a member of an archive: ``<archive name>/<path in the archive>`` (``xrays.zip/Normal/a.png``),
  so members of two archives never share an id.

Each part is laid out in a folder of its own under the request's temporary folder, under the
name above; the client's name is never a path (it has no separator and is never ``.`` or ``..``).
Imports no torch.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from medrobust.service.archive_listing import archive_kind
from medrobust.service.limits import ServiceLimits
from medrobust.service.upload_archives import extract_images_archive
from medrobust.service.upload_stream import ReceivedFile, UploadRefused


@dataclass
class GuardUpload:
    """The request's images, ready for :meth:`Guard.predict <medrobust.layer.guard.Guard.predict>`."""

    sources: list[Path] = field(default_factory=list)
    """Files (each read as one image, its id its name) and folders (an archive's root: ids are the
    paths under it)."""
    n_images: int = 0
    """Images sent: files, and images extracted from archives."""
    ignored: list[str] = field(default_factory=list)
    """Archive members that are not images, ``<archive>/<member>`` (shown to the client)."""


def _unique(name: str, taken: set[str], fallback: str) -> str:
    """``name`` made a safe single path component, unique among ``taken``."""
    usable = name and not name.startswith(".") and len(name.encode("utf-8")) <= 200
    name = name if usable else fallback
    stem, dot, suffix = name.rpartition(".")
    stem, suffix = (stem, dot + suffix) if stem else (name, "")
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{stem} ({n}){suffix}"
    taken.add(candidate)
    return candidate


def lay_out_images(received: list[ReceivedFile] | tuple[ReceivedFile, ...], folder: Path,
                   limits: ServiceLimits) -> GuardUpload:
    """Lay out the received file parts under ``folder`` (module docstring).

    Args:
        received: the request's ``images`` parts, in order.
        folder: a fresh folder of this request (created).
        limits: the caps: ``max_images`` images in all, archives checked as the platform checks them.

    Returns:
        The :class:`GuardUpload`.

    Raises:
        UploadRefused: no image sent (400), more than ``limits.max_images`` (413), or an archive
            refused by a member check (422, the archive's sentence).
    """
    upload = GuardUpload()
    taken: set[str] = set()
    if not received:
        raise UploadRefused(400, "No image was sent; send each image (PNG, JPEG, DICOM) or a zip of them in the "
                                 "form field 'images' (curl -F images=@a.png -F images=@b.dcm).")
    for i, part in enumerate(received, 1):
        home = folder / f"part-{i}"
        home.mkdir(parents=True)
        if archive_kind(part.path) is not None:
            name = _unique(part.filename, taken, f"archive-{i}")
            try:
                extracted = extract_images_archive(part.path, home / name, limits, display_name=name,
                                                   class_folders=False)
            except ValueError as err:  # ArchiveRefused
                raise UploadRefused(422, f"images: {err}") from None
            upload.n_images += extracted.kept
            upload.ignored += [f"{name}/{member}" for member in extracted.ignored]
            upload.sources.append(home)
            part.path.unlink(missing_ok=True)
        else:
            name = _unique(part.filename, taken, f"image-{i}")
            shutil.move(part.path, home / name)
            upload.n_images += 1
            upload.sources.append(home / name)
        if upload.n_images > limits.max_images:
            raise UploadRefused(413, f"The request holds more than {limits.max_images:,} images, the most one request "
                                     "may send; send them in several requests, or start the server with a higher "
                                     "--max-images.")
    return upload
