"""The console entry point: glibc's mmap threshold set once by re-executing, never against the user."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from medrobust.launch import MMAP_THRESHOLD_BYTES, MMAP_THRESHOLD_VARIABLE, tuned_environment


def test_the_threshold_is_added_on_glibc_only_and_the_rest_of_the_environment_is_kept() -> None:
    env = tuned_environment({"PATH": "/bin"}, libc="glibc")
    if not sys.platform.startswith("linux"):
        assert env is None
        return
    assert env == {"PATH": "/bin", MMAP_THRESHOLD_VARIABLE: str(MMAP_THRESHOLD_BYTES)}
    assert tuned_environment({"PATH": "/bin"}, libc="") is None  # musl or unknown: nothing to tune


@pytest.mark.parametrize("environ", [
    {MMAP_THRESHOLD_VARIABLE: "65536"},  # the user's own value wins
    {"MEDROBUST_TUNE_MALLOC": "0"},
    {"MEDROBUST_TUNE_MALLOC": "false"},
])
def test_nothing_changes_when_set_or_opted_out(environ: dict[str, str]) -> None:
    assert tuned_environment(environ, libc="glibc") is None


@pytest.mark.skipif(tuned_environment({}) is None, reason="needs Linux with glibc")
def test_the_process_reexecutes_itself_once_with_the_threshold() -> None:
    script = ("import os; from medrobust.launch import reexec_with_tuned_malloc; print('start', flush=True); "
              "reexec_with_tuned_malloc(); print(os.environ['MALLOC_MMAP_THRESHOLD_'])")
    env = {k: v for k, v in os.environ.items() if k not in (MMAP_THRESHOLD_VARIABLE, "MEDROBUST_TUNE_MALLOC")}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["start", "start", str(MMAP_THRESHOLD_BYTES)]  # ran twice, the second time tuned
    out = subprocess.run([sys.executable, "-m", "medrobust", "--version"], env=env, capture_output=True, text=True,
                         check=True).stdout
    assert "medrobust" in out
