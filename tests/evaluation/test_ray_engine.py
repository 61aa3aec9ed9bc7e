"""The runner on Ray: the same results as a local run, bit for bit; a worker killed mid-unit is
restarted by Ray and the run completes; a driver killed mid-run resumes from the run directory.

One local Ray cluster serves the session (the ``ray_cluster`` fixture, tests/ray_cluster.py).
Skipped when Ray is not installed (``pip install 'medrobust[scale]'``; CI installs it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'medrobust[scale]'")

from medrobust.evaluation.config import ExperimentConfig  # noqa: E402
from medrobust.evaluation.runner import run_experiment  # noqa: E402
from tests.golden import full_config  # noqa: E402
from tests.progress_wait import files_written, wait_for  # noqa: E402
from tests.ray_cluster import RAY_ENV  # noqa: E402
from tests.run_equality import assert_same_run  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(golden_checkpoint) -> Path:
    return golden_checkpoint


def _config(root: Path, checkpoint: Path, name: str, execution: dict | None = None) -> dict:
    """The golden run's configuration (tests/golden.py): every kind of unit."""
    return full_config(root, checkpoint, name, execution)


@pytest.fixture(scope="module")
def local_run(golden_full_run) -> Path:
    return golden_full_run


def _actor_pids() -> dict[int, str]:
    """The medrobust Ray workers on this machine: pid -> process title (``ray::UnitActor.run``
    while a unit runs)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if title.startswith("ray::UnitActor"):
            out[int(entry.name)] = title
    return out


def test_a_ray_run_equals_a_local_run_bit_for_bit(ray_cluster, checkpoint, local_run, tmp_path) -> None:
    config = _config(tmp_path, checkpoint, "run", {"engine": "ray", "address": ray_cluster, "workers": 2})
    metrics = run_experiment(ExperimentConfig.model_validate(config))
    assert metrics.config["execution"]["engine"] == "ray"
    assert_same_run(local_run, tmp_path / "run")
    tvm = metrics.defenses[1]  # randomised: its draws seeded per batch, the EOT and step checks the same on Ray
    assert tvm.gradient_mode.startswith("unrolled+eot(") and [c.quantity for c in tvm.adaptive_checks] == ["EOT draws",
                                                                                                         "steps"]
    assert [m.name for m in metrics.defenses[0].adaptive_members if m.accuracy is not None] == \
        ["unrolled", "smooth", "square", "transfer"]


class KillOneWorker:
    """Progress that SIGKILLs a busy Ray worker once, after the first batch of an attack stage."""

    def __init__(self) -> None:
        self.killed: int | None = None

    def stage(self, name: str, total: int):
        progress = self

        class Bar:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def advance(self, n: int = 1) -> None:
                if progress.killed is None and "white-box" in name:
                    pids = _actor_pids()
                    busy = [p for p, title in pids.items() if ".run" in title] or list(pids)
                    if busy:
                        progress.killed = busy[0]
                        os.kill(busy[0], signal.SIGKILL)

        return Bar()


def test_a_worker_killed_mid_unit_is_restarted_and_the_run_completes(ray_cluster, checkpoint, local_run,
                                                                     tmp_path) -> None:
    config = _config(tmp_path, checkpoint, "run", {"engine": "ray", "address": ray_cluster, "workers": 2})
    progress = KillOneWorker()
    run_experiment(ExperimentConfig.model_validate(config), progress=progress)
    assert progress.killed is not None
    assert progress.killed not in _actor_pids()  # that process is gone; Ray started another in its place
    assert_same_run(local_run, tmp_path / "run")


def test_a_driver_killed_mid_run_resumes_from_the_run_directory(ray_cluster, checkpoint, local_run,
                                                                tmp_path) -> None:
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(_config(tmp_path, checkpoint, "run")))
    command = [sys.executable, "-m", "medrobust", "evaluate", str(config_path), "--ray", ray_cluster, "--workers", "2"]
    env = {**os.environ, **RAY_ENV}
    driver = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stage = tmp_path / "run" / "stages" / "attacks"
    wait_for(lambda: files_written(tmp_path / "run"),  # on the run's progress, not a fixed total
             lambda _: (stage.is_dir() and len(list(stage.rglob("batch-*.npz"))) >= 2) or driver.poll() is not None,
             interval_s=0.05, what="the run before its second attack batch")
    assert driver.poll() is None, driver.stderr.read().decode()[-3000:]
    driver.kill()
    driver.wait()
    driver.stderr.close()
    assert not (tmp_path / "run" / "metrics.json").exists()
    finished = {p: p.stat().st_mtime_ns for p in stage.rglob("batch-*.npz")}

    log = tmp_path / "resumed.log"
    with log.open("w") as err:  # a file, not a pipe: a full pipe would block the run
        again = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=err)
        wait_for(lambda: files_written(tmp_path / "run"), lambda _: again.poll() is not None, interval_s=0.2,
                 what="the resumed run")  # fails only when the run stops writing for minutes
    assert again.returncode == 0, log.read_text()[-3000:]
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())  # finished batches were not recomputed
    assert (tmp_path / "run" / "config.yaml").is_file()
    assert_same_run(local_run, tmp_path / "run")
