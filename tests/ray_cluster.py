"""A local Ray cluster for tests: ``ray start --head --block`` in its own process group (2 CPUs,
dashboard off, token authentication off: it is this machine's loopback test cluster), stopped by
signalling the head (then killing what is left of its group). The ``ray_cluster`` fixture
(tests/conftest.py) yields its address."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_ray_cluster() -> Iterator[str]:
    """Start the cluster, yield its address, stop it (and this process's connection to it)."""
    import ray

    port = _free_port()
    ray_cli = Path(sys.executable).with_name("ray")
    env = {**os.environ, **RAY_ENV}
    previous = {k: os.environ.get(k) for k in RAY_ENV}
    os.environ.update(RAY_ENV)
    head = subprocess.Popen([str(ray_cli), "start", "--head", f"--port={port}", "--num-cpus=2",
                             "--include-dashboard=false", "--disable-usage-stats", "--block"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            probe = subprocess.run([sys.executable, "-c", f"import ray; ray.init(address={address!r}); ray.shutdown()"],
                                   env=env, capture_output=True, timeout=60)
            if probe.returncode == 0:
                break
            if time.monotonic() > deadline or head.poll() is not None:
                raise RuntimeError(f"the Ray head did not start: {probe.stderr.decode()[-2000:]}")
            time.sleep(1)
        yield address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        # SIGTERM to the head alone: it drains the node through its GCS and stops its processes
        # (2 s). Sent to the whole group, the GCS died first and the head waited 30 s for it.
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(head.pid, signal.SIGKILL)  # anything of the cluster still running
        except ProcessLookupError:
            pass
        for k, v in previous.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
