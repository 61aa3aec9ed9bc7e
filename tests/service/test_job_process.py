"""A job's work runs in a process its worker can end (issue 25, points 10, 12 and 17): the
first stage is the model check, so a model that cannot be evaluated fails at once with the stage
named; a job whose model's forward never returns is cancelled within seconds; a job past its
compute-time limit fails with the limit named and keeps its finished stages; a job whose process
keeps being killed is retried until its attempts run out, then fails with the last error.

Each test runs the worker in a thread of the test process and real job processes; every wait is
on the job's state, with generous limits."""

from __future__ import annotations

import json
import re
import signal
import threading
import time

import pytest
import torch

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from medrobust.service.app import create_app  # noqa: E402
from medrobust.service.limits import ServiceLimits  # noqa: E402
from medrobust.service.store import Store  # noqa: E402
from medrobust.service.worker import Worker  # noqa: E402
from tests.progress_wait import wait_for  # noqa: E402

API = "/api/v1/jobs"
CLASSES = "Normal,Pneumonia,Pneumothorax"


class _SevenOutputs(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3)).unsqueeze(1).repeat(1, 7)


@pytest.fixture(scope="module")
def seven_outputs(tmp_path_factory):
    """A TorchScript model with 7 outputs (for 3 classes)."""
    path = tmp_path_factory.mktemp("seven") / "seven.pt"
    torch.jit.save(torch.jit.script(_SevenOutputs()), str(path))
    return path


class Running:
    """An app over a fresh data directory and a worker thread claiming its jobs."""

    def __init__(self, data_dir, limits: ServiceLimits | None = None) -> None:
        self.store = Store(data_dir)
        self.token = self.store.create_token("acme")
        self.client = TestClient(create_app(data_dir, limits))
        self.worker = Worker(data_dir, lease_s=30.0, poll_s=0.1)
        self.thread = threading.Thread(target=self.worker.run, daemon=True)

    def __enter__(self) -> "Running":
        self.client.__enter__()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.worker.stop.set()
        self.thread.join(60)
        self.client.__exit__(*exc)
        assert not self.thread.is_alive(), "the worker did not stop"

    def submit(self, model, images, **fields) -> str:
        with model.open("rb") as m, images.open("rb") as i:
            response = self.client.post(API, headers=self.auth, data=fields,
                                        files={"model": (model.name, m), "images": (images.name, i)})
        assert response.status_code == 202, response.text
        return response.json()["id"]

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def job(self, job_id: str) -> dict:
        return self.client.get(f"{API}/{job_id}", headers=self.auth).json()

    def wait(self, job_id: str, until, what: str) -> dict:
        """The job once ``until(job)`` holds; fails only when the job stops moving for minutes."""
        return wait_for(lambda: self.job(job_id), until, progress=_progress, what=f"job {job_id}: {what}")


def _progress(job: dict):
    return job["status"], job["stage"], job["stage_done"], job["stages_finished"], job["attempts"]


def test_a_model_failing_its_check_fails_at_once_in_the_model_check_stage(tmp_path, uploads, seven_outputs):
    with Running(tmp_path / "service") as service:
        job_id = service.submit(seven_outputs, uploads.images_zip, classes=CLASSES, intensity="unit")
        job = service.wait(job_id, lambda j: j["status"] not in ("queued", "running"), "ended")
    assert job["status"] == "failed" and job["failed_stage"] == "model check"
    assert job["error"].startswith("seven.pt: "), job["error"]
    assert "(1, 7)" in job["error"] and job["stages_finished"] == 0 and job["stage"] is None


def test_a_job_whose_forward_never_returns_is_cancelled_within_seconds(tmp_path, uploads, forever_model):
    with Running(tmp_path / "service") as service:
        job_id = service.submit(forever_model, uploads.images_zip, classes=CLASSES, intensity="unit")
        service.wait(job_id, lambda j: j["stage"] == "model check", "in its model check")
        process = service.worker.job_process
        assert process is not None and process.poll() is None
        cancelled_at = time.monotonic()
        assert service.client.post(f"{API}/{job_id}/cancel", headers=service.auth).status_code == 202
        job = service.wait(job_id, lambda j: j["status"] != "running", "cancelled")
        took = time.monotonic() - cancelled_at
        assert job["status"] == "cancelled"
        assert process.poll() is not None, "the job's process is still running"
        # the worker is free again: it ends its loop when asked (it was not stuck in the forward)
    assert took < 60, f"cancelling took {took:.0f} s"


