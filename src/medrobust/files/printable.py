"""File names as text that is valid Unicode: record ids, and paths in messages and JSON.

On Linux a file name is bytes, and one that is not valid UTF-8 (``b"bad\\xff.png"``, from an
old Latin-1 archive or a broken copy) reaches Python as a string with lone surrogates
(``"bad\\udcff.png"``, PEP 383). Such a string can open the file, but cannot be encoded:
writing it as a record id into a JSON or CSV file at the end of a run raises
``UnicodeEncodeError`` and loses the run, and printing it can fail the same way.

:func:`printable_path` escapes each undecodable byte as ``\\xNN`` (``"bad\\\\xff.png"``), which
is valid Unicode, round-trips through strict JSON and reads the way ``ls -b`` shows the
name. The real path stays in :attr:`~medrobust.data.dataset.ImageRecord.path`, so the file
is still read.
"""

from __future__ import annotations

import os
import sys


def printable_path(path: str | os.PathLike[str]) -> str:
    """``path`` as valid Unicode text, undecodable bytes of its name escaped as ``\\xNN``.

    A name that is valid in the file system's encoding comes back unchanged.
    """
    return printable_text(os.fspath(path))


def printable_text(text: str) -> str:
    """``text`` (a message that may quote such a path) with each lone surrogate that stands for
    an undecodable byte escaped as ``\\xNN``; other text is unchanged."""
    encoding = sys.getfilesystemencoding()
    try:
        return text.encode(encoding, "surrogateescape").decode(encoding, "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that stands for no byte (not from a file name)
        return text.encode(encoding, "backslashreplace").decode(encoding)
