"""Refuse a zip-format model file that would expand without bound, before reading any of it.

A ``.keras`` file, a TorchScript archive and a ``torch.save`` file are zip archives, and
their loaders extract members to memory or disk. A 2 MB zip bomb renamed ``.keras`` (one
member of zeros declaring gigabytes) took 5.7 GB and 24 s before Keras gave up with a
message about something else. :func:`check_model_archive` reads only the archive's central
directory (the table of members at its end; nothing is decompressed) and refuses:

* more than :data:`MAX_MEMBERS` members (a real model has tens to a few thousand);
* a total declared uncompressed size over :data:`MAX_UNCOMPRESSED_BYTES`;
* a compression ratio over :data:`MAX_RATIO` once the expanded size is over
  :data:`RATIO_CHECKED_ABOVE_BYTES`, for the whole archive or any one member. Trained
  weights are near-random floats and compress about 1.1x (``torch.save`` stores them
  uncompressed), so a ratio of 100 on tens of megabytes is a bomb, not a model;
* member names that are absolute or climb out with ``..``, which no model writer produces
  and which an extracting loader could follow out of its folder.

The sizes are those the archive declares. Python's :mod:`zipfile`, which Keras uses, never
returns more than the declared size of a member, and torch's reader allocates the declared
size, so the declared sizes are what bounds the memory of a load. The limits are module
constants so a user who trusts a file can raise them. The rules themselves (names, ratios,
the declared member count) are those of :mod:`medrobust.safety.archive_members`, which the upload
service applies to uploaded archives too.
"""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path

from medrobust.safety.archive_members import declared_zip_member_count, escapes, excessive_ratio
from medrobust.safety.archive_members import format_size as _size

MAX_MEMBERS = 10_000
"""Most members accepted in a model archive."""

MAX_UNCOMPRESSED_BYTES = 8 * 2**30
"""Largest total declared uncompressed size (8 GiB): DenseNet121 is 30 MB, a large ViT 1.2 GB."""

MAX_RATIO = 100.0
"""Highest compression ratio (uncompressed / compressed) accepted above :data:`RATIO_CHECKED_ABOVE_BYTES`."""

RATIO_CHECKED_ABOVE_BYTES = 64 * 2**20
"""Expanded size (64 MiB) below which the ratio is not checked: a small config or vocabulary
member may compress well, and cannot cost much memory anyway."""

_FIX = "re-save the model (model.save('model.keras'), torch.jit.save or torch.save) from the original"
_TRUST = "or raise medrobust.safety.model_archive.{name} if you trust this file"
_LOCAL_HEADER = b"PK\x03\x04"


class ModelArchiveError(ValueError):
    """A model archive refused before loading; ``str(err)`` names the file, the limit and the fix."""


def check_model_archive(path: str | os.PathLike[str]) -> None:
    """Raise :class:`ModelArchiveError` when the zip archive at ``path`` breaks a limit above.

    A file that is not a zip archive passes unchanged (ONNX, safetensors, a legacy pickle):
    other checks apply to it. Reads the end of the file and the central directory only.
    """
    path = Path(path)
    with path.open("rb") as handle:
        starts_like_zip = handle.read(len(_LOCAL_HEADER)) == _LOCAL_HEADER
    if not starts_like_zip and not zipfile.is_zipfile(path):
        return
    file_size = path.stat().st_size
    with path.open("rb") as handle:
        declared = declared_zip_member_count(handle, file_size)
    if declared is not None and declared > MAX_MEMBERS:
        raise _too_many(path, f"{declared:,}")
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, struct.error) as err:
        if not starts_like_zip:
            return  # zip-like bytes at the end of some other format: not an archive after all
        raise ModelArchiveError(
            f"{path}: looks like a zip archive (a .keras, TorchScript or torch.save file) but its table of "
            f"contents cannot be read ({err}); the file is damaged or truncated: {_FIX}"
        ) from None
    if len(members) > MAX_MEMBERS:
        raise _too_many(path, f"{len(members):,}")
    for member in members:
        _check_name(path, member.filename)
    total = sum(m.file_size for m in members)
    if total > MAX_UNCOMPRESSED_BYTES:
        raise ModelArchiveError(
            f"{path}: archive declares {_size(total)} uncompressed, over the {_size(MAX_UNCOMPRESSED_BYTES)} limit "
            f"for a model; refusing to expand it; {_FIX}, {_TRUST.format(name='MAX_UNCOMPRESSED_BYTES')}"
        )
    _check_ratio(path, "archive", total, file_size)
    for member in members:
        _check_ratio(path, f"member {member.filename!r}", member.file_size, member.compress_size)


def _check_ratio(path: Path, what: str, expanded: int, stored: int) -> None:
    ratio = excessive_ratio(expanded, stored, max_ratio=MAX_RATIO, checked_above_bytes=RATIO_CHECKED_ABOVE_BYTES)
    if ratio is not None:
        raise ModelArchiveError(
            f"{path}: {what} expands to {_size(expanded)} from {_size(stored)} (ratio {ratio:,.0f}, where trained "
            f"weights compress about 1.1x); refusing a likely zip bomb; {_FIX}, {_TRUST.format(name='MAX_RATIO')}"
        )


def _check_name(path: Path, name: str) -> None:
    """Refuse a member name that is absolute (``/x``, ``C:\\x``) or has a ``..`` component."""
    if escapes(name):
        raise ModelArchiveError(
            f"{path}: archive member {name!r} has an absolute path or climbs out with '..', which no model "
            f"writer produces; refusing the file; {_FIX}"
        )


def _too_many(path: Path, count: str) -> ModelArchiveError:
    return ModelArchiveError(
        f"{path}: archive has {count} members, over the limit of {MAX_MEMBERS:,} for a model (real ones have "
        f"at most a few thousand); refusing it; {_FIX}, {_TRUST.format(name='MAX_MEMBERS')}"
    )
