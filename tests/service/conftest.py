"""Fixtures of the service tests: a tiny model and images to upload (32 px phantoms, a small CNN as
a zipped medrobust checkpoint and as TorchScript), an app over a temporary data directory with
two tenants' tokens, and the real processes (``medrobust serve`` with a worker) on a free port."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

CLASSES = ("Normal", "Pneumonia", "Pneumothorax")


LEAN_CONFIG = """\
attacks:
  - name: apgd
    params: {eps: 8/255, steps: 20}
    eps_sweep: [1/255, 2/255, 4/255, 8/255]
defenses: [jpeg+tv]
adaptive:
  enabled: true
  params: {steps: 5}
  portfolio: [unrolled]
  max_steps: 10
detectors:
  reference: {}
  squeeze: {squeezers: ["bits:bits=5", "median:size=2"]}
"""
"""A job configuration with every stage a service job's pages show (an attack's sweep, a defense
against an adaptive attacker, both detectors), at a third of the quick preset's cost (5 s against
16 s for these 36 images): the tests of the service's machinery (kill and resume, Ray, the
dashboard) run it; one job of ``test_api`` runs the quick preset itself."""


@dataclass(frozen=True)
class Uploads:
    checkpoint_zip: Path  # a medrobust checkpoint folder, zipped (white-box: gradients)
    torchscript: Path  # the same network behind a 3-channel TorchScript input
    images_zip: Path  # <Class>/*.png, 32 px phantoms
    images_dir: Path  # the same images unpacked (for the local reference run)
    checkpoint_dir: Path


def zip_folder(folder: Path, out: Path, under: str | None = None) -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                name = path.relative_to(folder).as_posix()
                archive.write(path, f"{under}/{name}" if under else name)
    return out


class _ThreeChannels(torch.nn.Module):
    """A vendor-style export: takes (B, 3, H, W) in [0, 1] and returns logits."""

    def __init__(self, classifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x.mean(dim=1, keepdim=True))


@pytest.fixture(scope="session")
def uploads(tmp_path_factory, trained_small_cnn) -> Uploads:
    import medrobust as mr
    from medrobust.models import save_checkpoint

    root = tmp_path_factory.mktemp("uploads")
    checkpoint = save_checkpoint(trained_small_cnn, root / "chest-cnn")
    images = root / "xrays"
    mr.write_phantoms(images, per_class=12, size=32, seed=5)
    (images / "manifest.csv").unlink()
    (images / "README.txt").write_text("not an image: listed as ignored\n")
    scripted = torch.jit.trace(_ThreeChannels(trained_small_cnn.eval()), torch.rand(2, 3, 32, 32))
    torch.jit.save(scripted, str(root / "chest-cnn.pt"))
    return Uploads(checkpoint_zip=zip_folder(checkpoint, root / "chest-cnn.zip", under="chest-cnn"),
                   torchscript=root / "chest-cnn.pt", images_zip=zip_folder(images, root / "xrays.zip", under="xrays"),
                   images_dir=images, checkpoint_dir=checkpoint)


class _Forever(torch.nn.Module):
    """A TorchScript forward that never returns: its loop's condition holds for every image in [0, 1]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        while bool(y.sum() > -1.0):
            y = y * 1.0
        return y.mean(dim=(2, 3))


@pytest.fixture(scope="session")
def forever_model(tmp_path_factory) -> Path:
    """A TorchScript model (3-channel input, 3 classes) whose forward never returns: the job is
    stuck in its first forward (the model check) until its process is ended."""
    path = tmp_path_factory.mktemp("forever") / "forever.pt"
    torch.jit.save(torch.jit.script(_Forever()), str(path))
    return path


@dataclass
class ServiceClient:
    client: object  # fastapi.testclient.TestClient
    data_dir: Path
    token: str
    other_token: str

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}


@pytest.fixture
def service(tmp_path) -> ServiceClient:
    """The app over a fresh data directory (no worker), with tokens of tenants acme and globex."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from medrobust.service.app import create_app
    from medrobust.service.store import Store

    data_dir = tmp_path / "service"
    store = Store(data_dir)
    token, other = store.create_token("acme"), store.create_token("globex")
    with TestClient(create_app(data_dir)) as client:
        yield ServiceClient(client, data_dir, token, other)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def port() -> int:
    """A free TCP port on 127.0.0.1."""
    return free_port()


def medrobust_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "medrobust", *args]


def wait_for_http(url: str, timeout_s: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s")


@dataclass
class LiveService:
    base_url: str
    token: str
    data_dir: Path
    uploads: Uploads
    web: subprocess.Popen
    workers: list[subprocess.Popen]

    def start_worker(self, lease_seconds: float = 3.0) -> subprocess.Popen:
        process = subprocess.Popen(medrobust_command("worker", "--data-dir", str(self.data_dir), "--lease-seconds",
                                                     str(lease_seconds), "--poll-seconds", "0.2"),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.workers.append(process)
        return process

    def restart_web(self) -> None:
        """Start the web process again on the same port and data directory, and wait for it."""
        self.web = start_web(self.data_dir, int(self.base_url.rsplit(":", 1)[1]))
        wait_for_http(self.base_url + "/healthz")

    def stop(self) -> None:
        for process in [self.web, *self.workers]:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in [self.web, *self.workers]:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def start_web(data_dir: Path, port: int, workers: int = 0) -> subprocess.Popen:
    return subprocess.Popen(medrobust_command("serve", "--data-dir", str(data_dir), "--port", str(port),
                                              "--workers", str(workers), "--lease-seconds", "3"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "MEDROBUST_TUNE_MALLOC": "0"})


@pytest.fixture
def live_service(tmp_path, uploads):
    """``medrobust serve`` (web only) and one ``medrobust worker`` as real processes on 127.0.0.1,
    a free port and a temporary data directory, with a token of tenant acme; stopped afterwards."""
    pytest.importorskip("uvicorn")
    data_dir = tmp_path / "service"
    port = free_port()
    web = start_web(data_dir, port)
    service = LiveService(f"http://127.0.0.1:{port}", "", data_dir, uploads, web, [])
    try:
        wait_for_http(service.base_url + "/healthz")
        created = subprocess.run(medrobust_command("tokens", "create", "--data-dir", str(data_dir), "--tenant", "acme"),
                                 capture_output=True, text=True, check=True)
        service.token = created.stdout.strip()
        service.start_worker()
        yield service
    finally:
        service.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
