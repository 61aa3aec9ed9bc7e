"""Operating-system errors (a file where a folder should be, a read-only or full disk) as
one line that names the path and the fix.

Python's own text (``[Errno 20] Not a directory: 'runs/x/model.json'``) names neither the
thing in the way nor what to do, and the traceback around it is dozens of lines of library
frames. :func:`os_error_line` turns an :class:`OSError` into the project's one sentence:
the path (for a file standing in a folder's place, the file itself, not the path below
it), the problem, and the fix, pointing at the command-line option that named the path
when one did (``choose another --out``).
"""

from __future__ import annotations

import errno
import inspect
import os
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import typer

from medrobust.files.printable import printable_path

_WRITE_ONLY_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)
_OUTPUT_FLAGS = ("--out", "--output-dir", "--output")


def os_error_line(err: OSError, options: Mapping[str, object] | None = None) -> str:
    """One sentence for ``err``: path, problem, fix. ``options`` (``{"--out": value}``, see
    :func:`command_options`) lets the fix name the option that gave the path.

    A write to an open file that fails (a full disk) carries no file name; the errors that only
    a write can meet are then put on the command's output option. An error raised with a
    message of our own, or one that names no file otherwise, is returned as it is.
    """
    options = options or {}
    code = err.errno
    if code is None:
        return str(err)
    if err.filename is not None:
        path = Path(os.fsdecode(err.filename))
        where = _option_for(path, options) or "location"
    else:
        output = next(((flag, value) for flag, value in options.items() if flag in _OUTPUT_FLAGS and value), None)
        if code not in _WRITE_ONLY_ERRORS or output is None:
            return str(err)
        path, where = Path(str(output[1])), output[0]
    shown = printable_path(path)
    if code in (errno.ENOTDIR, errno.EEXIST):
        blocker = _file_in_the_way(path)
        if blocker is not None:
            return f"{printable_path(blocker)}: not a folder (a file stands there); remove it or choose another {where}"
        if code == errno.EEXIST:
            return f"{shown}: already exists; remove it or choose another {where}"
    if code == errno.EISDIR:
        return f"{shown}: is a folder where a file is needed; remove or rename it, or choose another {where}"
    if code in _PROBLEM_AND_FIX:
        problem, fix = _PROBLEM_AND_FIX[code]
        return f"{shown}: {problem}; {fix.format(where=where)}"
    reason = err.strerror or os.strerror(code)
    return f"{shown}: {reason[:1].lower()}{reason[1:]}; check the path or choose another {where}"


_PROBLEM_AND_FIX: dict[int, tuple[str, str]] = {
    errno.EACCES: ("permission denied", "choose a writable {where} or fix its permissions"),
    errno.EPERM: ("permission denied", "choose a writable {where} or fix its permissions"),
    errno.EROFS: ("on a read-only file system", "choose a writable {where}"),
    errno.ENOSPC: ("no space left on device", "free space or choose another {where}"),
    errno.EDQUOT: ("disk quota exceeded", "free space or choose another {where}"),
    errno.EFBIG: ("file too large for its file system", "choose another {where}"),
    errno.ENAMETOOLONG: ("file name too long", "choose a shorter {where}"),
    errno.ENOENT: ("no such file or folder", "check the path"),
    errno.ELOOP: ("too many levels of symbolic links (a link loop)", "fix or remove the link"),
}
"""errno -> (what went wrong, the fix); ``{where}`` is the option that named the path."""


def _file_in_the_way(path: Path) -> Path | None:
    """The nearest of ``path`` and its ancestors that exists and is not a folder, if any."""
    for candidate in (path, *path.parents):
        try:
            if candidate.exists():
                return None if candidate.is_dir() else candidate
        except OSError:
            return None
    return None


def _option_for(path: Path, options: Mapping[str, object]) -> str | None:
    """The command-line option (``--out``) whose value is ``path``, a folder above it (a file
    written inside it failed) or a path below it (creating its parent folders failed)."""
    target = Path(os.path.abspath(path))
    for flag, value in options.items():
        for given in _paths(value):
            given = Path(os.path.abspath(given))
            if given == target or given in target.parents or target in given.parents:
                return flag
    return None


def command_options(command: Callable[..., object], args: tuple[object, ...],
                    kwargs: Mapping[str, object]) -> dict[str, object]:
    """``{"--out": value, ...}`` for a typer command function called with ``args``/``kwargs``:
    each option's longest flag (from its ``typer.Option`` declaration, else typer's default
    ``--name-with-dashes``) and its value. Arguments (not options) are left out."""
    try:
        bound = inspect.signature(command).bind_partial(*args, **kwargs).arguments
        hints = typing.get_type_hints(command, include_extras=True)
    except (TypeError, ValueError, NameError):
        return {}
    options: dict[str, object] = {}
    for name, value in bound.items():
        info = next((m for m in getattr(hints.get(name), "__metadata__", ()) if isinstance(m, typer.models.OptionInfo)),
                    None)
        if info is None:
            continue
        # With Annotated, typer reads a flag given first (``typer.Option("--out")``) from ``default``.
        declared = [d for d in (info.default, *(info.param_decls or ())) if isinstance(d, str) and d.startswith("-")]
        options[max(declared, key=len) if declared else "--" + name.replace("_", "-")] = value
    return options


def _paths(value: object) -> Iterable[Path]:
    if isinstance(value, str | os.PathLike) and str(value):
        return [Path(value)]
    if isinstance(value, Iterable) and not isinstance(value, str | bytes | Mapping):
        return [Path(v) for v in value if isinstance(v, str | os.PathLike) and str(v)]
    return []
