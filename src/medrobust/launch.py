"""Start the ``medrobust`` command with glibc's malloc set up for large tensors.

On Linux with glibc, a block above malloc's mmap threshold (which glibc raises on its own up
to 32 MiB at most) is obtained with a fresh ``mmap`` and given back with ``munmap`` when freed,
so every page of every large activation tensor is faulted in and zeroed by the kernel again on
each forward and backward pass. With the threshold above the tensors' sizes they come from the
heap and are reused. For a DenseNet121 forward and backward pass on 80 images of 224 px (one
SIA step) that saves much of the time and nearly all of the system time, for a little more peak
memory: the dated figures, with the machine, are in ``benchmarks/README.md`` ("The allocator";
``python benchmarks/bench_sia.py --tuned-malloc`` measures them). Results are unchanged: only
where memory comes from differs.

glibc reads the setting when a process starts (setting it later with ``mallopt`` did not help
here), so the command re-executes itself once with it in the environment. Nothing happens when
the variable is already set (the user's value wins), off glibc, or with ``MEDROBUST_TUNE_MALLOC=0``.
The price: memory freed in the middle of the heap stays with the process until it is reused.

This module imports nothing heavy, so the re-execution happens before torch is loaded.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping

MMAP_THRESHOLD_VARIABLE = "MALLOC_MMAP_THRESHOLD_"
MMAP_THRESHOLD_BYTES = 4 * 1024**3
OPT_OUT_VARIABLE = "MEDROBUST_TUNE_MALLOC"


def tuned_environment(environ: Mapping[str, str], libc: str | None = None) -> dict[str, str] | None:
    """The environment to re-execute with, or None when there is nothing to change: the
    threshold is already set, the user opted out (``MEDROBUST_TUNE_MALLOC=0``), or the C library
    is not glibc (``libc``: as :func:`platform.libc_ver` names it; None: this process's)."""
    if MMAP_THRESHOLD_VARIABLE in environ or environ.get(OPT_OUT_VARIABLE, "1").strip().lower() in ("0", "no", "false"):
        return None
    libc = platform.libc_ver()[0] if libc is None else libc
    if not sys.platform.startswith("linux") or libc != "glibc":
        return None
    return {**environ, MMAP_THRESHOLD_VARIABLE: str(MMAP_THRESHOLD_BYTES)}


def reexec_with_tuned_malloc() -> None:
    """Replace this process by the same command line with the tuned environment, when
    :func:`tuned_environment` asks for it; otherwise (or if the exec fails) return."""
    environ = tuned_environment(os.environ)
    if environ is None:
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environ)
    except OSError:  # e.g. an interpreter path that cannot be executed again: run untuned
        return


def main() -> None:
    """The ``medrobust`` console entry point."""
    reexec_with_tuned_malloc()
    from medrobust.cli import app

    app(args=bare_ray_flag(sys.argv[1:]), prog_name="medrobust")


RAY_FLAG = "--ray"
RAY_LOCAL = "local"


def bare_ray_flag(argv: list[str]) -> list[str]:
    """``--ray`` given without an address (last, before another option, or before a configuration
    file) means ``--ray local``: a Ray instance started on this machine. (click has no option with
    an optional value.)"""
    out = []
    for i, arg in enumerate(argv):
        out.append(arg)
        if arg == RAY_FLAG and (i + 1 == len(argv) or argv[i + 1].startswith("-")
                                or argv[i + 1].lower().endswith((".yaml", ".yml"))):
            out.append(RAY_LOCAL)
    return out