def test_a_job_past_its_time_limit_fails_and_keeps_its_finished_stages(tmp_path, uploads):
    config = ("attacks: [{name: pgd, params: {steps: 1000}}]\ndefenses: []\n"
              "detectors: {squeeze: {enabled: false}, reference: {enabled: false}}\n")
    data_dir = tmp_path / "service"
    with Running(data_dir) as service:
        job_id = service.submit(uploads.checkpoint_zip, uploads.images_zip, config=config)
        running = service.wait(job_id, lambda j: j["status"] not in ("queued", "running") or (
            j["stages_finished"] >= 2 and j["stage"] not in (None, "model check", "data", "baseline")),
            "past its baseline")
        assert running["status"] == "running", running
        with service.store.transaction() as db:  # the administrator's limit, as if it had been 1 s from the start
            db.execute("UPDATE jobs SET time_limit_s = 1 WHERE id = ?", (job_id,))
        job = service.wait(job_id, lambda j: j["status"] != "running", "stopped")
    assert job["status"] == "failed", job
    assert re.fullmatch(r"stopped at the time limit of 1 s of compute time per job during stage '[^']+'; the \d+ "
                        r"stages it finished are kept\. Test fewer images, attacks or steps, or ask the service's "
                        r"administrator for a longer limit", job["error"]), job["error"]
    assert job["stages_finished"] >= 2 and job["compute_seconds"] >= 1
    assert job["failed_stage"] not in (None, "model check", "data", "baseline"), job["failed_stage"]
    stages = [p for p in (data_dir / "jobs" / job_id).glob("*/stages/*") if p.is_dir()]
    assert any(p.name == "baseline" for p in stages), stages  # the finished stages are kept


def test_a_job_whose_process_keeps_being_killed_fails_after_its_attempts(tmp_path, uploads, forever_model):
    with Running(tmp_path / "service", ServiceLimits(max_attempts=2)) as service:
        job_id = service.submit(forever_model, uploads.images_zip, classes=CLASSES, intensity="unit")
        for attempt in (1, 2):
            service.wait(job_id, lambda j, a=attempt: j["attempts"] == a and j["stage"] == "model check",
                         f"in attempt {attempt}")
            service.worker.job_process.send_signal(signal.SIGKILL)  # as the kernel's out-of-memory killer would
        job = service.wait(job_id, lambda j: j["status"] not in ("queued", "running"), "given up")
    assert job["status"] == "failed" and job["attempts"] == 2
    assert job["error"].startswith("stopped after 2 attempts, the most this service allows a job; the last ended: "
                                   "its process was killed by SIGKILL (out of memory, most likely)"), job["error"]


def test_a_job_whose_worker_died_on_its_last_attempt_fails_with_the_reason(tmp_path):
    store = Store(tmp_path / "service")
    store.create_token("acme")
    tenant = store.tenant_for_token(store.create_token("acme"))
    store.add_job("0123456789abcdef", tenant, {"model_file": "m.pt"}, 0, 5, max_attempts=2)
    assert store.claim("w1", lease_s=-1)["attempts"] == 1  # its worker dies at once: the lease is already over
    assert store.claim("w2", lease_s=-1)["attempts"] == 2
    assert store.claim("w3", lease_s=60) is None  # not taken a third time
    row = store.job("0123456789abcdef")
    assert row["status"] == "failed" and row["attempts"] == 2
    assert row["error"].startswith("stopped after 2 attempts, the most this service allows a job; the last ended: the "
                                   "worker running it stopped answering before it finished")


def test_a_job_given_back_by_a_stopping_worker_keeps_its_attempts(tmp_path):
    store = Store(tmp_path / "service")
    tenant = store.tenant_for_token(store.create_token("acme"))
    store.add_job("0123456789abcdef", tenant, {"model_file": "m.pt"}, 0, 5, max_attempts=2)
    for _ in range(3):  # three server restarts: not the job's fault
        assert store.claim("w", lease_s=60)["attempts"] == 1
        store.release("0123456789abcdef", "w", compute_s=5.0)
    store.claim("w", lease_s=60)
    store.release("0123456789abcdef", "w", attempt_error="its process was killed by SIGKILL")
    row = store.claim("w", lease_s=60)
    assert row["attempts"] == 2 and row["attempt_error"] == "its process was killed by SIGKILL"
    assert row["compute_s"] == 5.0


def test_an_older_data_directory_gets_the_new_columns(tmp_path):
    import sqlite3

    data_dir = tmp_path / "service"
    data_dir.mkdir()
    old = sqlite3.connect(data_dir / "service.db")
    old.executescript("""
        CREATE TABLE tenants (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, created REAL NOT NULL);
        CREATE TABLE jobs (id TEXT PRIMARY KEY, tenant_id INTEGER NOT NULL, status TEXT NOT NULL, created REAL NOT NULL,
            started REAL, finished REAL, updated REAL NOT NULL, request TEXT NOT NULL, stage TEXT, stage_done INTEGER,
            stage_total INTEGER, stage_started REAL, stages_finished INTEGER NOT NULL DEFAULT 0, error TEXT,
            skipped TEXT, headline TEXT, worker TEXT, lease_until REAL, attempts INTEGER NOT NULL DEFAULT 0,
            cancel_requested INTEGER NOT NULL DEFAULT 0, delete_requested INTEGER NOT NULL DEFAULT 0,
            stored_bytes INTEGER NOT NULL DEFAULT 0);
        INSERT INTO tenants VALUES (1, 'acme', 0);
        INSERT INTO jobs(id, tenant_id, status, created, updated, request) VALUES ('00aa', 1, 'queued', 0, 0, '{}');
    """)
    old.commit()
    old.close()
    store = Store(data_dir)
    row = store.claim("w", lease_s=60)
    assert row["id"] == "00aa" and row["compute_s"] == 0 and row["max_attempts"] is None
    assert json.loads(row["request"]) == {}
