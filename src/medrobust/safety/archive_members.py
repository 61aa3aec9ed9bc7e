"""Checks on an archive's table of members, shared by model files and uploaded archives.

:mod:`medrobust.safety.model_archive` (a ``.keras`` or TorchScript file before a loader opens
it) and :mod:`medrobust.service.upload_archives` (an uploaded zip or tar before one byte is
extracted) judge members by the same rules: a name that is absolute or climbs out with
``..``, a compression ratio that only a bomb reaches, a zip's declared member count. The
rules live here, parameterised by the caller's limits, and each caller words its own refusal.
The module imports nothing heavy (no torch), so the web process of the service can use it.
"""

from __future__ import annotations

import os
import posixpath
import struct
from typing import BinaryIO

_END_RECORD = b"PK\x05\x06"
_END_RECORD_SIZE = 22
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_END_RECORD = b"PK\x06\x06"
_ENTRY = b"PK\x01\x02"
_ENTRY_SIZE = 46


def escapes(name: str) -> bool:
    """True when a member name is absolute (``/x``, ``C:\\x``, ``\\\\server\\x``) or has a ``..``
    component, backslashes counted as separators (as Windows tools write them).

    >>> [escapes(n) for n in ("a/b.png", "../a", "a\\\\..\\\\b", "/etc/x", "C:x", "a..b/c")]
    [False, True, True, True, True, False]
    """
    unified = name.replace("\\", "/")
    return posixpath.isabs(unified) or (len(unified) > 1 and unified[1] == ":") or ".." in unified.split("/")


def excessive_ratio(expanded: int, stored: int, *, max_ratio: float, checked_above_bytes: int) -> float | None:
    """The compression ratio ``expanded / stored`` when it is over ``max_ratio`` and ``expanded``
    is over ``checked_above_bytes`` (a small member cannot cost much, whatever its ratio); else None.

    >>> excessive_ratio(10_000, 10, max_ratio=100, checked_above_bytes=1000)
    1000.0
    >>> excessive_ratio(500, 1, max_ratio=100, checked_above_bytes=1000) is None
    True
    """
    if expanded <= checked_above_bytes:
        return None
    ratio = expanded / max(stored, 1)
    return ratio if ratio > max_ratio else None


def declared_zip_member_count(handle: BinaryIO, file_size: int) -> int | None:
    """Members counted by a zip's end-of-central-directory record (APPNOTE 4.3.16, and 4.3.14 for
    zip64), read from the last 64 KiB: bounds the work before :mod:`zipfile` builds one object
    per member. None when the record cannot be found (zipfile then decides)."""
    found = _end_record(handle, file_size)
    if found is None:
        return None
    tail, at = found
    total = struct.unpack("<H", tail[at + 10:at + 12])[0]
    if total != 0xFFFF:
        return total
    locator = tail[at - 20:at] if at >= 20 else b""
    if not locator.startswith(_ZIP64_LOCATOR):
        return None
    offset = struct.unpack("<Q", locator[8:16])[0]
    if offset + 56 > file_size:
        return None
    handle.seek(offset)
    zip64 = handle.read(56)
    if not zip64.startswith(_ZIP64_END_RECORD):
        return None
    return struct.unpack("<Q", zip64[32:40])[0]


def counted_zip_members(handle: BinaryIO, file_size: int, *, stop_after: int) -> int | None:
    """Entries in a zip's central directory, counted by walking their fixed 46-byte headers (each
    gives the lengths of the name, extra field and comment that follow) and stopping once over
    ``stop_after``. The end record's count may lie, and :mod:`zipfile` builds one object per entry
    it finds whatever that count says, so this bounds the work before zipfile runs. None when the
    directory cannot be located (zipfile then decides)."""
    found = _end_record(handle, file_size)
    if found is None:
        return None
    tail, at = found
    end = file_size - len(tail) + at
    size = struct.unpack("<I", tail[at + 12:at + 16])[0]
    if at >= 20 and tail[at - 20:at].startswith(_ZIP64_LOCATOR):
        end -= 20 + 56  # the zip64 end record sits just before its locator, where zipfile reads it
        if end < 0:
            return None
        handle.seek(end)
        zip64 = handle.read(56)
        if not zip64.startswith(_ZIP64_END_RECORD):
            return None
        size = struct.unpack("<Q", zip64[40:48])[0]
    if size > end:
        return None
    handle.seek(end - size)
    count = walked = 0
    while walked + _ENTRY_SIZE <= size and count <= stop_after:
        entry = handle.read(_ENTRY_SIZE)
        if len(entry) < _ENTRY_SIZE or not entry.startswith(_ENTRY):
            break
        name, extra, comment = struct.unpack("<HHH", entry[28:34])
        handle.seek(name + extra + comment, os.SEEK_CUR)
        walked += _ENTRY_SIZE + name + extra + comment
        count += 1
    return count


def _end_record(handle: BinaryIO, file_size: int) -> tuple[bytes, int] | None:
    """The file's last 64 KiB and where the end-of-central-directory record starts in them (the
    last one, as :mod:`zipfile` searches); None when there is none."""
    tail_size = min(file_size, _END_RECORD_SIZE + 0xFFFF)
    handle.seek(file_size - tail_size)
    tail = handle.read(tail_size)
    at = tail.rfind(_END_RECORD)
    if at < 0 or len(tail) - at < _END_RECORD_SIZE:
        return None
    return tail, at


def format_size(n: float) -> str:
    """Bytes in decimal units, as a file manager shows them.

    >>> format_size(512), format_size(2_000_000), format_size(5.7e9)
    ('512 B', '2.0 MB', '5.7 GB')
    """
    if n < 1000:
        return f"{n:.0f} B"
    for unit in ("kB", "MB", "GB"):
        n /= 1000
        if n < 1000:
            return f"{n:.1f} {unit}"
    return f"{n / 1000:,.1f} TB"
